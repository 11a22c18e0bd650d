"""The `rar-tools` command line: a thin layer over `RarTools`.

Every `Settings` field is also a flag here (`--clip-model`, `--data-dir`, ...), and every flag an
environment variable (`RAR_TOOLS_CLIP_MODEL`, ...). Each operation's flags are generated from its
request model (`rar_tools.requests`), so they carry the same names, bounds and defaults as the MCP
tools and the Python API.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rar_tools import render
from rar_tools.cli_flags import add_request_flags, add_settings_flags, request_arguments, settings_from
from rar_tools.cli_masks import add_mask_flags, write_masks
from rar_tools.cli_upkeep import UPKEEP_OPERATIONS, call_operation
from rar_tools.errors import RarToolsError
from rar_tools.hub import quiet_library_handlers
from rar_tools.interrupts import EXIT_CODE as INTERRUPTED_EXIT
from rar_tools.interrupts import Interrupted, stop_on_interrupt
from rar_tools.label_lists import read_label_file, vocabularies, vocabulary_file
from rar_tools.render import emit
from rar_tools.requests import (
    AddRequest,
    DeleteRequest,
    DescribeRegionsRequest,
    DetectRequest,
    ListRequest,
    RankCandidatesRequest,
    RecognizeRegionsRequest,
    RecognizeRequest,
    RemoveRequest,
    Request,
    RetrieveRequest,
    SegmentRequest,
)
from rar_tools.settings import Settings

BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what shells report for a writer whose reader went away
ADD_FIELDS = ["memory", "images", "label", "category", "parent", "box", "box_normalized"]
ADD_LABEL_FIELDS = ["memory", "labels", "category", "parent"]

# command: (help, request model, the API method, the renderer of its result)
OPERATIONS: dict[str, tuple[str, type[Request], str, Callable[[Any], str]]] = {
    "retrieve": ("the k best distinct labels for an image", RetrieveRequest, "retrieve", render.render_candidates),
    "rank": (
        "order candidate labels for an image with the MLLM",
        RankCandidatesRequest,
        "rank",
        render.render_ranking,
    ),
    "recognize": ("retrieve then rank: RAR in one step", RecognizeRequest, "recognize", render.render_recognition),
    "recognize-regions": (
        "recognise many boxes of one image at once",
        RecognizeRegionsRequest,
        "recognize_regions",
        render.render_regions,
    ),
    "detect": (
        "box proposals for text queries from the open-vocabulary detector",
        DetectRequest,
        "detect",
        render.render_detections,
    ),
    "memories": ("list memories with their counts", ListRequest, "list_memories", render.render_memories),
    "remove": (
        "remove entries by id and/or label",
        RemoveRequest,
        "remove",
        lambda r: f"removed {r.removed} entries; {r.count} left in {r.memory!r}",
    ),
    "segment": (
        "label masks without training (CLIP as RNN)",
        SegmentRequest,
        "segment",
        render.render_segmentation,
    ),
    "describe-regions": (
        "caption, attributes and a proposed label per box, from the MLLM",
        DescribeRegionsRequest,
        "describe_regions",
        render.render_descriptions,
    ),
    "delete": (
        "delete a whole memory with its exemplar copies (cannot be undone)",
        DeleteRequest,
        "delete_memory",
        lambda r: r.message,
    ),
    **UPKEEP_OPERATIONS,
}
# command: its extra flags, and what runs once its result is printed (request, result)
AFTERWARDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[..., None]]] = {
    "segment": (add_mask_flags, write_masks),
}


# -- commands ---------------------------------------------------------------------------------
def cmd_serve(tools, args) -> None:
    from rar_tools.serving import serve

    serve(tools)


def cmd_operation(tools, args) -> None:
    """Any command of `OPERATIONS`: its flags become the request, the API runs it."""
    _, request_type, method, show = OPERATIONS[args.command]
    request = request_type.from_call(**request_arguments(args, request_type, request_type.fields_on("cli")))
    result = call_operation(getattr(tools, method), request, args.command, args.json)
    emit(result, args.json, show)
    if args.command in AFTERWARDS:
        AFTERWARDS[args.command][1](tools, args, request, result)


def cmd_add(tools, args) -> None:
    if args.folder and args.box:
        raise RarToolsError("--box goes with IMAGE...: a folder's images have no common region")
    if args.folder:
        from rar_tools.cli_folder import add_folder

        result = add_folder(tools, args.memory, Path(args.folder), args.category, args.parent, args.json)
        if args.json:
            print(result.model_dump_json(indent=2))
        return
    if not args.images or not args.label:
        raise RarToolsError("give IMAGE... with --label LABEL, or --folder DIR")
    result = tools.add_images(**request_arguments(args, AddRequest, ADD_FIELDS))
    emit(result, args.json, lambda r: r.message)


def cmd_add_labels(tools, args) -> None:
    rows = [(label, args.category, args.parent) for label in args.labels or []]
    if args.file:
        rows += read_label_file(Path(args.file))
    if args.vocabulary:
        rows += read_label_file(vocabulary_file(args.vocabulary))
    if not rows:
        raise RarToolsError("give LABEL..., --file FILE and/or --vocabulary NAME")
    result = tools.add_labels(args.memory, [r[0] for r in rows], hierarchy=[(r[1], r[2]) for r in rows])
    emit(result, args.json, lambda r: r.message)


def cmd_vocabularies(tools, args) -> None:
    for name, path in vocabularies().items():
        count = len(read_label_file(path))
        print(f"{name}: {count} labels ({path})")


def cmd_eval(tools, args) -> None:
    if args.task != "classify":
        eval_task(tools, args)
        return
    from rar_tools.evaluation import EvalConfig, RunOptions, evaluate, load_dataset
    from rar_tools.evaluation.protocol import QUERIES_FILE

    dataset = load_dataset(args.dataset, args.format, args.split_ratio, args.seed, args.label_from_name)
    if args.name:
        dataset = replace(dataset, name=args.name)
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
    with stop_on_interrupt() as stop:
        options = RunOptions(resume=args.resume, overwrite=args.overwrite, keep_memory=keep, stop=stop)
        report, paths = evaluate(tools.settings, dataset, config, out, options)
    show_report(report, {**paths, "queries": out / QUERIES_FILE}, args.json)


def show_report(report: Any, paths: dict[str, Path], as_json: bool) -> None:
    """An evaluation report: its warnings on stderr, then the JSON, or the Markdown and the files written."""
    for warning in [report.warning, *getattr(report, "shot_warnings", [])]:
        if warning:
            print(f"rar-tools: {warning}", file=sys.stderr)
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def eval_task(tools, args) -> None:
    """`eval --task segment` (mIoU on ground-truth masks) or `--task describe` (format and fallback rates)."""
    out = Path(args.out) if args.out else Path("rar-eval") / Path(args.dataset).name
    if args.task == "segment":
        from rar_tools.evaluation.segmentation import evaluate_segmentation

        report, paths = evaluate_segmentation(tools, Path(args.dataset), out, args.limit)
    else:
        from rar_tools.evaluation.description import evaluate_descriptions

        report, paths = evaluate_descriptions(tools, Path(args.dataset), out, args.views, args.limit)
    show_report(report, paths, args.json)


def add_eval_flags(sub: argparse.ArgumentParser) -> None:
    from rar_tools.evaluation import METHODS

    sub.add_argument(
        "dataset",
        help="an ImageFolder tree, a CUB-layout folder, or a CSV of path,label[,split]; for --task segment "
        "images/ + masks/<name>/<label>.png; for --task describe images (+ boxes.json)",
    )
    sub.add_argument(
        "--task",
        choices=["classify", "segment", "describe"],
        default="classify",
        help="classify: RAR's few-shot protocol (default); segment: mIoU of `segment`; describe: answer-format "
        "and fallback rates of `describe_regions`",
    )
    sub.add_argument("--views", type=int, default=2, help="--task describe: views per region (1-5)")
    sub.add_argument("--format", choices=["auto", "folder", "cub", "csv"], default="auto")
    sub.add_argument("--split-ratio", type=float, help="train fraction per class, for data without a split")
    sub.add_argument(
        "--label-from-name",
        metavar="REGEX",
        help="a folder of images without label subfolders: each label is REGEX's first group (or group 'label') "
        "in the file name, e.g. '^(.+?)_[0-9]+$' for Blue_Jay_0001.jpg (with --split-ratio)",
    )
    sub.add_argument("--name", help="the data set's name in the report (default: its folder's name)")
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


def cmd_token(tools, args) -> None:
    """Make a bearer token for `serve --transport http --auth-token-file FILE`."""
    from rar_tools.http_auth import create_token

    path = tools.settings.auth_token_file
    if path is None:
        raise RarToolsError("give --auth-token-file FILE: the file the server reads the token hashes from")
    token = create_token(Path(path), args.read_only)
    kind = "read-only token" if args.read_only else "token"
    print(f"rar-tools: added a {kind} to {path}; it is shown only now, keep it secret:", file=sys.stderr)
    print(token)


def cmd_bench(tools, args) -> None:
    from rar_tools.bench import run_bench
    from rar_tools.bench.config import config_from

    run_bench(config_from(args))


def cmd_selfcheck(tools, args) -> int:
    from rar_tools.bench.selfcheck import run_selfcheck
    from rar_tools.bench.selfcheck_config import selfcheck_config_from

    return run_selfcheck(selfcheck_config_from(args))


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

    serve = command("serve", cmd_serve, "run the MCP server (stdio by default)", json_flag=False)
    serve.add_argument(
        "folders",
        nargs="*",
        metavar="FOLDER",
        help="read image paths only inside these folders (the same as --allow-dir FOLDER for each)",
    )

    add = command("add", cmd_add, "store labelled exemplar images")
    add_request_flags(add, AddRequest, ADD_FIELDS)
    add.add_argument("--folder", help="a folder with one subfolder of images per label")

    labels = command("add-labels", cmd_add_labels, "store label texts for zero-shot retrieval")
    add_request_flags(labels, AddRequest, ADD_LABEL_FIELDS)
    labels.add_argument("--file", help="one label per line, optionally label|category|parent")
    labels.add_argument("--vocabulary", help="a shipped label list by name (see `rar-tools vocabularies`)")

    for name, (help_text, request_type, _, _) in OPERATIONS.items():
        sub = command(name, cmd_operation, help_text)
        add_request_flags(sub, request_type, request_type.fields_on("cli"))
        if name in AFTERWARDS:
            AFTERWARDS[name][0](sub)

    command("vocabularies", cmd_vocabularies, "list the shipped label lists (for add-labels --vocabulary)", False)
    token = command(
        "token", cmd_token, "make a bearer token for the HTTP transport (its hash goes to --auth-token-file)", False
    )
    token.add_argument("--read-only", action="store_true", help="the token may call only the read-only tools")
    evaluation = command(
        "eval",
        cmd_eval,
        "measure accuracy on a labelled image set with RAR's few-shot protocol "
        "(memories go to a temporary folder, never to --data-dir)",
    )
    add_eval_flags(evaluation)

    from rar_tools.cli_finetune import add_finetune_commands

    add_finetune_commands(command)

    from rar_tools.bench.config import add_arguments

    bench = command(
        "bench",
        cmd_bench,
        "time encoding, adding, retrieval at scale, ranking modes and whole tool calls",
        json_flag=False,
        settings_flags=False,
    )
    add_arguments(bench)

    from rar_tools.bench.selfcheck_config import add_selfcheck_arguments

    selfcheck = command(
        "selfcheck",
        cmd_selfcheck,
        "check and time real-size models with random weights on a device (GPU): CLIP fp16 vs fp32, score "
        "mode cached vs uncached, generate mode, memory, throughput, the out-of-memory error; exit 1 on a failure",
        json_flag=False,
        settings_flags=False,
    )
    add_selfcheck_arguments(selfcheck)
    return parser


class StderrHandler(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a record arrives, not to the stream it was at
    set-up: a caller that replaces stderr for a while (a test capturing output) and closes the
    replacement would otherwise leave every later record failing with "--- Logging error ---"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str) -> None:
    """Our messages at `level`, other libraries' at WARNING (DEBUG shows all); all on stderr."""
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if level == "DEBUG" else logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("rar_tools").setLevel(level)
    quiet_library_handlers()


