"""One ranking-format training sample, in the three chat layouts `ranking-data` writes, and read back.

A sample is an image, the ranking prompt exactly as the ranker sends it (`messages.ranking_parts`:
the image first, then the instruction naming the shuffled candidates) and the answer as the list
literal the parser reads (`prompts.format_names`, the true label first). Layouts, one JSON object a line:

- `qwen`: `{"messages": [user: [{"type": "image", "image": PATH}, {"type": "text", ...}],
  assistant: [{"type": "text", "text": ANSWER}]]}`, the transformers chat-template format (Qwen2-VL,
  Qwen2.5-VL, most fine-tuning scripts).
- `llava`: `{"id", "image": PATH, "conversations": [{"from": "human", "value": "<image>\\nPROMPT"},
  {"from": "gpt", "value": ANSWER}]}`, LLaVA's training format (one object a line).
- `openai`: `{"messages": [user: [{"type": "image_url", "image_url": {"url": DATA_URL}}, text],
  assistant: ANSWER]}`, OpenAI-style vision fine-tuning: the image inline as the endpoint ranker sends it.

Light to import: PIL only.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from rar_tools.errors import RarToolsError
from rar_tools.jsontext import parse_json

SampleFormat = Literal["qwen", "llava", "openai"]
SAMPLE_FORMATS: tuple[SampleFormat, ...] = ("qwen", "llava", "openai")
IMAGE_TOKEN = "<image>"  # where LLaVA's format puts the image in the human turn
DATA_URL_PREFIX = "data:image/"


class FinetuneError(RarToolsError):
    """Ranking data or fine-tuning that cannot go ahead: the message says why and what to change."""


@dataclass(frozen=True)
class Sample:
    """What one training sample says: its image (a path relative to the data folder, an absolute
    path or a data URL), the prompt text and the answer text."""

    image: str
    prompt: str
    answer: str


def sample_record(sample: Sample, layout: SampleFormat, sample_id: str) -> dict[str, Any]:
    """`sample` as one JSON object in `layout`."""
    if layout == "llava":
        turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{sample.prompt}"}, {"from": "gpt", "value": sample.answer}]
        return {"id": sample_id, "image": sample.image, "conversations": turns}
    if layout == "openai":
        image = {"type": "image_url", "image_url": {"url": sample.image}}
        user = [image, {"type": "text", "text": sample.prompt}]
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": sample.answer}]}
    user = [{"type": "image", "image": sample.image}, {"type": "text", "text": sample.prompt}]
    answer = [{"type": "text", "text": sample.answer}]
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def read_sample(record: dict[str, Any]) -> Sample:
    """The sample in a JSON object of any of the three layouts; a clear error for anything else."""
    try:
        if "conversations" in record:
            human, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
            return Sample(record["image"], human.removeprefix(IMAGE_TOKEN).removeprefix("\n"), answer)
        user, assistant = record["messages"][0]["content"], record["messages"][1]["content"]
        image = next(part for part in user if part["type"] in ("image", "image_url"))
        text = next(part["text"] for part in user if part["type"] == "text")
        location = image["image"] if image["type"] == "image" else image["image_url"]["url"]
        answer = assistant if isinstance(assistant, str) else next(p["text"] for p in assistant if p["type"] == "text")
        return Sample(location, text, answer)
    except (KeyError, IndexError, TypeError, StopIteration) as exc:
        raise FinetuneError(
            f"not a ranking sample in the qwen, llava or openai layout ({type(exc).__name__}: {exc}); "
            "write the data with `rar-tools ranking-data`"
        ) from None


def read_samples(path: Path) -> list[Sample]:
    """Every sample of a JSON Lines file (blank lines skipped), with the line of the first bad one."""
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            samples.append(read_sample(parse_json(line)))
        except (ValueError, FinetuneError) as exc:
            raise FinetuneError(f"{path}, line {number}: {exc}") from None
    return samples


def open_sample_image(location: str, folder: Path) -> Image.Image:
    """The RGB image of a sample: a data URL, an absolute path, or a path relative to `folder`."""
    try:
        if location.startswith(DATA_URL_PREFIX):
            data = base64.b64decode(location.split(",", 1)[1])
            return Image.open(io.BytesIO(data)).convert("RGB")
        with Image.open(folder / location) as image:
            return image.convert("RGB")
    except (OSError, ValueError, IndexError) as exc:
        raise FinetuneError(f"cannot read the sample image {location[:80]!r}: {exc}") from None
