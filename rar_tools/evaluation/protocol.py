"""RAR's few-shot protocol on a labelled image set.

For every shot count n, an image memory of n seeded train images per class; a text memory of the
class names for zero-shot; the test split (or a seeded subset) as queries. Each query image is
decoded and encoded once, and its embedding serves every method and shot count; the memory images
are encoded once, in batches, for the largest shot count and reused for the smaller ones (the
shot sets nest). Methods:

- `clip-zero-shot`: image-to-text retrieval over the class names, top-1.
- `clip-knn`: image-to-image retrieval over the n-shot memory, top-1 of the distinct labels.
- `rar`: the k labels retrieved from the n-shot memory, ranked by the MLLM (as in the paper).
- `oracle@k`: whether the true label is among those k: the ceiling for any ranker.

Memories live in a temporary store (or `keep_memory`), never in the user's data folder. Every
answer is appended to `queries.jsonl` at once, so a stopped run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rar_tools.api import RarTools
from rar_tools.encoder import EncoderIdentity
from rar_tools.errors import ImageInputError
from rar_tools.evaluation.config import RANKED, ZERO_SHOT, ZERO_SHOT_SHOTS, EvalConfig, RunOptions
from rar_tools.evaluation.datasets import Dataset, LabelledImage, prompt_names
from rar_tools.evaluation.metrics import MethodFigures, summarise
from rar_tools.evaluation.records import EvaluationError, QueryRecord, RecordLog
from rar_tools.evaluation.sampling import by_label, few_shot, query_subset
from rar_tools.limits import MIN_CANDIDATES, Fallback, RetrievalMode
from rar_tools.memory import MemoryStore, NewEntry
from rar_tools.settings import Settings

log = logging.getLogger(__name__)
QUERIES_FILE = "queries.jsonl"
# Settings that change an answer: a resumed run must match the stopped one in all of them.
ANSWER_SETTINGS = (
    "clip_model",
    "clip_pretrained",
    "templates",
    "label_score",
    "stored_image_side",
    "ranker_model",
    "ranker_url",
    "ranker_api_model",
    "ranker_max_new_tokens",
    "ranker_image_side",
    "score_normalisation",
    "rank_permutations",
    "ranker_adapter",
)


@dataclass(frozen=True)
class Encoded:
    """One image's CLIP embedding, the sha256 of its file and the seconds it took (decode + encode)."""

    embedding: np.ndarray
    sha256: str
    seconds: float


@dataclass
class RunOutcome:
    """What a run produced: the figures, the models that made them, and how the work went."""

    figures: list[MethodFigures]
    encoder: EncoderIdentity
    device: str
    ranker_name: str | None
    queries: int
    skipped: dict[str, str] = field(default_factory=dict)
    memory_images: int = 0
    memory_encode_s: float = 0.0
    started_at: str = ""
    wall_s: float = 0.0


@contextlib.contextmanager
def evaluation_store(keep_memory: Path | None) -> Iterator[Path]:
    """The folder for the evaluation's memories: `keep_memory`, or a temporary one deleted afterwards."""
    if keep_memory is not None:
        keep_memory.mkdir(parents=True, exist_ok=True)
        yield keep_memory
        return
    with tempfile.TemporaryDirectory(prefix="rar-tools-eval-", ignore_cleanup_errors=True) as folder:
        yield Path(folder)


def run_identity(settings: Settings, dataset: Dataset, config: EvalConfig) -> dict[str, Any]:
    """Everything that decides an answer (not shots, limit or methods, which only select work)."""
    return {
        "dataset": dataset.fingerprint(),
        "seed": config.seed,
        "shot_sampler": config.shot_sampler,
        "k": config.k,
        "rank_mode": config.rank_mode,
        "icl": config.icl,
        "settings": {name: getattr(settings, name) for name in ANSWER_SETTINGS},
    }


