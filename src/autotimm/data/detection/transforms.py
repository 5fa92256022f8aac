"""Detection transforms (torchvision transforms v2): letterbox resize, augmentation presets moving boxes."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from autotimm.geometry import LETTERBOX_FILL as _PAD_FILL
from autotimm.geometry import letterbox_size

DetectionAugmentation = Literal["default", "strong", "none"]


def _labels_and_crowd(inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """`labels_getter` of `SanitizeBoundingBoxes`: drop `labels` and `iscrowd` along with their boxes."""
    target = inputs[1]
    return target["labels"], target["iscrowd"]


class _IfBoxes(torch.nn.Module):
    """Apply a transform only to samples with at least one box (`RandomIoUCrop` needs boxes)."""

    def __init__(self, transform: torch.nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, image: Any, target: dict[str, Any]) -> Any:
        if target["boxes"].shape[0] == 0:
            return image, target
        return self.transform(image, target)


class _Letterbox(torch.nn.Module):
    """Resize the longer side to `size` (aspect ratio kept), pad right and bottom to `size x size`.

    Records `target["scale"] = (new_w / w, new_h / h)` of the image it was given.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Any, target: dict[str, Any]) -> Any:
        h, w = F.get_size(image)
        new_h, new_w = letterbox_size(h, w, self.size)
        image = F.resize(image, [new_h, new_w], antialias=True)
        boxes = F.resize(target["boxes"], [new_h, new_w])
        padding = [0, 0, self.size - new_w, self.size - new_h]  # left, top, right, bottom
        image = F.pad(image, padding, fill=_PAD_FILL)
        boxes = F.pad(boxes, padding)
        return image, {**target, "boxes": boxes, "scale": (new_w / w, new_h / h)}


class DetectionTransform:
    """The sample pipeline: augmentation on the original image, letterbox, optional jitter, box cleanup."""

    def __init__(self, image_size: int, augmentation: DetectionAugmentation, min_box_size: float, train: bool) -> None:
        before: list[Any] = []
        after: list[Any] = []
        if train and augmentation == "default":
            before = [v2.RandomPhotometricDistort(p=0.5), v2.RandomHorizontalFlip(p=0.5)]
            after = [v2.RandomAffine(degrees=0.0, translate=(0.05, 0.05), scale=(0.85, 1.15), fill=_PAD_FILL)]
        elif train and augmentation == "strong":
            before = [
                v2.RandomPhotometricDistort(p=0.8),
                v2.RandomZoomOut(fill=_PAD_FILL, side_range=(1.0, 2.5), p=0.5),
                _IfBoxes(v2.RandomIoUCrop()),
                v2.RandomHorizontalFlip(p=0.5),
            ]
            after = [v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.7, 1.3), fill=_PAD_FILL)]
        if not train:
            # Evaluation keeps every annotated box, however small it becomes: a box dropped
            # here would stop counting as a miss and flatter the metric.
            self.steps = [_Letterbox(image_size), v2.ToDtype(torch.float32, scale=True)]
            return
        self.steps = [
            *before,
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=_labels_and_crowd),
            _Letterbox(image_size),
            *after,
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_size=min_box_size, labels_getter=_labels_and_crowd),
            v2.ToDtype(torch.float32, scale=True),
        ]

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        for step in self.steps:
            image, target = step(image, target)
        return image, target
