"""Multi-scale feature extraction from timm backbones, as a feature pyramid for detection."""

from __future__ import annotations

import math
from collections import OrderedDict

import timm
import torch
import torch.nn as nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from autotimm.backbones import BackboneConfig, PretrainedWeightsError, create_backbone

__all__ = ["TimmFeaturePyramid", "create_feature_extractor", "create_feature_pyramid", "needs_fixed_input_size"]


def needs_fixed_input_size(model_name: str) -> bool:
    """Whether the timm model is built for one input size (ViT, Swin), so it must know the detector's."""
    return bool(timm.models.get_pretrained_cfg_value(model_name, "fixed_input_size"))


def create_feature_extractor(config: BackboneConfig, *, num_levels: int, input_size: int) -> nn.Module:
    """Create a timm backbone that returns its last `num_levels` feature maps (`features_only`).

    Models with a fixed input size (ViT, Swin) are built for `input_size` unless the config
    already sets `img_size`.

    Raises:
        ValueError: If the model cannot be built as a multi-scale feature extractor.
        PretrainedWeightsError: If pretrained weights are asked for and cannot be had.
    """
    overrides: dict[str, object] = {"features_only": True, "out_indices": tuple(range(-num_levels, 0))}
    if needs_fixed_input_size(config.model_name) and "img_size" not in config.kwargs:
        overrides["img_size"] = input_size
    try:
        return create_backbone(config, **overrides)
    except PretrainedWeightsError:
        raise
    except (RuntimeError, TypeError, AttributeError, AssertionError, IndexError) as e:
        raise ValueError(
            f"The backbone {config.model_name!r} could not be built as a multi-scale feature extractor (timm "
            f"`features_only`), which detection needs: {e}. Models that work include 'resnet50', "
            "'efficientnet_b0', 'convnext_tiny', 'swin_tiny_patch4_window7_224' and 'vit_small_patch16_224'."
        ) from e


def create_feature_pyramid(config: BackboneConfig, *, image_size: int, out_channels: int) -> TimmFeaturePyramid:
    """A `TimmFeaturePyramid` over the last three levels of the backbone, for `image_size` inputs.

    Inputs are padded to a square canvas that is a multiple of the coarsest backbone stride
    (`canvas_size`), so every pyramid level tiles it exactly; fixed-size transformers are
    built for that canvas.
    """
    body = create_feature_extractor(config, num_levels=3, input_size=_round_up(image_size, 32))
    pyramid = TimmFeaturePyramid(body, out_channels)
    canvas = _round_up(image_size, pyramid.size_divisor)
    if needs_fixed_input_size(config.model_name) and canvas != _round_up(image_size, 32):  # e.g. patch-14 ViTs
        body = create_feature_extractor(config, num_levels=3, input_size=canvas)
        pyramid = TimmFeaturePyramid(body, out_channels)
    return pyramid


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


class _SimplePyramid(nn.Module):
    """Three maps at strides s/2, s and 2s made from one stride-s map (ViTDet's simple pyramid)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2)
        self.down = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.up(x), x, self.down(x)]


class TimmFeaturePyramid(nn.Module):
    """A timm `features_only` backbone followed by a feature pyramid network.

    Reads the strides and channels of the backbone's last levels from its `feature_info`,
    turns channels-last maps (Swin) into NCHW, and builds a simple pyramid (strides `s/2`,
    `s`, `2s`) when all levels share one stride (a plain ViT). Two extra levels (P6, P7)
    are added on top, as FCOS and RetinaNet use. The output is an ordered dict of maps with
    `out_channels` channels each; `strides` lists each map's stride in input pixels, and
    inputs whose sides are multiples of `size_divisor` give maps that tile them exactly.

    Args:
        body: A timm model built with `features_only=True`.
        out_channels: Channels of every pyramid level.

    Examples:
        >>> body = create_feature_extractor(BackboneConfig("resnet18", pretrained=False), num_levels=3, input_size=64)
        >>> fpn = TimmFeaturePyramid(body, out_channels=64)
        >>> fpn.strides, fpn.size_divisor
        ([8, 16, 32, 64, 128], 32)
        >>> [tuple(f.shape) for f in fpn(torch.randn(1, 3, 64, 64)).values()][:2]
        [(1, 64, 8, 8), (1, 64, 4, 4)]
    """

    def __init__(self, body: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.body = body
        info = body.feature_info
        reductions, channels = list(info.reduction()), list(info.channels())
        self.channels_last = getattr(body, "output_fmt", "NCHW") == "NHWC"  # timm's Format is a str enum
        self.simple_pyramid: _SimplePyramid | None = None
        if len(set(reductions)) == 1:  # a single-scale transformer: make the scales
            stride, width = reductions[-1], channels[-1]
            if stride % 2:
                raise ValueError(f"Cannot build a feature pyramid from one map of odd stride {stride}.")
            self.simple_pyramid = _SimplePyramid(width)
            reductions, channels = [stride // 2, stride, stride * 2], [width // 2, width, width]
        elif reductions != sorted(reductions) or len(set(reductions)) != len(reductions):
            raise ValueError(f"Expected the backbone's feature strides to increase, but got {reductions}.")
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels
        self.strides = [*reductions, reductions[-1] * 2, reductions[-1] * 4]
        self.size_divisor = reductions[-1]  # inputs padded to a multiple of it tile every backbone level

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        if self.simple_pyramid is not None:
            features = self.simple_pyramid(features[-1])
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
