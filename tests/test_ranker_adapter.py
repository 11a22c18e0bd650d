"""`--ranker-adapter`: a trained LoRA adapter loaded onto the ranker in the API, serve and eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import make_image
from finetuning import PATTERN, tiny_config, write_learnable_data

from rar_tools.api import RarTools
from rar_tools.cli import build_parser, command_settings
from rar_tools.errors import ModelLoadError, RankerError
from rar_tools.evaluation import EvalConfig, EvaluationError, evaluate, load_dataset
from rar_tools.finetune.train import finetune_ranker
from rar_tools.ranking import create_ranker
from rar_tools.ranking.base import RankerConfig, RankRequest
from rar_tools.ranking.local import TransformersRanker
from rar_tools.settings import Settings

pytest.importorskip("peft")  # in the dev and finetune extras


@pytest.fixture(scope="module")
def adapter(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter trained for 30 steps on the learnable pattern (tiny Qwen2-VL)."""
    folder = tmp_path_factory.mktemp("adapter")
    data = write_learnable_data(folder / "data")
    finetune_ranker(tiny_config(data, folder / "adapter", tiny_models_dir / "mllm"))
    return folder / "adapter"


@pytest.fixture
def request_(tmp_path: Path) -> RankRequest:
    """The red image of the pattern, its three colours as candidates."""
    from PIL import Image

    path = make_image(tmp_path / "red.png", "red", seed=1, size=(32, 32))
    return RankRequest(image=Image.open(path).convert("RGB"), candidates=tuple(sorted(PATTERN)))


def local_ranker(tiny_models_dir: Path, **adapter) -> TransformersRanker:
    return TransformersRanker(RankerConfig(str(tiny_models_dir / "mllm"), "cpu", **adapter))


def test_the_adapter_changes_the_scores(tiny_models_dir, adapter, request_) -> None:
    base = local_ranker(tiny_models_dir).candidate_scores(request_)
    adapted = local_ranker(tiny_models_dir, adapter=str(adapter)).candidate_scores(request_)
    assert max(abs(a - b) for a, b in zip(base, adapted)) > 0.1


def test_switching_the_adapter_off_gives_the_base_scores(tiny_models_dir, adapter, request_) -> None:
    base = local_ranker(tiny_models_dir).candidate_scores(request_)
    ranker = local_ranker(tiny_models_dir, adapter=str(adapter))
    with ranker.adapter_disabled():
        assert ranker.candidate_scores(request_) == pytest.approx(base, abs=1e-5)
    assert ranker.candidate_scores(request_) != pytest.approx(base, abs=1e-5)


def test_a_merged_adapter_scores_as_the_loaded_one_and_cannot_be_switched_off(
    tiny_models_dir, adapter, request_
) -> None:
    loaded = local_ranker(tiny_models_dir, adapter=str(adapter)).candidate_scores(request_)
    merged = local_ranker(tiny_models_dir, adapter=str(adapter), merge_adapter=True)
    assert merged.candidate_scores(request_) == pytest.approx(loaded, abs=1e-3)
    with pytest.raises(RankerError, match="no switchable adapter"):
        with merged.adapter_disabled():
            pass


def test_a_folder_without_an_adapter_is_refused_clearly(tiny_models_dir, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="holds no adapter_config.json"):
        local_ranker(tiny_models_dir, adapter=str(tmp_path))


def test_an_adapter_on_another_base_model_is_refused_clearly(tiny_models_dir, adapter) -> None:
    with pytest.raises(ModelLoadError, match="only fits the base model it was trained on"):
        TransformersRanker(RankerConfig(str(tiny_models_dir / "llava"), "cpu", adapter=str(adapter)))


