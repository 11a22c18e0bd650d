"""The `rar-tools` command line: a thin layer over `RarTools`.

Every `Settings` field is also a flag here (`--clip-model`, `--data-dir`, ...), and every flag an
environment variable (`RAR_TOOLS_CLIP_MODEL`, ...).
"""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from rar_tools.errors import RarToolsError
from rar_tools.images import IMAGE_SUFFIXES
from rar_tools.settings import PROJECT_MEMORIES, Settings

VOCABULARY_DIR = PROJECT_MEMORIES / "vocabularies"


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field; unset flags leave the environment and defaults in charge.
    Booleans are switches, Literals have choices, lists are repeatable flags."""
    group = parser.add_argument_group("settings (also RAR_TOOLS_* environment variables)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env RAR_TOOLS_{name.upper()}]"
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        if typing.get_origin(annotation) is list:
            group.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_text, metavar=name.upper())
            continue
        choices = literal_choices(annotation)
        group.add_argument(
            flag, default=argparse.SUPPRESS, choices=choices, help=help_text, metavar=None if choices else name.upper()
        )


def literal_choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def settings_from(args: argparse.Namespace) -> Settings:
    given = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    return Settings(**given)


def image_argument(value: str) -> str:
    """A CLI image path becomes absolute; base64, data: and http(s) URLs pass through."""
    if value.startswith(("data:", "http://", "https://")) or (len(value) > 256 and "/" not in value[:64]):
        return value
    return str(Path(value).expanduser().absolute())


def emit(result: BaseModel, as_json: bool, render: Callable[[Any], str]) -> None:
    print(result.model_dump_json(indent=2) if as_json else render(result))


def folder_images(folder: Path) -> dict[str, list[str]]:
    """`folder/<label>/<image>` → {label: [absolute image paths]}, labels sorted."""
    if not folder.is_dir():
        raise RarToolsError(f"folder {str(folder)!r} does not exist or is not a folder")
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(str(p.absolute()) for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            found[sub.name.replace("_", " ")] = files
    if not found:
        raise RarToolsError(f"folder {str(folder)!r} has no label subfolders with images")
    return found


def read_label_file(path: Path) -> list[tuple[str, str | None, str | None]]:
    """Lines of `label`, `label|category` or `label|category|parent`; '#' starts a comment."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() or None for p in line.split("|")]
        if len(parts) > 3 or parts[0] is None:
            raise RarToolsError(f"{path}: bad line {line!r}; expected label|category|parent")
        parts += [None] * (3 - len(parts))
        rows.append((parts[0], parts[1], parts[2]))
    return rows


def vocabularies(folder: Path = VOCABULARY_DIR) -> dict[str, Path]:
    """The shipped label lists: {name: file}, from `memories/vocabularies/NAME.txt`."""
    return {path.stem: path for path in sorted(folder.glob("*.txt"))} if folder.is_dir() else {}


def vocabulary_file(name: str, folder: Path = VOCABULARY_DIR) -> Path:
    """The file of a shipped vocabulary; refuses unknown names, listing the known ones."""
    known = vocabularies(folder)
    if name not in known:
        listed = ", ".join(known) or f"none (no folder {folder})"
        raise RarToolsError(f"unknown vocabulary {name!r}; shipped vocabularies: {listed}")
    return known[name]


def region_options(args: argparse.Namespace) -> dict[str, Any]:
    """The region keyword arguments a command's flags give (only those it has)."""
    names = ("box_normalized", "views", "car_filter", "ranker_view", "ranker_context", "min_confidence")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


# -- commands ---------------------------------------------------------------------------------
def cmd_serve(tools, args) -> None:
    from rar_tools.server import run_server

    tools.claim_data_dir()  # a second server on the same data dir stops here, with the holder's pid
    run_server(tools)


def cmd_add(tools, args) -> None:
    if args.folder and args.box:
        raise RarToolsError("--box goes with IMAGE...: a folder's images have no common region")
    if args.folder:
        from tqdm import tqdm

        groups = folder_images(Path(args.folder))
        total = sum(len(v) for v in groups.values())
        with tqdm(total=total, unit="img", file=sys.stderr, disable=args.json) as bar:
            for label, files in groups.items():
                done = [0]

                def advance(n: int, _total: int, done=done) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                result = tools.add_images(
                    args.memory, files, label, args.category, args.parent, skip_unreadable=True, progress=advance
                )
                emit(result, args.json, lambda r, label=label: f"{label}: {r.message}")
        return
    if not args.images or not args.label:
        raise RarToolsError("give IMAGE... with --label LABEL, or --folder DIR")
    images = [image_argument(i) for i in args.images]
    result = tools.add_images(
        args.memory, images, args.label, args.category, args.parent, box=args.box, **region_options(args)
    )
    emit(result, args.json, lambda r: r.message)


