"""`rar-tools finetune`: LoRA on a ranker model from ranking-format data (`rar-tools ranking-data`).

The model is loaded exactly as the ranker loads it (bf16 on CUDA, float32 elsewhere); LoRA (peft)
goes on the language model's attention and MLP projections (`LORA_TARGETS`), so the vision
tower and the projector stay frozen. Each sample is encoded as the ranker encodes a generate-mode
prompt (its image downscaled to `image_side`, the processor's chat template), followed by the answer
and the model's end-of-turn token; the loss covers those answer tokens only. One sample a step, in a
seeded order per epoch, AdamW at a constant learning rate, gradients clipped to norm 1.

Checkpoints every `save_every` steps (`checkpoints.py`); `resume` continues from the newest with the
same sample order, so a resumed run ends where an uninterrupted one would. The adapter is written to
`out` (`adapter_config.json`, `adapter_model.safetensors`) with `rar_tools_adapter.json`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rar_tools.finetune.checkpoints import (
    TrainState,
    data_fingerprint,
    load_checkpoint,
    prepare_out,
    read_state,
    save_checkpoint,
)
from rar_tools.finetune.data import SAMPLES_FILE
from rar_tools.finetune.samples import FinetuneError, Sample, open_sample_image, read_samples
from rar_tools.ranking.adapters import ADAPTER_INFO, quiet_peft, require_peft

IGNORED = -100  # the label of a token the loss skips
# The language model's attention and MLP projections; the vision tower (Qwen2.5-VL's also has
# gate/up/down projections) and the multimodal projector stay frozen.
LORA_TARGETS = r".*\blanguage_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class FinetuneConfig:
    """What to train: data folder (or .jsonl), adapter folder, base model and the training flags."""

    data: Path
    out: Path
    base_model: str
    device: str = "auto"
    image_side: int = 768
    max_steps: int = 1000
    lr: float = 1e-4
    rank: int = 16
    save_every: int = 100
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None  # a bar on stderr; None: only on a terminal

    def identity(self, samples_file: Path) -> dict[str, Any]:
        """What a resumed run must share with the stopped one."""
        return {
            "base_model": self.base_model,
            "data": data_fingerprint(samples_file),
            "rank": self.rank,
            "lr": self.lr,
            "seed": self.seed,
            "image_side": self.image_side,
        }


class FinetuneResult(BaseModel):
    """What a fine-tuning run produced (also in OUT/rar_tools_adapter.json)."""

    adapter: str
    base_model: str
    samples: int
    steps: int
    resumed_from: int = Field(description="the step the run continued from (0: a fresh start)")
    losses: list[float] = Field(description="each step's loss on the answer tokens, from step 1")
    trainable_parameters: int
    device: str
    seconds: float = Field(description="wall time of this run's steps")


def samples_file(data: Path) -> Path:
    """The samples: `data` itself when a .jsonl file, else `data/train.jsonl`."""
    path = data if data.suffix == ".jsonl" else data / SAMPLES_FILE
    if not path.is_file():
        raise FinetuneError(f"no ranking samples at {path}: write them with `rar-tools ranking-data --out {data}`")
    return path


def check_config(config: FinetuneConfig) -> None:
    for name in ("max_steps", "rank", "save_every"):
        if getattr(config, name) < 1:
            raise FinetuneError(f"{name} must be at least 1, got {getattr(config, name)}")
    if not config.lr > 0:
        raise FinetuneError(f"the learning rate must be positive, got {config.lr}")


def sample_order(count: int, seed: int, epoch: int) -> list[int]:
    """The order of the samples in one epoch: a seeded shuffle, the same in a resumed run."""
    return random.Random(seed * 1_000_003 + epoch).sample(range(count), count)


def end_of_turn_id(model: Any, tokenizer: Any) -> int | None:
    """The token the model ends its answer with (the first of the generation config's eos ids)."""
    eos = model.generation_config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return eos if eos is not None else tokenizer.eos_token_id


def encode_sample(ranker: Any, sample: Sample, folder: Path) -> tuple[dict, int]:
    """The model inputs of prompt + answer + end-of-turn token, with `labels` masking all but the answer
    tokens, and how many tokens the loss covers. The prompt is what the ranker's generate mode sends."""
    import torch

    from rar_tools.ranking.local import chat_messages
    from rar_tools.ranking.messages import ImagePart, TextPart, downscale
    from rar_tools.ranking.tensors import add_tokens

    image = downscale(open_sample_image(sample.image, folder), ranker.config.max_image_side)
    parts = [ImagePart(image), TextPart(sample.prompt)]
    prompt = ranker.encode_chat(chat_messages(parts, None))["input_ids"][0].tolist()
    inputs = ranker.encode_chat(chat_messages(parts, sample.answer))
    end = end_of_turn_id(ranker.model, ranker.tokenizer)
    if end is not None:
        inputs = add_tokens(inputs, torch.tensor([end], device=inputs["input_ids"].device))
    ids = inputs["input_ids"][0].tolist()
    start = next((i for i, (a, b) in enumerate(zip(prompt, ids)) if a != b), min(len(prompt), len(ids)))
    labels = inputs["input_ids"].clone()
    labels[:, :start] = IGNORED
    return {**inputs, "labels": labels}, len(ids) - start


def add_lora(model: Any, rank: int) -> Any:
    """`model` wrapped with fresh LoRA layers of `rank` on the language model's projections."""
    peft = require_peft(FinetuneError)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
    with quiet_peft():
        wrapped = peft.get_peft_model(model, config)
    if not any(p.requires_grad for p in wrapped.parameters()):
        raise FinetuneError("the ranker model has no language-model projections LoRA can train")
    return wrapped


def finetune_ranker(config: FinetuneConfig) -> FinetuneResult:
    """Train a LoRA adapter on the ranking samples of `config.data`; see the module's description."""
    import torch
    from tqdm import tqdm

    from rar_tools.ranking.base import RankerConfig
    from rar_tools.ranking.local import TransformersRanker

    check_config(config)
    require_peft(FinetuneError)
    path = samples_file(config.data)
    samples = read_samples(path)
    if not samples:
        raise FinetuneError(f"{path} holds no samples")
    checkpoint = prepare_out(config.out, config.resume, config.overwrite)
    identity = config.identity(path)
    state = read_state(checkpoint, identity) if checkpoint else TrainState(identity)
    torch.manual_seed(config.seed)
    ranker = TransformersRanker(RankerConfig(config.base_model, config.device, max_image_side=config.image_side))
    model = add_lora(ranker.model, config.rank)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    if checkpoint:
        load_checkpoint(checkpoint, model, optimizer)
    resumed_from, began = state.step, time.perf_counter()
    model.train()
    with tqdm(
        total=config.max_steps,
        initial=state.step,
        desc="fine-tuning",
        unit="step",
        file=sys.stderr,
        disable=None if config.progress is None else not config.progress,
    ) as bar:
        while state.step < config.max_steps:
            order = sample_order(len(samples), config.seed, state.step // len(samples))
            sample = samples[order[state.step % len(samples)]]
            loss = train_step(model, optimizer, trainable, *encode_sample(ranker, sample, path.parent))
            state.step += 1
            state.losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if state.step % config.save_every == 0 and state.step < config.max_steps:
                save_checkpoint(config.out, model, optimizer, state)
    result = FinetuneResult(
        adapter=str(config.out),
        base_model=config.base_model,
        samples=len(samples),
        steps=state.step,
        resumed_from=resumed_from,
        losses=state.losses,
        trainable_parameters=sum(p.numel() for p in trainable),
        device=str(ranker.model.device),
        seconds=time.perf_counter() - began,
    )
    save_checkpoint(config.out, model, optimizer, state)
    save_adapter(model, config, result, ranker.family)
    return result


def train_step(model: Any, optimizer: Any, trainable: list, inputs: dict, answer_tokens: int) -> float:
    """One optimizer step on one sample; its loss (mean over the answer tokens)."""
    import torch

    if answer_tokens < 1:
        raise FinetuneError("a sample's answer adds no tokens after its prompt: check the data's answers")
    optimizer.zero_grad(set_to_none=True)
    loss = model(**inputs, use_cache=False).loss
    if not torch.isfinite(loss):
        raise FinetuneError(f"the loss became {loss.item()}: lower --lr")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    return float(loss.detach())


def save_adapter(model: Any, config: FinetuneConfig, result: FinetuneResult, family: str) -> None:
    """The final adapter in `config.out`, with what trained it in `rar_tools_adapter.json`."""
    model.save_pretrained(config.out)
    info = {"base_model": config.base_model, "model_type": family, "rank": config.rank, "lr": config.lr}
    info["seed"] = config.seed
    info |= {"data": str(config.data), "image_side": config.image_side, **result.model_dump(exclude={"adapter"})}
    (config.out / ADAPTER_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
