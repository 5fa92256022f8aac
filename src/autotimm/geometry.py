"""Box and letterbox geometry shared by the detection data, the detectors and the detection task.

A letterboxed image is resized so that its longer side is the target size (aspect ratio
kept) and padded on the right and bottom with `LETTERBOX_FILL` grey to a square; box
coordinates keep their origin, so mapping them back is one division per axis.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["LETTERBOX_FILL", "LETTERBOX_GREY", "boxes_to_original", "letterbox_size"]

#: The letterbox (and zoom-out) fill of 8-bit images, as YOLO-style pipelines use.
LETTERBOX_FILL = 114
#: The same grey for float images in `[0, 1]`.
LETTERBOX_GREY = LETTERBOX_FILL / 255


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The `(height, width)` of an image resized so that its longer side is `size`, aspect ratio kept.

    Each side is rounded and kept in `[1, size]`.

    Examples:
        >>> letterbox_size(40, 80, 64)
        (32, 64)
    """
    ratio = size / max(height, width)
    return max(1, min(size, round(height * ratio))), max(1, min(size, round(width * ratio)))


def boxes_to_original(boxes: torch.Tensor, target: dict[str, Any]) -> torch.Tensor:
    """Map `xyxy` boxes from the letterboxed image back to the original image's pixels.

    Valid for evaluation samples (and predictions on them), whose only geometric transform
    is the letterbox: divides x by `scale[0]` and y by `scale[1]` and clips to `orig_size`.

    Examples:
        >>> target = {"scale": (0.5, 0.5), "orig_size": (100, 200)}
        >>> boxes_to_original(torch.tensor([[10.0, 5.0, 40.0, 60.0]]), target)
        tensor([[ 20.,  10.,  80., 100.]])
    """
    sx, sy = target["scale"]
    h, w = target["orig_size"]
    out = boxes / boxes.new_tensor([sx, sy, sx, sy])
    out[..., 0::2] = out[..., 0::2].clamp(0, w)
    out[..., 1::2] = out[..., 1::2].clamp(0, h)
    return out
