"""Rank candidate labels with a local transformers multimodal LLM.

Two modes:

* ``score`` (default): the model's mean log-likelihood of each candidate as the first item of its
  answer list. The shared prompt is encoded once; all k candidates are then scored in one batched
  forward pass that reuses the prompt's KV cache.
* ``generate`` (paper-faithful): greedy decoding of the ranked list, parsed by `parse_ranking`.

Any family that `AutoProcessor` + `AutoModelForImageTextToText` load works; the prompt is built with
the processor's own chat template, and control tokens written inside candidate names are encoded
as plain text.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from rar_tools.devices import resolve_device
from rar_tools.errors import ModelLoadError, RankerError
from rar_tools.ranking.base import RankedLabel, RankerConfig, RankRequest, RankResult
from rar_tools.ranking.messages import ImagePart, Part, TextPart, image_count, ranking_parts
from rar_tools.ranking.messages import downscale as downscale  # re-exported: callers import it from here
from rar_tools.ranking.parsing import generated_ranking
from rar_tools.ranking.prompts import shown_names

ANSWER_OPENING = "["
# Families trained on one image per prompt: exemplar images are refused rather than mis-shown.
SINGLE_IMAGE_FAMILIES = frozenset({"llava", "llava_next", "paligemma"})
# Per-token processor outputs, and the value a token appended to the prompt gets in each.
PER_TOKEN_FILL = {"attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}


def load_model(model: str, device: str):
    """`(processor, model)` for a hub id or local folder: bf16 on CUDA, float32 elsewhere."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().is_dir():
        raise ModelLoadError(
            f"the ranker model folder {model!r} does not exist: give a folder holding config.json "
            "and the weights (e.g. from `hf download ID --local-dir DIR`), or a Hugging Face model id"
        )
    on_cuda = device.startswith("cuda")
    kwargs = {"dtype": torch.bfloat16 if on_cuda else torch.float32}
    if on_cuda:
        kwargs["device_map"] = device
    try:
        processor = AutoProcessor.from_pretrained(model)
        mllm = AutoModelForImageTextToText.from_pretrained(model, **kwargs)
    except torch.cuda.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"not enough GPU memory to load the ranker model {model!r} on {device}: choose a smaller "
            "model, free the GPU, or run the ranker on the CPU (device 'cpu')"
        ) from exc
    except Exception as exc:  # any load failure becomes one actionable message
        raise ModelLoadError(
            f"could not load the ranker model {model!r} ({type(exc).__name__}: {exc}). Give a local "
            "folder holding the checkpoint, or download it once while online "
            f"(`hf download {model}`); offline, set HF_HUB_OFFLINE=1 to read the Hugging Face cache"
        ) from exc
    if not on_cuda:
        mllm = mllm.to(device)
    return processor, mllm.eval()


def build_messages(request: RankRequest, names: list[str], max_side: int, opening: str | None) -> list[dict]:
    """Chat messages showing the shared ranking layout (`messages.ranking_parts`) for `names`.

    With `opening`, an assistant turn holding it follows, for the model to continue."""
    return chat_messages(ranking_parts(request, names, max_side), opening)


def chat_messages(parts: list[Part], opening: str | None) -> list[dict]:
    """`parts` as one user turn in the processor's chat-template format (images as placeholders the
    template expands), then the assistant's `opening` when given."""
    content = [chat_part(part) for part in parts]
    messages = [{"role": "user", "content": content}]
    if opening is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": opening}]})
    return messages


def chat_part(part: Part) -> dict:
    """One chat-template content item."""
    if isinstance(part, ImagePart):
        return {"type": "image", "image": part.image}
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    raise TypeError(f"not a message part: {part!r}")


def add_tokens(inputs: dict, ids: torch.Tensor, at_start: bool = False) -> dict:
    """`inputs` (batch of one) with text token `ids` prepended or appended, per-token fields kept in step."""
    out = dict(inputs)
    for key, fill in [("input_ids", None), *PER_TOKEN_FILL.items()]:
        if key not in inputs:
            continue
        old = inputs[key]
        new = ids.to(old) if fill is None else torch.full((len(ids),), fill).to(old)
        parts = [new[None], old] if at_start else [old, new[None]]
        out[key] = torch.cat(parts, dim=1)
    return out


