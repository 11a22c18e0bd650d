"""Rank candidates with a VLM behind an OpenAI-compatible chat-completions endpoint.

Works with the servers that speak `POST {base}/chat/completions` with image content parts: vLLM,
Ollama, LM Studio and llama.cpp's server (with a multimodal projector loaded).

The URL rule: `config.url` is the API *base*, e.g. `http://127.0.0.1:8000/v1` (vLLM),
`http://127.0.0.1:11434/v1` (Ollama), `http://127.0.0.1:1234/v1` (LM Studio) or
`http://127.0.0.1:8080/v1` (llama.cpp); requests go to `{base}/chat/completions`. A trailing `/`
or `/chat/completions` is removed; a URL with no path at all (`http://127.0.0.1:8000`) gets `/v1`,
since all four servers serve the API there. Any other path is used as given.

`model` in the request is `config.api_model`, or `config.model` when that is unset (vLLM serves a
model under its Hugging Face id by default).

Modes:

* ``generate``: greedy decoding (temperature 0, `max_tokens = config.max_new_tokens`) of the ranked
  list, parsed by `parse_ranking`; scores are 1/rank, normalised.
* ``score``: one short greedy generation with `logprobs=true, top_logprobs=20`. An assistant prefix
  (`[`) cannot be forced portably over this API, so the scores are an approximation read off the
  greedy path: each candidate gets the log-probability of the tokens that spell the start of its
  name as the first list item. The candidate is followed along the greedy tokens for as long as it
  agrees with them; at the first token where it departs, the listed alternatives that continue
  its name are summed. A candidate that is a prefix of the greedy name ("Blue" under "Blue Jay")
  also pays the listed probability of the item ending there. A candidate whose continuation is
  not among the 20 listed alternatives gets the unlisted probability mass, capped at the smallest
  listed one (an upper bound), and counts as "no evidence" (fallback "partial", or "full" when no
  candidate has any). Candidates sharing a first token that the greedy path did not follow cannot
  be told apart (they tie, and ties keep retrieval order). The scores are softmax-normalised over
  the candidates. An endpoint that returns no logprobs raises `RankerError` (use mode="generate").
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from PIL import Image

from rar_tools.errors import RankerError
from rar_tools.ranking.base import Fallback, RankedLabel, RankerConfig, RankRequest, RankResult
from rar_tools.ranking.parsing import generated_ranking
from rar_tools.ranking.prompts import downscale, exemplar_pairs, request_prompt, shown_names

TOP_LOGPROBS = 20
MAX_ERROR_CHARS = 300
JPEG_QUALITY = 90
SYNTAX_CHARS = " \t\r\n['\"`(*"
ITEM_END = "'\"`,;]\n"


# --- URL and request building ----------------------------------------------------------------


def api_base(url: str) -> str:
    """The API base for `url` by the rule in the module docstring."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RankerError(
            f"ranker url {redact_url(url)!r} is not an http(s) URL: give the API base, e.g. http://127.0.0.1:8000/v1"
        )
    path = parts.path.rstrip("/").removesuffix("/chat/completions").rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path or "/v1", "", ""))


def redact_url(url: str) -> str:
    """`url` without any user:password part."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def image_data_url(image: Image.Image, max_side: int) -> str:
    """A base64 JPEG data URL of `image`, its longer side at most `max_side` pixels."""
    buffer = io.BytesIO()
    downscale(image, max_side).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_content(request: RankRequest, names: list[str], max_side: int) -> list[dict]:
    """User content: query image (and its context image), ranking instruction, then each
    exemplar's quoted name and image."""
    pairs = exemplar_pairs(request, names)
    text = request_prompt(names, request.icl, request.context is not None, bool(pairs))
    queries = [request.image] if request.context is None else [request.image, request.context]
    content = [image_part(image, max_side) for image in queries]
    content.append({"type": "text", "text": text})
    for name, image in pairs:
        content.append({"type": "text", "text": f" {name!r}:"})
        content.append(image_part(image, max_side))
    return content


def image_part(image: Image.Image, max_side: int) -> dict:
    """One OpenAI `image_url` content part holding `image` inline."""
    return {"type": "image_url", "image_url": {"url": image_data_url(image, max_side)}}


