"""`ranking-data`: RAR's ranking-format fine-tuning samples from a memory (tiny random CLIP, real store)."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest
from conftest import COLOURS, make_image
from PIL import Image

from rar_tools.api import RarTools
from rar_tools.cli import main
from rar_tools.evaluation import load_dataset
from rar_tools.finetune.data import (
    RankingDataConfig,
    export_dataset_ranking_data,
    export_ranking_data,
    sample_candidates,
)
from rar_tools.finetune.samples import FinetuneError, open_sample_image, read_samples
from rar_tools.ranking.base import RankRequest
from rar_tools.ranking.messages import TextPart, ranking_parts
from rar_tools.ranking.parsing import parse_ranking


@pytest.fixture
def colour_memory(tools: RarTools, image_folder: Path) -> str:
    """Memory 'colours': three exemplar images of each of four colours."""
    for colour in COLOURS:
        tools.add_images("colours", sorted(str(p) for p in (image_folder / colour).iterdir()), colour)
    return "colours"


def export(tools: RarTools, out: Path, memory: str = "colours", **options) -> list:
    """Export `memory` to `out` with k = 3 unless told otherwise; returns the samples read back."""
    export_ranking_data(tools, memory, RankingDataConfig(out, **{"k": 3, **options}))
    return read_samples(out / "train.jsonl")


def shown(prompt: str) -> list[str]:
    """The candidate names a prompt shows (its list literal after 'categories:')."""
    return ast.literal_eval(prompt.split("categories:", 1)[1].rstrip("."))


def label_of_image(tools: RarTools) -> dict[str, str]:
    """Copied image name -> the label of its exemplar entry."""
    identity = tools.encoder.identity
    return {f"images/{e.sha256[:24]}.jpg": e.label for e, _ in tools.store.image_entries("colours", identity)}


def test_every_exemplar_becomes_one_sample_with_k_candidates(tools, colour_memory, tmp_path) -> None:
    samples = export(tools, tmp_path / "out")
    assert len(samples) == 12
    assert all(len(shown(s.prompt)) == 3 for s in samples)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["samples"], summary["labels"], summary["labels_covered"]) == (12, 4, 4)
    assert summary["label_coverage"] == 1.0 and summary["random_clip"] is True


def test_the_prompt_is_exactly_what_the_ranker_sends(tools, colour_memory, tmp_path) -> None:
    for sample in export(tools, tmp_path / "out"):
        names = shown(sample.prompt)
        image = open_sample_image(sample.image, tmp_path / "out")
        parts = ranking_parts(RankRequest(image=image, candidates=tuple(names)), names, 768)
        assert [p.text for p in parts if isinstance(p, TextPart)] == [sample.prompt]


def test_the_answer_puts_the_true_label_first_in_a_list_the_parser_reads(tools, colour_memory, tmp_path) -> None:
    samples = export(tools, tmp_path / "out")
    labels = label_of_image(tools)
    for sample in samples:
        parsed = parse_ranking(sample.answer, shown(sample.prompt))
        assert parsed.fallback == "none"
        assert parsed.order[0] == labels[sample.image]
        assert sorted(parsed.order) == sorted(shown(sample.prompt))


def test_retrieval_leaves_the_querys_own_entry_out(tools, tmp_path) -> None:
    """One exemplar per label: with its own entry left out, no retrieval can hold the true label."""
    for n, colour in enumerate(COLOURS):
        tools.add_images("single", [str(make_image(tmp_path / f"{colour}.png", colour, seed=n))], colour)
    export(tools, tmp_path / "out", memory="single")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["samples"], summary["inserted"], summary["true_first"], summary["true_retrieved"]) == (4, 4, 0, 0)


def test_a_missed_true_label_replaces_the_least_similar_candidate() -> None:
    picked = sample_candidates("heron", ["gull", "tern", "crow"], 3, random.Random(0))
    assert sorted(picked.shown) == ["gull", "heron", "tern"]
    assert picked.answer == ["heron", "gull", "tern"]
    assert picked.inserted and not picked.true_first


def test_a_retrieved_true_label_goes_first_and_the_rest_keep_their_order() -> None:
    picked = sample_candidates("tern", ["gull", "tern", "crow"], 3, random.Random(0))
    assert picked.answer == ["tern", "gull", "crow"]
    assert not picked.inserted and not picked.true_first
    assert sample_candidates("gull", ["gull", "tern", "crow"], 3, random.Random(0)).true_first


def test_the_candidate_order_is_shuffled_per_sample() -> None:
    rng = random.Random(0)
    positions = {sample_candidates("a", ["a", "b", "c", "d", "e"], 5, rng).shown.index("a") for _ in range(50)}
    assert positions == {0, 1, 2, 3, 4}


def test_the_same_seed_writes_the_same_file_and_another_seed_another(tools, colour_memory, tmp_path) -> None:
    export(tools, tmp_path / "a", seed=1)
    export(tools, tmp_path / "b", seed=1)
    export(tools, tmp_path / "c", seed=2)
    first = (tmp_path / "a" / "train.jsonl").read_text()
    assert first == (tmp_path / "b" / "train.jsonl").read_text()
    assert first != (tmp_path / "c" / "train.jsonl").read_text()


def test_per_label_caps_the_samples_of_each_label(tools, colour_memory, tmp_path) -> None:
    samples = export(tools, tmp_path / "out", per_label=2)
    labels = label_of_image(tools)
    assert sorted(labels[s.image] for s in samples) == sorted(list(COLOURS) * 2)


def test_the_three_layouts_carry_the_same_prompts_and_answers(tools, colour_memory, tmp_path) -> None:
    by_layout = {layout: export(tools, tmp_path / layout, layout=layout) for layout in ("qwen", "llava", "openai")}
    texts = {layout: [(s.prompt, s.answer) for s in samples] for layout, samples in by_layout.items()}
    assert texts["qwen"] == texts["llava"] == texts["openai"]
    llava = json.loads((tmp_path / "llava" / "train.jsonl").read_text().splitlines()[0])
    assert llava["conversations"][0]["value"].startswith("<image>\n")
    inline = by_layout["openai"][0].image
    assert inline.startswith("data:image/jpeg;base64,")
    assert open_sample_image(inline, tmp_path).size == Image.open(tmp_path / "qwen" / by_layout["qwen"][0].image).size


def test_images_are_copied_into_the_data_folder_or_referenced_where_they_lie(tools, colour_memory, tmp_path) -> None:
    copied = export(tools, tmp_path / "copied")
    assert all((tmp_path / "copied" / s.image).is_file() for s in copied)
    referenced = export(tools, tmp_path / "referenced", images="reference")
    assert all(Path(s.image).is_absolute() and Path(s.image).is_file() for s in referenced)
    assert not (tmp_path / "referenced" / "images").exists()


def test_a_memory_of_one_label_is_refused_clearly(tools, image_folder, tmp_path) -> None:
    tools.add_images("reds", [str(p) for p in (image_folder / "red").iterdir()], "red")
    with pytest.raises(FinetuneError, match="1 label.*2 or more"):
        export(tools, tmp_path / "out", memory="reds")


@pytest.mark.parametrize(("option", "message"), [({"k": 1}, "k must be at least 2"), ({"per_label": 0}, "per_label")])
def test_bad_options_are_refused_before_anything_is_written(tools, colour_memory, tmp_path, option, message) -> None:
    with pytest.raises(FinetuneError, match=message):
        export(tools, tmp_path / "out", **option)
    assert not (tmp_path / "out").exists()


def test_a_missing_exemplar_file_is_named_and_leaves_no_samples_file(tools, colour_memory, tmp_path) -> None:
    entry, _ = next(iter(tools.store.image_entries("colours", tools.encoder.identity)))
    entry.image_path.unlink()
    with pytest.raises(FinetuneError, match=f"entry {entry.id!r}.*missing"):
        export(tools, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images"]


def test_earlier_data_is_kept_unless_overwrite_is_given(tools, colour_memory, tmp_path) -> None:
    export(tools, tmp_path / "out")
    with pytest.raises(FinetuneError, match="--overwrite"):
        export(tools, tmp_path / "out")
    assert len(export(tools, tmp_path / "out", overwrite=True)) == 12


def test_a_labelled_data_set_gives_samples_of_its_train_split_only(settings, labelled_folder, tmp_path) -> None:
    config = RankingDataConfig(tmp_path / "out", k=2, images="reference")
    summary = export_dataset_ranking_data(settings, load_dataset(labelled_folder), config)
    samples = read_samples(tmp_path / "out" / "train.jsonl")
    assert (summary.samples, summary.labels) == (12, 3)
    assert all("/train/" in s.image for s in samples)
    assert {ast.literal_eval(s.answer)[0] for s in samples} == {"red thing", "green thing", "blue thing"}
    assert not settings.data_dir.exists()  # a temporary memory, never the user's data folder


def test_a_bad_sample_line_is_named_with_its_file_and_line(tmp_path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\n')
    with pytest.raises(FinetuneError, match=r"train.jsonl, line 1: not a ranking sample"):
        read_samples(path)


def test_a_sample_line_nested_too_deeply_is_named_with_its_file_and_line(tmp_path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n" + "[" * 5_000 + "]" * 5_000 + "\n")
    with pytest.raises(FinetuneError, match=r"train.jsonl, line 2: JSON nested too deeply"):
        read_samples(path)


def test_the_ranking_data_command_prints_the_summary(colour_memory, settings, tmp_path, capsys) -> None:
    flags = ["--data-dir", str(settings.data_dir), "--clip-model", settings.clip_model, "--no-ranker"]
    code = main(["ranking-data", "colours", "--out", str(tmp_path / "out"), "--k", "3", "--json", *flags])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 12


def test_the_ranking_data_command_names_an_unknown_memory(settings, tmp_path, capsys) -> None:
    flags = ["--data-dir", str(settings.data_dir), "--clip-model", settings.clip_model, "--no-ranker"]
    assert main(["ranking-data", "nothing", "--out", str(tmp_path / "out"), *flags]) == 2
    assert "nothing" in capsys.readouterr().err
