"""Detectors over a timm feature pyramid: anchors at the true strides, the model's letterbox matching the data's."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm.data
import torch
from torchvision.io import read_image

from autotimm import BackboneConfig, DetectionDataModule
from autotimm.models import create_detector, create_feature_pyramid
from helpers import ann, write_coco

SIZE = 64


def _detector(name: str = "test_resnet", image_size: int = SIZE) -> torch.nn.Module:
    """An FCOS detector of 3 classes over `name`, built from the models layer alone."""
    features = create_feature_pyramid(BackboneConfig(name, pretrained=False), image_size=image_size, out_channels=64)
    config = timm.data.resolve_model_data_config(features.body)
    return create_detector(
        "fcos",
        features,
        num_classes=3,
        image_size=image_size,
        image_mean=config["mean"],
        image_std=config["std"],
        score_thresh=0.05,
        nms_thresh=0.6,
        detections_per_img=100,
    )


@pytest.mark.parametrize(
    ("name", "strides", "canvas"),
    [
        ("resnet18", [8, 16, 32, 64, 128], 96),  # P6/P7 grids (2, 1) do not divide the canvas evenly
        ("vit_small_patch14_dinov2", [7, 14, 28, 56, 112], 112),  # patch 14: canvas a multiple of 28
    ],
)
def test_anchors_sit_at_each_levels_true_stride(name: str, strides: list[int], canvas: int) -> None:
    model = _detector(name, image_size=96).eval()
    transform, pyramid = model.transform, model.backbone
    assert pyramid.strides == strides and transform.canvas_size == canvas
    image_list, _ = transform(torch.rand(1, 3, 96, 96))
    assert tuple(image_list.tensors.shape[-2:]) == (canvas, canvas)
    features = list(pyramid(image_list.tensors).values())
    assert features[0].shape[-1] * strides[0] == canvas  # the finest level tiles the canvas exactly
    (anchors,) = model.anchor_generator(image_list, features)
    start = 0
    for stride, feature in zip(strides, features, strict=True):
        n = feature.shape[-2] * feature.shape[-1]
        centres_x = ((anchors[start : start + n, 0] + anchors[start : start + n, 2]) / 2).unique()
        start += n
        assert torch.allclose(centres_x, torch.arange(feature.shape[-1]) * float(stride))


def test_raw_images_are_prepared_as_the_data_module_prepares_them(tmp_path: Path) -> None:
    # A 40x80 file: the data module letterboxes it to 64 (32x64 content plus grey padding).
    root = write_coco(
        tmp_path / "coco",
        images=[{"id": 1, "file_name": "wide.png", "size": (40, 80)}],
        annotations=[ann(1, 1, 1, [10, 5, 30, 20])],
        categories=[{"id": 1, "name": "a"}],
    )
    data = DetectionDataModule(root, image_size=SIZE, num_workers=0)
    data.setup("validate")
    letterboxed, _ = data.val_dataset[0]
    raw = read_image(str(root / "val2017" / "wide.png")).float() / 255
    transform = _detector().transform
    from_data, from_raw = transform(letterboxed[None])[0], transform([raw])[0]
    assert from_data.tensors.shape == from_raw.tensors.shape
    # Normalised inputs agree up to uint8 rounding of the resized pixels (std about 0.23: 1/255 -> 0.02).
    assert (from_data.tensors - from_raw.tensors).abs().max() < 0.03
    assert from_raw.image_sizes == [(32, 64)]