def cmd_add_labels(tools, args) -> None:
    rows = [(label, args.category, args.parent) for label in args.labels]
    if args.file:
        rows += read_label_file(Path(args.file))
    if args.vocabulary:
        rows += read_label_file(vocabulary_file(args.vocabulary))
    if not rows:
        raise RarToolsError("give LABEL..., --file FILE and/or --vocabulary NAME")
    result = tools.add_labels(args.memory, [r[0] for r in rows], hierarchy=[(r[1], r[2]) for r in rows])
    emit(result, args.json, lambda r: r.message)


def render_candidates(result) -> str:
    lines = [
        f"memory {result.memory!r}, mode {result.mode} (searched: {', '.join(result.kinds_searched) or 'nothing'})"
    ]
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


def render_levels(levels) -> list[str]:
    lines = [f"{g.level} {g.name}: p {g.probability:.3f}" for g in (levels.categories + levels.parents)[:6]]
    if levels.answer:
        lines.append(f"answer ({levels.answer.level}): {levels.answer.name} p {levels.answer.probability:.3f}")
    return lines


def cmd_retrieve(tools, args) -> None:
    result = tools.retrieve(
        args.memory, image_argument(args.image), args.k, args.mode, box=args.box, **region_options(args)
    )
    emit(result, args.json, render_candidates)


def render_ranking(result) -> str:
    lines = [f"ranked by {result.ranker} ({result.mode} mode, fallback {result.fallback})"]
    for i, c in enumerate(result.ranked, 1):
        lines.append(f"{i:>3}. {c.label:<40} {c.score:7.4f}")
    if result.raw_text is not None:
        lines.append(f"model answer: {result.raw_text!r}")
    return "\n".join(lines)


def cmd_rank(tools, args) -> None:
    result = tools.rank(
        image_argument(args.image),
        args.candidates,
        args.mode,
        args.memory,
        args.exemplars,
        args.icl,
        box=args.box,
        **region_options(args),
    )
    emit(result, args.json, render_ranking)


def render_recognition(result) -> str:
    parts = [f"label: {result.label}", render_candidates(result.retrieval)]
    if result.ranking:
        parts.append(render_ranking(result.ranking))
    if result.note:
        parts.append(f"note: {result.note}")
    return "\n".join(parts)


def cmd_recognize(tools, args) -> None:
    result = tools.recognize(
        args.memory,
        image_argument(args.image),
        args.k,
        args.mode,
        args.retrieval_mode,
        args.exemplars,
        args.icl,
        box=args.box,
        **region_options(args),
    )
    emit(result, args.json, render_recognition)


def render_regions(result) -> str:
    parts = [f"{len(result.regions)} region(s) of a {result.image_size[0]}x{result.image_size[1]} image"]
    for i, region in enumerate(result.regions, 1):
        parts.append(f"--- region {i}\n{render_recognition(region)}")
    return "\n".join(parts)


def cmd_recognize_regions(tools, args) -> None:
    result = tools.recognize_regions(
        args.memory,
        image_argument(args.image),
        args.box,
        args.k,
        args.mode,
        args.retrieval_mode,
        args.exemplars,
        args.icl,
        **region_options(args),
    )
    emit(result, args.json, render_regions)


def render_detections(result) -> str:
    lines = [f"{len(result.detections)} box(es) from {result.detector}"]
    for d in result.detections:
        box = ", ".join(f"{v:.0f}" for v in d.box)
        lines.append(f"  ({box})  {d.score:.3f}  {d.query}")
    return "\n".join(lines)


def cmd_detect(tools, args) -> None:
    result = tools.detect(image_argument(args.image), args.query, args.threshold, args.max_boxes)
    emit(result, args.json, render_detections)


def cmd_vocabularies(tools, args) -> None:
    for name, path in vocabularies().items():
        count = len(read_label_file(path))
        print(f"{name}: {count} labels ({path})")


def render_memories(result) -> str:
    lines = [f"data dir: {result.data_dir}"]
    if not result.memories:
        lines.append("no memories yet")
    for m in result.memories:
        encoder = f"{m.encoder.model} ({m.encoder.pretrained}, {m.encoder.dim}-d)" if m.encoder else "none"
        kinds = ", ".join(f"{n} {k}" for k, n in m.kinds.items()) or "empty"
        lines.append(f"{m.name}: {m.count} entries ({kinds}), {m.labels_total} labels, encoder {encoder}")
    return "\n".join(lines)


def cmd_memories(tools, args) -> None:
    emit(tools.list_memories(args.max_labels), args.json, render_memories)


