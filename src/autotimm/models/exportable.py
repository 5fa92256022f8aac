"""A detector as one exportable graph: letterboxed images in, decoded boxes after NMS out.

torchvision's FCOS and RetinaNet decode and suppress boxes image by image in Python (lists of
dicts, `batched_nms`), which neither ONNX nor TorchScript tracing turns into a batch-size-free
graph. `ExportableDetector` runs the same backbone and head, then decodes and suppresses the
whole batch with tensor operations: a per-level top-k, the model's own box coder, a score
threshold, and one `torchvision.ops.nms` call (ONNX `NonMaxSuppression`) over all images and
classes, kept apart by shifting each image's boxes down and each class's boxes right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import nms

from autotimm.models.detectors import LetterboxTransform

__all__ = ["DETECTION_INPUTS", "DETECTION_OUTPUTS", "ExportableDetector", "letterbox_batch", "to_image_pixels"]

#: The graph's inputs: letterboxed images `[B, 3, S, S]` in [0, 1], and each image's `(height, width)` inside them.
DETECTION_INPUTS = ("images", "image_sizes")
#: The graph's outputs, one row per detection of the batch: `[N, 4]`, `[N]`, `[N]`, `[N]`.
DETECTION_OUTPUTS = ("boxes", "scores", "labels", "batch_index")


class ExportableDetector(nn.Module):
    """An FCOS or RetinaNet from `create_detector` as a batch-size-free graph for ONNX and TorchScript.

    Inputs:

    - `images`: float `[B, 3, S, S]`, values in [0, 1], not normalised: each image letterboxed as the
      detector does (resized so that its longer side is `image_size`, placed at the top left of an
      `S = canvas_size` square filled with grey 114/255); the graph normalises them.
    - `image_sizes`: int64 `[B, 2]`, the `(height, width)` of each resized image inside its canvas;
      boxes are clipped to it.

    Outputs, one row per detection of the whole batch, highest score first: `boxes` (`[N, 4]`,
    `xyxy`, canvas pixels), `scores` (`[N]`), `labels` (`[N]`, int64 class indices) and
    `batch_index` (`[N]`, int64: the image each detection belongs to). They are the detector's own
    detections (score threshold, per-class NMS, at most `detections_per_img` per image).

    Args:
        detector: A torchvision `FCOS` or `RetinaNet` with a `LetterboxTransform`, in eval mode.

    Raises:
        TypeError: If `detector` is not such a model.
        RuntimeError: If it is in training mode (its anchors are laid out with one eval forward pass).

    Examples:
        >>> from autotimm.backbones import BackboneConfig
        >>> from autotimm.models import create_detector, create_feature_pyramid
        >>> features = create_feature_pyramid(BackboneConfig("resnet18", pretrained=False), image_size=64,
        ...     out_channels=64)
        >>> detector = create_detector("fcos", features, num_classes=3, image_size=64, image_mean=(0.5,) * 3,
        ...     image_std=(0.25,) * 3, score_thresh=0.05, nms_thresh=0.6, detections_per_img=100).eval()
        >>> graph = ExportableDetector(detector)
        >>> boxes, scores, labels, batch_index = graph(torch.rand(2, 3, 64, 64), torch.tensor([[64, 64], [48, 64]]))
        >>> boxes.shape[1], bool((batch_index < 2).all())
        (4, True)
    """

    def __init__(self, detector: FCOS | RetinaNet) -> None:
        super().__init__()
        transform = getattr(detector, "transform", None)
        if not isinstance(detector, (FCOS, RetinaNet)) or not isinstance(transform, LetterboxTransform):
            raise TypeError(
                "Expected a torchvision FCOS or RetinaNet with a LetterboxTransform (see `create_detector`), but got "
                f"{type(detector).__name__}."
            )
        if detector.training:
            raise RuntimeError("ExportableDetector needs the detector in eval mode (`detector.eval()`).")
        self.backbone = detector.backbone
        self.head = detector.head
        self.box_coder = detector.box_coder
        self.centerness = isinstance(detector, FCOS)
        self.image_size = transform.image_size
        self.canvas_size = transform.canvas_size
        self.score_thresh = float(detector.score_thresh)
        self.nms_thresh = float(detector.nms_thresh)
        self.detections_per_img = int(detector.detections_per_img)
        self.topk_candidates = int(detector.topk_candidates)
        self.num_classes = int(detector.head.classification_head.num_classes)
        self.register_buffer("mean", torch.tensor(transform.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.image_std).view(1, 3, 1, 1), persistent=False)
        anchors, self.level_sizes = _anchors(detector, self.canvas_size)
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(
        self, images: torch.Tensor, image_sizes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of a letterboxed batch; see the class docstring."""
        x = (images.to(self.mean.dtype) - self.mean) / self.std
        outputs = self.head(list(self.backbone(x).values()))
        scores = outputs["cls_logits"].sigmoid()
        if self.centerness:
            scores = torch.sqrt(scores * outputs["bbox_ctrness"].sigmoid())
        num_classes = self.num_classes

        # The `topk_candidates` best (location, class) pairs of each level, as torchvision keeps them.
        candidates, anchor_ids, labels, start = [], [], [], 0
        for size in self.level_sizes:
            level = scores[:, start : start + size].flatten(1)
            top, index = level.topk(min(self.topk_candidates, size * num_classes), dim=1)
            candidates.append(top)
            anchor_ids.append(start + torch.div(index, num_classes, rounding_mode="floor"))
            labels.append(index % num_classes)
            start += size
        scores = torch.cat(candidates, dim=1)
        anchor_ids = torch.cat(anchor_ids, dim=1)
        labels = torch.cat(labels, dim=1)

        codes = outputs["bbox_regression"].gather(1, anchor_ids.unsqueeze(-1).expand(-1, -1, 4))
        anchors = self.anchors[anchor_ids.flatten()]
        boxes = self._decode(codes.reshape(-1, 4), anchors).reshape(codes.shape)
        limits = image_sizes.flip(-1).to(boxes.dtype).repeat(1, 2).unsqueeze(1)  # [B, 1, 4]: w, h, w, h
        boxes = torch.minimum(boxes.clamp(min=0), limits)

        # Above the threshold, then NMS per image and class in one call: each image's boxes are
        # moved down and each class's right by more than a canvas, so that no two groups overlap.
        batch_index = torch.arange(images.shape[0], device=images.device).unsqueeze(1).expand_as(labels)
        boxes, scores = boxes.reshape(-1, 4), scores.flatten()
        labels, batch_index = labels.flatten(), batch_index.flatten()
        keep = torch.nonzero(scores > self.score_thresh).squeeze(1)
        boxes, scores, labels, batch_index = boxes[keep], scores[keep], labels[keep], batch_index[keep]
        step = float(self.canvas_size + 1)
        shift = torch.stack([labels, batch_index], dim=1).to(boxes.dtype).repeat(1, 2) * step
        keep = nms(boxes + shift, scores, self.nms_thresh)

        # At most `detections_per_img` per image: the rank of each kept box among its image's.
        kept_images = batch_index[keep]
        same = (kept_images.unsqueeze(1) == torch.arange(images.shape[0], device=images.device)).long()
        rank = (same.cumsum(0) * same).sum(1)
        keep = keep[rank <= self.detections_per_img]
        return boxes[keep], scores[keep], labels[keep], batch_index[keep]

    def _decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        if self.centerness:  # FCOS: BoxLinearCoder
            return self.box_coder.decode(codes, anchors)
        return self.box_coder.decode_single(codes, anchors)


