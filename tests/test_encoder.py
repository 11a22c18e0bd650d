"""The CLIP encoder: shapes, normalisation, batching and prompt templates."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rar_tools.encoder import create_encoder
from rar_tools.errors import ModelLoadError


@pytest.fixture(scope="module")
def encoder(clip_model: str):
    return create_encoder(clip_model, device="cpu", batch_size=2)


def test_image_embeddings_are_unit_norm_float32(encoder) -> None:
    images = [Image.new("RGB", (40, 30), c) for c in ["red", "green", "blue"]]
    out = encoder.encode_images(images)
    assert out.shape == (3, encoder.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_batched_encoding_equals_one_at_a_time(encoder) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(5)]
    batched = encoder.encode_images(images)
    single = np.concatenate([encoder.encode_images([im]) for im in images])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_no_images_gives_an_empty_matrix(encoder) -> None:
    assert encoder.encode_images([]).shape == (0, encoder.dim)


def test_label_embedding_uses_the_photo_template(encoder) -> None:
    np.testing.assert_allclose(
        encoder.encode_labels(["Blue Jay"]), encoder.encode_texts(["a photo of a Blue Jay."]), atol=1e-5
    )


def test_template_ensemble_is_the_normalised_mean(clip_model: str) -> None:
    from rar_tools.encoder import label_templates

    ensemble = create_encoder(clip_model, device="cpu", templates="ensemble")
    prompts = [t("gull") for t in label_templates("ensemble")]
    mean = ensemble.encode_texts(prompts).mean(axis=0)
    np.testing.assert_allclose(ensemble.encode_labels(["gull"])[0], mean / np.linalg.norm(mean), atol=1e-5)
    assert len(prompts) > 1


def test_identity_names_model_weights_and_dimension(encoder, clip_model: str) -> None:
    assert encoder.identity.model == clip_model
    assert encoder.identity.pretrained == "model-folder"
    assert encoder.identity.dim == 32


def test_missing_model_folder_is_a_clear_load_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="could not load CLIP model"):
        create_encoder(f"local-dir:{tmp_path / 'nothing'}")


def test_unavailable_device_is_refused(clip_model: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        create_encoder(clip_model, device="cuda")


def test_reduced_precision_encodes_images_and_texts_like_float32(encoder, clip_model: str) -> None:
    """bf16 on the CPU converts the weights as fp16 on CUDA does: pixels must follow the weights."""
    low = create_encoder(clip_model, device="cpu", precision="bf16")
    images = [Image.new("RGB", (40, 30), c) for c in ["red", "blue"]]
    for full, reduced in [
        (encoder.encode_images(images), low.encode_images(images)),
        (encoder.encode_labels(["Blue Jay"]), low.encode_labels(["Blue Jay"])),
    ]:
        assert reduced.dtype == np.float32
        assert (full * reduced).sum(axis=1) == pytest.approx(1.0, abs=0.01)


def test_unknown_precision_is_refused(clip_model: str) -> None:
    with pytest.raises(ModelLoadError, match="unknown CLIP precision 'fp8'"):
        create_encoder(clip_model, device="cpu", precision="fp8")
