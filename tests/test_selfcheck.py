"""`rar-tools selfcheck`, every check exercised on the CPU: the tiny checkpoints for the whole run, a real-size
random ViT-B/16 for the CLIP precision check, a bf16 copy of a tiny ranker for the tolerance rule."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rar_tools.bench.clip_checks import clip_checks, load_clip, precision_check
from rar_tools.bench.oom_check import huge_candidates, memory_cap
from rar_tools.bench.ranker_checks import AGREEMENT_FLOOR, score_agreement
from rar_tools.bench.selfcheck import run_selfcheck
from rar_tools.bench.selfcheck_config import SelfcheckConfig
from rar_tools.limits import MAX_CANDIDATES, MAX_LABEL_CHARS
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker
from rar_tools.testing.tiny_models import write_random_clip, write_tiny_clip

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    "clip tiny: fp16 embeddings within cosine 0.999 of fp32",
    "clip tiny fp32: images/s",
    "clip tiny fp32: peak GPU memory",
    "ranker generate mode runs (k=5)",
    "ranker latency, p50 ms per call",
    "ranker float32: peak GPU memory",
    "ranker score mode: cached = uncached",
    "out of memory: clear error, server keeps serving",
}


def noisy_image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(90, 150, 3), dtype=np.uint8))


def run_cli(*flags: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "rar_tools", "selfcheck", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU memory cap is Linux's address-space limit")
def test_every_check_passes_on_the_tiny_checkpoints_on_the_cpu(tmp_path: Path) -> None:
    """The whole command in its own process (the out-of-memory case caps that process's memory)."""
    out = tmp_path / "selfcheck.json"
    done = run_cli("--device", "cpu", "--tiny", "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    assert set(checks) == CHECKS
    assert {c["status"] for c in checks.values()} <= {"pass", "measured", "skip"}
    oom = checks["out of memory: clear error, server keeps serving"]
    assert oom["status"] == "pass" and "ran out of memory" in oom["figures"]["huge_message"]
    assert oom["figures"]["after_ok"] and "PASS" in done.stdout


def test_a_failed_check_makes_the_exit_status_one(tmp_path: Path) -> None:
    """With a headroom far above what the huge request needs, it is not refused: the check fails."""
    config = SelfcheckConfig(device="cpu", tiny=True, cache_dir=tmp_path / "cache", headroom=64 * 2**30)
    lines: list[str] = []
    assert run_selfcheck(config, echo=lines.append) == 1
    assert any(line.startswith("FAIL") and "out of memory" in line for line in lines)
    assert "1 failed" in lines[-1]


def test_score_agreement_in_bf16_allows_twice_its_own_error(tiny_ranker_dirs: dict[str, Path]) -> None:
    ranker = TransformersRanker(RankerConfig(model=str(tiny_ranker_dirs["qwen2_5_vl"]), device="cpu"))
    ranker.model.to(torch.bfloat16)
    check = score_agreement(ranker, RankRequest(noisy_image(0), ("owl", "hawk", "blue jay", "wren", "robin")))
    assert check.status == "pass", check.detail
    assert check.figures["noise"] > 0
    assert check.figures["tolerance"] == pytest.approx(2 * check.figures["noise"] + AGREEMENT_FLOOR)
    assert ranker.model.dtype == torch.bfloat16  # restored after the float32 reference


def test_fp16_embeddings_of_a_real_size_random_vit_b16_match_fp32(tmp_path: Path) -> None:
    """The precision check on the real architecture (random weights, loaded as `local-dir:`), one image."""
    folder = f"local-dir:{write_random_clip(tmp_path / 'vit-b-16', 'ViT-B-16')}"
    images = [noisy_image(1)]
    reference = load_clip(folder, "cpu", "fp32").encode_images(images)
    check = precision_check("ViT-B-16", reference, load_clip(folder, "cpu", "fp16").encode_images(images))
    assert check.status == "pass", check.detail


def test_clip_checks_report_precision_throughput_and_memory(tmp_path: Path) -> None:
    folder = f"local-dir:{write_tiny_clip(tmp_path / 'clip')}"
    checks = clip_checks("tiny", folder, "cpu", (1, 2), [noisy_image(i) for i in range(4)], cosine_images=2)
    assert [c.status for c in checks] == ["pass", "measured", "skip"]
    assert len(checks[0].figures["cosines"]) == 2 and set(checks[1].figures) == {"1", "2"}


def test_precision_check_fails_below_the_cosine_bound() -> None:
    reference = np.eye(3, dtype=np.float32)
    turned = np.array([[1, 0, 0], [0, 1, 0], [0, 0.1, 0.995]], dtype=np.float32)
    turned /= np.linalg.norm(turned, axis=1, keepdims=True)
    assert precision_check("m", reference, reference).status == "pass"
    assert precision_check("m", reference, turned).status == "fail"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU memory cap is Linux's address-space limit")
def test_the_cpu_memory_cap_is_lifted_afterwards() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with memory_cap("cpu", 2**30) as how:
        assert resource.getrlimit(resource.RLIMIT_AS)[0] != before[0] and "address space" in how
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_the_huge_request_uses_the_largest_candidate_budget() -> None:
    names = huge_candidates()
    assert len(set(names)) == len(names) == MAX_CANDIDATES
    assert all(len(name) <= MAX_LABEL_CHARS for name in names)


def test_the_tiny_config_takes_small_sizes_and_the_cpu_headroom(tmp_path: Path) -> None:
    config = SelfcheckConfig(tiny=True, cache_dir=tmp_path).resolved("cpu")
    assert (config.clip_models, config.ranker_model, config.batch_sizes) == (("tiny",), "tiny", (1, 4))
    assert config.headroom == 32 * 2**20 and config.images == 8


def test_out_of_memory_is_told_apart_from_other_runtime_errors() -> None:
    from rar_tools.ranking.local import out_of_memory

    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 10 bytes")
    assert out_of_memory(cpu) and out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not out_of_memory(RuntimeError("shape mismatch")) and not out_of_memory(ValueError("not enough memory"))


def test_real_size_models_off_a_gpu_are_refused_with_the_way_out(tmp_path: Path) -> None:
    done = run_cli("--device", "cpu", "--cache-dir", str(tmp_path / "cache"), timeout=120)
    assert done.returncode == 2
    assert "meant for a GPU" in done.stderr and "--tiny" in done.stderr
    assert not (tmp_path / "cache").exists()


def test_an_unknown_clip_architecture_is_a_clear_error(tmp_path: Path) -> None:
    flags = ("--device", "cpu", "--ranker-model", "tiny", "--clip-models", "ViT-Q-99", "--cache-dir", str(tmp_path))
    done = run_cli(*flags, timeout=120)
    assert done.returncode == 2 and "ViT-Q-99" in done.stderr and "open_clip architecture" in done.stderr
