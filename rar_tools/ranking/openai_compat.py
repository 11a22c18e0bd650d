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
  greedy path and its listed alternatives (`logprobs.py` says how): a candidate with no evidence
  there makes the fallback "partial" ("full" when no candidate has any). Candidates sharing a first
  token that the greedy path did not follow cannot be told apart (they tie, and ties keep retrieval
  order). The scores are softmax-normalised over the candidates. An endpoint that returns no
  logprobs raises `RankerError` (use mode="generate").

The request shows the layout every backend shares (`messages.ranking_parts`): text parts, and images
as inline JPEG data URLs.
"""

from __future__ import annotations

import base64
import io
import json
import time
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
from PIL import Image

from rar_tools.deadline import BodyTooLarge, LoopThread, read_at_most
from rar_tools.errors import RankerError
from rar_tools.jsontext import parse_json
from rar_tools.ranking.base import RankedLabel, RankerConfig, RankRequest, RankResult
from rar_tools.ranking.logprobs import logprob_steps, score_candidates, softmax
from rar_tools.ranking.messages import ImagePart, Part, TextPart, ranking_parts
from rar_tools.ranking.parsing import generated_ranking
from rar_tools.ranking.permutations import rank_in_orders
from rar_tools.ranking.prompts import shown_names

TOP_LOGPROBS = 20
MAX_ERROR_CHARS = 300
JPEG_QUALITY = 90
MAX_ANSWER_BYTES = 32 * 1024 * 1024  # far above any chat completion (20 logprobs a token included)


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


def image_data_url(image: Image.Image) -> str:
    """A base64 JPEG data URL of an RGB `image` (already downscaled by `messages.ranking_parts`)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_content(parts: list[Part]) -> list[dict]:
    """`parts` as OpenAI chat content: `text` parts and inline `image_url` parts."""
    return [content_part(part) for part in parts]


def content_part(part: Part) -> dict:
    """One OpenAI content part."""
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": image_data_url(part.image)}}
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    raise TypeError(f"not a message part: {part!r}")


# --- response reading --------------------------------------------------------------------------


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
        self._headers = headers
        self._loop = LoopThread(f"ranker-http-{self.api_model}")
        self._client: httpx.AsyncClient | None = None  # made on the loop by the first request

    def close(self) -> None:
        """Close the open connections and stop the loop that requests run on (a later request
        starts them again)."""
        if self._loop.started:
            self._loop.call(self._close_client)
        self._loop.close()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def __enter__(self) -> OpenAICompatRanker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    multi_image = True  # the server refuses what its model cannot take, with its own message

    def complete(self, parts: list[Part], max_new_tokens: int) -> str:
        """Greedy text for one user turn of `parts` (images and text), at most `max_new_tokens` tokens."""
        choice, _ = self._complete(self._request(parts, max_new_tokens))
        return self._text(choice)

    def rank(self, request: RankRequest) -> RankResult:
        """Order `request.candidates` for `request.image`, best first (fused over
        `config.permutations` candidate orders when above 1: `permutations.py`)."""
        if request.mode not in ("score", "generate"):
            raise RankerError(f"unknown ranking mode {request.mode!r}: use 'score' or 'generate'")
        return rank_in_orders(self._rank_once, request, self.config.permutations)

    def _rank_once(self, request: RankRequest) -> RankResult:
        """One ranking call in the request's candidate order."""
        if request.mode == "generate":
            return self._rank_by_generation(request)
        return self._rank_by_score(request)

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
        return self._request(ranking_parts(request, names, self.config.max_image_side), max_tokens)

    def _request(self, parts: list[Part], max_tokens: int) -> dict:
        """A greedy chat-completions request of one user turn."""
        content = openai_content(parts)
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
            response = self._loop.call(self._post, payload)
        except TimeoutError as exc:
            raise RankerError(
                f"the ranking endpoint {where} did not answer within {self.config.timeout_s:g} s: "
                "raise timeout_s, lower max_new_tokens, or check that the server is not overloaded"
            ) from exc
        except BodyTooLarge as exc:
            sent = "sent more" if exc.declared is None else f"announced {exc.declared:,} bytes, more"
            raise RankerError(
                f"the ranking endpoint {where} {sent} than the limit of {MAX_ANSWER_BYTES:,} bytes for an "
                "answer: is the url the API base of an OpenAI-compatible server?"
            ) from None
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

    async def _post(self, payload: dict) -> httpx.Response:
        """POST `payload` and read the whole answer within `timeout_s` seconds of wall time in all and
        `MAX_ANSWER_BYTES`, whatever the server does (a status line or body sent a byte at a time, an
        endless body). Runs on the ranker's loop, whose one client keeps connections open from call
        to call."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=None, headers=self._headers)
        with anyio.fail_after(self.config.timeout_s):
            async with self._client.stream("POST", self.endpoint, json=payload) as streamed:
                body = await read_at_most(streamed, MAX_ANSWER_BYTES)
        return httpx.Response(streamed.status_code, headers=streamed.headers, content=body, request=streamed.request)

    def _first_choice(self, response: httpx.Response) -> dict:
        where = self.shown_endpoint
        try:
            data = parse_json(response.content)
        except ValueError as exc:
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
        data = parse_json(response.content)
    except ValueError:
        return response.text
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for value in (error, data.get("detail"), data.get("message")):
            if isinstance(value, str) and value:
                return value
    return json.dumps(data)