def cmd_remove(tools, args) -> None:
    result = tools.remove(args.memory, args.ids, args.label)
    emit(result, args.json, lambda r: f"removed {r.removed} entries; {r.count} left in {r.memory!r}")


def cmd_eval(tools, args) -> None:
    from rar_tools.evaluation import EvalConfig, RunOptions, evaluate, load_dataset
    from rar_tools.evaluation.protocol import QUERIES_FILE

    dataset = load_dataset(args.dataset, args.format, args.split_ratio, args.seed)
    config = EvalConfig(
        shots=tuple(args.shots),
        methods=tuple(args.methods),
        seed=args.seed,
        shot_sampler=args.shot_sampler,
        limit=args.limit,
        k=args.k,
        rank_mode=args.rank_mode,
        icl=args.icl,
    )
    out = Path(args.out) if args.out else Path("rar-eval") / dataset.name
    keep = Path(args.keep_memory) if args.keep_memory else None
    options = RunOptions(resume=args.resume, overwrite=args.overwrite, keep_memory=keep)
    report, paths = evaluate(tools.settings, dataset, config, out, options)
    if report.warning:
        print(f"rar-tools: {report.warning}", file=sys.stderr)
    if args.json:
        print(report.model_dump_json(indent=2))
        return
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in [*paths.values(), out / QUERIES_FILE]))


def add_eval_flags(sub: argparse.ArgumentParser) -> None:
    from rar_tools.evaluation import METHODS

    sub.add_argument("dataset", help="an ImageFolder tree, a CUB-layout folder, or a CSV of path,label[,split]")
    sub.add_argument("--format", choices=["auto", "folder", "cub", "csv"], default="auto")
    sub.add_argument("--split-ratio", type=float, help="train fraction per class, for data without a split")
    sub.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="images per class in memory")
    sub.add_argument("--seed", type=int, default=0, help="seeds the shot sampler, the query subset and splits")
    sub.add_argument(
        "--shot-sampler",
        choices=["seeded", "first"],
        default="seeded",
        help="n-shot images per class: a seeded random choice, or the first n in data set order (as RAR's code)",
    )
    sub.add_argument("--limit", type=int, help="evaluate a seeded subset of this many test images")
    sub.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD", help=", ".join(METHODS)
    )
    sub.add_argument("--k", type=int, default=5, help="labels retrieved for the MLLM to rank")
    sub.add_argument("--rank-mode", choices=["score", "generate"], default="score")
    sub.add_argument("--icl", action="store_true", help="add a worked answer-format example to the prompt")
    sub.add_argument("--out", help="folder for report.json, report.md, accuracy.png, queries.jsonl")
    sub.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    sub.add_argument("--overwrite", action="store_true", help="discard the results already in --out")
    sub.add_argument(
        "--keep-memory",
        metavar="DIR",
        help="build the evaluation memories in data folder DIR and keep them (default: a temporary folder)",
    )


def box_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--box", nargs=4, type=float, metavar=("X1", "Y1", "X2", "Y2"), help="work on this region of the image"
    )
    sub.add_argument("--box-normalized", action="store_true", help="--box is in fractions (0..1) of the image")


def view_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--views", type=int, default=1, help="region views: 1 (blurred crop) or 3 (+2 DynRefer views)")
    sub.add_argument("--car-filter", action="store_true", help="drop candidates CaR's prompted views reject")
    sub.add_argument("--min-confidence", type=float, default=0.0, help="answer at the finest level this sure")


def ranker_view_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--ranker-view", choices=["crop", "prompt"], default="crop", help="region shown to the MLLM")
    sub.add_argument("--ranker-context", action="store_true", help="also show the whole image, region marked")