def pad_right(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `(ids, mask)` tensors of shape (len(seqs), longest)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under each position's logits, computed in float32."""
    logits = logits.float()
    return logits.gather(-1, targets[..., None])[..., 0] - logits.logsumexp(-1)


class TransformersRanker:
    """A `Ranker` backed by a local transformers image-text-to-text model."""

    def __init__(self, config: RankerConfig):
        self.config = config
        self.name = f"transformers:{config.model}"
        self.device = resolve_device(config.device)
        self.processor, self.model = load_model(config.model, self.device)
        self.tokenizer = self.processor.tokenizer
        self.family = self.model.config.model_type
        self.multi_image = self.family not in SINGLE_IMAGE_FAMILIES
        self._lead_ids = self._leading_special_ids()
        self._lock = threading.Lock()

    # Public API -----------------------------------------------------------------------------

    def rank(self, request: RankRequest) -> RankResult:
        """Order `request.candidates` for `request.image`, best first."""
        with self._lock, torch.inference_mode():
            try:
                if request.mode == "generate":
                    return self._rank_by_generation(request)
                if request.mode == "score":
                    return self._rank_by_score(request)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise RankerError(
                    f"the GPU ran out of memory ranking {len(request.candidates)} candidates: "
                    "use fewer candidates or a smaller max_image_side"
                ) from exc
        raise RankerError(f"unknown ranking mode {request.mode!r}: use 'score' or 'generate'")

    def complete(self, parts: list[Part], max_new_tokens: int) -> str:
        """Greedy text for one user turn of `parts` (images and text), at most `max_new_tokens` tokens."""
        self._check_image_count(parts)
        with self._lock, torch.inference_mode():
            try:
                return self._generate(chat_messages(parts, None), max_new_tokens)
            except torch.cuda.OutOfMemoryError as exc:
                torch.cuda.empty_cache()
                raise RankerError("the GPU ran out of memory: show fewer or smaller images") from exc

    def candidate_scores(self, request: RankRequest) -> list[float]:
        """Mean log-prob per candidate: prompt encoded once, candidates batched on its KV cache."""
        with self._lock, torch.inference_mode():
            return self._cached_scores(*self._score_inputs(request))[0]

    def score_without_cache(self, request: RankRequest) -> list[float]:
        """The same scores, each candidate run as one full forward of prompt + candidate (slow)."""
        with self._lock, torch.inference_mode():
            inputs, conts = self._score_inputs(request)
            return [self._uncached_score(inputs, c) for c in conts]

    # Modes ----------------------------------------------------------------------------------

    def _rank_by_score(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        scores, timings = self._cached_scores(*self._score_inputs(request))
        probs = torch.tensor(scores, dtype=torch.float64).softmax(0).tolist()
        order = sorted(range(len(scores)), key=lambda i: -probs[i])
        ranked = [RankedLabel(request.candidates[i], probs[i]) for i in order]
        timings["total_s"] = time.perf_counter() - start
        return RankResult(ranked=ranked, mode="score", timings=timings)

    def _rank_by_generation(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        names, messages = self._messages(request, opening=None)
        text = self._generate(messages, self.config.max_new_tokens)
        gen_s = time.perf_counter() - start
        timings = {"generate_s": gen_s, "total_s": time.perf_counter() - start}
        return generated_ranking(text, names, request.candidates, timings)

    def _generate(self, messages: list[dict], max_new_tokens: int) -> str:
        """The greedy continuation of `messages`, decoded without special tokens."""
        inputs = self._encode(messages)
        prompt_len = inputs["input_ids"].shape[1]
        output = self.model.generate(**inputs, generation_config=self._greedy_config(max_new_tokens))
        return self.tokenizer.decode(output[0, prompt_len:], skip_special_tokens=True)

    # Score-mode internals -------------------------------------------------------------------

    def _score_inputs(self, request: RankRequest) -> tuple[dict, list[list[int]]]:
        """The prompt ending in the answer opening `[`, and each candidate's `repr` as token ids."""
        names, messages = self._messages(request, opening=ANSWER_OPENING)
        conts = [self._text_ids(repr(n)) for n in names]
        return self._encode(messages), conts

    def _cached_scores(self, inputs: dict, conts: list[list[int]]):
        """Mean continuation log-probs (and timings) from one prefix pass + one batched pass."""
        t0 = time.perf_counter()
        prefix = self.model(**inputs, use_cache=True, logits_to_keep=1)
        self._sync()
        t1 = time.perf_counter()

        k, prefix_len = len(conts), inputs["input_ids"].shape[1]
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(k)
        ids, mask = pad_right(conts, self._pad_id(), self.model.device)
        attention = torch.cat([inputs["attention_mask"].expand(k, -1), mask], dim=1)
        positions = self._continuation_positions(inputs, prefix_len, ids.shape[1], k)
        out = self.model(
            input_ids=ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True
        )
        # Token j is predicted by the logits one step before it: the prefix's last ones for j = 0.
        logits = torch.cat([prefix.logits[:, -1:].expand(k, -1, -1), out.logits[:, :-1]], dim=1)
        logprobs = token_logprobs(logits, ids) * mask
        scores = (logprobs.sum(1) / mask.sum(1)).tolist()
        return scores, {"prefix_s": t1 - t0, "candidates_s": time.perf_counter() - t1}

    def _uncached_score(self, inputs: dict, cont: list[int]) -> float:
        """Mean log-prob of `cont` from one full forward of prompt + cont, positions left to the model."""
        prefix_len = inputs["input_ids"].shape[1]
        ids = torch.tensor(cont, device=self.model.device)
        logits = self.model(**add_tokens(inputs, ids), use_cache=False).logits
        return token_logprobs(logits[0, prefix_len - 1 : -1], ids).mean().item()

    def _continuation_positions(self, inputs: dict, prefix_len: int, n: int, k: int) -> torch.Tensor:
        """Position ids of n continuation tokens in each of k rows.

        Ordinary models: prefix_len .. prefix_len + n - 1. Qwen-VL style mrope: images occupy fewer
        positions than tokens, so text after the prompt continues at (token index + rope delta), the
        same on the temporal, height and width axes, exactly as `generate()` does when decoding
        with a cache; the delta comes from the model's own `get_rope_index` over the prompt.
        """
        positions = torch.arange(prefix_len, prefix_len + n, device=self.model.device).expand(k, n)
        get_rope_index = getattr(getattr(self.model, "model", None), "get_rope_index", None)
        if get_rope_index is None or "mm_token_type_ids" not in inputs:
            return positions
        others = {key: value for key, value in inputs.items() if key != "input_ids"}
        _, delta = get_rope_index(inputs["input_ids"], **others)
        return (positions + delta.to(positions)).unsqueeze(0).expand(3, k, n)

    # Encoding helpers -----------------------------------------------------------------------

    def _encode(self, messages: list[dict]) -> dict:
        """Tokenised prompt + pixels on the model's device; names can't write control tokens."""
        continuing = messages[-1]["role"] == "assistant"
        inputs = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            add_generation_prompt=not continuing,
            continue_final_message=continuing,
            sanitize_control_tokens=True,
            processor_kwargs={"add_special_tokens": False},
        )
        inputs = dict(inputs)
        lead = torch.tensor(self._lead_ids, dtype=torch.long)
        if len(lead) and not torch.equal(inputs["input_ids"][0, : len(lead)], lead):
            inputs = add_tokens(inputs, lead, at_start=True)
        return {key: value.to(self.model.device) for key, value in inputs.items()}

    def _leading_special_ids(self) -> list[int]:
        """Tokens the tokenizer puts before any text (a BOS for Llama-style tokenizers, else none).

        Sanitised chat encoding needs `add_special_tokens=False`, so these are added back by hand."""
        with_special = self.tokenizer("a").input_ids
        plain = self.tokenizer("a", add_special_tokens=False).input_ids
        return with_special[: len(with_special) - len(plain)] if with_special[-len(plain) :] == plain else []

    def _text_ids(self, text: str) -> list[int]:
        """`text` as plain token ids: no special tokens added, none recognised inside it."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids

    def _sync(self) -> None:
        """Wait for queued GPU work, so that timings are true."""
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def _greedy_config(self, max_new_tokens: int):
        """Greedy decoding with the model's own special-token ids and a token budget."""
        from transformers import GenerationConfig

        own = self.model.generation_config
        return GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            bos_token_id=own.bos_token_id,
            eos_token_id=own.eos_token_id,
            pad_token_id=own.pad_token_id if own.pad_token_id is not None else self._pad_id(),
        )

    def _messages(self, request: RankRequest, opening: str | None) -> tuple[list[str], list[dict]]:
        """The shown candidate names and the chat messages for `request`."""
        names = shown_names(request.candidates)
        parts = ranking_parts(request, names, self.config.max_image_side)
        self._check_image_count(parts)
        return names, chat_messages(parts, opening)

    def _check_image_count(self, parts: list[Part]) -> None:
        """Refuse several images for a family trained on one image per prompt."""
        if not self.multi_image and image_count(parts) > 1:
            raise RankerError(
                f"the ranker model family {self.family!r} takes one image per prompt, so exemplar, context "
                "or extra view images can't be shown to it: rank without exemplars and ranker_context, "
                "describe with views=1, or use a multi-image model such as Qwen2-VL / Qwen2.5-VL"
            )
