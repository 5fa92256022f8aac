"""A staged fine-tune: the first epochs train the head with the backbone frozen, then the whole network."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch.nn.parallel import DistributedDataParallel

from autotimm._errors import check_number
from autotimm._warnings import warn
from autotimm.tasks import BaseTask

__all__ = ["FineTune"]


class FineTune(Callback):
    """Train the head (and a detector's neck) with the backbone frozen for `freeze_epochs` epochs, then all of it.

    fastai's `fine_tune` recipe: a new head first learns from a frozen pretrained backbone,
    so its first random gradients do not wreck the backbone's features; then the backbone
    is unfrozen and trains too, at the task's `backbone_lr_scale` (and `layer_decay`) times
    the head's learning rate: `ImageClassifier(..., backbone_lr_scale=0.1)` is the usual
    pairing. A frozen backbone has no gradients and is kept in eval mode, so its BatchNorm
    statistics stay fixed as well (`BaseTask.freeze_backbone`).

    Every parameter is in the optimizer from the start (the backbone is made trainable before
    the optimizer is built); while frozen it has no gradient, which the optimizers skip (no
    update, no weight decay). The optimizer's state and its parameter groups are therefore
    the same in every epoch, and a checkpoint resumes with them. The stage is derived from
    `trainer.current_epoch` at the start of each epoch: frozen before `freeze_epochs`,
    trainable from then on, so a run resumed from any checkpoint, on any number of
    processes, is in the right stage on every rank. (Lightning's `BackboneFinetuning`
    freezes again on resume and adds parameter groups in the middle of a run.)

    Under DDP the frozen epochs need `strategy="ddp_find_unused_parameters_true"`: DDP
    otherwise waits for the frozen parameters' gradients. The first frozen epoch raises a
    `RuntimeError` saying so.

    Args:
        freeze_epochs: Epochs trained with the backbone frozen, >= 1.

    Raises:
        TypeError: At `fit`, if the model is not an autotimm task (it needs `freeze_backbone()`).
        ValueError: At `fit`, if the task was built with `freeze_backbone=True` (frozen for the
            whole run), which contradicts unfreezing it.

    Examples:
        >>> model = ImageClassifier("resnet50", backbone_lr_scale=0.1)  # doctest: +SKIP
        >>> trainer = AutoTrainer(max_epochs=10, callbacks=[FineTune(freeze_epochs=1)])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(self, freeze_epochs: int = 1) -> None:
        self.freeze_epochs = check_number("freeze_epochs", freeze_epochs, low=1, integer=True)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(pl_module, BaseTask):
            raise TypeError(
                f"FineTune trains an autotimm task (ImageClassifier, ObjectDetector, or another BaseTask), which "
                f"knows its backbone, but got {type(pl_module).__name__}."
            )
        if pl_module._freeze_at_build:
            raise ValueError(
                f"The task was built with `freeze_backbone=True` (its backbone frozen for the whole run), but "
                f"FineTune(freeze_epochs={self.freeze_epochs}) unfreezes it after {self.freeze_epochs} epoch(s). Build "
                "the task with `freeze_backbone=False` (for a model loaded from a checkpoint saved while frozen: "
                "`load_from_checkpoint(path, freeze_backbone=False)`), or drop FineTune to keep it frozen."
            )
        max_epochs = trainer.max_epochs
        if max_epochs is not None and 0 <= max_epochs <= self.freeze_epochs:
            warn(
                f"FineTune(freeze_epochs={self.freeze_epochs}) with max_epochs={max_epochs}: the backbone stays "
                "frozen for the whole run. Raise max_epochs to fine-tune it too."
            )
        # Before the optimizer is built: every parameter in it, and in DDP's buckets, from the start.
        pl_module.unfreeze_backbone()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        # Before the task's own hook, which puts a frozen backbone into eval mode.
        if trainer.current_epoch >= self.freeze_epochs:
            pl_module.unfreeze_backbone()
        elif not pl_module.backbone_frozen:
            model = trainer.strategy.model
            if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
                raise RuntimeError(
                    f"FineTune freezes the backbone in epochs 0 to {self.freeze_epochs - 1}, and DDP then waits for "
                    "gradients the frozen parameters never get. Use "
                    '`strategy="ddp_find_unused_parameters_true"` (or `DDPStrategy(find_unused_parameters=True)`).'
                )
            pl_module.freeze_backbone()

    def state_dict(self) -> dict[str, Any]:
        return {"freeze_epochs": self.freeze_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("freeze_epochs")
        if saved is not None and saved != self.freeze_epochs:
            warn(
                f"The checkpoint was saved by a run with FineTune(freeze_epochs={saved}); this run has "
                f"freeze_epochs={self.freeze_epochs}, and its stages follow {self.freeze_epochs}."
            )
