"""Adding to, removing from and describing memories, and reading their exemplar files."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rar_tools.components import Components
from rar_tools.errors import DiskFaultError, ExemplarFileError, ImageInputError, MemoryStoreError
from rar_tools.images import LoadedImage, pixels_sha256
from rar_tools.limits import MAX_IDS_REPORTED
from rar_tools.regions import check_box, rar_crop
from rar_tools.requests import AddRequest, DeleteRequest, ListRequest, ProgressFn, RemoveRequest
from rar_tools.schemas import (
    AddResult,
    Candidate,
    DeleteResult,
    EncoderInfo,
    MemoryInfo,
    MemoryList,
    RemoveResult,
    SkippedInput,
)
from rar_tools.validation import check_label, check_memory_name, optional_label

if TYPE_CHECKING:
    from rar_tools.memory import NewEntry

KEEP_DECODED_PIXELS = 100_000_000  # about 300 MB of RGB: decoded images kept between check and add


class MemoryService:
    """Writes and reads of the memory store, with the encoder that fills it."""

    def __init__(self, components: Components) -> None:
        self.components = components

    # -- adding --------------------------------------------------------------------------------
    def add(self, request: AddRequest, progress: ProgressFn | None = None) -> AddResult:
        """Store the request's images (or its region of each) or its label texts."""
        if request.images is not None:
            return self.add_images(request, progress)
        return self.add_labels(request)

    def add_images(self, request: AddRequest, progress: ProgressFn | None = None) -> AddResult:
        """Store labelled exemplar images. Unless `skip_unreadable`, every image is checked first and
        one bad image stores nothing. With `box`, each image's region (RAR's blurred crop, the view a
        region query is compared with) is stored instead, identified by its pixels."""
        images = request.images or []
        label = check_label(request.label)
        category, parent = optional_label(request.category, "category"), optional_label(request.parent, "parent")
        encoder, store = self.components.encoder, self.components.store
        checked = {} if request.skip_unreadable else self._load_all(request)
        store.check_writable(f"adding to memory {request.memory!r}")  # before any batch is stored
        existed = store.exists(request.memory)
        ids: list[str] = []
        added = present = 0
        skipped: list[SkippedInput] = []
        step = self.components.settings.batch_size
        for start in range(0, len(images), step):
            loaded = []
            for index in range(start, min(start + step, len(images))):
                try:
                    loaded.append(checked.pop(index, None) or self._load_exemplar(images[index], request))
                except ImageInputError as exc:
                    if not request.skip_unreadable:
                        raise
                    skipped.append(SkippedInput(source=str(images[index]), reason=str(exc)))
            if loaded:
                try:
                    outcome = store.add_images(
                        request.memory,
                        encoder.identity,
                        exemplar_images(loaded, encoder.encode_images([item.image for item in loaded])),
                        label,
                        category,
                        parent,
                        max_side=self.components.settings.stored_image_side,
                    )
                except DiskFaultError as exc:
                    raise partial_add(exc, added + present, len(images)) from exc
                added += len(outcome.added)
                present += len(outcome.already_present)
                ids += outcome.added + outcome.already_present
            if progress:
                progress(min(start + step, len(images)), len(images))
        return self._result(request.memory, "image", added, present, ids, skipped, created=added > 0 and not existed)

    def _load_exemplar(self, source: str, request: AddRequest) -> LoadedImage:
        """The image to store: the image itself, or its region's crop."""
        if request.box is None:
            return self.components.load(source)
        loaded = self.components.load(source, full_resolution=True)
        min_side = self.components.settings.min_box_side
        region = check_box(request.box, loaded.image.size, request.box_normalized, min_side)
        config = self.components.view_config
        crop = rar_crop(loaded.image, region, config.side, config.margin, config.blur_radius)
        return LoadedImage(crop, pixels_sha256(crop), loaded.source_path)

    def _load_all(self, request: AddRequest) -> dict[int, LoadedImage]:
        """Load every image first, so that one bad image stores nothing; the decoded images are kept for
        the add (by position) while they fit in KEEP_DECODED_PIXELS, not decoded twice."""
        kept: dict[int, LoadedImage] = {}
        pixels = 0
        for index, source in enumerate(request.images or []):
            loaded = self._load_exemplar(source, request)
            pixels += loaded.image.width * loaded.image.height
            if pixels <= KEEP_DECODED_PIXELS:
                kept[index] = loaded
        return kept

    def add_labels(self, request: AddRequest) -> AddResult:
        """Store label texts (zero-shot entries); `hierarchy` gives a (category, parent) pair per label."""
        from rar_tools.memory import NewEntry

        labels = [check_label(label) for label in request.labels or []]
        levels = request.hierarchy or [(request.category, request.parent)] * len(labels)
        levels = [(optional_label(c, "category"), optional_label(p, "parent")) for c, p in levels]
        encoder = self.components.encoder
        entries = [
            NewEntry(
                label=label,
                kind="text",
                sha256=text_sha(label, encoder.templates),
                embedding=embedding,
                category=c,
                parent=p,
            )
            for label, embedding, (c, p) in zip(labels, encoder.encode_labels(labels), levels)
        ]
        return self.add_entries(request.memory, entries)

    def add_entries(self, memory: str, entries: Sequence[NewEntry]) -> AddResult:
        """Store entries already embedded by the loaded encoder (all of one kind), e.g. when the caller
        encodes images once and reuses the embeddings for several memories."""
        check_memory_name(memory)
        kinds = {entry.kind for entry in entries}
        if len(kinds) != 1:
            raise MemoryStoreError("give at least one entry, all of one kind (image or text)")
        store = self.components.store
        existed = store.exists(memory)
        outcome = store.add(memory, self.components.encoder.identity, entries)
        ids = outcome.added + outcome.already_present
        added, present = len(outcome.added), len(outcome.already_present)
        return self._result(memory, kinds.pop(), added, present, ids, [], created=added > 0 and not existed)

    def _result(
        self,
        memory: str,
        kind: Literal["image", "text"],
        added: int,
        present: int,
        ids: list[str],
        skipped: list[SkippedInput],
        created: bool = False,
    ) -> AddResult:
        noun = "exemplar image" if kind == "image" else "label text"
        message = f"stored {added} new {noun}(s) in memory {memory!r}"
        if created:
            message = f"created memory {memory!r} (it did not exist); " + message.replace(f" in memory {memory!r}", "")
        if present:
            message += f"; {present} already present, not stored again"
        if skipped:
            message += f"; skipped {len(skipped)} unreadable input(s)"
        return AddResult(
            memory=memory,
            kind=kind,
            added=added,
            already_present=present,
            entry_ids=ids[:MAX_IDS_REPORTED],
            count=self.components.store.count(memory),
            skipped=skipped,
            created=created,
            message=message,
        )

    # -- removing and describing -------------------------------------------------------------------
    def remove(self, request: RemoveRequest) -> RemoveResult:
        """Remove entries by id and/or every entry of a label; a label the memory does not hold is
        refused, naming the closest labels it does hold (nothing is removed then)."""
        store = self.components.store
        if request.label is not None and not store.holds_label(request.memory, request.label):
            labels = list(store.summary(request.memory).label_counts)
            raise MemoryStoreError(unknown_label(request.memory, request.label, labels))
        removed = store.remove(request.memory, request.entry_ids, request.label)
        return RemoveResult(memory=request.memory, removed=removed, count=store.count(request.memory))

    def delete_memory(self, request: DeleteRequest) -> DeleteResult:
        """Delete a whole memory: its entries, and its exemplar copies no other memory uses."""
        removed = self.components.store.drop(request.memory)
        message = f"deleted memory {request.memory!r} with its {removed} entries"
        return DeleteResult(memory=request.memory, removed=removed, message=message)

    def list_memories(self, request: ListRequest) -> MemoryList:
        """Every memory (or the one asked for) with its counts per kind and a page of its labels."""
        store = self.components.store
        names = [request.memory] if request.memory else store.names()
        infos = [self.describe_memory(name, request.max_labels, request.cursor) for name in names]
        return MemoryList(data_dir=str(store.data_dir), memories=infos)

    def describe_memory(self, memory: str, max_labels: int = 100_000, cursor: str | None = None) -> MemoryInfo:
        """One memory's counts per kind, a page of its labels (most first) and its encoder. The
        counts come from the store's catalogue: no entry is read."""
        from rar_tools.memory.pages import label_page, labels_after

        summary = self.components.store.summary(check_memory_name(memory))
        labels, next_cursor = label_page(summary.label_counts, max_labels, cursor)
        return MemoryInfo(
            name=memory,
            count=summary.count,
            kinds=summary.kind_counts,
            labels_total=len(summary.label_counts),
            labels=labels,
            labels_truncated=next_cursor is not None,
            encoder=EncoderInfo(**asdict(summary.encoder)) if summary.encoder else None,
            next_cursor=next_cursor,
            labels_after=labels_after(summary.label_counts, next_cursor),
        )

    # -- exemplar files --------------------------------------------------------------------------
    def exemplar_file(self, memory: str, entry: str) -> Path:
        """The stored image file of one exemplar entry."""
        return self.components.store.exemplar_path(check_memory_name(memory), entry)

    def exemplar_jpeg(self, memory: str, entry: str) -> bytes:
        """The stored copy of one exemplar, checked to decode (a missing or damaged copy is refused by name)."""
        from rar_tools.memory.files import read_exemplar

        return read_exemplar(self.exemplar_file(memory, entry), f"exemplar entry {entry!r}")

    def exemplar_thumbnails(
        self, memory: str, candidates: Sequence[Candidate], max_side: int = 128, max_total_bytes: int = 400_000
    ) -> list[Thumbnail]:
        """A small JPEG of each candidate's best stored exemplar that can be shown, capped in total; a
        missing or damaged copy is skipped (the candidate's next exemplar is tried) with a note."""
        from rar_tools.memory.files import thumbnail_jpeg

        thumbs: list[Thumbnail] = []
        total = 0
        for candidate in candidates:
            found = self.components.store.entries(memory, candidate.entry_ids)
            for entry in (i for i in candidate.entry_ids if i in found and found[i].image_path):
                try:
                    data = thumbnail_jpeg(found[entry].image_path, max_side, what=f"exemplar entry {entry!r}")
                except ExemplarFileError as exc:
                    thumbs.append(Thumbnail(candidate.label, entry, None, str(exc)))
                    continue
                if total + len(data) > max_total_bytes:
                    return thumbs
                thumbs.append(Thumbnail(candidate.label, entry, data))
                total += len(data)
                break
        return thumbs


