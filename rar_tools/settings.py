"""One typed settings object. Every field is a CLI flag (`--clip-model`) and an environment
variable (`RAR_TOOLS_CLIP_MODEL`); flags win over the environment, which wins over defaults. An
empty variable counts as unset, so a launcher (the Claude Desktop bundle) can pass every setting
and leave the ones the user did not fill in to their defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rar_tools.jsontext import parse_json
from rar_tools.limits import MAX_RANK_PERMUTATIONS, ScoreNormalisation

PROJECT_MEMORIES = Path(__file__).resolve().parent.parent / "memories"


def default_data_dir() -> Path:
    """The project's `memories/` folder in a source checkout, else the user's data folder."""
    if PROJECT_MEMORIES.is_dir():
        return PROJECT_MEMORIES
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rar-tools" / "memories"


def environment_list(value: Any, separator: str, what: str) -> Any:
    """A list setting given as one string (an environment variable): a JSON list, or items joined by
    `separator`; anything else is left to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return parse_json(text)
        except ValueError as exc:
            raise ValueError(f"{text[:60]!r} is not a JSON list of {what} ({exc})") from exc
    return [part.strip() for part in text.split(separator) if part.strip()]


class Settings(BaseSettings):
    """Configuration of the encoder, the memory store, the ranker and the server."""

    model_config = SettingsConfigDict(env_prefix="RAR_TOOLS_", extra="forbid", env_ignore_empty=True)

    # Memory store
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="folder of the persistent memories (Chroma data and stored exemplar images)",
    )
    chroma_url: str | None = Field(
        None, description="use a Chroma server (chroma run) at this http(s) URL instead of the embedded store"
    )
    chroma_database: str = Field("default_database", description="database on the Chroma server")
    stored_image_side: int = Field(1024, ge=64, le=8192, description="longest side of stored exemplar copies")

    # CLIP encoder
    clip_model: str = Field("ViT-B-16", description="open_clip model name, hf-hub:ORG/REPO or local-dir:PATH")
    clip_pretrained: str | None = Field(
        "openai", description="weights tag or file for a plain model name ('none': random init, benchmarks only)"
    )
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    templates: Literal["single", "ensemble"] = Field(
        "single", description="label-text prompts: 'a photo of a {}.' or a mean over several templates"
    )
    batch_size: int = Field(32, ge=1, le=1024, description="images or texts per encoder call")
    clip_precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="CLIP weights: auto (fp16 on CUDA, else fp32); bf16 is faster on CPUs with bfloat16"
    )

    # Input limits
    max_image_bytes: int = Field(20 * 2**20, ge=1024, description="largest accepted image file or payload")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest accepted width x height")

    # What the server may read
    allow_dir: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="read image paths only inside this folder (repeatable; symlinks are resolved); "
        "default: any path this process can read. Env: a JSON list or folders joined by os.pathsep",
    )
    allow_urls: bool = Field(False, description="fetch http(s) image URLs (capped at --max-image-bytes)")
    url_timeout: float = Field(10.0, gt=0, le=300, description="seconds an image URL fetch may take in all")

    # Retrieval
    label_score: Literal["max", "sum-top3"] = Field(
        "max", description="how exemplar similarities become a label's score"
    )

    # Regions
    region_side: int = Field(224, ge=32, le=1024, description="side in pixels of the square region views CLIP sees")
    region_context: float | None = Field(
        None,
        ge=0.0,
        le=4.0,
        description="context around a box on each side, relative to its longer side "
        "(unset: adaptive, from 0.1 for a box filling the image to 1.0 for one a hundredth of its area)",
    )
    region_blur: float = Field(
        4.0, ge=0.0, le=64.0, description="Gaussian blur (sigma, pixels of a region view) outside the box"
    )
    min_box_side: float = Field(4.0, ge=1.0, description="smallest accepted box side in pixels, after clipping")
    tight_view_weight: float = Field(
        0.5, gt=0.0, le=1.0, description="fusion weight of the tight view with views > 1 (the rest share the remainder)"
    )
    car_threshold: float = Field(
        0.1, gt=0.0, lt=1.0, description="CaR filter: labels below this share on the prompted views are dropped"
    )

    # Detector
    detector_model: str = Field(
        "google/owlv2-base-patch16-ensemble", description="OWLv2 / OWL-ViT transformers model id or local folder"
    )
    detector_threshold: float = Field(0.1, ge=0.0, le=1.0, description="default score threshold for detect_objects")

    # Ranker
    no_ranker: bool = Field(False, description="serve memory and retrieval only, load no MLLM")
    ranker_model: str = Field("Qwen/Qwen2.5-VL-3B-Instruct", description="transformers model id or local folder")
    ranker_url: str | None = Field(None, description="OpenAI-compatible API base, e.g. http://127.0.0.1:8000/v1")
    ranker_api_model: str | None = Field(None, description="model name to send to --ranker-url")
    ranker_api_key: str | None = Field(None, description="bearer token for --ranker-url")
    ranker_max_new_tokens: int = Field(256, ge=8, le=1024, description="generation budget in generate mode")
    ranker_image_side: int = Field(768, ge=64, le=4096, description="longest image side shown to the MLLM")
    ranker_timeout: float = Field(120.0, gt=0, description="seconds before an endpoint call is abandoned")

    # Server
    transport: Literal["stdio", "http"] = Field("stdio", description="MCP transport")
    host: str = Field("127.0.0.1", description="address for --transport http")
    port: int = Field(8765, ge=1, le=65535, description="port for --transport http")
    http_max_request_bytes: int = Field(
        32 * 2**20, ge=2**20, description="largest HTTP request body accepted with --transport http"
    )
    model_wait_timeout: float = Field(600.0, gt=0, description="seconds a tool call waits for models to load")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="stderr log level")

    # Segmentation (segment: CLIP as RNN) and region descriptions (describe_regions)
    segment_cam_layers: int = Field(
        1, ge=1, le=12, description="segment: Grad-CAM over the inputs of this many last blocks of CLIP's image tower"
    )
    segment_mask_threshold: float = Field(
        0.4, gt=0.0, lt=1.0, description="segment: a pixel is in a label's mask from this share of its map's peak"
    )
    segment_label_threshold: float = Field(
        0.3, gt=0.0, lt=1.0, description="segment: a label leaves the set below this probability on its own mask"
    )
    segment_max_rounds: int = Field(10, ge=1, le=50, description="segment: most rounds of the recurrence")
    segment_refine: Literal["guided", "none"] = Field(
        "guided", description="segment: snap masks to image edges with a guided filter, or not"
    )
    sam_model: str | None = Field(
        None, description="segment: a transformers SamModel id or folder that sharpens each mask (loaded on first use)"
    )
    describe_max_new_tokens: int = Field(
        192, ge=16, le=1024, description="describe_regions: the most tokens the MLLM writes per region"
    )
    near_text_similarity: float = Field(
        0.85, ge=-1.0, le=1.0, description="a proposed name is near a memory label from this text-text similarity"
    )
    near_image_similarity: float = Field(
        0.3, ge=-1.0, le=1.0, description="the same for memories of exemplar images only (text-image similarity)"
    )

    # HTTP transport security: bearer tokens, accepted Host and Origin headers
    auth_token_file: Path | None = Field(
        None,
        description="with --transport http: accept only bearer tokens whose SHA-256 this file lists, one per "
        "line, 'read-only' after a token limited to read-only tools (add one with `rar-tools token`)",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="with --transport http: a Host header to accept besides the local ones, as a reverse proxy "
        "forwards it, e.g. mcp.example.com or mcp.example.com:* (repeatable; env: comma-separated)",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="with --transport http: an Origin header to accept besides the local ones, e.g. "
        "https://app.example.com (repeatable; env: comma-separated)",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def split_names(cls, value: Any) -> Any:
        """From the environment: a JSON list, or names joined by commas."""
        return environment_list(value, ",", "names")

    # CPU threads (issue 17)
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="CPU threads torch uses for the models (unset: 1 when every model loaded at start has "
        "weights under 80 MB, else one per available core, at most 8; see docs/performance.md)",
    )

    # Memory upkeep and speed (docs/portability.md)
    no_in_process_index: bool = Field(
        False,
        description="search memories in Chroma only; by default each searched memory is also mirrored in "
        "process (faiss, the `fast` extra) for faster searches, at the cost of its embeddings in RAM",
    )

    @field_validator("allow_dir", mode="before")
    @classmethod
    def split_folders(cls, value: Any) -> Any:
        """From the environment: a JSON list, or folders joined by os.pathsep (':' or ';')."""
        return environment_list(value, os.pathsep, "folders")

    @field_validator("allow_dir")
    @classmethod
    def existing_folders(cls, folders: list[Path]) -> list[Path]:
        """Each allowed folder, resolved (symlinks included); it must exist."""
        resolved = []
        for folder in folders:
            path = folder.expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"allowed folder {str(folder)!r} does not exist or is not a folder")
            resolved.append(path)
        return resolved

    # Ranker: how score mode reduces a candidate's tokens, and how many candidate orders are ranked
    score_normalisation: ScoreNormalisation = Field(
        "sum",
        description="score mode: a candidate's log-probability summed over its tokens (the probability of "
        "writing it), their mean, or that of its first token only (docs/ranking.md#score-normalisation)",
    )
    rank_permutations: int = Field(
        1,
        ge=1,
        le=MAX_RANK_PERMUTATIONS,
        description="rank in this many cyclic shifts of the candidate order and fuse them (probabilities "
        "averaged in score mode, Borda in generate mode), against position bias; each costs one ranking call",
    )

    # Ranker adapter: a LoRA adapter from `rar-tools finetune` (docs/finetune.md)
    ranker_adapter: Path | None = Field(
        None,
        description="a LoRA adapter folder (`rar-tools finetune --out`) loaded onto the local ranker model; "
        "eval then reports rar with and without it",
    )
    ranker_adapter_merge: bool = Field(
        False, description="merge --ranker-adapter into the ranker's weights at load (no switching it off)"
    )
