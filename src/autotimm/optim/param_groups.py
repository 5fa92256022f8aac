"""Learning rates per parameter: a lower rate for a pretrained backbone, and layer-wise decay inside it.

`backbone_lr_scales` says by how much each backbone parameter's learning rate is scaled;
`create_optimizer(..., lr_scales=...)` turns the scales into parameter groups with their own
`lr`, split as usual into weights with weight decay and biases and norms without. Each group's
`lr` is absolute, so torch and timm schedulers (which remember each group's starting `lr` as
`initial_lr`) scale every group along the same schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn as nn
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

from autotimm._errors import check_number

__all__ = ["backbone_lr_scales", "check_backbone_lr_options", "scaled_param_groups"]


def check_backbone_lr_options(backbone_lr_scale: float, layer_decay: float | None) -> tuple[float, float | None]:
    """Check `backbone_lr_scale` (a number > 0) and `layer_decay` (in (0, 1], or `None`).

    Returns:
        Both as floats (`layer_decay` stays `None` when not given).

    Raises:
        TypeError: If either is not a number.
        ValueError: If `backbone_lr_scale <= 0`, or `layer_decay` is outside (0, 1].

    Examples:
        >>> check_backbone_lr_options(0.1, 0.75)
        (0.1, 0.75)
    """
    scale = float(check_number("backbone_lr_scale", backbone_lr_scale, low=0, low_inclusive=False))
    if layer_decay is not None:
        layer_decay = float(
            check_number("layer_decay", layer_decay, low=0, high=1, low_inclusive=False, high_inclusive=True)
        )
    return scale, layer_decay


def backbone_lr_scales(
    model: nn.Module, backbone: nn.Module, *, backbone_lr_scale: float = 1.0, layer_decay: float | None = None
) -> dict[str, float]:
    """The learning-rate scale of each trainable backbone parameter, by its name in `model`.

    Every backbone parameter gets `backbone_lr_scale`. With `layer_decay`, timm's
    `param_groups_layer_decay` splits the backbone into the layers of its `group_matcher`
    (stem first, then each block, the final norm last) and the scale of layer `i` of `L` is
    further multiplied by `layer_decay ** (L - i)`: the backbone's last layer learns
    `layer_decay` times slower than the head, each earlier layer `layer_decay` times slower
    than the next. Parameters of `model` outside `backbone` (the head, a detector's neck) are
    not listed: they keep the full learning rate.

    Args:
        model: The module the optimizer trains (a task).
        backbone: The part of `model` that is scaled.
        backbone_lr_scale: The backbone's learning rate over the head's, > 0.
        layer_decay: Decay per layer, in (0, 1]; `None` for none.

    Returns:
        `{parameter name in model: scale}`, empty when every scale would be 1.

    Raises:
        ValueError: If `layer_decay` is given and `backbone` has no `group_matcher` (the
            message names the backbone's class), or an option is out of range.

    Examples:
        >>> import timm
        >>> net = nn.ModuleDict({"backbone": timm.create_model("test_resnet", num_classes=0), "head": nn.Linear(8, 2)})
        >>> scales = backbone_lr_scales(net, net["backbone"], backbone_lr_scale=0.5, layer_decay=0.5)
        >>> scales["backbone.conv1.0.weight"], scales["backbone.layer4.0.conv1.weight"], "head.weight" in scales
        (0.015625, 0.25, False)
    """
    backbone_lr_scale, layer_decay = check_backbone_lr_options(backbone_lr_scale, layer_decay)
    names = {id(p): name for name, p in model.named_parameters()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    if any(id(p) not in names for p in trainable):
        raise ValueError(f"`backbone` ({type(backbone).__name__}) is not a part of `model` ({type(model).__name__}).")
    if layer_decay is None:
        layer_scale = {id(p): 1.0 for p in trainable}
    else:
        if not callable(getattr(backbone, "group_matcher", None)):
            raise ValueError(
                f"`layer_decay={layer_decay}` needs a backbone with timm's `group_matcher()` to find its layers, but "
                f"{type(backbone).__name__} has none. Use `layer_decay=None` (with `backbone_lr_scale` for one "
                "lower rate for the whole backbone)."
            )
        groups = param_groups_layer_decay(backbone, weight_decay=0.0, layer_decay=layer_decay)
        # timm gives the backbone's last layer the scale 1; the head sits one layer above it.
        layer_scale = {id(p): group["lr_scale"] * layer_decay for group in groups for p in group["params"]}
    scales = {names[key]: backbone_lr_scale * scale for key, scale in layer_scale.items()}
    return {} if all(scale == 1.0 for scale in scales.values()) else scales


def scaled_param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_scales: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Parameter groups of the trainable parameters of `model`, each with its own `lr` and `weight_decay`.

    Weight decay follows timm's `param_groups_weight_decay` (none on biases, 1-D parameters
    and the names in `model.no_weight_decay()`), as `create_optimizer` does without scales;
    each of its two groups is split by learning rate. The groups at the full `lr` come first
    (what `train/lr` logs and the LR finder ramps), then the others in decreasing learning rate.

    Args:
        model: The module whose trainable parameters are grouped.
        lr: The learning rate of parameters without a scale.
        weight_decay: Weight decay of the weights.
        lr_scales: `{parameter name: scale}`; other parameters have the scale 1.

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> groups = scaled_param_groups(net, 1e-3, 0.05, {"0.weight": 0.1, "0.bias": 0.1})
        >>> [(g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
        [(0.001, 0.0, 1), (0.001, 0.05, 1), (0.0001, 0.0, 1), (0.0001, 0.05, 1)]
    """
    scale_of = {id(p): lr_scales.get(name, 1.0) for name, p in model.named_parameters()}
    no_weight_decay = getattr(model, "no_weight_decay", lambda: set())()
    split = param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=no_weight_decay)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for scale in sorted({scale_of[id(p)] for group in split for p in group["params"]}, key=lambda s: (s != 1, -s)):
        for group in split:
            params = [p for p in group["params"] if scale_of[id(p)] == scale]
            if params:
                groups[(scale, group["weight_decay"])] = {
                    "params": params,
                    "lr": lr * scale,
                    "weight_decay": group["weight_decay"],
                }
    return list(groups.values())