# --- response reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One generated token, its log-probability, and the listed alternatives at that position."""

    token: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...]


def message_text(choice: dict) -> str:
    """The text of a choice's message (string content, or the text parts of a list)."""
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("the first choice has no message")
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ValueError("the message content is neither text nor a list of parts")


def logprob_steps(choice: dict) -> list[Step] | None:
    """The generated tokens with their alternatives, or None when the choice carries no logprobs.

    Reads the chat shape (`logprobs.content[*].top_logprobs`) and the legacy completions shape
    (`tokens`, `token_logprobs`, `top_logprobs` as dicts) that some servers still return."""
    data = choice.get("logprobs")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("content"), list):
        return [chat_step(entry) for entry in data["content"] if isinstance(entry, dict)]
    if isinstance(data.get("tokens"), list) and isinstance(data.get("token_logprobs"), list):
        tops = data.get("top_logprobs") or [{}] * len(data["tokens"])
        return [legacy_step(tok, lp, top) for tok, lp, top in zip(data["tokens"], data["token_logprobs"], tops)]
    return None


def chat_step(entry: dict) -> Step:
    """A Step from one chat-format logprobs entry."""
    token, logprob = str(entry.get("token", "")), float(entry.get("logprob", -math.inf))
    alts = [
        (str(a.get("token", "")), float(a.get("logprob", -math.inf)))
        for a in entry.get("top_logprobs") or []
        if isinstance(a, dict)
    ]
    return Step(token, logprob, with_greedy(alts, token, logprob))


def legacy_step(token: str, logprob: float | None, top: dict | None) -> Step:
    """A Step from one legacy completions-format position."""
    lp = -math.inf if logprob is None else float(logprob)
    alts = [(str(t), float(v)) for t, v in (top or {}).items()]
    return Step(str(token), lp, with_greedy(alts, str(token), lp))


def with_greedy(alts: list[tuple[str, float]], token: str, logprob: float) -> tuple:
    """The alternatives, with the generated token added when the server left it out."""
    if all(t != token for t, _ in alts):
        alts.append((token, logprob))
    return tuple(alts)


# --- score mode: candidate log-probabilities from one greedy path -----------------------------


def name_start(text: str) -> int | None:
    """Where the first list item's name begins in the generated text, or None."""
    begin = text.find("[")
    search_from = begin + 1 if begin >= 0 else 0
    if begin < 0 and text.lstrip().startswith("```"):
        newline = text.find("\n")
        search_from = newline + 1 if newline >= 0 else len(text)
    for index in range(search_from, len(text)):
        if text[index].isalnum():
            numbering = after_numbering(text, index)
            return numbering if numbering is not None else index
    return None


def after_numbering(text: str, index: int) -> int | None:
    """After a `1. ` or `2) ` list number starting at `index`, where the name begins; else None."""
    end = index
    while end < len(text) and text[end].isdigit():
        end += 1
    if end == index or end + 1 >= len(text) or text[end] not in ".)" or not text[end + 1].isspace():
        return None
    for after in range(end + 1, len(text)):
        if not text[after].isspace():
            return after
    return None


def locate(steps: list[Step], offset: int) -> tuple[int, int]:
    """(token index, offset inside that token) of character `offset` of the joined tokens."""
    seen = 0
    for index, step in enumerate(steps):
        if offset < seen + len(step.token):
            return index, offset - seen
        seen += len(step.token)
    return len(steps), 0


def continues(core: str, rest: str) -> bool:
    """Whether a token spelling `core` is consistent with a name whose unread part is `rest`."""
    if not core:
        return False
    if rest.startswith(core):
        return True
    return core.startswith(rest) and core[len(rest)] in ITEM_END


def closes_item(token: str) -> bool:
    """Whether a token ends the current list item (a quote, comma or bracket)."""
    return bool(token) and token[0] in ITEM_END


def ending_logprob(steps: list[Step], index: int) -> float:
    """Log-probability that the list item ends at step `index` (0 when the greedy path ends it)."""
    if index >= len(steps) or closes_item(steps[index].token):
        return 0.0
    ends = [lp for tok, lp in steps[index].alternatives if closes_item(tok)]
    return logsumexp(ends) if ends else unlisted_logprob(steps[index])


