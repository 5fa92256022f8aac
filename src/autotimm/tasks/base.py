"""What every autotimm task shares: optimizer and scheduler by name, backbone freezing, extra logging."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.trainer.states import TrainerFn

from autotimm._errors import check_mapping, check_number
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

_CHECKPOINT_KEY = "autotimm"  # what the model was trained on: class names and data config


class BaseTask(pl.LightningModule):
    """Base class of the task modules; subclasses set `self.backbone` and their heads.

    The learning rate lives in `self._lr`, read each time `fit` builds the optimizer, so
    `model._lr = 1e-4` between two `fit` calls takes effect. The backbone counts as frozen
    while none of its parameters requires a gradient; a frozen backbone is kept in eval mode
    during training epochs, so its BatchNorm statistics do not move either. The labels of each
    train, val and test batch are checked on the CPU before the batch moves to the device.

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
        self._lr = float(check_number("lr", lr, low=0, low_inclusive=False))
        self.weight_decay = float(check_number("weight_decay", weight_decay, low=0))
        self.optimizer_name = resolve_optimizer(optimizer)
        self.optimizer_kwargs = check_mapping("optimizer_kwargs", optimizer_kwargs, optional=True)
        check_optimizer_kwargs(self.optimizer_name, self.optimizer_kwargs)
        self.scheduler_name = None if scheduler is None else resolve_scheduler(scheduler)
        self.scheduler_kwargs = check_mapping("scheduler_kwargs", scheduler_kwargs, optional=True)
        if self.scheduler_name is None and self.scheduler_kwargs:
            raise ValueError(f"`scheduler_kwargs` {self.scheduler_kwargs} were given without a `scheduler`.")
        if self.scheduler_name is not None:
            check_scheduler_kwargs(self.scheduler_name, self.scheduler_kwargs)
        self.logging_config = LoggingConfig.coerce(logging_config)
        self._has_progress_bar = False
        self._last_step_lr: float | None = None  # the LR of an epoch's last step, logged at its end
        # What the model was trained on, taken from the data module at `fit` and kept in its
        # checkpoints, so that a model loaded from one can name its classes and be exported
        # at its training size without the data module.
        self.class_names: list[str] | None = None
        self.trained_data_config: dict[str, Any] | None = None

    def _training_hparams(self) -> dict[str, Any]:
        """The hyperparameters this class owns, for the subclass's `save_hyperparameters`."""
        return {
            "logging_config": vars(self.logging_config).copy(),
            "optimizer": self.optimizer_name,
            "lr": self._lr,
            "weight_decay": self.weight_decay,
            "optimizer_kwargs": self.optimizer_kwargs,
            "scheduler": self.scheduler_name,
            "scheduler_kwargs": self.scheduler_kwargs,
        }

    @property
    def lr(self) -> float:
        """The learning rate the next `fit` uses (same as `_lr`)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float(check_number("lr", value, low=0, low_inclusive=False))

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

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        names = getattr(datamodule, "class_names", None)
        if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
            self.class_names = list(names)
        config = getattr(datamodule, "data_config", None)
        if isinstance(config, Mapping):
            self.trained_data_config = dict(config)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        _sync_hparams(self, checkpoint.get("hyper_parameters"))
        checkpoint[_CHECKPOINT_KEY] = {"class_names": self.class_names, "data_config": self.trained_data_config}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(_CHECKPOINT_KEY) or {}
        self.class_names = saved.get("class_names")
        self.trained_data_config = saved.get("data_config")

    # ---- optimization --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = create_optimizer(
            self.optimizer_name,
            self,
            lr=self._lr,
            weight_decay=self.weight_decay,
            allow_fused=self._trainer is None or _can_clip_fused(self._trainer),
            **self.optimizer_kwargs,
        )
        if self.scheduler_name is None:
            return optimizer
        total_steps, steps_per_epoch = self._run_length()
        options = dict(self.scheduler_kwargs)
        scheduler = create_scheduler(
            self.scheduler_name,
            optimizer,
            max_epochs=max(1, math.ceil(total_steps / steps_per_epoch)),
            steps_per_epoch=steps_per_epoch,
            total_steps=options.pop("total_steps", total_steps),  # `onecyclelr` lets the user set it
            **options,
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _run_length(self) -> tuple[int, int]:
        """Optimizer steps in the whole run and in one epoch, as the trainer will run them.

        The total is `trainer.estimated_stepping_batches`, which honours `max_epochs`,
        `max_steps`, `limit_train_batches` and `accumulate_grad_batches`.
        """
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # loads the train dataloader when it can end
        if not math.isfinite(total):
            raise ValueError(
                f"The learning-rate scheduler {self.scheduler_name!r} needs to know how long the run is, but the "
                f"trainer has no end (`max_epochs={trainer.max_epochs}`, `max_steps={trainer.max_steps}`). "
                "Set `max_epochs` or `max_steps`, or use `scheduler=None`."
            )
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError(
                f"The learning-rate scheduler {self.scheduler_name!r} needs the number of training batches per "
                "epoch, but the train dataloader has no length (an iterable data set). Give the data set a "
                "`__len__`, set `limit_train_batches` to an int, or use `scheduler=None`."
            )
        steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        return max(1, int(total)), steps_per_epoch

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        step_scheduler(scheduler, metric, epoch=self.current_epoch)

    # ---- labels --------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Check the batch's labels against the model while they are still on the CPU; return the batch as is.

        A label outside the model's classes would otherwise fail deep inside the loss, on a GPU
        as a device-side assert that names neither the label nor the cause. Prediction batches
        are not checked (their labels are not used).

        Raises:
            ValueError: If `_label_problem` finds a problem; the message says where (stage and
                batch index) and what (the bad labels, the valid range, `num_classes`).
        """
        trainer = self._trainer
        if trainer is None or trainer.predicting:
            return batch
        problem = self._label_problem(batch)
        if problem is not None:
            raise ValueError(
                f"Bad labels in the {_batch_position(trainer)}: {problem}. Leave `num_classes` out (the "
                "model then takes the data module's), or fix the labels of the data."
            )
        return batch

    def _label_problem(self, batch: Any) -> str | None:
        """What is wrong with the labels of `batch` for this model, or `None`; each task says how to check.

        Implementations skip labels that are not on the CPU (reading them would wait for the device).
        """
        return None

    def _step_is_written(self) -> bool:
        """Whether the loggers get this batch's step values, so that step-only values are worth logging.

        Lightning writes step logs at the end of the batch whose optimizer step makes
        `global_step + 1` a multiple of `log_every_n_steps` (`global_step` has not been advanced
        yet in the batch's hooks). Each `self.log` call costs about a millisecond.
        """
        every_n = self.trainer.log_every_n_steps
        return every_n >= 1 and (self.trainer.global_step + 1) % every_n == 0

    def _log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log the training loss of a batch: `train/loss` for the step, `train/loss_epoch` for the epoch mean.

        The step value is logged where something reads it: every step with a progress bar, else on
        the steps the loggers write and on the epoch's last batch (`callback_metrics` and the run
        record keep the last step's value). Each `self.log` call costs Lightning about half a
        millisecond, as much as a small model's optimizer step.
        """
        bar = self._has_progress_bar
        if bar or self._step_is_written() or self.trainer.is_last_batch:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=bar, batch_size=batch_size)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self.logging_config.log_learning_rate or not self.trainer.optimizers:
            return
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # what this batch's step uses
        if self._step_is_written():
            self.log("train/lr", lr, on_step=True, on_epoch=False)
        if self.trainer.is_last_batch:
            self._last_step_lr = lr

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Once per epoch, whatever `log_every_n_steps` is: the learning rate of the epoch's last
        # step, as an epoch value, so that the loggers and the run record get a point for every
        # epoch (with fewer than `log_every_n_steps` steps per epoch, the step values above are
        # written once in several epochs, or never). Logged here, after the schedulers stepped,
        # because `train/lr` cannot be logged as a step and an epoch value in the same hook.
        if self._last_step_lr is not None:
            self.log("train/lr", self._last_step_lr, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
            self._last_step_lr = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.logging_config.log_gradient_norm or not self._step_is_written():
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    def setup(self, stage: str) -> None:
        # Values logged with `prog_bar=True` cost a `.item()` sync per step: only worth it with
        # a bar. Read at the start of each run, before Lightning's finders swap the trainer's
        # callbacks out, as a key must keep its `prog_bar` across the runs of a loop.
        self._has_progress_bar = self.trainer.progress_bar_callback is not None
        _sync_hparams(self, self.hparams)  # before Lightning logs them

    # ---- checkpoints ---------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Rebuild the model from a checkpoint; the backbone is not downloaded again.

        Examples:
            >>> model = ImageClassifier.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
        """
        with skip_pretrained_download():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ---- epoch summaries (read by callbacks such as `RunPlots`) ------------------------------
    def epoch_summaries(self) -> dict[str, Any]:
        """What the last validation epoch found beyond its logged scalars, by name, as plain lists and dicts.

        A task fills its own names at the end of each validation epoch (the sanity check aside),
        from values gathered over all ranks, and returns a copy here; callbacks read it after
        validation. Empty before the first validation epoch of a `fit`, and for a task that keeps
        none. `RunPlots` draws `"confusion_matrix"`, `{"split": "val", "class_names": [str, ...],
        "counts": [[int, ...], ...]}` (rows: true class, columns: predicted class).

        Examples:
            >>> model.epoch_summaries()  # doctest: +SKIP
            {'confusion_matrix': {'split': 'val', 'class_names': ['cat', 'dog'], 'counts': [[6, 0], [1, 5]]}}
        """
        return {}


