"""The memory upkeep methods of the `RarTools` facade (docs/portability.md): export, import,
re-embed, and the tidying ones. A base class of `RarTools`, which sets up `upkeep`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rar_tools import requests_upkeep as upkeep_req
from rar_tools import schemas_upkeep as upkeep_res
from rar_tools.request_base import takes

if TYPE_CHECKING:
    from rar_tools.services.upkeep import UpkeepService


class UpkeepCalls:
    """Export, import, re-embed; duplicates, conflicts, relabel."""

    upkeep: UpkeepService

    @takes(upkeep_req.ExportRequest)
    def export(self, request: upkeep_req.ExportRequest) -> upkeep_res.ExportResult:
        """Write a memory, with its exemplar images, to a .rar-memory archive."""
        return self.upkeep.export(request)

    @takes(upkeep_req.ImportRequest, progress=True)
    def import_memory(self, request: upkeep_req.ImportRequest, progress=None) -> upkeep_res.ImportResult:
        """Store the memory of a .rar-memory archive, after checking all of it."""
        return self.upkeep.import_archive(request, progress)

    @takes(upkeep_req.ReembedRequest, progress=True)
    def reembed(self, request: upkeep_req.ReembedRequest, progress=None) -> upkeep_res.ReembedResult:
        """Re-encode a memory with the loaded CLIP encoder (resumable)."""
        return self.upkeep.reembed(request, progress)

    @takes(upkeep_req.DuplicatesRequest)
    def find_duplicates(self, request: upkeep_req.DuplicatesRequest) -> upkeep_res.DuplicatesResult:
        """Near-identical exemplar images, within and across labels."""
        return self.upkeep.duplicates(request)

    @takes(upkeep_req.ConflictsRequest)
    def find_conflicts(self, request: upkeep_req.ConflictsRequest) -> upkeep_res.ConflictsResult:
        """Exemplar images whose nearest exemplars mostly carry another label."""
        return self.upkeep.conflicts(request)

    @takes(upkeep_req.RelabelRequest)
    def relabel(self, request: upkeep_req.RelabelRequest) -> upkeep_res.RelabelResult:
        """Move entries to another label (idempotent)."""
        return self.upkeep.relabel(request)