def command_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command's flags (and the environment); `serve FOLDER...` adds allowed folders."""
    if getattr(args, "folders", None):
        args.allow_dir = [*getattr(args, "allow_dir", []), *args.folders]
    return settings_from(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.uses_settings:  # `bench` and `selfcheck` build their own settings from their flags
        configure_logging("INFO")
        return run_command(args, None)
    try:
        settings = command_settings(args)
    except ValidationError as exc:
        print(f"rar-tools: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from rar_tools.api import RarTools

    with RarTools(settings) as tools:  # closed after: main() may run in a process that goes on
        return run_command(args, tools)


def run_command(args: argparse.Namespace, tools) -> int:
    """Run the chosen command. Errors meant for the user become one line on stderr and exit code 2;
    Ctrl-C one line saying how far the work got, and 130; a reader that went away (`... | head`)
    nothing more, and 141."""
    try:
        status = args.func(tools, args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
    except RarToolsError as exc:
        print(f"rar-tools: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"rar-tools: {exc.message}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:
        print("rar-tools: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except BrokenPipeError:
        quiet_stdout()
        return BROKEN_PIPE_EXIT
    return status or 0


def quiet_stdout() -> None:
    """Point stdout at the null device: its reader is gone, and the interpreter's last flush must not
    complain about it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
