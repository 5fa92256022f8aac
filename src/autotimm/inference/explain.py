"""Class-activation maps of a timm classifier (Grad-CAM, computed by captum), at the original image size.

`grad_cam` runs captum's `LayerGradCam` on one layer of a timm backbone: a CNN stage (`[B, C, h, w]`,
or `[B, h, w, C]` for backbones whose `output_fmt` is `"NHWC"`) or a transformer block's tokens
(`[B, N, C]`: the prefix tokens, class and register tokens, are left out and the patch tokens laid
out on the patch grid). `to_image_size` maps a map of the model's input back onto the image it was
cut from. captum is an optional dependency, the `explain` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from autotimm._errors import unknown_choice

__all__ = ["EXPLAIN_METHODS", "check_layer", "default_layer", "grad_cam", "require_captum", "to_image_size"]

#: The methods `explain` offers.
EXPLAIN_METHODS = ("gradcam",)


def require_captum() -> ModuleType:
    """`captum.attr`, or an `ImportError` that says how to install it.

    Examples:
        >>> require_captum().LayerGradCam.__name__
        'LayerGradCam'
    """
    try:
        import captum.attr
    except ImportError as error:
        raise ImportError(
            "Explaining a model needs captum, the `autotimm[explain]` extra: `pip install -e '.[explain]'` in a clone "
            "of autotimm, or `pip install captum` (the `autotimm` on PyPI is another project)."
        ) from error
    return captum.attr


def _is_token_model(backbone: nn.Module) -> bool:
    blocks = getattr(backbone, "blocks", None)
    return isinstance(blocks, (nn.Sequential, nn.ModuleList)) and hasattr(backbone, "num_prefix_tokens")


def default_layer(backbone: nn.Module) -> str:
    """The layer Grad-CAM looks at by default: the last feature stage of a CNN (`layer4` of a ResNet), and
    for a vision transformer the first norm of its last block (the tokens the last attention reads: the
    last block's output no longer reaches a class token).

    Examples:
        >>> import timm
        >>> default_layer(timm.create_model("test_resnet", pretrained=False))
        'layer4'
    """
    if _is_token_model(backbone):
        last = len(backbone.blocks) - 1
        return f"blocks.{last}.norm1" if hasattr(backbone.blocks[last], "norm1") else f"blocks.{last}"
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ValueError(
            f"{type(backbone).__name__} has no `feature_info` to find its last stage in; give `layer=` (a module "
            "name of `model.backbone`, see `model.backbone.named_modules()`)."
        )
    return str(info[-1]["module"])


def check_layer(backbone: nn.Module, layer: str) -> nn.Module:
    """The module `layer` of `backbone`; an unknown name raises a `ValueError` listing the closest."""
    names = [name for name, _ in backbone.named_modules() if name]
    if layer not in names:
        raise unknown_choice("layer", layer, names, sort=False)
    return backbone.get_submodule(layer)


def _grid_hook(backbone: nn.Module, grid: nn.Module, image_size: tuple[int, int]) -> Callable[..., Any]:
    """A forward hook passing the layer's output through `grid` as an `[B, C, h, w]` map (the one captum watches)."""
    nhwc = getattr(backbone, "output_fmt", "NCHW") == "NHWC"

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if output.ndim == 4:
            if nhwc:
                return grid(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return grid(output)
        if output.ndim != 3 or not hasattr(backbone, "num_prefix_tokens"):
            raise ValueError(
                f"The layer gives a tensor of shape {tuple(output.shape)}; Grad-CAM needs a feature map [B, C, h, w] "
                "or the tokens [B, N, C] of a timm vision transformer. Choose another `layer=`."
            )
        prefix = int(backbone.num_prefix_tokens)
        height, width = backbone.patch_embed.dynamic_feat_size(image_size)
        batch, count, channels = output.shape
        if count - prefix != height * width:
            raise ValueError(
                f"The layer gives {count} tokens, not the {prefix} prefix tokens and the {height}x{width} patch grid "
                "of the input. Choose another `layer=`."
            )
        patches = grid(output[:, prefix:].reshape(batch, height, width, channels).permute(0, 3, 1, 2))
        return torch.cat([output[:, :prefix], patches.permute(0, 2, 3, 1).reshape(batch, count - prefix, channels)], 1)

    return hook


def grad_cam(
    forward: Callable[[torch.Tensor], torch.Tensor],
    backbone: nn.Module,
    layer: str,
    x: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Grad-CAM maps `[B, H, W]` in [0, 1] at the input's size, of class `targets[i]` for image `x[i]`.

    Args:
        forward: The logits `[B, num_classes]` of a normalised batch.
        backbone: The timm model `forward` runs, which holds `layer`.
        layer: A module name of `backbone` (see `default_layer`).
        x: The normalised batch `[B, 3, H, W]`.
        targets: One class index per image.

    Returns:
        The positive part of the Grad-CAM map, upsampled (bilinear) to `H x W`, each map divided by its
        maximum (a map without positive evidence is all zeros).
    """
    attr = require_captum()
    grid = nn.Identity()
    handle = check_layer(backbone, layer).register_forward_hook(_grid_hook(backbone, grid, tuple(x.shape[-2:])))
    try:
        cam = attr.LayerGradCam(forward, grid).attribute(x, target=targets, relu_attributions=True)
    finally:
        handle.remove()
    cam = F.interpolate(cam.detach().float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam.nan_to_num(0.0).clamp(min=0)
    top = cam.flatten(1).amax(dim=1).clamp(min=1e-12)
    return cam / top[:, None, None]


def to_image_size(cam: torch.Tensor, box: tuple[float, float, float, float], size: tuple[int, int]) -> torch.Tensor:
    """A map of the model's input `[h, w]` laid onto the image it was cut from: `[height, width]` for `size`.

    Args:
        cam: The map at the input's size.
        box: Where the input lies in the image, `(left, top, right, bottom)` in image pixels (see
            `autotimm.data.eval_input_box`); image pixels outside it get 0.
        size: The image's `(height, width)`.

    Examples:
        >>> to_image_size(torch.ones(4, 4), (0.0, 0.0, 8.0, 4.0), (4, 8)).shape
        torch.Size([4, 8])
    """
    height, width = size
    left, top, right, bottom = box
    # Image pixel centres in the input's normalised coordinates ([-1, 1] across the input, pixel edges).
    xs = ((torch.arange(width, dtype=torch.float32) + 0.5) - left) / (right - left) * 2 - 1
    ys = ((torch.arange(height, dtype=torch.float32) + 0.5) - top) / (bottom - top) * 2 - 1
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].to(cam.device)
    mapped = F.grid_sample(cam[None, None].float(), points, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (points.abs() <= 1).all(dim=-1)[0]
    return (mapped[0, 0] * inside).clamp(0, 1)