def unlisted_logprob(step: Step) -> float:
    """The unlisted probability mass at a step, capped at its smallest listed alternative."""
    listed = [lp for _, lp in step.alternatives]
    rest = max(1.0 - sum(math.exp(lp) for lp in listed), 1e-12)
    return min(math.log(rest), min(listed, default=0.0))


def candidate_logprob(name: str, steps: list[Step], skip: int) -> tuple[float, bool]:
    """(log-probability, evidence) of the greedy path spelling `name` as the first item.

    `steps[0]` starts at the name, `skip` characters into its token (list syntax before it)."""
    rest, total = name.casefold(), 0.0
    for index, step in enumerate(steps):
        core = (step.token[skip:] if index == 0 else step.token).casefold()
        if core and continues(core, rest):
            total += step.logprob
            if not rest.startswith(core):
                return total, True  # this token also closes the item
            rest = rest[len(core) :]
            if not rest:
                return total + ending_logprob(steps, index + 1), True
            continue
        alts = [lp for tok, lp in step.alternatives if continues(alt_core(tok, first=index == 0).casefold(), rest)]
        if alts:
            return total + logsumexp(alts), True
        return total + unlisted_logprob(step), index > 0
    return total, True


def alt_core(token: str, first: bool) -> str:
    """An alternative token's name part: leading list syntax stripped at the first position."""
    return token.lstrip(SYNTAX_CHARS) if first else token


def logsumexp(values: list[float]) -> float:
    """log(sum(exp(values))), stable."""
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def softmax(values: list[float]) -> list[float]:
    """Probabilities proportional to exp(values)."""
    total = logsumexp(values)
    if total == -math.inf:
        return [1.0 / len(values)] * len(values)
    return [math.exp(v - total) for v in values]


def score_candidates(names: list[str], steps: list[Step]) -> tuple[list[float], Fallback]:
    """Per-candidate log-scores from the greedy path, and how much of the order rests on them."""
    text = "".join(step.token for step in steps)
    start = name_start(text)
    if start is None:
        return [0.0] * len(names), "full"
    index, skip = locate(steps, start)
    scored = [candidate_logprob(name, steps[index:], skip) for name in names]
    with_evidence = sum(1 for _, evidence in scored if evidence)
    fallback: Fallback = "none" if with_evidence == len(names) else "partial" if with_evidence else "full"
    return [score for score, _ in scored], fallback


# --- the ranker ------------------------------------------------------------------------------