def _labels_outside(labels: torch.Tensor, high: float, *, high_inclusive: bool = False) -> list[Any]:
    """The distinct values of `labels` outside `[0, high)` (`[0, high]` with `high_inclusive`), at most 10.

    Cheap when every value is inside: one min/max over the tensor (meant for CPU tensors).

    Examples:
        >>> _labels_outside(torch.tensor([0, 3, 12, 12]), 10)
        [12]
    """
    if labels.numel() == 0:
        return []
    low, top = torch.aminmax(labels)
    if low >= 0 and (top <= high if high_inclusive else top < high):
        return []
    bad = (labels < 0) | ((labels > high) if high_inclusive else (labels >= high))
    return torch.unique(labels[bad])[:10].tolist()


def _data_value(trainer: pl.Trainer, name: str) -> int | None:
    """The attached data module's `name` (`num_classes`, `image_size`) when it is an int, else `None`.

    Examples:
        >>> _data_value(trainer, "num_classes")  # doctest: +SKIP
        3
    """
    value = getattr(getattr(trainer, "datamodule", None), name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _batch_position(trainer: pl.Trainer) -> str:
    """Where the trainer is, for messages: `"training batch 3 (epoch 0)"`, `"test batch 0"`."""
    if trainer.training:
        name, loop = "training", trainer.fit_loop.epoch_loop
    elif trainer.testing:
        name, loop = "test", trainer.test_loop
    elif trainer.state.fn == TrainerFn.FITTING:
        name = "sanity-check validation" if trainer.sanity_checking else "validation"
        loop = trainer.fit_loop.epoch_loop.val_loop
    else:
        name, loop = "validation", trainer.validate_loop
    position = f"{name} batch {loop.batch_progress.current.ready}"
    if trainer.state.fn == TrainerFn.FITTING:
        position += f" (epoch {trainer.current_epoch})"
    return position


def _can_clip_fused(trainer: pl.Trainer) -> bool:
    """Whether a fused optimizer is safe in this run: it does not clip gradients, or it clips them in
    full precision.

    A fused optimizer unscales mixed-precision gradients inside its step, after clipping would have
    run: Lightning's mixed-precision plugin refuses to clip them, and a gradient scaler would clip
    the scaled values.
    """
    if not trainer.gradient_clip_val:
        return True
    plugin = trainer.precision_plugin
    return not isinstance(plugin, MixedPrecision) and getattr(plugin, "scaler", None) is None


def _sync_hparams(task: BaseTask, hparams: Any) -> None:
    """Write the current learning rate and frozen state into `hparams`.

    Both can change after construction (`model._lr = 1e-4`, unfreezing for a second phase);
    logged hyperparameters and checkpoints record them as they are, so `load_from_checkpoint`
    rebuilds the model as it was saved.
    """
    if not hparams:
        return
    if "lr" in hparams:
        hparams["lr"] = task._lr
    if "freeze_backbone" in hparams:
        hparams["freeze_backbone"] = task.backbone_frozen
