"""Rank candidate labels with a local transformers multimodal LLM.

Two modes:

* ``score`` (default): the model's log-likelihood of each candidate as the first item of its answer
  list, tokenised jointly with the prompt (`continuations.py`) and reduced by the configured
  normalisation (sum by default). The shared prompt is encoded once; all k candidates are then
  scored in one batched forward pass that reuses the prompt's KV cache, continuing the model's own
  position scheme (1-D, or Qwen-VL's 3-D mrope).
* ``generate`` (paper-faithful): greedy decoding of the ranked list, parsed by `parse_ranking`.

Both run in `config.permutations` cyclic shifts of the candidate order when that is above 1
(`permutations.py`). Running out of memory (GPU or CPU) gives a `RankerError` that says what to
reduce, after the failed call's memory is released, so the next call runs normally.

Any family that `AutoProcessor` + `AutoModelForImageTextToText` load works; the prompt is built with
the processor's own chat template, and control tokens written inside candidate names are encoded
as plain text.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

from rar_tools.devices import resolve_device
from rar_tools.errors import ModelLoadError, RankerError
from rar_tools.ranking.base import RankedLabel, RankerConfig, RankRequest, RankResult
from rar_tools.ranking.continuations import (
    ANSWER_OPENING,
    Continuation,
    item_text,
    joint_continuation,
    reduce_logprobs,
    split_continuation,
)
from rar_tools.ranking.messages import ImagePart, Part, TextPart, image_count, ranking_parts
from rar_tools.ranking.messages import downscale as downscale  # re-exported: callers import it from here
from rar_tools.ranking.parsing import generated_ranking
from rar_tools.ranking.permutations import rank_in_orders
from rar_tools.ranking.prompts import shown_names
from rar_tools.ranking.tensors import add_tokens, drop_tokens, pad_right, token_logprobs
from rar_tools.threads import use_threads

log = logging.getLogger(__name__)
T = TypeVar("T")
STUB_TEXT = "x"  # the user turn that stands in for the prompt when only the assistant's tokens matter
# Families trained on one image per prompt: exemplar images are refused rather than mis-shown.
SINGLE_IMAGE_FAMILIES = frozenset({"llava", "llava_next", "paligemma"})


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


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch running out of memory: CUDA's error, or the CPU allocator's."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text)


class TransformersRanker:
    """A `Ranker` backed by a local transformers image-text-to-text model."""

    def __init__(self, config: RankerConfig):
        self.config = config
        self.name = f"transformers:{config.model}"
        self.device = resolve_device(config.device)
        self.processor, self.model = load_model(config.model, self.device)
        self.adapter = None  # the peft wrapper of an unmerged --ranker-adapter, which switches it off
        if config.adapter:
            from rar_tools.ranking.adapters import load_adapter

            self.model, self.adapter = load_adapter(self.model, config.adapter, config.merge_adapter, config.model)
            self.name += f"+adapter:{Path(config.adapter).name}"
        self.tokenizer = self.processor.tokenizer
        self.family = self.model.config.model_type
        self.multi_image = self.family not in SINGLE_IMAGE_FAMILIES
        self._lead_ids = self._leading_special_ids()
        self.threads: int | None = None  # torch threads per call (None: leave torch's setting alone)
        self._lock = threading.RLock()

    # Public API -----------------------------------------------------------------------------

    def rank(self, request: RankRequest) -> RankResult:
        """Order `request.candidates` for `request.image`, best first."""
        if request.mode not in ("score", "generate"):
            raise RankerError(f"unknown ranking mode {request.mode!r}: use 'score' or 'generate'")
        return self._within_memory(
            lambda: rank_in_orders(self._rank_once, request, self.config.permutations),
            f"ranking {len(request.candidates)} candidates: use fewer candidates, fewer exemplar images, a "
            "smaller ranker_image_side or fewer rank_permutations",
        )

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Rank with the base model's own weights meanwhile (the adapter switched off, this ranker's
        other callers waiting): `eval` compares both in one run."""
        if self.adapter is None:
            raise RankerError(
                "this ranker has no switchable adapter: load one with --ranker-adapter, without "
                "--ranker-adapter-merge (merged weights cannot be switched back)"
            )
        with self._lock, self.adapter.disable_adapter():
            yield

    def encode_chat(self, messages: list[dict]) -> dict:
        """`messages` tokenised with the pixels, exactly as ranking encodes a prompt (fine-tuning uses it)."""
        with self._lock:
            return self._encode(messages)

    def complete(self, parts: list[Part], max_new_tokens: int) -> str:
        """Greedy text for one user turn of `parts` (images and text), at most `max_new_tokens` tokens."""
        self._check_image_count(parts)
        return self._within_memory(
            lambda: self._generate(chat_messages(parts, None), max_new_tokens),
            "writing a description: show fewer or smaller images",
        )

    def _within_memory(self, run: Callable[[], T], advice: str) -> T:
        """`run()` under the model's lock; running out of memory (GPU or CPU) becomes a `RankerError`
        saying "the DEVICE ran out of memory " + `advice`, raised after the failed call's memory is freed."""
        with self._lock, torch.inference_mode():
            use_threads(self.threads)
            try:
                return run()
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                if not out_of_memory(exc):
                    raise
                log.warning("out of memory %s: %s", advice.split(":")[0], exc)
            # Here the failed call's tensors are unreferenced (the exception is gone), so they can be freed.
            self._release_memory()
        raise RankerError(f"the {self.device} device ran out of memory {advice}")

    def candidate_scores(self, request: RankRequest) -> list[float]:
        """Per-candidate scores: prompt encoded once, candidates batched on its KV cache."""
        with self._lock, torch.inference_mode():
            use_threads(self.threads)
            return self._cached_scores(*self._score_inputs(request))[0]

    def score_without_cache(self, request: RankRequest) -> list[float]:
        """The same scores, each candidate run as one full forward of prompt + candidate (slow)."""
        with self._lock, torch.inference_mode():
            inputs, conts = self._score_inputs(request)
            return [self._uncached_score(inputs, c) for c in conts]

    def scored_sequences(self, request: RankRequest) -> list[tuple[list[int], list[int]]]:
        """Per candidate, (the prompt ids the model reads before it, the ids scored as the candidate)."""
        with self._lock:
            inputs, conts = self._score_inputs(request)
        prompt = inputs["input_ids"][0].tolist()
        return [(prompt[: len(prompt) - c.back], list(c.ids)) for c in conts]

    # Modes ----------------------------------------------------------------------------------

    def _rank_once(self, request: RankRequest) -> RankResult:
        """One ranking call in the request's candidate order."""
        if request.mode == "generate":
            return self._rank_by_generation(request)
        return self._rank_by_score(request)

    def _rank_by_score(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        inputs, conts = self._score_inputs(request)
        encoded = time.perf_counter()
        scores, timings = self._cached_scores(inputs, conts)
        timings["encode_s"] = encoded - start
        probs = torch.tensor(scores, dtype=torch.float64).softmax(0).tolist()
        order = sorted(range(len(scores)), key=lambda i: -probs[i])
        ranked = [RankedLabel(request.candidates[i], probs[i]) for i in order]
        timings["total_s"] = time.perf_counter() - start
        return RankResult(ranked=ranked, mode="score", timings=timings)

    def _rank_by_generation(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        names, parts = self._parts(request)
        text = self._generate(chat_messages(parts, None), self.config.max_new_tokens)
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

    def _score_inputs(self, request: RankRequest) -> tuple[dict, list[Continuation]]:
        """The prompt ending in the answer opening `[`, and each candidate's continuation of it."""
        names, parts = self._parts(request)
        inputs = self._encode(chat_messages(parts, ANSWER_OPENING))
        if not self.config.joint_tokens:
            return inputs, [split_continuation(self._text_ids(item_text(n)), n, self.tokenizer.decode) for n in names]
        return inputs, self._joint_continuations(parts, names, inputs["input_ids"][0].tolist())

    def _joint_continuations(self, parts: list[Part], names: list[str], prompt: list[int]) -> list[Continuation]:
        """Each candidate tokenised together with the prompt, split off at their longest common prefix.

        Where the template ends the user turn with a control token (`<|im_start|>assistant`,
        `<start_of_turn>model`), the tokens after it never depend on what came before, so a one-word
        user turn stands in for the whole prompt (k short texts to tokenise instead of k long ones).
        Else the whole chat is rendered and tokenised, without the images' pixels (one placeholder
        token per image), which changes nothing after the last image, where every candidate lies."""
        stub = self._candidate_ids([TextPart(STUB_TEXT)], names)
        tail = stub[0][self._last_control_token(stub[0]) :]
        if 0 < len(tail) < len(stub[0]) and prompt[-len(tail) :] == tail:
            context, *joints = stub
        else:
            context, *joints = self._candidate_ids(parts, names)
        conts = [joint_continuation(context, joint, n, self.tokenizer.decode) for joint, n in zip(joints, names)]
        shared = max(c.back for c in conts) + 1
        if len(prompt) < shared or prompt[-shared:] != context[-shared:]:
            raise RankerError(
                f"the {self.family!r} processor and its tokenizer end the prompt differently, so candidates "
                "cannot be scored jointly with it: use mode='generate' with this model"
            )
        return conts

    def _candidate_ids(self, parts: list[Part], names: list[str]) -> list[list[int]]:
        """The token ids of `parts` with the answer opened, then with each candidate's item after it."""
        openings = [ANSWER_OPENING] + [ANSWER_OPENING + item_text(n) for n in names]
        return self._chat_ids([chat_messages(parts, opening) for opening in openings])

    def _last_control_token(self, ids: list[int]) -> int:
        """The index of the last added (control) token in `ids`, or len(ids) when there is none."""
        added = self.tokenizer.added_tokens_decoder
        return max((i for i, token in enumerate(ids) if token in added), default=len(ids))

    def _cached_scores(self, inputs: dict, conts: list[Continuation]):
        """Candidate scores (and timings) from one prefix pass + one batched pass over the candidates.

        The prefix pass stops before the last prompt token any candidate's tokenisation replaces;
        each row then holds the rest of the prompt it keeps, followed by its continuation."""
        back = max(c.back for c in conts)
        prompt = inputs["input_ids"][0].tolist()
        start = len(prompt) - back
        t0 = time.perf_counter()
        prefix = self.model(**drop_tokens(inputs, back), use_cache=True, logits_to_keep=1)
        self._sync()
        t1 = time.perf_counter()

        k = len(conts)
        rows = [prompt[start : len(prompt) - c.back] + list(c.ids) for c in conts]
        ids, mask = pad_right(rows, self._pad_id(), self.model.device)
        cache = prefix.cache
        cache.batch_repeat_interleave(k)
        attention = torch.cat([inputs["attention_mask"][:, :start].expand(k, -1), mask], dim=1)
        positions = self._continuation_positions(inputs, start, ids.shape[1], k)
        out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, cache=cache, use_cache=True)
        # Token j is predicted by the logits one step before it: the prefix's last ones for j = 0.
        logits = torch.cat([prefix.logits[:, -1:].expand(k, -1, -1), out.logits[:, :-1]], dim=1)
        logprobs = token_logprobs(logits, ids).tolist()
        scores = [
            self._reduce(logprobs[row][back - c.back : back - c.back + len(c.ids)], c) for row, c in enumerate(conts)
        ]
        self._sync()
        return scores, {"prefix_s": t1 - t0, "candidates_s": time.perf_counter() - t1}

    def _uncached_score(self, inputs: dict, cont: Continuation) -> float:
        """The score of `cont` from one full forward of the prompt it keeps + its tokens, positions left
        to the model."""
        inputs = drop_tokens(inputs, cont.back)
        kept = inputs["input_ids"].shape[1]
        ids = torch.tensor(cont.ids, device=self.model.device)
        logits = self.model(**add_tokens(inputs, ids), use_cache=False).logits
        return self._reduce(token_logprobs(logits[0, kept - 1 : -1], ids).tolist(), cont)

    def _reduce(self, logprobs: list[float], cont: Continuation) -> float:
        """A candidate's score from its tokens' log-probabilities, by the configured normalisation."""
        return reduce_logprobs(logprobs, cont.lead, self.config.score_normalisation)

    def _continuation_positions(self, inputs: dict, start: int, n: int, k: int) -> torch.Tensor:
        """Position ids of n tokens placed from prompt index `start` on, in each of k rows.

        Ordinary models: start .. start + n - 1. Qwen-VL style mrope: images occupy fewer
        positions than tokens, so text after the prompt's last image sits at (token index + rope
        delta), the same on the temporal, height and width axes, exactly as `generate()` does when
        decoding with a cache; the delta comes from the model's own `get_rope_index` over the prompt.
        """
        positions = torch.arange(start, start + n, device=self.model.device).expand(k, n)
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

    def _release_memory(self) -> None:
        """Free what a failed call left: its tensors, then (on CUDA) the allocator's cached blocks."""
        gc.collect()
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()

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

    def _chat_ids(self, conversations: list[list[dict]]) -> list[list[int]]:
        """Each conversation rendered by the processor's chat template and tokenised as the processor
        does (control tokens in names as text), but with one placeholder token per image."""
        return self.tokenizer.apply_chat_template(
            conversations,
            chat_template=self.processor.chat_template,
            tokenize=True,
            return_dict=False,
            continue_final_message=True,
            sanitize_control_tokens=True,
        )

    def _parts(self, request: RankRequest) -> tuple[list[str], list[Part]]:
        """The shown candidate names and the message parts for `request`."""
        names = shown_names(request.candidates)
        parts = ranking_parts(request, names, self.config.max_image_side)
        self._check_image_count(parts)
        return names, parts

    def _check_image_count(self, parts: list[Part]) -> None:
        """Refuse several images for a family trained on one image per prompt."""
        if not self.multi_image and image_count(parts) > 1:
            raise RankerError(
                f"the ranker model family {self.family!r} takes one image per prompt, so exemplar, context "
                "or extra view images can't be shown to it: rank without exemplars and ranker_context, "
                "describe with views=1, or use a multi-image family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, "
                "Gemma 3; docs/ranking.md)"
            )