def _anchors(detector: FCOS | RetinaNet, canvas: int) -> tuple[torch.Tensor, list[int]]:
    """The detector's anchors on an `canvas`-pixel square (`[A, 4]`), and the number of anchors of each level."""
    parameter = next(detector.parameters())
    blank = torch.zeros(1, 3, canvas, canvas, dtype=parameter.dtype, device=parameter.device)
    with torch.no_grad():
        features = list(detector.backbone(blank).values())
        anchors = detector.anchor_generator(ImageList(blank, [(canvas, canvas)]), features)[0]
    per_location = len(anchors) // sum(f.shape[-2] * f.shape[-1] for f in features)
    return anchors, [f.shape[-2] * f.shape[-1] * per_location for f in features]


def letterbox_batch(images: Sequence[torch.Tensor], metadata: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs of an exported detector for `[3, H, W]` float images in [0, 1]: letterboxed as its metadata says.

    Examples:
        >>> meta = {"letterbox": {"image_size": 64, "canvas_size": 64}}
        >>> images, sizes = letterbox_batch([torch.rand(3, 30, 120)], meta)
        >>> tuple(images.shape), sizes.tolist()
        ((1, 3, 64, 64), [[16, 64]])
    """
    box = metadata["letterbox"]
    transform = LetterboxTransform(box["image_size"], box["canvas_size"], (0.0,) * 3, (1.0,) * 3)
    batch, sizes = transform.letterbox(images)
    return batch, torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)


def to_image_pixels(
    outputs: Sequence[torch.Tensor], sizes: torch.Tensor, image_sizes: Sequence[tuple[int, int]]
) -> list[dict[str, torch.Tensor]]:
    """An exported detector's outputs as one dict per image (`boxes`, `scores`, `labels`), boxes in each
    image's own pixels (`image_sizes`: the `(height, width)` of each image before letterboxing).

    Examples:
        >>> outputs = (torch.tensor([[0.0, 0, 32, 16]]), torch.tensor([0.9]), torch.tensor([1]), torch.tensor([0]))
        >>> to_image_pixels(outputs, torch.tensor([[32, 64]]), [(60, 120)])[0]["boxes"].round(decimals=3).tolist()
        [[0.0, 0.0, 60.0, 30.0]]
    """
    boxes, scores, labels, batch_index = (torch.as_tensor(o) for o in outputs)
    found = []
    for i, ((height, width), (h, w)) in enumerate(zip(image_sizes, sizes.tolist(), strict=True)):
        mine = batch_index == i
        scale = boxes.new_tensor([w / width, h / height] * 2)
        pixels = boxes[mine] / scale
        pixels[:, 0::2] = pixels[:, 0::2].clamp(0, width)
        pixels[:, 1::2] = pixels[:, 1::2].clamp(0, height)
        found.append({"boxes": pixels, "scores": scores[mine], "labels": labels[mine].long()})
    return found