@dataclass(frozen=True)
class Thumbnail:
    """A candidate's stored exemplar as a small JPEG, or, when its stored copy cannot be shown, the
    problem instead."""

    label: str
    entry: str
    jpeg: bytes | None
    problem: str | None = None


def partial_add(exc: DiskFaultError, done: int, total: int) -> DiskFaultError:
    """The error of a batch that failed, saying how much of the call the earlier batches stored."""
    if not done:
        return exc
    return DiskFaultError(
        f"{exc}. Earlier in this call {done} of the {total} images were stored: adding the same images "
        "again stores the rest (those stored are not stored twice)"
    )


def exemplar_images(loaded: Sequence[LoadedImage], embeddings) -> list:
    """The store's description of decoded exemplars with their embeddings."""
    from rar_tools.memory import ExemplarImage

    return [
        ExemplarImage(image=item.image, sha256=item.sha256, source=item.source_path, embedding=embedding)
        for item, embedding in zip(loaded, embeddings)
    ]


def unknown_label(memory: str, label: str, labels: list[str], shown: int = 5) -> str:
    """The refusal of a label `memory` does not hold, with the closest of its `labels`."""
    close = difflib.get_close_matches(label, labels, n=shown, cutoff=0.5)
    if not close:
        close = [held for held in labels if label.lower() in held.lower() or held.lower() in label.lower()][:shown]
    hint = f"closest labels: {', '.join(map(repr, close))}" if close else f"it holds {len(labels)} other label(s)"
    return f"memory {memory!r} has no label {label!r}; {hint}. Nothing was removed"


def text_sha(label: str, templates: str) -> str:
    """The content hash of a label text entry (the templates are part of what was embedded)."""
    return hashlib.sha256(f"{templates}\x00{label}".encode()).hexdigest()
