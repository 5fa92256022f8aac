"""What every autotimm task shares: optimizer and scheduler by name, backbone freezing, extra logging."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn

from autotimm.backbones import skip_pretrained_download
from autotimm.loggers import LoggingConfig
from autotimm.optim import (
    check_optimizer_kwargs,
    check_scheduler_kwargs,
    create_optimizer,
    create_scheduler,
    resolve_optimizer,
    resolve_scheduler,
    step_scheduler,
)

__all__ = ["BaseTask"]


class BaseTask(pl.LightningModule):
    """Base class of the task modules; subclasses set `self.backbone` and their heads.

    The learning rate lives in `self._lr`, read each time `fit` builds the optimizer, so
    `model._lr = 1e-4` between two `fit` calls takes effect. The backbone counts as frozen
    while none of its parameters requires a gradient; a frozen backbone is kept in eval mode
    during training epochs, so its BatchNorm statistics do not move either.

    Args:
        lr: Learning rate.
        weight_decay: Weight decay (not applied to biases and normalisation weights).
        optimizer: A name from `list_optimizers()`.
        optimizer_kwargs: Extra keyword arguments for the optimizer.
        scheduler: A name from `list_schedulers()`, or `None` for a constant learning rate.
        scheduler_kwargs: Extra keyword arguments for the scheduler.
        logging_config: What to log besides loss and metrics.
    """

    backbone: nn.Module

    def __init__(
        self,
        *,
        lr: float,
        weight_decay: float,
        optimizer: str,
        optimizer_kwargs: dict[str, Any] | None,
        scheduler: str | None,
        scheduler_kwargs: dict[str, Any] | None,
        logging_config: LoggingConfig | dict[str, Any] | None,
    ) -> None:
        super().__init__()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"Expected `lr` to be a positive number, but got {lr!r}.")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"Expected `weight_decay` to be a non-negative number, but got {weight_decay!r}.")
        self._lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer_name = resolve_optimizer(optimizer)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        check_optimizer_kwargs(self.optimizer_name, self.optimizer_kwargs)
        self.scheduler_name = None if scheduler is None else resolve_scheduler(scheduler)
        self.scheduler_kwargs = dict(scheduler_kwargs or {})
        if self.scheduler_name is None and self.scheduler_kwargs:
            raise ValueError(f"`scheduler_kwargs` {self.scheduler_kwargs} were given without a `scheduler`.")
        if self.scheduler_name is not None:
            check_scheduler_kwargs(self.scheduler_name, self.scheduler_kwargs)
        self.logging_config = LoggingConfig.coerce(logging_config)

    @property
    def lr(self) -> float:
        """The learning rate the next `fit` uses (same as `_lr`)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float(value)

    # ---- backbone freezing -------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Stop training the backbone: no gradients, and BatchNorm statistics frozen during `fit`."""
        self.backbone.requires_grad_(False)

    def unfreeze_backbone(self) -> None:
        """Train the backbone again (the same as setting `requires_grad = True` on its parameters)."""
        self.backbone.requires_grad_(True)

    @property
    def backbone_frozen(self) -> bool:
        """True while no backbone parameter requires a gradient."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def on_train_epoch_start(self) -> None:
        # Derived from the parameters each epoch, so unfreezing between fits (or from a
        # callback) puts the backbone back into training mode.
        self.backbone.train(not self.backbone_frozen)

    def on_train_end(self) -> None:
        self.backbone.train()

    # ---- optimization --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        self.hparams["lr"] = self._lr
        optimizer = create_optimizer(
            self.optimizer_name, self, lr=self._lr, weight_decay=self.weight_decay, **self.optimizer_kwargs
        )
        if self.scheduler_name is None:
            return optimizer
        trainer = self.trainer
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))
        max_epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        scheduler = create_scheduler(
            self.scheduler_name,
            optimizer,
            max_epochs=max_epochs,
            steps_per_epoch=steps_per_epoch,
            **self.scheduler_kwargs,
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        step_scheduler(scheduler, metric, epoch=self.current_epoch)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.logging_config.log_learning_rate and self.trainer.optimizers:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.log("train/lr", lr, on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.logging_config.log_gradient_norm:
            return
        if self.trainer.global_step % max(1, self.trainer.log_every_n_steps) != 0:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    # ---- checkpoints ---------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Rebuild the model from a checkpoint; the backbone is not downloaded again.

        Example:
            >>> model = ImageClassifier.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
        """
        with skip_pretrained_download():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
