"""LoRA adapters on a local ranker model: how `--ranker-adapter` loads one (`rar-tools finetune` trains
them, `rar_tools.finetune`), merged into the weights or kept switchable (for `eval`'s with/without
comparison).

peft is optional (`pip install 'rar-tools[finetune]'`); it is imported by the calls that need it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rar_tools.errors import ModelLoadError
from rar_tools.jsontext import parse_json

log = logging.getLogger(__name__)

PEFT_MISSING = (
    "LoRA fine-tuning and --ranker-adapter need the peft package: pip install 'rar-tools[finetune]' "
    "(or pip install peft)"
)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_INFO = "rar_tools_adapter.json"  # what `finetune` trained: base model, data, steps, losses


def require_peft(error: type[Exception] = ModelLoadError) -> Any:
    """The peft module, or `error` saying how to install it."""
    try:
        import peft
    except ImportError:
        raise error(PEFT_MISSING) from None
    return peft


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the FutureWarning peft triggers by asking transformers a deprecated question (nothing a user
    can act on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def is_adapter_folder(folder: Path) -> bool:
    """Whether `folder` holds a peft adapter (its adapter_config.json)."""
    return (Path(folder).expanduser() / ADAPTER_CONFIG).is_file()


def load_adapter(model: Any, folder: str | Path, merge: bool, base_name: str) -> tuple[Any, Any]:
    """`model` with the adapter in `folder` applied, and the peft wrapper that switches it off
    (None once merged into the weights). The LoRA layers go into `model` itself, so it keeps its
    own class, attributes and forward."""
    path = Path(folder).expanduser()
    if not is_adapter_folder(path):
        raise ModelLoadError(
            f"the ranker adapter folder {str(folder)!r} holds no {ADAPTER_CONFIG}: give the --out folder of "
            "`rar-tools finetune` (or another peft LoRA adapter)"
        )
    peft = require_peft()
    check_base(path, base_name, model.config.model_type)
    try:
        with quiet_peft():
            wrapped = peft.PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except Exception as exc:  # a wrong base model, a damaged file: one actionable message
        raise ModelLoadError(
            f"could not load the ranker adapter {str(path)!r} onto {base_name!r} ({type(exc).__name__}: {exc}); "
            "an adapter only fits the base model it was trained on"
        ) from exc
    if merge:
        return wrapped.merge_and_unload().eval(), None
    return model.eval(), wrapped


def check_base(path: Path, base_name: str, family: str) -> None:
    """Refuse an adapter that `finetune` trained on another model family than `family` (its layers may
    have the same names and shapes, and load without a word); warn when only the base's name differs
    (a hub id and a local copy of one model are both fine)."""
    try:
        info = parse_json((path / ADAPTER_INFO).read_text(encoding="utf-8"))
        trained_on, trained_family = info["base_model"], info.get("model_type", family)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if trained_family != family:
        raise ModelLoadError(
            f"the ranker adapter {str(path)!r} was trained on {trained_on!r} (a {trained_family} model), not on "
            f"a {family} model like {base_name!r}: an adapter only fits the base model it was trained on"
        )
    if trained_on != base_name:
        log.warning("the adapter %s was trained on %r, not on the ranker model %r", path, trained_on, base_name)
