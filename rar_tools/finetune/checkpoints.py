"""Fine-tuning checkpoints: `OUT/checkpoints/step-NNNNNN/` holds the adapter, the optimizer state and
`state.json` (step, losses, and what the run was: base model, data, rank, learning rate, seed).
A resumed run continues from the newest one, and refuses one made by a different run."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rar_tools.finetune.samples import FinetuneError
from rar_tools.ranking.adapters import ADAPTER_CONFIG, ADAPTER_INFO

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainState:
    """Where a run is: the steps done, each step's loss, and the run's identity (must match to resume)."""

    identity: dict[str, Any]
    step: int = 0
    losses: list[float] = field(default_factory=list)


def data_fingerprint(path: Path) -> str:
    """The sha256 of the samples file (first 16 hex digits)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def checkpoint_dirs(out: Path) -> list[Path]:
    """The checkpoint folders of `out`, oldest first."""
    folder = out / CHECKPOINTS
    found = [p for p in folder.glob("step-*") if (p / STATE_FILE).is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def prepare_out(out: Path, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: start afresh). Refuses to mix a new run into a folder that
    holds an adapter or checkpoints, unless told to resume or to overwrite."""
    found = checkpoint_dirs(out)
    if resume:
        return found[-1] if found else None
    if (found or (out / ADAPTER_CONFIG).exists()) and not overwrite:
        raise FinetuneError(
            f"{out} already holds an adapter or checkpoints: give --resume to continue that run, "
            "--overwrite to start again, or another --out"
        )
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for name in (ADAPTER_CONFIG, ADAPTER_INFO, "adapter_model.safetensors"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return None


def read_state(checkpoint: Path, identity: dict[str, Any]) -> TrainState:
    """The state in `checkpoint`; refuses one whose run differs from `identity`."""
    state = TrainState(**json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")))
    differing = sorted(key for key in identity if state.identity.get(key) != identity[key])
    if differing:
        raise FinetuneError(
            f"the checkpoint {checkpoint} was made by another run (it differs in {', '.join(differing)}): "
            "resume with the same data and flags, or start again with --overwrite"
        )
    return state


def save_checkpoint(out: Path, model: Any, optimizer: Any, state: TrainState) -> Path:
    """Write the adapter, optimizer and state of `state.step`, then keep only the newest checkpoints.
    The folder appears complete or not at all (written under a temporary name, then renamed)."""
    import torch

    final = out / CHECKPOINTS / f"step-{state.step:06d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    torch.save(optimizer.state_dict(), partial / OPTIMIZER_FILE)
    (partial / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in checkpoint_dirs(out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(checkpoint: Path, model: Any, optimizer: Any) -> None:
    """Put the adapter weights and optimizer state of `checkpoint` into `model` and `optimizer`."""
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    set_peft_model_state_dict(model, load_peft_weights(str(checkpoint), device=str(model.device)))
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE, map_location=model.device))
