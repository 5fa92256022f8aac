"""Detectors from torchvision (FCOS, RetinaNet) over a timm feature pyramid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from autotimm._errors import check_choice
from autotimm.models.features import TimmFeaturePyramid

__all__ = ["ARCHITECTURES", "Architecture", "build_detector", "losses_and_detections"]

Architecture = Literal["fcos", "retinanet"]
ARCHITECTURES: tuple[str, ...] = ("fcos", "retinanet")
_SIZE_DIVISOR = 32  # the canvas is a multiple of the coarsest backbone stride


class LetterboxTransform(GeneralizedRCNNTransform):
    """Normalise, letterbox and batch images the way `DetectionDataModule` prepares them.

    Each image is resized so that its longer side is `image_size` (aspect ratio kept) and
    padded on the right and bottom to a square canvas of `ceil(image_size / 32) * 32`
    pixels, so inference sees what training saw and fixed-size transformers always get
    their input size. Images that are already `image_size` on their longer side (a data
    module batch) are not resampled; a stacked batch is normalised in one operation.
    """

    def __init__(self, image_size: int, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        super().__init__(image_size, image_size, list(image_mean), list(image_std), size_divisible=_SIZE_DIVISOR)
        self.image_size = image_size
        self.canvas = math.ceil(image_size / _SIZE_DIVISOR) * _SIZE_DIVISOR

    def forward(  # type: ignore[override]
        self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict[str, Any]] | None = None
    ) -> tuple[ImageList, list[dict[str, Any]] | None]:
        if targets is not None:
            targets = [dict(t) for t in targets]  # boxes are rescaled below: leave the caller's dicts alone
        if isinstance(images, torch.Tensor) and images.ndim == 4 and max(images.shape[-2:]) == self.image_size:
            h, w = images.shape[-2:]
            batch = F.pad(self.normalize(images), (0, self.canvas - w, 0, self.canvas - h))
            return ImageList(batch, [(h, w)] * len(images)), targets
        resized = []
        for i, image in enumerate(images):
            if image.ndim != 3:
                raise ValueError(
                    f"Expected each image to be a [3, H, W] tensor, but image {i} has shape {tuple(image.shape)}."
                )
            image, target = self.resize(self.normalize(image), None if targets is None else targets[i])
            if targets is not None:
                targets[i] = target
            resized.append(image)
        batch = resized[0].new_zeros(len(resized), 3, self.canvas, self.canvas)
        for canvas, image in zip(batch, resized, strict=True):
            canvas[:, : image.shape[1], : image.shape[2]].copy_(image)
        return ImageList(batch, [(img.shape[1], img.shape[2]) for img in resized]), targets

    def resize(self, image: torch.Tensor, target: dict[str, Any] | None = None) -> Any:
        if max(image.shape[-2:]) == self.image_size:
            return image, target
        return super().resize(image, target)


def build_detector(
    architecture: str,
    features: TimmFeaturePyramid,
    *,
    num_classes: int,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    score_thresh: float,
    nms_thresh: float,
    detections_per_img: int,
) -> FCOS | RetinaNet:
    """Build a torchvision FCOS or RetinaNet over `features`, with one anchor size per pyramid stride.

    Labels are 0-based class indices (neither model reserves a background class). The model
    takes float images in `[0, 1]` and normalises them with `image_mean` and `image_std`.

    Examples:
        >>> from autotimm.backbones import BackboneConfig
        >>> from autotimm.models.features import create_feature_extractor
        >>> body = create_feature_extractor(BackboneConfig("resnet18", pretrained=False), num_levels=3, input_size=64)
        >>> model = build_detector("fcos", TimmFeaturePyramid(body, 64), num_classes=3, image_size=64,
        ...     image_mean=(0.5,) * 3, image_std=(0.25,) * 3, score_thresh=0.05, nms_thresh=0.6, detections_per_img=100)
        >>> type(model).__name__
        'FCOS'
    """
    check_choice("architecture", architecture, ARCHITECTURES)
    common = {
        "num_classes": num_classes,
        "min_size": image_size,
        "max_size": image_size,
        "image_mean": list(image_mean),
        "image_std": list(image_std),
        "score_thresh": score_thresh,
        "nms_thresh": nms_thresh,
        "detections_per_img": detections_per_img,
    }
    strides = features.strides
    if architecture == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        model: FCOS | RetinaNet = FCOS(features, anchor_generator=anchors, **common)
    else:
        # RetinaNet's anchors: 3 scales x 3 aspect ratios, 4x the stride at the base scale.
        sizes = tuple(tuple(4 * s * 2 ** (k / 3) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
        head = RetinaNetHead(features.out_channels, anchors.num_anchors_per_location()[0], num_classes)
        model = RetinaNet(features, anchor_generator=anchors, head=head, **common)
    model.transform = LetterboxTransform(image_size, image_mean, image_std)
    return model


def losses_and_detections(
    model: FCOS | RetinaNet, images: torch.Tensor | list[torch.Tensor], targets: list[dict[str, Any]] | None
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One forward pass that gives both the losses (when `targets` are given) and the detections.

    torchvision's detectors return losses in training mode and detections in eval mode;
    validation wants both from the same pass. Detections are in the pixels of `images`.
    """
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, targets = model.transform(images, targets)
    features = list(model.backbone(image_list.tensors).values())
    head_outputs = model.head(features)
    anchors = model.anchor_generator(image_list, features)
    locations = [f.shape[-2] * f.shape[-1] for f in features]
    per_location = head_outputs["cls_logits"].shape[1] // sum(locations)
    per_level = [n * per_location for n in locations]
    losses: dict[str, torch.Tensor] = {}
    if targets is not None:
        if isinstance(model, FCOS):
            losses = model.compute_loss(targets, head_outputs, anchors, per_level)
        else:
            losses = model.compute_loss(targets, head_outputs, anchors)
    split_outputs = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
    split_anchors = [list(a.split(per_level)) for a in anchors]
    detections = model.postprocess_detections(split_outputs, split_anchors, image_list.image_sizes)
    detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
    return losses, detections
