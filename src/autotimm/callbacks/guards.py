"""Guards that stop a run early and clearly: non-finite losses."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from autotimm.callbacks.checkpoints import last_checkpoint

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(Callback):
    """Stop training at the first NaN or infinite training loss, naming the epoch and step.

    The loss is checked before its backward pass, so on the CPU training stops before a bad
    loss reaches the weights, and always before that epoch's checkpoints are written: the
    last checkpoint on disk is the last good one. On an accelerator the check stays on the
    device and is read every `check_every_n_steps` batches and at the end of each epoch, so
    there is no host sync per step (the step reported is still the first bad one).

    Args:
        check_every_n_steps: How often the device flag is read on an accelerator.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps
        self._batch_idx = 0
        self._first_bad: torch.Tensor | None = None  # (epoch, step, batch) of the first bad loss, or -1s

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        where = torch.tensor([trainer.current_epoch, trainer.global_step, self._batch_idx], device=loss.device)
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full_like(where, -1)
        self._first_bad = torch.where(bad & (self._first_bad[0] < 0), where, self._first_bad)
        if loss.device.type == "cpu" or (self._batch_idx + 1) % self.check_every_n_steps == 0:
            self._raise_if_bad(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_if_bad(trainer, pl_module)

    def _raise_if_bad(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._first_bad is None:
            return
        epoch, step, batch_idx = (int(v) for v in self._first_bad.tolist())
        if epoch < 0:
            return
        self._first_bad = None
        lr = getattr(pl_module, "lr", None)
        lr_text = f" (now {lr:g})" if isinstance(lr, float) else ""
        clip_text = "a smaller `gradient_clip_val`" if trainer.gradient_clip_val else "`gradient_clip_val=1.0`"
        last = last_checkpoint(trainer)
        kept = f" The last good checkpoint is '{last}'." if last else ""
        raise NonFiniteLossError(
            f"The training loss became NaN or infinite at epoch {epoch}, step {step} (batch {batch_idx}); training "
            f"stopped.{kept} Try a lower learning rate{lr_text}, {clip_text}, or `precision=32` if you train in "
            "mixed precision. Pass `stop_on_nonfinite_loss=False` to AutoTrainer to train on regardless."
        )
