"""`explain`: Grad-CAM maps (captum) of CNN and ViT classifiers, at the original image size, drawn and saved."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autotimm import BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.inference import Explanation, to_image_size
from helpers import cpu_trainer


def _noise(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def cnn() -> ImageClassifier:
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3).eval()
    model.class_names = ["blue", "green", "red"]
    model.trained_data_config = {**model.data_config, "input_size": (3, 64, 64)}  # as if trained at 64 px
    return model


def _check_maps(explanations: list[Explanation], images: list[Image.Image]) -> None:
    assert len(explanations) == len(images)
    for explanation, image in zip(explanations, images, strict=True):
        heatmap = explanation.heatmap
        assert tuple(heatmap.shape) == (image.height, image.width)
        assert torch.isfinite(heatmap).all()
        assert heatmap.min() >= 0 and heatmap.max() <= 1


def test_cnn_maps_have_the_original_size_values_in_0_1_and_explain_the_predicted_class(cnn: ImageClassifier):
    images = [_noise(200, 300), _noise(48, 64, seed=1), _noise(500, 180, seed=2)]
    explanations = cnn.explain(images, batch_size=2)
    _check_maps(explanations, images)
    predictions = cnn.predict(images)
    for explanation, prediction in zip(explanations, predictions, strict=True):
        assert (explanation.label, explanation.label_id) == (prediction.label, prediction.label_id)
        assert explanation.score == pytest.approx(prediction.score, abs=1e-5)
        assert explanation.method == "gradcam"
    # The centre crop of a 200x300 image leaves out its left and right ends: no heat there.
    assert explanations[0].heatmap[:, :10].max() == 0 and explanations[0].heatmap[:, -10:].max() == 0


def test_target_by_name_and_index_and_its_score(cnn: ImageClassifier):
    image = _noise(64, 64)
    probs = cnn.predict(image)[0].probs
    by_name = cnn.explain(image, target="green")[0]
    by_index = cnn.explain(image, target=1)[0]
    assert (by_name.label, by_name.label_id) == (by_index.label, by_index.label_id) == ("green", 1)
    assert by_name.score == pytest.approx(float(probs[1]), abs=1e-5)
    assert torch.allclose(by_name.heatmap, by_index.heatmap)


def test_bad_target_layer_and_method_are_named_with_the_choices(cnn: ImageClassifier):
    image = _noise(64, 64)
    with pytest.raises(ValueError, match=r"`target`.*\['blue', 'green', 'red'\].*'gren'.*Did you mean 'green'"):
        cnn.explain(image, target="gren")
    with pytest.raises(ValueError, match=r"`target`.*3"):
        cnn.explain(image, target=3)
    with pytest.raises(ValueError, match=r"`layer`.*'layer5'.*'layer4'"):
        cnn.explain(image, layer="layer5")
    with pytest.raises(ValueError, match=r"`method`.*'gradcam'"):
        cnn.explain(image, method="lime")


def test_another_layer_is_explained_at_the_same_size(cnn: ImageClassifier):
    images = [_noise(96, 128)]
    _check_maps(cnn.explain(images, layer="layer3"), images)


def test_vit_tokens_are_laid_out_on_the_patch_grid():
    model = ImageClassifier(BackboneConfig("test_vit", pretrained=False, kwargs={"img_size": 64}), num_classes=3)
    images = [_noise(80, 120), _noise(64, 64, seed=3)]
    explanations = model.eval().explain(images)
    _check_maps(explanations, images)
    assert all(e.heatmap.max() > 0.9 for e in explanations)  # random weights still put evidence somewhere
    assert model.backbone.patch_embed.grid_size == (4, 4)
    with pytest.raises(ValueError, match=r"shape \(1, 64\).*feature map"):  # the pooled features: no map
        model.explain(images[0], layer="fc_norm")


def test_explanations_draw_save_and_write_csv(cnn: ImageClassifier, tmp_path: Path):
    images = [_noise(60, 90), _noise(70, 50, seed=1)]
    explanations = cnn.explain(images)
    overlay = explanations[0].plot()
    assert overlay.size == images[0].size and overlay.mode == "RGB"
    assert not np.array_equal(np.asarray(overlay), np.asarray(images[0]))
    written = explanations.save_images(tmp_path / "maps")
    assert [p.name for p in written] == ["image_0.png", "image_1.png"]
    assert Image.open(written[1]).size == images[1].size
    rows = explanations.to_csv(tmp_path / "maps.csv").read_text().splitlines()
    assert rows[0] == "path,label,label_id,score,method" and len(rows) == 3


def test_without_captum_the_error_names_the_extra(cnn: ImageClassifier, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(ImportError, match=r"captum, the `autotimm\[explain\]` extra: `pip install -e '.\[explain\]'`"):
        cnn.explain(_noise(64, 64))


def test_a_map_of_the_input_lands_on_the_part_of_the_image_it_covers():
    cam = torch.zeros(4, 4)
    cam[:, 2:] = 1  # the right half of the input
    mapped = to_image_size(cam, (10.0, 0.0, 30.0, 20.0), (20, 40))  # the input is columns 10-30 of the image
    assert mapped[:, :10].max() == 0 and mapped[:, 30:].max() == 0  # outside the input
    assert mapped[:, 23:30].min() == 1 and mapped[:, 10:18].max() == 0  # bilinear in between


def _patches(root: Path, size: int = 64) -> Path:
    """Two classes of grey noise images with one 24 px square, red or blue, at a random place."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4)):
        for name, colour in (("blue", (30, 30, 230)), ("red", (230, 30, 30))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(100, 156, size=(size, size, 3)).astype(np.uint8)
                top, left = rng.integers(0, size - 24, size=2)
                pixels[top : top + 24, left : left + 24] = colour
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_heat_lies_on_the_square_of_the_class_explained(tmp_path: Path):
    data = ImageDataModule(_patches(tmp_path / "data"), image_size=64, batch_size=8, augmentation_preset="none")
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), lr=1e-2, scheduler=None)
    cpu_trainer(tmp_path, max_epochs=6, checkpoint_monitor=None, num_sanity_val_steps=0, seed=0).fit(
        model, datamodule=data
    )
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    pixels[20:44, 4:28] = (230, 30, 30)  # red on the left
    pixels[20:44, 36:60] = (30, 30, 230)  # blue on the right
    image = Image.fromarray(pixels)
    red, blue = model.eval().explain(image, target="red")[0], model.explain(image, target="blue")[0]
    assert red.heatmap[:, :32].sum() > 2 * red.heatmap[:, 32:].sum(), red.heatmap
    assert blue.heatmap[:, 32:].sum() > 2 * blue.heatmap[:, :32].sum(), blue.heatmap
