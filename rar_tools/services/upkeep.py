"""Memory upkeep: moving memories (export, import, re-embed with another encoder) and tidying them
(near duplicates, likely mislabelled exemplars, relabelling)."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from rar_tools.components import Components
from rar_tools.errors import MemoryStoreError
from rar_tools.limits import MAX_CURATION_EXEMPLARS
from rar_tools.requests import ProgressFn
from rar_tools.requests_upkeep import (
    ConflictsRequest,
    DuplicatesRequest,
    ExportRequest,
    ImportRequest,
    ReembedRequest,
    RelabelRequest,
)
from rar_tools.schemas import EncoderInfo
from rar_tools.schemas_upkeep import (
    Conflict,
    ConflictsResult,
    DuplicatePair,
    DuplicatesResult,
    ExportResult,
    ImportResult,
    ReembedResult,
    RelabelResult,
)
from rar_tools.services.memory import text_sha

if TYPE_CHECKING:
    from rar_tools.encoder import ClipEncoder
    from rar_tools.memory import MemoryStore, NewEntry
    from rar_tools.memory.curation import Exemplars

log = logging.getLogger(__name__)
REEMBED_CHUNK = 64  # entries encoded and stored at a time: what a kill can lose


def staging_name(memory: str) -> str:
    """The memory a re-embed writes before it replaces `memory`."""
    return f"{memory[:54]}.reembed"


def absolute(path: str) -> Path:
    return Path(path).expanduser().absolute()


class UpkeepService:
    """Export, import, re-embed; duplicates, conflicts, relabel."""

    def __init__(self, components: Components) -> None:
        self.components = components

    # -- moving memories -------------------------------------------------------------------------
    def export(self, request: ExportRequest) -> ExportResult:
        """Write a memory to a .rar-memory archive."""
        from rar_tools.memory.transfer import export_memory

        target = absolute(request.path)
        manifest = export_memory(self.components.store, request.memory, target)
        counts = manifest["counts"]
        return ExportResult(
            memory=request.memory,
            path=str(target),
            entries=counts["entries"],
            images=counts["images"],
            bytes=target.stat().st_size,
            encoder=EncoderInfo(**manifest["encoder"]),
            message=f"exported {counts['entries']} entries and {counts['images']} exemplar files to {target}",
        )

    def import_archive(self, request: ImportRequest, progress: ProgressFn | None = None) -> ImportResult:
        """Store an archive's memory, after checking all of it."""
        from rar_tools.memory.archive_reader import MemoryArchive
        from rar_tools.memory.transfer import import_memory

        with MemoryArchive(absolute(request.path)) as archive:
            outcome = import_memory(self.components.store, archive, request.as_name, progress)
            encoder = EncoderInfo(**asdict(archive.identity))
        message = f"imported {outcome.added} new entries into memory {outcome.memory!r}"
        if outcome.already_present:
            message += f"; {outcome.already_present} already present, not stored again"
        return ImportResult(**asdict(outcome), encoder=encoder, message=message)

    def reembed(self, request: ReembedRequest, progress: ProgressFn | None = None) -> ReembedResult:
        """Re-encode a memory's entries with the loaded encoder, into `as_name` or a staging memory
        that replaces the memory once complete. Entries already written (by an interrupted run) are
        not encoded again."""
        from rar_tools.memory.moves import replace

        store, encoder = self.components.store, self.components.encoder
        name = request.memory
        if request.as_name == name:
            raise MemoryStoreError("--as names the memory itself: leave it out to replace the memory")
        target = request.as_name or staging_name(name)
        if not store.exists(name) and request.as_name is None and store.exists(target):
            replace(store, name, target)  # a run killed between dropping the old memory and renaming
            return self._reembedded(name, name, 0, 0, True)
        store.require(name)
        if request.as_name is None and store.summary(name).encoder == encoder.identity:
            raise MemoryStoreError(f"memory {name!r} is already filled by the loaded encoder; nothing to re-embed")
        store.check_writable(f"re-embedding memory {name!r}")
        final = request.as_name or name
        encoded = done_before = 0
        total = store.count(name)
        for _, metadatas in store.index.pages(store.index.get(name), REEMBED_CHUNK):
            entries = [reembedded(metadata, encoder.templates) for metadata in metadatas]
            todo = not_yet_written(store, target, final, entries)
            if todo:
                store.add(target, encoder.identity, self._encoded(store, encoder, todo), ids_for=final)
            encoded, done_before = encoded + len(todo), done_before + len(entries) - len(todo)
            if progress:
                progress(encoded + done_before, total)
        if request.as_name is None:
            replace(store, name, target)
        return self._reembedded(name, final, encoded, done_before, request.as_name is None)

    def _encoded(self, store: MemoryStore, encoder: ClipEncoder, entries: list[NewEntry]) -> list[NewEntry]:
        """The entries with their new embeddings: images from their stored copies, texts through
        the templates."""
        images = [e for e in entries if e.kind == "image"]
        texts = [e for e in entries if e.kind == "text"]
        pictures = [load_copy(store, e) for e in images]
        vectors = list(encoder.encode_images(pictures)) if pictures else []
        vectors += list(encoder.encode_labels([e.label for e in texts])) if texts else []
        return [replace(e, embedding=v) for e, v in zip(images + texts, vectors)]

    def _reembedded(self, name: str, final: str, encoded: int, before: int, replaced: bool) -> ReembedResult:
        store, identity = self.components.store, self.components.encoder.identity
        where = "replaced it" if replaced else f"wrote memory {final!r}"
        return ReembedResult(
            memory=name,
            written_to=final,
            encoder=EncoderInfo(**asdict(identity)),
            encoded=encoded,
            already_done=before,
            count=store.count(final),
            replaced=replaced,
            message=f"re-encoded {encoded} entries of memory {name!r} with CLIP {identity.describe()} and {where}",
        )

    # -- tidying memories ------------------------------------------------------------------------
    def _exemplars(self, memory: str) -> Exemplars:
        from rar_tools.memory.curation import read_exemplars

        store = self.components.store
        held = store.summary(memory).kind_counts.get("image", 0)
        if held > MAX_CURATION_EXEMPLARS:
            raise MemoryStoreError(
                f"memory {memory!r} holds {held} exemplar images; comparing all pairs is limited to "
                f"{MAX_CURATION_EXEMPLARS}: export it and tidy it in parts"
            )
        return read_exemplars(store.index, store.index.get(memory))

    def duplicates(self, request: DuplicatesRequest) -> DuplicatesResult:
        """Pairs of exemplar images at least `threshold` similar, most similar first."""
        from rar_tools.memory.curation import near_duplicates

        found = self._exemplars(request.memory)
        pairs = near_duplicates(found, request.threshold)
        shown = [
            DuplicatePair(
                first_id=found.ids[p.first],
                first_label=found.labels[p.first],
                second_id=found.ids[p.second],
                second_label=found.labels[p.second],
                similarity=p.similarity,
                same_label=found.labels[p.first] == found.labels[p.second],
            )
            for p in pairs[: request.max_results]
        ]
        return DuplicatesResult(
            memory=request.memory,
            threshold=request.threshold,
            scanned=len(found.ids),
            pairs=shown,
            truncated=len(pairs) > len(shown),
        )

    def conflicts(self, request: ConflictsRequest) -> ConflictsResult:
        """Exemplars whose nearest exemplars mostly carry one other label."""
        from rar_tools.memory.curation import likely_mislabelled

        found = self._exemplars(request.memory)
        suspects = likely_mislabelled(found, request.neighbours, request.min_similarity)
        shown = [
            Conflict(
                entry_id=found.ids[s.row],
                label=found.labels[s.row],
                suggested_label=s.suggested,
                share=s.share,
                neighbour_labels=s.neighbour_labels,
            )
            for s in suspects[: request.max_results]
        ]
        return ConflictsResult(
            memory=request.memory,
            neighbours=request.neighbours,
            scanned=len(found.ids),
            conflicts=shown,
            truncated=len(suspects) > len(shown),
        )

    def relabel(self, request: RelabelRequest) -> RelabelResult:
        """Move entries to another label."""
        store = self.components.store
        from rar_tools.memory.moves import relabel

        moved, missing = relabel(
            store,
            request.memory,
            request.to_label,
            request.entry_ids or (),
            request.label,
            category=request.category,
            parent=request.parent,
        )
        return RelabelResult(
            memory=request.memory,
            label=request.to_label,
            moved=len(moved),
            entry_ids=moved,
            not_found=missing,
            count=store.count(request.memory),
        )