class OpenAICompatRanker:
    """A `Ranker` that calls an OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(self, config: RankerConfig):
        if not config.url:
            raise RankerError("the endpoint ranker needs a url: the API base, e.g. http://127.0.0.1:8000/v1")
        self.config = config
        self.base = api_base(config.url)
        self.endpoint = self.base + "/chat/completions"
        self.shown_endpoint = redact_url(self.endpoint)
        self.api_model = config.api_model or config.model
        self.name = f"openai:{self.api_model}@{redact_url(self.base)}"
        headers = {"Content-Type": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._client = httpx.Client(timeout=config.timeout_s, headers=headers)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAICompatRanker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def rank(self, request: RankRequest) -> RankResult:
        """Order `request.candidates` for `request.image`, best first."""
        if request.mode == "generate":
            return self._rank_by_generation(request)
        if request.mode == "score":
            return self._rank_by_score(request)
        raise RankerError(f"unknown ranking mode {request.mode!r}: use 'score' or 'generate'")

    # Modes ------------------------------------------------------------------------------------

    def _rank_by_generation(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        names = shown_names(request.candidates)
        payload = self._payload(request, names, self.config.max_new_tokens)
        choice, request_s = self._complete(payload)
        text = self._text(choice)
        timings = {"request_s": request_s, "total_s": time.perf_counter() - start}
        return generated_ranking(text, names, request.candidates, timings)

    def _rank_by_score(self, request: RankRequest) -> RankResult:
        start = time.perf_counter()
        names = shown_names(request.candidates)
        max_tokens = min(self.config.max_new_tokens, 8 + max(len(n) for n in names))
        payload = self._payload(request, names, max_tokens)
        payload.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        choice, request_s = self._complete(payload)
        text = self._text(choice)
        steps = logprob_steps(choice)
        if steps is None:
            raise RankerError(
                f"the endpoint {self.shown_endpoint} returned no logprobs, so score mode cannot "
                "work with it: use mode='generate' (or a server that supports logprobs, e.g. vLLM)"
            )
        scores, fallback = score_candidates(names, steps)
        probs = softmax(scores)
        order = sorted(range(len(names)), key=lambda i: -probs[i])
        ranked = [RankedLabel(request.candidates[i], probs[i]) for i in order]
        timings = {"request_s": request_s, "total_s": time.perf_counter() - start}
        return RankResult(ranked=ranked, mode="score", fallback=fallback, raw_text=text, timings=timings)

    # HTTP -------------------------------------------------------------------------------------

    def _payload(self, request: RankRequest, names: list[str], max_tokens: int) -> dict:
        content = build_content(request, names, self.config.max_image_side)
        return {
            "model": self.api_model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max(1, max_tokens),
            "stream": False,
        }

    def _complete(self, payload: dict) -> tuple[dict, float]:
        """POST the payload; the first choice and the request's duration, or a RankerError."""
        where = self.shown_endpoint
        start = time.perf_counter()
        try:
            response = self._client.post(self.endpoint, json=payload)
        except httpx.TimeoutException as exc:
            raise RankerError(
                f"the ranking endpoint {where} did not answer within {self.config.timeout_s:g} s: "
                "raise timeout_s, lower max_new_tokens, or check that the server is not overloaded"
            ) from exc
        except httpx.ConnectError as exc:
            raise RankerError(
                f"cannot connect to the ranking endpoint {where} ({self._scrub(str(exc))}): "
                "is the server running, and is the url the API base (e.g. http://127.0.0.1:8000/v1)?"
            ) from exc
        except httpx.HTTPError as exc:
            raise RankerError(
                f"the request to the ranking endpoint {where} failed: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from exc
        request_s = time.perf_counter() - start
        if response.status_code >= 400:
            raise RankerError(self._http_error(response))
        return self._first_choice(response), request_s

    def _first_choice(self, response: httpx.Response) -> dict:
        where = self.shown_endpoint
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
            raise RankerError(
                f"the ranking endpoint {where} returned a response that is not JSON: {self._snippet(response.text)!r}"
            ) from exc
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RankerError(
                f"the ranking endpoint {where} returned JSON without choices: "
                f"{self._snippet(json.dumps(data))!r}; is it an OpenAI-compatible chat-completions API?"
            )
        return choices[0]

    def _text(self, choice: dict) -> str:
        try:
            return message_text(choice)
        except ValueError as exc:
            raise RankerError(f"the ranking endpoint {self.shown_endpoint} returned a malformed choice: {exc}") from exc

    def _http_error(self, response: httpx.Response) -> str:
        """A message for an HTTP error status, with the server's own error text when present."""
        detail = server_error_text(response)
        message = f"the ranking endpoint {self.shown_endpoint} answered HTTP {response.status_code}"
        if detail:
            message += f": {self._snippet(detail)}"
        if response.status_code in (401, 403):
            message += " (check the API key: RankerConfig.api_key)"
        elif response.status_code == 404:
            message += (
                " (check the url, the API base such as http://127.0.0.1:8000/v1, and the "
                f"model name {self.api_model!r})"
            )
        return message

    def _snippet(self, text: str) -> str:
        text = self._scrub(" ".join(text.split()))
        return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."

    def _scrub(self, text: str) -> str:
        """`text` with the API key masked, should a server or library echo it."""
        key = self.config.api_key
        return text.replace(key, "***") if key else text


def server_error_text(response: httpx.Response) -> str:
    """The error message in an error response: `error.message`, `error`, `detail`, or the body."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return response.text
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for value in (error, data.get("detail"), data.get("message")):
            if isinstance(value, str) and value:
                return value
    return json.dumps(data)
