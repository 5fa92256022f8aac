"""Detectors from torchvision (FCOS, RetinaNet) over a timm feature pyramid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from autotimm._deprecation import deprecated_alias
from autotimm._errors import check_choice
from autotimm.geometry import LETTERBOX_GREY, letterbox_size
from autotimm.models.features import TimmFeaturePyramid

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "CollapseMonitor",
    "LetterboxTransform",
    "build_detector",
    "create_detector",
    "letterbox_transform",
    "losses_and_detections",
]

Architecture = Literal["fcos", "retinanet"]
ARCHITECTURES: tuple[str, ...] = ("fcos", "retinanet")


class LetterboxTransform(GeneralizedRCNNTransform):
    """Letterbox, normalise and batch images the way `DetectionDataModule` prepares them.

    Each image is resized (bilinear, antialiased) so that its longer side is `image_size`,
    keeping its aspect ratio, and placed at the top left of a square canvas of
    `canvas_size` pixels filled with the data module's grey, so inference sees what
    training saw and fixed-size transformers always get their input size. Images already
    `image_size` on their longer side (data module batches) are not resampled.
    """

    def __init__(
        self, image_size: int, canvas_size: int, image_mean: Sequence[float], image_std: Sequence[float]
    ) -> None:
        super().__init__(image_size, image_size, list(image_mean), list(image_std), size_divisible=canvas_size)
        self.image_size = image_size
        self.canvas_size = canvas_size

    def forward(  # type: ignore[override]
        self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict[str, Any]] | None = None
    ) -> tuple[ImageList, list[dict[str, Any]] | None]:
        if targets is not None:
            targets = [dict(t) for t in targets]  # boxes may be rescaled: leave the caller's dicts alone
        resized = []
        for i, image in enumerate(images):
            if image.ndim != 3:
                raise ValueError(
                    f"Expected each image to be a [3, H, W] tensor, but image {i} has shape {tuple(image.shape)}."
                )
            image, target = self.resize(image, None if targets is None else targets[i])
            if targets is not None:
                targets[i] = target
            resized.append(image)
        batch = images if isinstance(images, torch.Tensor) and images.shape[-2:] == resized[0].shape[-2:] else resized
        return ImageList(self.normalize(self._place(batch)), [(img.shape[1], img.shape[2]) for img in resized]), targets

    def letterbox(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Letterbox `[3, H, W]` images in [0, 1] onto grey canvases, not normalised: what an exported detector takes.

        Returns:
            The `[B, 3, canvas_size, canvas_size]` batch and each resized image's `(height, width)` in it.

        Examples:
            >>> transform = LetterboxTransform(64, 64, (0.5,) * 3, (0.25,) * 3)
            >>> batch, sizes = transform.letterbox([torch.rand(3, 30, 120)])
            >>> tuple(batch.shape), sizes
            ((1, 3, 64, 64), [(16, 64)])
        """
        resized = [self.resize(image)[0] for image in images]
        return self._place(resized), [(image.shape[1], image.shape[2]) for image in resized]

    def _place(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The images at the top left of grey `canvas_size` squares (one op for a batch tensor)."""
        reference = images[0]
        canvas = reference.new_full((len(images), 3, self.canvas_size, self.canvas_size), LETTERBOX_GREY)
        if isinstance(images, torch.Tensor):
            canvas[..., : images.shape[-2], : images.shape[-1]] = images
        else:
            for out, image in zip(canvas, images, strict=True):
                out[:, : image.shape[1], : image.shape[2]] = image
        return canvas

    def resize(self, image: torch.Tensor, target: dict[str, Any] | None = None) -> Any:
        h, w = image.shape[-2:]
        if max(h, w) == self.image_size:
            return image, target
        size = list(letterbox_size(h, w, self.image_size))
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        if target is not None and "boxes" in target:
            scale = target["boxes"].new_tensor([size[1] / w, size[0] / h] * 2)
            target = {**target, "boxes": target["boxes"] * scale}
        return image, target


class _StrideAnchors(AnchorGenerator):
    """Anchors at each level's true stride, always in float32.

    torchvision derives a level's stride from `canvas // grid`, which is wrong for levels
    whose grid is rounded up (P6, P7 on most canvases), and takes the feature maps' dtype,
    which under mixed precision rounds anchor and box coordinates to a few bits.
    """

    def __init__(self, strides: Sequence[int], sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float]):
        super().__init__(tuple(tuple(s) for s in sizes), (tuple(aspect_ratios),) * len(sizes))
        self.strides = list(strides)

    def forward(self, image_list: ImageList, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        device = feature_maps[0].device
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(torch.float32, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors] * len(image_list.image_sizes)


class _Float32Outputs:
    """Head mixin: logits and box regressions in float32, so box decoding, scores and NMS
    are exact under mixed precision (the convolutions still run in low precision)."""

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in super().forward(x).items()}  # type: ignore[misc]


class _FCOSHead(_Float32Outputs, FCOSHead):
    """torchvision's FCOS head, whose box regression starts at boxes two anchor sizes wide.

    torchvision initialises the regression layer's bias at 0, so the ReLU'd distances start
    near 0: every first box is a point, whose GIoU loss is 1 with almost no gradient, and a
    quarter to a half of the outputs start in the ReLU's flat part. From there a whole
    output channel can stay at 0 (seen at lr 1e-2 on the hard shapes: a quarter of the
    outputs pinned at 0 for good). A bias of 1 starts every distance at one anchor size,
    the start of the original FCOS (`exp(0)`), inside the ReLU's linear part.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int) -> None:
        super().__init__(in_channels, num_anchors, num_classes)
        nn.init.constant_(self.regression_head.bbox_reg.bias, 1.0)


class _RetinaNetHead(_Float32Outputs, RetinaNetHead):
    pass


def create_detector(
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
    """Build a torchvision FCOS or RetinaNet over `features`, with anchors at the pyramid's strides.

    Labels are 0-based class indices (neither model reserves a background class). The model
    takes float images in `[0, 1]`, letterboxes them to `image_size` and normalises them
    with `image_mean` and `image_std`.

    Examples:
        >>> from autotimm.backbones import BackboneConfig
        >>> from autotimm.models.features import create_feature_pyramid
        >>> backbone = BackboneConfig("resnet18", pretrained=False)
        >>> features = create_feature_pyramid(backbone, image_size=64, out_channels=64)
        >>> model = create_detector("fcos", features, num_classes=3, image_size=64,
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
    strides, channels = features.strides, features.out_channels
    if architecture == "fcos":
        # One anchor per location, as big as the stride: FCOS uses it to assign objects to levels.
        anchors = _StrideAnchors(strides, [(s,) for s in strides], (1.0,))
        head: FCOSHead | RetinaNetHead = _FCOSHead(channels, 1, num_classes)
        model: FCOS | RetinaNet = FCOS(features, anchor_generator=anchors, head=head, **common)
    else:
        # RetinaNet's anchors: 3 scales x 3 aspect ratios, 4x the stride at the base scale.
        sizes = [[4 * s * 2 ** (k / 3) for k in range(3)] for s in strides]
        anchors = _StrideAnchors(strides, sizes, (0.5, 1.0, 2.0))
        head = _RetinaNetHead(channels, anchors.num_anchors_per_location()[0], num_classes)
        model = RetinaNet(features, anchor_generator=anchors, head=head, **common)
    model.transform = letterbox_transform(features, image_size, image_mean, image_std)
    return model


build_detector = deprecated_alias(create_detector, "build_detector")


def letterbox_transform(
    features: TimmFeaturePyramid, image_size: int, image_mean: Sequence[float], image_std: Sequence[float]
) -> LetterboxTransform:
    """The `LetterboxTransform` for `image_size` inputs to `features`: its canvas is a multiple of the
    pyramid's `size_divisor`, so every level tiles it exactly.

    Examples:
        >>> from autotimm.backbones import BackboneConfig
        >>> from autotimm.models.features import create_feature_pyramid
        >>> backbone = BackboneConfig("resnet18", pretrained=False)
        >>> features = create_feature_pyramid(backbone, image_size=96, out_channels=64)
        >>> letterbox_transform(features, 100, (0.5,) * 3, (0.25,) * 3).canvas_size
        128
    """
    canvas = math.ceil(image_size / features.size_divisor) * features.size_divisor
    return LetterboxTransform(image_size, canvas, image_mean, image_std)


def losses_and_detections(
    model: FCOS | RetinaNet, images: torch.Tensor | list[torch.Tensor], targets: list[dict[str, Any]] | None
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One forward pass of a model in eval mode that gives both the losses (when `targets` are
    given) and the detections (in the pixels of `images`).

    torchvision's detectors return losses in training mode and detections in eval mode;
    validation wants both from the same pass.
    """
    if model.training:
        raise RuntimeError("`losses_and_detections` needs the model in eval mode (`model.eval()`).")
    original_sizes = [(img.shape[-2], img.shape[-1]) for img in images]
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


class CollapseMonitor:
    """Notices a detection head that has stopped learning, so training can say so instead of running on.

    Two signs are watched, each from the second epoch on (or after `min_steps` training
    batches), when a fresh head may still be near its starting point:

    - FCOS's regression loss (GIoU) averages `>= pinned_at` over a training epoch: every
      predicted box is degenerate (zero width or height), the ReLU of the regression
      branch passes no gradient, and boxes are never learned;
    - a validation epoch with ground-truth boxes gets no detection at all above the score
      threshold: every location is predicted as background.

    Each message is given once per `reset()` (one `fit`).

    Examples:
        >>> monitor = CollapseMonitor()
        >>> for _ in range(3):
        ...     monitor.update_train({"bbox_regression": torch.tensor(1.0)})
        >>> monitor.train_epoch_message(epoch=1) is not None
        True
    """

    def __init__(self, pinned_at: float = 0.99, min_steps: int = 50) -> None:
        self.pinned_at = pinned_at
        self.min_steps = min_steps
        self.reset()

    def reset(self) -> None:
        """Forget everything: call at the start of each fit."""
        self._steps = 0
        self._warned: set[str] = set()
        self._new_epoch()

    def _new_epoch(self) -> None:
        self._regression_sum = 0.0
        self._regression_batches = 0
        self._eval_boxes = 0
        self._eval_detections = 0

    def update_train(self, losses: dict[str, torch.Tensor], giou: bool = True) -> None:
        """Count one training batch's losses (`giou`: the regression loss is FCOS's GIoU loss)."""
        self._steps += 1
        if giou and "bbox_regression" in losses:
            self._regression_sum += float(losses["bbox_regression"].detach())
            self._regression_batches += 1

    def update_eval(self, detections: list[dict[str, torch.Tensor]], targets: list[dict[str, Any]]) -> None:
        """Count one validation batch's detections and ground-truth boxes."""
        self._eval_detections += sum(len(d["boxes"]) for d in detections)
        self._eval_boxes += sum(len(t["boxes"]) for t in targets)

    def _settled(self, epoch: int) -> bool:
        return epoch >= 1 or self._steps >= self.min_steps

    def train_epoch_message(self, epoch: int) -> str | None:
        """A warning for a training epoch whose regression loss stayed pinned, else `None`; starts a new epoch."""
        batches, total = self._regression_batches, self._regression_sum
        self._regression_sum, self._regression_batches = 0.0, 0
        if not batches or not self._settled(epoch) or "regression" in self._warned:
            return None
        mean = total / batches
        if mean < self.pinned_at:
            return None
        self._warned.add("regression")
        return (
            f"The box regression loss averaged {mean:.4f} over training epoch {epoch}: the head predicts "
            "degenerate boxes (GIoU 0) and receives no gradient to learn them, so more epochs will not help. "
            "Lower `lr`, use a warmup (`scheduler='cosine_warmup'`), or check that the boxes fit the images."
        )

    def eval_epoch_message(self, epoch: int, score_thresh: float) -> str | None:
        """A warning for a validation epoch with boxes but no detection, else `None`; starts a new epoch."""
        boxes, detections = self._eval_boxes, self._eval_detections
        self._eval_boxes, self._eval_detections = 0, 0
        if not boxes or detections or not self._settled(epoch) or "background" in self._warned:
            return None
        self._warned.add("background")
        return (
            f"Validation epoch {epoch} found no object at all (every prediction scored below "
            f"`score_thresh={score_thresh}`, i.e. background) although the data holds {boxes} boxes: the "
            "classification head has collapsed. Lower `lr`, use a warmup (`scheduler='cosine_warmup'`), or "
            "check the labels."
        )
