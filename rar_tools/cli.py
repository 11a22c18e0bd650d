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
from rar_tools.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per settings field; unset flags leave the environment and defaults in charge."""
    group = parser.add_argument_group("settings (also RAR_TOOLS_* environment variables)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env RAR_TOOLS_{name.upper()}]"
        annotation = field.annotation
        if annotation is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
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
    """A CLI image path becomes absolute; base64 and data: URLs pass through."""
    if value.startswith("data:") or (len(value) > 256 and "/" not in value[:64]):
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


# -- commands ---------------------------------------------------------------------------------
def cmd_serve(tools, args) -> None:
    from rar_tools.server import run_server

    run_server(tools)


def cmd_add(tools, args) -> None:
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
    result = tools.add_images(args.memory, images, args.label, args.category, args.parent)
    emit(result, args.json, lambda r: r.message)


def cmd_add_labels(tools, args) -> None:
    rows = [(label, args.category, args.parent) for label in args.labels]
    if args.file:
        rows += read_label_file(Path(args.file))
    if not rows:
        raise RarToolsError("give LABEL... and/or --file FILE")
    result = tools.add_labels(args.memory, [r[0] for r in rows], hierarchy=[(r[1], r[2]) for r in rows])
    emit(result, args.json, lambda r: r.message)


def render_candidates(result) -> str:
    lines = [
        f"memory {result.memory!r}, mode {result.mode} (searched: {', '.join(result.kinds_searched) or 'nothing'})"
    ]
    for i, c in enumerate(result.candidates, 1):
        lines.append(f"{i:>3}. {c.label:<40} score {c.score:7.4f}  p {c.probability:6.3f}  support {c.support}")
    if result.note:
        lines.append(f"note: {result.note}")
    return "\n".join(lines)


def cmd_retrieve(tools, args) -> None:
    result = tools.retrieve(args.memory, image_argument(args.image), args.k, args.mode)
    emit(result, args.json, render_candidates)


def render_ranking(result) -> str:
    lines = [f"ranked by {result.ranker} ({result.mode} mode, fallback {result.fallback})"]
    for i, c in enumerate(result.ranked, 1):
        lines.append(f"{i:>3}. {c.label:<40} {c.score:7.4f}")
    if result.raw_text is not None:
        lines.append(f"model answer: {result.raw_text!r}")
    return "\n".join(lines)


def cmd_rank(tools, args) -> None:
    result = tools.rank(image_argument(args.image), args.candidates, args.mode, args.memory, args.exemplars, args.icl)
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
        args.memory, image_argument(args.image), args.k, args.mode, args.retrieval_mode, args.exemplars, args.icl
    )
    emit(result, args.json, render_recognition)


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

    labels = command("add-labels", cmd_add_labels, "store label texts for zero-shot retrieval")
    labels.add_argument("memory")
    labels.add_argument("labels", nargs="*", metavar="LABEL")
    labels.add_argument("--file", help="one label per line, optionally label|category|parent")
    labels.add_argument("--category")
    labels.add_argument("--parent")

    retrieve = command("retrieve", cmd_retrieve, "the k best distinct labels for an image")
    retrieve.add_argument("memory")
    retrieve.add_argument("image")
    retrieve.add_argument("--k", type=int, default=5)
    retrieve.add_argument("--mode", choices=["auto", "image", "text"], default="auto")

    def ranking_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--mode", choices=["score", "generate"], default="score")
        sub.add_argument("--exemplars", action="store_true", help="show stored exemplar images to the MLLM")
        sub.add_argument("--icl", action="store_true", help="add a worked answer-format example")

    rank = command("rank", cmd_rank, "order candidate labels for an image with the MLLM")
    rank.add_argument("image")
    rank.add_argument("--candidates", nargs="+", required=True)
    rank.add_argument("--memory", help="memory for --exemplars")
    ranking_flags(rank)

    recognize = command("recognize", cmd_recognize, "retrieve then rank: RAR in one step")
    recognize.add_argument("memory")
    recognize.add_argument("image")
    recognize.add_argument("--k", type=int, default=5)
    recognize.add_argument("--retrieval-mode", choices=["auto", "image", "text"], default="auto")
    ranking_flags(recognize)

    memories = command("memories", cmd_memories, "list memories with their counts")
    memories.add_argument("--max-labels", type=int, default=100)

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
