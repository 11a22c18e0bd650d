"""`finetune`: LoRA on the tiny Qwen2-VL, on the CPU, loss on the answer only, checkpoints and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from finetuning import tiny_config, write_learnable_data
from safetensors.torch import load_file

from rar_tools.cli import main
from rar_tools.finetune.samples import FinetuneError, read_samples
from rar_tools.finetune.train import IGNORED, encode_sample, finetune_ranker
from rar_tools.ranking.base import RankerConfig
from rar_tools.ranking.local import TransformersRanker

pytest.importorskip("peft")  # in the dev and finetune extras


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_learnable_data(tmp_path / "data")


FAMILIES = pytest.mark.parametrize("family", ["mllm", "llava"])  # tiny Qwen2-VL and LLaVA


@FAMILIES
def test_the_loss_falls_on_a_small_learnable_pattern(data, tmp_path, tiny_models_dir, family) -> None:
    result = finetune_ranker(tiny_config(data, tmp_path / "adapter", tiny_models_dir / family, seed=3))
    assert result.steps == len(result.losses) == 30
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.25 * first, result.losses


@FAMILIES
def test_the_loss_covers_only_the_answer_and_its_end_token(data, tiny_models_dir, family) -> None:
    ranker = TransformersRanker(RankerConfig(str(tiny_models_dir / family), "cpu"))
    sample = read_samples(data / "train.jsonl")[0]
    inputs, count = encode_sample(ranker, sample, data)
    scored = inputs["labels"][0][inputs["labels"][0] != IGNORED].tolist()
    assert len(scored) == count
    assert scored[-1] == ranker.model.generation_config.eos_token_id
    # LLaVA's template writes "ASSISTANT: " + answer: the space before the answer is the model's to write too
    assert ranker.tokenizer.decode(scored[:-1]).removeprefix(" ") == sample.answer


def test_lora_trains_the_language_model_projections_only(data, tmp_path, tiny_models_dir) -> None:
    finetune_ranker(tiny_config(data, tmp_path / "adapter", tiny_models_dir / "mllm", max_steps=2))
    names = list(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert names and all("language_model" in n and "lora_" in n for n in names)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in names} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip


def test_checkpoints_keep_the_newest_two_and_the_adapter_records_its_run(data, tmp_path, tiny_models_dir) -> None:
    finetune_ranker(tiny_config(data, tmp_path / "adapter", tiny_models_dir / "mllm", max_steps=25))
    kept = sorted(p.name for p in (tmp_path / "adapter" / "checkpoints").iterdir())
    assert kept == ["step-000020", "step-000025"]
    info = json.loads((tmp_path / "adapter" / "rar_tools_adapter.json").read_text())
    assert (info["base_model"], info["steps"], len(info["losses"])) == (str(tiny_models_dir / "mllm"), 25, 25)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(data, tmp_path, tiny_models_dir) -> None:
    base = tiny_models_dir / "mllm"
    whole = finetune_ranker(tiny_config(data, tmp_path / "whole", base, max_steps=12, save_every=4))
    finetune_ranker(tiny_config(data, tmp_path / "parts", base, max_steps=6, save_every=4))
    resumed = finetune_ranker(tiny_config(data, tmp_path / "parts", base, max_steps=12, save_every=4, resume=True))
    assert resumed.resumed_from == 6
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)
    weights = [load_file(tmp_path / run / "adapter_model.safetensors") for run in ("whole", "parts")]
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name], tensor, rtol=1e-4, atol=1e-6)


def test_resuming_with_other_data_is_refused(data, tmp_path, tiny_models_dir) -> None:
    finetune_ranker(tiny_config(data, tmp_path / "adapter", tiny_models_dir / "mllm", max_steps=2))
    (data / "train.jsonl").write_text((data / "train.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(FinetuneError, match="another run.*data"):
        finetune_ranker(tiny_config(data, tmp_path / "adapter", tiny_models_dir / "mllm", max_steps=4, resume=True))


def test_an_existing_adapter_is_kept_unless_overwrite_is_given(data, tmp_path, tiny_models_dir) -> None:
    config = tiny_config(data, tmp_path / "adapter", tiny_models_dir / "mllm", max_steps=1)
    finetune_ranker(config)
    with pytest.raises(FinetuneError, match="--resume.*--overwrite"):
        finetune_ranker(config)


def test_bad_flags_are_refused_before_any_model_loads(data, tmp_path) -> None:
    with pytest.raises(FinetuneError, match="max_steps must be at least 1"):
        finetune_ranker(tiny_config(data, tmp_path / "adapter", tmp_path / "no-model", max_steps=0))
    with pytest.raises(FinetuneError, match="no ranking samples"):
        finetune_ranker(tiny_config(tmp_path / "empty", tmp_path / "adapter", tmp_path / "no-model"))


def test_without_peft_the_error_says_what_to_install(data, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails as if it were not installed
    with pytest.raises(FinetuneError, match=r"pip install 'rar-tools\[finetune\]'"):
        finetune_ranker(tiny_config(data, tmp_path / "adapter", tmp_path / "no-model"))


def test_the_finetune_command_trains_and_reports(data, tmp_path, tiny_models_dir, capsys) -> None:
    out = tmp_path / "adapter"
    args = ["finetune", str(data), "--out", str(out), "--ranker-model", str(tiny_models_dir / "mllm")]
    args += ["--device", "cpu", "--max-steps", "3", "--lr", "0.01", "--rank", "4", "--json"]
    assert main([*args, "--data-dir", str(tmp_path / "memories")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["steps"], len(result["losses"])) == (3, 3)
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
