"""Plain-text renderings of the result models, for the CLI (`--json` prints the models themselves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def render_candidates(result: Any) -> str:
    searched = ", ".join(result.kinds_searched) or "nothing"
    lines = [f"retrieval (CLIP) from memory {result.memory!r}, mode {result.mode} (searched: {searched}):"]
    if result.region:
        box = ", ".join(f"{v:.0f}" for v in result.region.box)
        lines.append(f"region ({box}), views t={result.region.view_steps}")
    for i, c in enumerate(result.candidates, 1):
        lines.append(f"{i:>3}. {c.label:<40} score {c.score:7.4f}  p {c.probability:6.3f}  support {c.support}")
    if result.region and result.region.filtered_out:
        lines.append(f"CaR filter dropped: {', '.join(result.region.filtered_out)}")
    lines += render_levels(result.levels)
    if result.note:
        lines.append(f"note: {result.note}")
    return "\n".join(lines)


def render_levels(levels: Any) -> list[str]:
    lines = [f"{g.level} {g.name}: p {g.probability:.3f}" for g in (levels.categories + levels.parents)[:6]]
    if levels.answer:
        lines.append(f"answer ({levels.answer.level}): {levels.answer.name} p {levels.answer.probability:.3f}")
    return lines


def render_ranking(result: Any) -> str:
    lines = [f"ranking by {result.ranker} ({result.mode} mode, fallback {result.fallback}):"]
    for i, c in enumerate(result.ranked, 1):
        lines.append(f"{i:>3}. {c.label:<40} {c.score:7.4f}")
    if result.raw_text is not None:
        lines.append(f"model answer: {result.raw_text!r}")
    return "\n".join(lines)


def render_recognition(result: Any) -> str:
    parts = [f"label: {result.label}", render_candidates(result.retrieval)]
    if result.ranking:
        parts.append(render_ranking(result.ranking))
    if result.note:
        parts.append(f"note: {result.note}")
    if result.proposal:
        parts.append("unsure; the MLLM proposes:\n" + "\n".join(render_description(result.proposal)))
    return "\n".join(parts)


def render_regions(result: Any) -> str:
    """One answer per region: its box, the label, and how sure (the ranker's probability, or the
    retrieval's when nothing was ranked)."""
    lines = [f"{len(result.regions)} region(s) of a {result.image_size[0]}x{result.image_size[1]} image"]
    for i, region in enumerate(result.regions, 1):
        box = ", ".join(f"{v:.0f}" for v in region.retrieval.region.box) if region.retrieval.region else "?"
        lines.append(f"{i:>3}. ({box})  {region.label or 'no label'}{region_confidence(region)}")
    return "\n".join(lines)


def region_confidence(region: Any) -> str:
    """'  p 0.62 (ranked)' or '  p 0.41 (retrieval)' for a region's answer; '' when it has none."""
    if region.ranking and region.ranking.ranked:
        return f"  p {region.ranking.ranked[0].score:.3f} (ranked)"
    if region.retrieval.candidates:
        return f"  p {region.retrieval.candidates[0].probability:.3f} (retrieval)"
    return ""


def render_detections(result: Any) -> str:
    lines = [f"{len(result.detections)} box(es) from {result.detector}"]
    for d in result.detections:
        box = ", ".join(f"{v:.0f}" for v in d.box)
        lines.append(f"  ({box})  {d.score:.3f}  {d.query}")
    return "\n".join(lines)


def render_memories(result: Any) -> str:
    lines = [f"data dir: {result.data_dir}"]
    if not result.memories:
        lines.append("no memories yet")
    for m in result.memories:
        encoder = f"{m.encoder.model} ({m.encoder.pretrained}, {m.encoder.dim}-d)" if m.encoder else "none"
        kinds = ", ".join(f"{n} {k}" for k, n in m.kinds.items()) or "empty"
        lines.append(f"{m.name}: {m.count} entries ({kinds}), {m.labels_total} labels, encoder {encoder}")
        lines += [f"  {count:>6}  {label}" for label, count in m.labels.items()]
        if m.labels_truncated:
            lines.append(f"  ... {m.labels_after} more label(s) (--max-labels to show more)")
        if m.next_cursor:
            lines.append(f"  next page: rar-tools memories --memory {m.name} --cursor {m.next_cursor}")
    return "\n".join(lines)


def render_findings(header: str, lines: list[str], truncated: bool, hint: str) -> str:
    """A header, one indented line per finding, and a hint when more were found than shown."""
    shown = [header, *(f"  {line}" for line in lines)]
    if truncated:
        shown.append(f"  (more: {hint})")
    return "\n".join(shown)


def render_duplicates(result: Any) -> str:
    return render_findings(
        f"{len(result.pairs)} pair(s) at cosine >= {result.threshold} among {result.scanned} exemplars",
        [f"{p.similarity:.4f}  {p.first_id} ({p.first_label})  {p.second_id} ({p.second_label})" for p in result.pairs],
        result.truncated,
        "raise --max-results or --threshold",
    )


def render_conflicts(result: Any) -> str:
    return render_findings(
        f"{len(result.conflicts)} likely mislabelled among {result.scanned} exemplars",
        [
            f"{c.entry_id} {c.label!r}: {c.share:.0%} of its neighbours are {c.suggested_label!r}"
            for c in result.conflicts
        ],
        result.truncated,
        "raise --max-results",
    )


def render_segmentation(result: Any) -> str:
    lines = [
        f"segmented a {result.image_size[0]}x{result.image_size[1]} image for {len(result.labels)} label(s) "
        f"(from the {result.label_source}; refinement: {result.refinement})"
    ]
    for i, region in enumerate(result.regions, 1):
        box = ", ".join(f"{v:.0f}" for v in region.box)
        lines.append(f"--- region {i} ({box}): {region.rounds} round(s)")
        for m in region.masks:
            where = ", ".join(f"{v:.0f}" for v in m.box) if m.box else "empty"
            lines.append(f"  {m.label:<40} score {m.score:6.3f}  area {m.area:>8}  box ({where})")
        for n, dropped in enumerate(region.dropped, 1):
            if dropped:
                lines.append(f"  round {n} dropped: {', '.join(dropped)}")
    return "\n".join(lines)


def render_description(region: Any) -> list[str]:
    lines = [f"caption: {region.caption}", f"attributes: {region.attributes}"]
    if region.proposal:
        p = region.proposal
        lines.append(f"proposed label: {p.phrase}|{p.category}|{p.parent or ''}")
    if region.check:
        for match in (region.check.category, region.check.parent):
            if match:
                near = f" ({match.label!r}, similarity {match.similarity:.3f})" if match.label else ""
                lines.append(f"in memory {region.check.memory!r}: {match.name!r} {match.status}{near}")
    lines.append(f"fallback {region.fallback}; model answer: {region.raw_text!r}")
    return lines


def render_descriptions(result: Any) -> str:
    parts = [f"{len(result.regions)} region(s) described by {result.describer}"]
    for i, region in enumerate(result.regions, 1):
        box = ", ".join(f"{v:.0f}" for v in region.box)
        parts.append(f"--- region {i} ({box})\n" + "\n".join(render_description(region)))
    return "\n".join(parts)


def emit(result: Any, as_json: bool, show: Callable[[Any], str]) -> None:
    """Print a result: its JSON (`--json`), or `show`'s text."""
    print(result.model_dump_json(indent=2) if as_json else show(result))