class Evaluation:
    """One run: the tools on an evaluation store, the data set, the configuration and the record log."""

    def __init__(self, tools: RarTools, dataset: Dataset, config: EvalConfig, log: RecordLog, options: RunOptions):
        self.tools = tools
        self.dataset = dataset
        self.config = config
        self.log = log
        self.progress = options.progress
        self.stop = options.stop
        self.planned = 0  # answers this run computes
        self.label_of = prompt_names(dataset.labels)  # prompt name -> label as given
        self.name_of = {label: name for name, label in self.label_of.items()}
        self.slug = re.sub(r"[^A-Za-z0-9]+", "-", dataset.name).strip("-")[:32] or "data"
        self.computed: Counter[tuple[str, int]] = Counter()
        self.skipped: dict[str, str] = {}
        self.memory_images = 0
        self.memory_encode_s = 0.0

    def bar(self, total: int, desc: str) -> tqdm:
        """A progress bar on stderr: shown on a terminal unless `progress` says otherwise."""
        disable = None if self.progress is None else not self.progress
        return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=disable)

    def check_stop(self) -> None:
        """Raise `Interrupted` at this safe point if Ctrl-C asked for a stop."""
        if self.stop is not None:
            self.stop.check(sum(self.computed.values()), self.planned, "answers", " with --resume")

    def summarise_shots(self, shots: int, queries: Sequence[LabelledImage]) -> None:
        """One log line with each method's top-1 accuracy at `shots` (0: zero-shot)."""
        methods = [m for m, n in self.config.groups() if n == shots]
        records = [
            self.log.records[(m, shots, q.id)] for m in methods for q in queries if self.log.has((m, shots, q.id))
        ]
        parts = [f"{f.method} {100 * f.top1:.1f}%" for f in summarise(records, self.config.k)]
        what = "zero-shot" if shots == ZERO_SHOT_SHOTS else f"{shots}-shot"
        log.info("%s top-1: %s (%d queries)", what, ", ".join(parts) or "no answers", len(queries))

    # -- planning --------------------------------------------------------------------------
    def todo(self, queries: Sequence[LabelledImage], method: str, shots: int) -> list[LabelledImage]:
        """The queries that `method` at `shots` has no record for yet."""
        return [q for q in queries if not self.log.has((method, shots, q.id))]

    def run(self) -> RunOutcome:
        """Compute every missing record, then summarise the records of this configuration."""
        started, start_time = datetime.now(timezone.utc), time.perf_counter()
        config = self.config
        queries = query_subset(self.dataset.test, config.limit, config.seed)
        todo = {(m, n): self.todo(queries, m, n) for m, n in config.groups()}
        if any(queries_left for (method, _), queries_left in todo.items() if method in RANKED):
            self.tools.ensure_ranker()  # no ranker: fail before any work
        pending = {q.id for group in todo.values() for q in group}
        self.planned = sum(len(group) for group in todo.values())
        vectors = self.encode([q for q in queries if q.id in pending], "encoding queries")
        if todo.get((ZERO_SHOT, ZERO_SHOT_SHOTS)):
            self.zero_shot(todo[(ZERO_SHOT, ZERO_SHOT_SHOTS)], vectors)
            self.summarise_shots(ZERO_SHOT_SHOTS, queries)
        shots_todo = [n for n in config.shots if any(todo[(m, n)] for m in config.image_methods)]
        if shots_todo:
            pool = self.encode(
                few_shot(self.dataset.train, max(shots_todo), config.seed, config.shot_sampler),
                "encoding memory images",
            )
            self.memory_images = len(pool)
            self.memory_encode_s = sum(e.seconds for e in pool.values())
            for n in shots_todo:
                todo_n = {q.id for m in config.image_methods for q in todo[(m, n)]}
                self.n_shot(n, [q for q in queries if q.id in todo_n], vectors, pool)
                self.summarise_shots(n, queries)
        records = [
            self.log.records[(m, n, q.id)] for m, n in config.groups() for q in queries if self.log.has((m, n, q.id))
        ]
        return RunOutcome(
            figures=summarise(records, config.k, dict(self.computed)),
            encoder=self.tools.encoder.identity,
            device=self.tools.encoder.device,
            ranker_name=self.tools.ranker.name if "rar" in config.methods else None,
            queries=len(queries),
            skipped=self.skipped,
            memory_images=self.memory_images,
            memory_encode_s=self.memory_encode_s,
            started_at=started.isoformat(timespec="seconds"),
            wall_s=time.perf_counter() - start_time,
        )

    # -- encoding ----------------------------------------------------------------------------
    def encode(self, items: Sequence[LabelledImage], desc: str) -> dict[str, Encoded]:
        """Decode and encode images in the encoder's batches; unreadable images are skipped and noted."""
        encoder, found = self.tools.encoder, {}
        with self.bar(len(items), desc) as bar:
            for start in range(0, len(items), encoder.batch_size):
                self.check_stop()
                batch = items[start : start + encoder.batch_size]
                began = time.perf_counter()
                loaded = {}
                for item in batch:
                    try:
                        loaded[item.id] = self.tools.load(item.path)
                    except ImageInputError as exc:
                        self.skipped[item.id] = str(exc)
                if loaded:
                    embeddings = encoder.encode_images([image.image for image in loaded.values()])
                    seconds = (time.perf_counter() - began) / len(loaded)
                    for (item_id, image), vector in zip(loaded.items(), embeddings):
                        found[item_id] = Encoded(vector, image.sha256, seconds)
                bar.update(len(batch))
        return found

    # -- memories ----------------------------------------------------------------------------
    def fresh_memory(self, name: str) -> str:
        """`name`, emptied: an evaluation memory left by an earlier run is rebuilt, never mixed in."""
        if self.tools.store.exists(name):
            self.tools.store.drop(name)
        return name

    def text_memory(self) -> str:
        memory = self.fresh_memory(f"eval-{self.slug}-zeroshot")
        self.tools.add_labels(memory, list(self.label_of))
        return memory

    def image_memory(self, shots: int, pool: dict[str, Encoded]) -> str:
        memory = self.fresh_memory(f"eval-{self.slug}-seed{self.config.seed}-{shots}shot")
        chosen = [
            item
            for item in few_shot(self.dataset.train, shots, self.config.seed, self.config.shot_sampler)
            if item.id in pool
        ]
        entries = [
            NewEntry(
                label=self.name_of[item.label],
                kind="image",
                sha256=pool[item.id].sha256,
                embedding=pool[item.id].embedding,
                source=item.path,
            )
            for item in chosen
        ]
        if not entries:
            raise EvaluationError(f"no readable train image for the {shots}-shot memory")
        self.tools.add_entries(memory, entries)
        return memory

    # -- queries -----------------------------------------------------------------------------
    def retrieve(self, memory: str, vector: Encoded, mode: RetrievalMode) -> tuple[list[str], dict[str, float]]:
        """Prompt names retrieved, best first, and the stage timings so far."""
        result = self.tools.retrieve_embedding(memory, vector.embedding, self.config.retrieved_per_query, mode)
        names = [c.label for c in result.candidates]
        return names, {"encode_s": vector.seconds, "retrieve_s": result.timings["search_s"], "rank_s": 0.0}

    def record(
        self,
        method: str,
        shots: int,
        query: LabelledImage,
        names: list[str],
        timings: dict[str, float],
        ranked: list[str] | None = None,
        fallback: Fallback | None = None,
    ) -> None:
        """Append one answer, with labels translated back to the data set's own spelling."""
        self.log.append(
            QueryRecord(
                method=method,
                shots=shots,
                query=query.id,
                label=query.label,
                retrieved=[self.label_of[n] for n in names],
                ranked=None if ranked is None else [self.label_of[n] for n in ranked],
                fallback=fallback,
                timings=timings,
            )
        )
        self.computed[(method, shots)] += 1

    def zero_shot(self, queries: list[LabelledImage], vectors: dict[str, Encoded]) -> None:
        memory = self.text_memory()
        for query in self.with_bar(queries, "zero-shot"):
            if query.id in vectors:
                names, timings = self.retrieve(memory, vectors[query.id], "text")
                self.record(ZERO_SHOT, ZERO_SHOT_SHOTS, query, names, timings)

    def n_shot(
        self, shots: int, queries: list[LabelledImage], vectors: dict[str, Encoded], pool: dict[str, Encoded]
    ) -> None:
        """One retrieval per query from the n-shot memory, shared by clip-knn, rar and oracle@k."""
        memory = self.image_memory(shots, pool)
        for query in self.with_bar(queries, f"{shots}-shot"):
            if query.id not in vectors:
                continue
            names, timings = self.retrieve(memory, vectors[query.id], "image")
            for method in self.config.image_methods:
                if self.log.has((method, shots, query.id)):
                    continue
                if method in RANKED:
                    self.rank_and_record(method, shots, query, names, timings)
                else:
                    self.record(method, shots, query, names, timings)

    def rank_and_record(self, method: str, shots: int, query: LabelledImage, names: list[str], timings: dict) -> None:
        """Rank the first k retrieved names with the MLLM (nothing to rank below two); for `rar` with an
        adapter loaded, with the adapter switched off."""
        candidates = names[: self.config.k]
        if len(candidates) < MIN_CANDIDATES:
            self.record(method, shots, query, names, timings, ranked=candidates)
            return
        began = time.perf_counter()
        base = self.config.adapter and method == "rar"
        with self.tools.ranker.adapter_disabled() if base else contextlib.nullcontext():
            output = self.tools.rank_loaded(
                self.tools.load(query.path), candidates, self.config.rank_mode, icl=self.config.icl
            )
        timings = {**timings, "rank_s": time.perf_counter() - began}
        ranked = [c.label for c in output.ranked]
        self.record(method, shots, query, names, timings, ranked=ranked, fallback=output.fallback)

    def with_bar(self, items: list[LabelledImage], desc: str) -> Iterator[LabelledImage]:
        with self.bar(len(items), desc) as bar:
            for item in items:
                self.check_stop()
                yield item
                bar.update(1)


def shortest_class(dataset: Dataset) -> int:
    """The fewest train images any class has (a shot count above it uses all of that class)."""
    return min(len(group) for group in by_label(dataset.train).values())


def run_evaluation(
    settings: Settings, dataset: Dataset, config: EvalConfig, out_dir: Path, options: RunOptions | None = None
) -> RunOutcome:
    """Evaluate `config` on `dataset` with the models of `settings`; records go to `out_dir`.

    The memories are built in a temporary store (or `options.keep_memory`), never in `settings.data_dir`.
    """
    config = config.with_adapter(settings.ranker_adapter is not None, settings.ranker_adapter_merge).checked()
    options = options or RunOptions()
    identity = run_identity(settings, dataset, config)
    log = RecordLog(Path(out_dir) / QUERIES_FILE, identity, options.resume, options.overwrite)
    with evaluation_store(options.keep_memory) as folder:
        tools = RarTools(settings, store=MemoryStore(folder))
        try:
            return Evaluation(tools, dataset, config, log, options).run()
        finally:
            tools.close()  # before a temporary folder goes: Chroma holds its files open until then