def test_without_peft_loading_an_adapter_says_what_to_install(tiny_models_dir, adapter, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails as if it were not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'rar-tools\[finetune\]'"):
        local_ranker(tiny_models_dir, adapter=str(adapter))


def test_an_endpoint_ranker_points_to_vllm_for_adapters() -> None:
    with pytest.raises(RankerError, match="--enable-lora"):
        create_ranker(RankerConfig(url="http://127.0.0.1:1/v1", adapter="/some/adapter"))


def test_the_api_ranks_with_the_adapter_from_settings(tiny_models_dir, adapter, request_, tmp_path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", ranker_model=str(tiny_models_dir / "mllm"), device="cpu", ranker_adapter=adapter
    )
    ranker = RarTools(settings).ranker
    assert ranker.name.endswith("+adapter:adapter")
    expected = local_ranker(tiny_models_dir, adapter=str(adapter)).candidate_scores(request_)
    assert ranker.candidate_scores(request_) == pytest.approx(expected, abs=1e-6)


def test_serve_and_eval_take_the_adapter_flags(adapter) -> None:
    for command in (["serve"], ["eval", "some-data"]):
        args = build_parser().parse_args([*command, "--ranker-adapter", str(adapter), "--ranker-adapter-merge"])
        settings = command_settings(args)
        assert (settings.ranker_adapter, settings.ranker_adapter_merge) == (adapter, True)


def test_eval_reports_rar_with_and_without_the_adapter(
    tiny_models_dir, adapter, clip_model, labelled_folder, tmp_path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        clip_model=clip_model,
        ranker_model=str(tiny_models_dir / "mllm"),
        ranker_adapter=adapter,
    )
    config = EvalConfig(shots=(1,), methods=("rar",), k=3, limit=4)
    report, paths = evaluate(settings, load_dataset(labelled_folder), config, tmp_path / "out")
    assert [(f.method, f.shots, f.queries) for f in report.results] == [("rar", 1, 4), ("rar+adapter", 1, 4)]
    assert "| RAR + adapter (score mode, k=3) |" in paths["markdown"].read_text()
    records = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()[1:]]
    retrieved = {m: [r["retrieved"] for r in records if r["method"] == m] for m in ("rar", "rar+adapter")}
    assert retrieved["rar"] == retrieved["rar+adapter"]  # the same retrievals, ranked twice


def test_eval_refuses_to_compare_with_a_merged_adapter(adapter, labelled_folder, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path / "data", ranker_adapter=adapter, ranker_adapter_merge=True)
    with pytest.raises(EvaluationError, match="drop --ranker-adapter-merge"):
        evaluate(settings, load_dataset(labelled_folder), EvalConfig(shots=(1,), methods=("rar",)), tmp_path / "o")


def test_rar_plus_adapter_alone_needs_an_adapter() -> None:
    with pytest.raises(EvaluationError, match="needs a ranker adapter"):
        EvalConfig(methods=("rar+adapter",)).checked()


def test_the_server_ranks_with_the_adapter(tiny_models_dir, adapter, request_, clip_model, tmp_path) -> None:
    """`serve --ranker-adapter`: rank_candidates over MCP gives the adapter's probabilities."""
    import anyio
    import torch
    from mcp import Client

    from rar_tools.server import create_server

    request_.image.save(tmp_path / "red.png")
    settings = Settings(
        data_dir=tmp_path / "data",
        clip_model=clip_model,  # the server loads CLIP at start too
        ranker_model=str(tiny_models_dir / "mllm"),
        ranker_adapter=adapter,
    )

    async def rank() -> dict:
        async with Client(create_server(RarTools(settings))) as client:
            arguments = {"image": str(tmp_path / "red.png"), "candidates": list(request_.candidates)}
            return (await client.call_tool("rank_candidates", arguments)).structured_content

    out = anyio.run(rank)
    expected = torch.tensor(local_ranker(tiny_models_dir, adapter=str(adapter)).candidate_scores(request_)).softmax(0)
    served = {c["label"]: c["score"] for c in out["ranked"]}
    assert [served[name] for name in request_.candidates] == pytest.approx(expected.tolist(), abs=1e-5)
    assert out["ranker"].endswith("+adapter:adapter")