def cmd_bench(tools, args) -> None:
    from rar_tools.bench import run_bench
    from rar_tools.bench.config import config_from

    run_bench(config_from(args))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_settings_flags(common)
    parser = argparse.ArgumentParser(prog="rar-tools", description="RAR visual recognition: MCP server and CLI")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, fn: Callable, help_text: str, json_flag: bool = True, settings_flags: bool = True
    ) -> argparse.ArgumentParser:
        parents = [common] if settings_flags else []
        sub = commands.add_parser(name, parents=parents, help=help_text, description=help_text)
        sub.set_defaults(func=fn, uses_settings=settings_flags)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print the result as JSON")
        return sub

    command("serve", cmd_serve, "run the MCP server (stdio by default)", json_flag=False)

    add = command("add", cmd_add, "store labelled exemplar images")
    add.add_argument("memory")
    add.add_argument("images", nargs="*", metavar="IMAGE")
    add.add_argument("--label")
    add.add_argument("--folder", help="a folder with one subfolder of images per label")
    add.add_argument("--category")
    add.add_argument("--parent")
    box_flags(add)

    labels = command("add-labels", cmd_add_labels, "store label texts for zero-shot retrieval")
    labels.add_argument("memory")
    labels.add_argument("labels", nargs="*", metavar="LABEL")
    labels.add_argument("--file", help="one label per line, optionally label|category|parent")
    labels.add_argument("--vocabulary", help="a shipped label list by name (see `rar-tools vocabularies`)")
    labels.add_argument("--category")
    labels.add_argument("--parent")

    retrieve = command("retrieve", cmd_retrieve, "the k best distinct labels for an image")
    retrieve.add_argument("memory")
    retrieve.add_argument("image")
    retrieve.add_argument("--k", type=int, default=5)
    retrieve.add_argument("--mode", choices=["auto", "image", "text"], default="auto")
    box_flags(retrieve)
    view_flags(retrieve)

    def ranking_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--mode", choices=["score", "generate"], default="score")
        sub.add_argument("--exemplars", action="store_true", help="show stored exemplar images to the MLLM")
        sub.add_argument("--icl", action="store_true", help="add a worked answer-format example")

    rank = command("rank", cmd_rank, "order candidate labels for an image with the MLLM")
    rank.add_argument("image")
    rank.add_argument("--candidates", nargs="+", required=True)
    rank.add_argument("--memory", help="memory for --exemplars")
    ranking_flags(rank)
    box_flags(rank)
    ranker_view_flags(rank)

    recognize = command("recognize", cmd_recognize, "retrieve then rank: RAR in one step")
    recognize.add_argument("memory")
    recognize.add_argument("image")
    recognize.add_argument("--k", type=int, default=5)
    recognize.add_argument("--retrieval-mode", choices=["auto", "image", "text"], default="auto")
    ranking_flags(recognize)
    box_flags(recognize)
    view_flags(recognize)
    ranker_view_flags(recognize)

    regions = command("recognize-regions", cmd_recognize_regions, "recognise many boxes of one image at once")
    regions.add_argument("memory")
    regions.add_argument("image")
    regions.add_argument(
        "--box",
        nargs=4,
        type=float,
        action="append",
        required=True,
        metavar=("X1", "Y1", "X2", "Y2"),
        help="a region (repeat for each box)",
    )
    regions.add_argument("--box-normalized", action="store_true", help="boxes are fractions (0..1) of the image")
    regions.add_argument("--k", type=int, default=5)
    regions.add_argument("--retrieval-mode", choices=["auto", "image", "text"], default="auto")
    ranking_flags(regions)
    view_flags(regions)
    ranker_view_flags(regions)

    detect = command("detect", cmd_detect, "box proposals for text queries from the open-vocabulary detector")
    detect.add_argument("image")
    detect.add_argument("--query", nargs="+", required=True, help="what to look for, e.g. 'a bird'")
    detect.add_argument("--threshold", type=float, help="minimum score (default: --detector-threshold)")
    detect.add_argument("--max-boxes", type=int, default=50)

    command("vocabularies", cmd_vocabularies, "list the shipped label lists (for add-labels --vocabulary)", False)

    memories = command("memories", cmd_memories, "list memories with their counts")
    memories.add_argument("--max-labels", type=int, default=100)

    evaluation = command(
        "eval",
        cmd_eval,
        "measure accuracy on a labelled image set with RAR's few-shot protocol "
        "(memories go to a temporary folder, never to --data-dir)",
    )
    add_eval_flags(evaluation)

    remove = command("remove", cmd_remove, "remove entries by id and/or label")
    remove.add_argument("memory")
    remove.add_argument("--id", dest="ids", action="append", help="entry id (repeatable)")
    remove.add_argument("--label")

    from rar_tools.bench.config import add_arguments

    bench = command(
        "bench",
        cmd_bench,
        "time encoding, adding, retrieval at scale, ranking modes and whole tool calls",
        json_flag=False,
        settings_flags=False,
    )
    add_arguments(bench)
    return parser


def configure_logging(level: str) -> None:
    """Our messages at `level`, other libraries' at WARNING (DEBUG shows all); all on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if level == "DEBUG" else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("rar_tools").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.uses_settings:  # `bench` builds its own settings from its flags
        configure_logging("INFO")
        return run_command(args, None)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"rar-tools: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from rar_tools.api import RarTools

    return run_command(args, RarTools(settings))


def run_command(args: argparse.Namespace, tools) -> int:
    """Run the chosen command; errors meant for the user become one line on stderr and exit code 2."""
    try:
        args.func(tools, args)
    except RarToolsError as exc:
        print(f"rar-tools: {exc}", file=sys.stderr)
        return 2
    return 0
