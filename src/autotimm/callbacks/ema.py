"""Model EMA: an exponential moving average of the weights, validated and saved in their place."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from autotimm._errors import check_bool, check_number

__all__ = ["DEFAULT_EMA_DECAY", "ModelEMA", "ema_callback"]

DEFAULT_EMA_DECAY = 0.9998


def _ema_average(decay: float, warmup: bool) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """`AveragedModel`'s `avg_fn`: move each floating tensor of the average towards the weights."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current  # counters such as BatchNorm's `num_batches_tracked` follow the model
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay) if warmup else decay
        return torch.lerp(averaged, current, torch.as_tensor(1 - step_decay, dtype=averaged.dtype))

    return average


class ModelEMA(WeightAveraging):
    """An exponential moving average (EMA) of the model's weights and buffers, on Lightning's `WeightAveraging`.

    After each optimizer step the average moves towards the weights:
    `ema = d * ema + (1 - d) * weights`, with `d = min(decay, (1 + n) / (10 + n))` after `n`
    updates when `warmup` is on, so that the average follows the weights closely at first and
    a short run still gets a useful average. Validation runs on the averaged weights; the
    checkpoints hold them as the model's `state_dict` (so `load_from_checkpoint` gives the EMA
    model), with the raw weights and the update count beside them, so that resuming from a
    checkpoint goes on averaging where the run stopped. When training ends, the model keeps the
    averaged weights. Every process of a DDP run keeps the same average of the same weights.

    The average is built when `fit` starts (`on_fit_start`), once the task has built every
    layer (a classifier builds its head from the data in its own `setup`) and sits on its device.

    Args:
        decay: The decay `d` in (0, 1); closer to 1 averages over more steps (about `1 / (1 - d)`).
        warmup: Cap the decay at `(1 + n) / (10 + n)` after `n` updates.

    Raises:
        TypeError: If `decay` is not a number or `warmup` not a bool.
        ValueError: If `decay` is outside (0, 1).

    Examples:
        >>> trainer = pl.Trainer(max_epochs=5, callbacks=[ModelEMA(decay=0.999)])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # validates and saves the EMA weights  # doctest: +SKIP
    """

    def __init__(self, decay: float = DEFAULT_EMA_DECAY, warmup: bool = True) -> None:
        check_number("decay", decay, low=0, high=1, low_inclusive=False)
        check_bool("warmup", warmup)
        super().__init__(use_buffers=True, avg_fn=_ema_average(float(decay), warmup))
        self.decay = float(decay)
        self.warmup = warmup
        self._resumed_from: dict[str, Any] | None = None  # the checkpoint to restore the average from

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Nothing yet: the average is built in `on_fit_start` (see the class docstring)."""
        self._resumed_from = None

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep a resumed run's checkpoint until `on_fit_start` builds the average it restores."""
        if trainer.state.fn == TrainerFn.FITTING:
            self._resumed_from = checkpoint

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().setup(trainer, pl_module, "fit")  # the average starts as a copy of the model
        if self._resumed_from is not None:
            # The raw weights and the averaged state (with its update count) that the checkpoint holds.
            super().on_load_checkpoint(trainer, pl_module, self._resumed_from)
            self._resumed_from = None


def ema_callback(ema: bool | float | None) -> ModelEMA | None:
    """The `ModelEMA` that `AutoTrainer(ema=...)` asks for: `False`/`None` none, `True` the default decay, or a decay.

    Raises:
        TypeError: If `ema` is neither a bool, `None` nor a number.
        ValueError: If a decay lies outside (0, 1).

    Examples:
        >>> ema_callback(0.999).decay
        0.999
        >>> ema_callback(False) is None
        True
    """
    if ema is None or ema is False:
        return None
    if ema is True:
        return ModelEMA()
    if not isinstance(ema, numbers.Real):
        raise TypeError(f"Expected `ema` to be True, False or a decay in (0, 1), but got {type(ema).__name__} {ema!r}.")
    check_number("ema", ema, low=0, high=1, low_inclusive=False)
    return ModelEMA(decay=float(ema))