def reembedded(metadata: dict, templates: str) -> NewEntry:
    """The entry `metadata` describes, before its new embedding: a label text's hash follows the
    templates it is encoded with."""
    from rar_tools.memory import NewEntry

    kept = {key: metadata.get(key) for key in ("source", "image_file", "category", "parent", "added_at")}
    kind, label = metadata["kind"], metadata["label"]
    sha = metadata["sha256"] if kind == "image" else text_sha(label, templates)
    return NewEntry(label=label, kind=kind, sha256=sha, embedding=None, **kept)  # type: ignore[arg-type]


def not_yet_written(store: MemoryStore, target: str, final: str, entries: list[NewEntry]) -> list[NewEntry]:
    """The entries whose re-encoded copy memory `target` does not hold yet."""
    from rar_tools.memory import entry_id

    if not store.exists(target):
        return entries
    ids = [entry_id(final, e.kind, e.sha256, e.label) for e in entries]
    present = store.entries(target, ids)
    return [e for e, i in zip(entries, ids) if i not in present]


def load_copy(store: MemoryStore, entry: NewEntry) -> Image.Image:
    """The stored exemplar copy of an image entry, decoded."""
    path = store.files.resolve(entry.image_file or "")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise MemoryStoreError(f"the exemplar file of an entry of {entry.label!r} cannot be read ({exc})") from exc
