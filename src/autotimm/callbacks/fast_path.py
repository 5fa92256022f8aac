"""Speed options applied to the model when a run starts: channels-last memory format and `torch.compile`."""

from __future__ import annotations

import inspect
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from autotimm._compat import compiled_in_place
from autotimm._errors import check_choice, check_keys

__all__ = ["FastPath", "check_compile_options", "is_convolutional"]

_COMPILE_ARGS = frozenset(inspect.signature(torch.compile).parameters) - {"model"}
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_options(compile: bool | dict[str, Any]) -> dict[str, Any] | None:
    """The keyword arguments for `torch.compile` that `compile=` asks for, or None for no compiling.

    Raises:
        TypeError: If `compile` is neither a bool nor a dict.
        ValueError: If the dict names an argument `torch.compile` does not take, or an unknown `mode`.

    Examples:
        >>> check_compile_options({"mode": "max-autotune"})
        {'mode': 'max-autotune'}
        >>> check_compile_options(False) is None
        True
    """
    if isinstance(compile, bool):
        return {} if compile else None
    if not isinstance(compile, dict):
        raise TypeError(
            f"Expected `compile` to be True, False or a dict of `torch.compile` arguments, but got {compile!r}."
        )
    check_keys("compile", compile, _COMPILE_ARGS)
    if compile.get("mode") is not None:
        check_choice("compile['mode']", compile["mode"], _COMPILE_MODES)
    return dict(compile)


def is_convolutional(module: nn.Module) -> bool:
    """True when most of the module's weights sit in 2-D convolutions (ResNet, EfficientNet, RegNet).

    Transformers (one patch-embedding convolution) are not, nor ConvNeXt models whose pointwise
    layers are `nn.Linear` (`convnext_tiny`; the smallest ones use 1x1 convolutions).

    Examples:
        >>> is_convolutional(nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3)))
        True
        >>> is_convolutional(nn.Sequential(nn.Conv2d(3, 8, 16), nn.Linear(8, 4096)))
        False
    """
    conv = total = 0
    for layer in module.modules():
        own = sum(p.numel() for p in layer.parameters(recurse=False))
        total += own
        if isinstance(layer, nn.Conv2d):
            conv += own
    return total > 0 and conv * 2 > total


class FastPath(Callback):
    """Put the model in channels-last memory format and/or compile it when `fit`, `validate`,
    `test` or `predict` starts.

    Args:
        channels_last: `True` or `False`, or `None` to use it where it pays: on CUDA, for a
            model whose weights are mostly 2-D convolutions (`is_convolutional`).
        compile_options: Keyword arguments for `torch.compile`, or `None` for no compiling.
            The module is compiled in place (`nn.Module.compile`), so its `state_dict` and
            checkpoints keep their usual keys.
    """

    def __init__(self, channels_last: bool | None = None, compile_options: dict[str, Any] | None = None) -> None:
        self.channels_last = channels_last
        self.compile_options = compile_options

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._use_channels_last(trainer, pl_module):
            # Convolutions pick the channels-last kernels when their weight is channels-last,
            # so the inputs need no conversion. `.to(device)` later keeps the format.
            pl_module.to(memory_format=torch.channels_last)
        if self.compile_options is not None and not compiled_in_place(pl_module):
            pl_module.compile(**self.compile_options)
            rank_zero_info(f"autotimm: compiled the model with torch.compile({self.compile_options}).")

    def _use_channels_last(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return trainer.strategy.root_device.type == "cuda" and is_convolutional(pl_module)
