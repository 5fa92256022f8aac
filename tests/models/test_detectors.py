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


@pytest.mark.parametrize("architecture", ["fcos", "retinanet"])
def test_exportable_graph_gives_the_detectors_own_detections_for_a_batch(architecture):
    from autotimm.models import ExportableDetector, letterbox_batch, to_image_pixels

    features = create_feature_pyramid(BackboneConfig("test_resnet", pretrained=False), image_size=SIZE, out_channels=64)
    detector = create_detector(
        architecture,
        features,
        num_classes=3,
        image_size=SIZE,
        image_mean=(0.5, 0.4, 0.3),
        image_std=(0.2, 0.25, 0.3),
        score_thresh=0.005,  # an untrained RetinaNet scores about 0.01 everywhere
        nms_thresh=0.5,
        # FCOS reaches the limit (the per-image limit applies inside the batch); an untrained RetinaNet's
        # equal scores would make the last kept box a tie, so it keeps all.
        detections_per_img=20 if architecture == "fcos" else 1000,
    ).eval()
    graph = ExportableDetector(detector)
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=generator) for h, w in ((64, 64), (40, 64), (64, 20), (120, 90))]
    meta = {"letterbox": {"image_size": graph.image_size, "canvas_size": graph.canvas_size}}
    batch, sizes = letterbox_batch(images, meta)
    with torch.no_grad():
        expected = detector(images)
        got = to_image_pixels(graph(batch, sizes), sizes, [tuple(i.shape[-2:]) for i in images])
    assert sum(len(d["boxes"]) for d in expected) > 0
    for want, have in zip(expected, got, strict=True):
        assert len(want["boxes"]) == len(have["boxes"]) <= detector.detections_per_img
        want, have = _in_order(want), _in_order(have)  # equal scores may come in either order
        torch.testing.assert_close(have["scores"], want["scores"])
        torch.testing.assert_close(have["boxes"], want["boxes"], atol=1e-3, rtol=1e-4)  # float32 rounding
        assert torch.equal(have["labels"], want["labels"])


def test_exportable_graph_refuses_a_model_in_training_mode():
    from autotimm.models import ExportableDetector

    with pytest.raises(RuntimeError, match=r"eval mode"):
        ExportableDetector(_detector().train())
    with pytest.raises(TypeError, match=r"FCOS or RetinaNet.*Linear"):
        ExportableDetector(torch.nn.Linear(2, 2))


def _in_order(detections: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The detections sorted by score (to 5 decimals), then class, then box."""
    rows = list(
        zip(detections["scores"].tolist(), detections["labels"].tolist(), detections["boxes"].tolist(), strict=True)
    )
    order = sorted(
        range(len(rows)), key=lambda i: (-round(rows[i][0], 5), rows[i][1], [round(v, 2) for v in rows[i][2]])
    )
    return {k: v[order] for k, v in detections.items()}
