"""What every autotimm task shares: backbone and metric configs, hyperparameters, values taken from the
data module, label checks, loss logging, backbone freezing, optimizer and scheduler by name, extra logging.

A task subclasses `BaseTask` and writes only what is its own: its arguments, its network, its
steps and how to check a batch's labels (see the class docstring).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import safetensors.torch
import torch
import torch.nn as nn
from PIL import Image
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.trainer.states import TrainerFn

from autotimm._atomic import atomic_path
from autotimm._compat import attached_trainer, step_is_logged
from autotimm._errors import check_bool, check_mapping, check_number
from autotimm._version import __version__
from autotimm.backbones import BackboneConfig, skip_pretrained_download
from autotimm.inference import (
    ClassificationResult,
    DetectionResult,
    Explanation,
    ImageSource,
    Predictions,
    predict_images,
)
from autotimm.loggers import LoggingConfig
from autotimm.metrics import STAGES, MetricConfig, create_metrics
from autotimm.optim import (
    backbone_lr_scales,
    check_backbone_lr_options,
    check_optimizer_kwargs,
    check_scheduler_kwargs,
    create_optimizer,
    create_scheduler,
    resolve_optimizer,
    resolve_scheduler,
    step_scheduler,
)

__all__ = [
    "PRETRAINED_CONFIG",
    "PRETRAINED_KEY",
    "PRETRAINED_WEIGHTS",
    "BaseTask",
    "checkpoint_task",
    "data_value",
    "labels_outside",
]

_CHECKPOINT_KEY = "autotimm"  # what the model was trained on: class names, data config, task extras
#: The files of a `save_pretrained` folder, and the key of autotimm's part of its config.
PRETRAINED_CONFIG = "config.json"
PRETRAINED_WEIGHTS = "model.safetensors"
PRETRAINED_KEY = "autotimm"
PredictBatch = Callable[
    [list[ImageSource], list[Image.Image]], list[ClassificationResult] | list[DetectionResult] | list[Explanation]
]


class BaseTask(pl.LightningModule):
    """Base class of the task modules: what every task shares, so that a task writes only its own part.

    The base checks and keeps the shared arguments (backbone, `num_classes`, metrics, freezing,
    optimizer, scheduler, logging), saves them as hyperparameters together with the task's own
    (`_save_hparams`), builds the metrics of each stage (`_create_stage_metrics`), takes the values
    named in `data_values` (`num_classes`, `image_size`) from the data module when a run starts
    and checks given ones against it, checks each batch's labels (`_label_problem`), logs losses
    (`_log_loss`), and keeps the class names and data config in checkpoints.

    A task subclass writes: its `__init__` (its own arguments, then `_save_hparams`, then its
    network when `num_classes` is known), `backbone` (an attribute or property; freezing acts on
    it), `_adopt_data_values` (build what waited for the data's `num_classes`), `_label_problem`,
    and its steps.

    The learning rate lives in `self._lr`, read each time `fit` builds the optimizer, so
    `model._lr = 1e-4` between two `fit` calls takes effect. The backbone counts as frozen
    while none of its parameters requires a gradient; a frozen backbone is kept in eval mode
    during training epochs, so its BatchNorm statistics do not move either. The labels of each
    train, val and test batch are checked on the CPU before the batch moves to the device.

    Args:
        backbone: A timm model name, a `BackboneConfig` or its dict form.
        num_classes: Number of classes; `None` takes the data module's when a run starts.
        metrics: Metric configs (or their dict forms); `None` takes `default_metrics()`.
        default_metrics: The task's metrics when `metrics` is `None`.
        freeze_backbone: Train without the backbone (see `freeze_backbone()`).
        backbone_lr_scale: The backbone's learning rate over `lr` (the head's, and a detector's
            neck's), > 0: `0.1` fine-tunes a pretrained backbone ten times slower.
        layer_decay: Layer-wise learning-rate decay inside the backbone, in (0, 1] (timm's
            `--layer-decay`): each backbone layer of its `group_matcher()` learns `layer_decay`
            times slower than the one above it, the last one `layer_decay` times slower than
            the head. `None` for none; a task whose backbone has no `group_matcher()` (the
            detector's `features_only` backbones) does not take it.
        lr: Learning rate.
        weight_decay: Weight decay (not applied to biases and normalisation weights).
        optimizer: A name from `list_optimizers()`.
        optimizer_kwargs: Extra keyword arguments for the optimizer.
        scheduler: A name from `list_schedulers()`, or `None` for a constant learning rate.
        scheduler_kwargs: Extra keyword arguments for the scheduler.
        logging_config: What to log besides loss and metrics.

    Examples:
        >>> class Counter(BaseTask):  # doctest: +SKIP
        ...     data_values = ("num_classes",)
        ...     def __init__(self, backbone, num_classes=None, **kwargs):
        ...         super().__init__(backbone=backbone, num_classes=num_classes, default_metrics=list, **kwargs)
        ...         self._save_hparams({})
    """

    backbone: nn.Module
    #: The model values taken from the data module when not given, and checked against it when given.
    data_values: ClassVar[tuple[str, ...]] = ("num_classes",)
    #: A data module that knows `num_classes`, for the message when none does.
    _data_module_example: ClassVar[str] = "a data module"
    #: What the data's classes are called in messages.
    _class_word: ClassVar[str] = "classes"

    def __init__(
        self,
        *,
        backbone: str | BackboneConfig | dict[str, Any],
        num_classes: int | None,
        metrics: Sequence[MetricConfig | dict[str, Any]] | None,
        default_metrics: Callable[[], list[MetricConfig]],
        freeze_backbone: bool,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
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
        self.backbone_lr_scale, self.layer_decay = check_backbone_lr_options(backbone_lr_scale, layer_decay)
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
        if num_classes is not None:
            num_classes = int(check_number("num_classes", num_classes, low=1, integer=True))
        self.num_classes: int | None = num_classes  # None until a data module gives it
        check_bool("freeze_backbone", freeze_backbone)
        self._freeze_at_build = freeze_backbone
        # With its weights path, which the hyperparameters leave out.
        self._backbone_config = BackboneConfig.coerce(backbone)
        self.metric_configs = default_metrics() if metrics is None else MetricConfig.coerce_list(metrics)
        self._prog_bar = {m.name: m.prog_bar for m in self.metric_configs}
        self._has_progress_bar = False
        self._last_step_lr: float | None = None  # the LR of an epoch's last step, logged at its end
        # What the model was trained on, taken from the data module at `fit` and kept in its
        # checkpoints, so that a model loaded from one can name its classes and be exported
        # at its training size without the data module.
        self.class_names: list[str] | None = None
        self.trained_data_config: dict[str, Any] | None = None

    def _save_hparams(self, task_hparams: Mapping[str, Any]) -> None:
        """Save the shared hyperparameters and then the task's own (`task_hparams`), in one call.

        The backbone is saved without its weights path (nor the user name it may hold): the
        checkpoint holds the weights.
        """
        self.save_hyperparameters(
            {
                "backbone": self._backbone_config.to_hparams(),
                "num_classes": self.num_classes,
                "metrics": [m.to_dict() for m in self.metric_configs],
                **self._training_hparams(),
                "freeze_backbone": self._freeze_at_build,
                **task_hparams,
            }
        )

    def _create_stage_metrics(self, configs: Sequence[MetricConfig], **kwargs: Any) -> None:
        """Build `train_metrics`, `val_metrics` and `test_metrics` from `configs` (`kwargs` go to `create_metrics`)."""
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", create_metrics(configs, stage, **kwargs))

    def _metric_on_bar(self, name: str) -> bool:
        """Whether the metric `name` goes to the progress bar (there is one and its config asks for it)."""
        return self._has_progress_bar and self._prog_bar.get(name, False)

    def _freeze_if_asked(self) -> None:
        """Freeze a newly built backbone when the task was created with `freeze_backbone=True`."""
        if self._freeze_at_build:
            self.freeze_backbone()

    def _training_hparams(self) -> dict[str, Any]:
        """The optimizer, scheduler and logging hyperparameters, for `_save_hparams`."""
        # Only when set: a task without layers to decay (the detector) does not take `layer_decay`.
        layer_decay = {} if self.layer_decay is None else {"layer_decay": self.layer_decay}
        return {
            "logging_config": vars(self.logging_config).copy(),
            "optimizer": self.optimizer_name,
            "lr": self._lr,
            "weight_decay": self.weight_decay,
            "backbone_lr_scale": self.backbone_lr_scale,
            **layer_decay,
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
        saved = {
            "task": type(self).__name__,
            "version": __version__,
            "class_names": self.class_names,
            "data_config": self.trained_data_config,
        }
        checkpoint[_CHECKPOINT_KEY] = {**saved, **self._checkpoint_extras()}
        # The loss is not part of the model: a custom loss module's state would make loading without it fail.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("loss_fn.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(_CHECKPOINT_KEY) or {}
        self.class_names = saved.get("class_names")
        self.trained_data_config = saved.get("data_config")
        self._restore_checkpoint_extras(saved)

    def _checkpoint_extras(self) -> dict[str, Any]:
        """What the task keeps in its checkpoints besides weights and hyperparameters (plain data)."""
        return {}

    def _restore_checkpoint_extras(self, saved: Mapping[str, Any]) -> None:
        """Take back what `_checkpoint_extras` saved (`saved` may lack keys of older checkpoints)."""

    # ---- optimization --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        trainer = attached_trainer(self)
        optimizer = create_optimizer(
            self.optimizer_name,
            self,
            lr=self._lr,
            weight_decay=self.weight_decay,
            allow_fused=trainer is None or _can_clip_fused(trainer),
            lr_scales=backbone_lr_scales(
                self, self.backbone, backbone_lr_scale=self.backbone_lr_scale, layer_decay=self.layer_decay
            ),
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
        `max_steps`, `limit_train_batches` and `accumulate_grad_batches`, read when `fit` builds the
        optimizer: after the batch-size finder (which runs in a trainer of its own before `fit`) and
        after `TimeBudget` set a provisional length (it re-plans the schedule after the first epoch).
        """
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # loads the train dataloader when it can end
        if not math.isfinite(total):
            raise ValueError(
                f"The learning-rate scheduler {self.scheduler_name!r} needs to know how long the run is, but the "
                f"trainer has no end (`max_epochs={trainer.max_epochs}`, `max_steps={trainer.max_steps}`). "
                "Set `max_epochs` or `max_steps`, or `max_time` with the `TimeBudget` callback (which "
                "`AutoTrainer(max_time=...)` adds), or use `scheduler=None`."
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
        trainer = attached_trainer(self)
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

        Lightning's own rule (see `step_is_logged`). Each `self.log` call costs about a millisecond.
        """
        return step_is_logged(self.trainer)

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

    def _log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        """Log the loss of a batch: `_log_train_loss` in training, `<stage>/loss` (the epoch mean) otherwise."""
        if stage == "train":
            self._log_train_loss(loss, batch_size)
            return
        bar = self._has_progress_bar and stage == "val"
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=bar, batch_size=batch_size, sync_dist=True)

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
        """Take the `data_values` the model has not from the data module, check the others against it."""
        # Values logged with `prog_bar=True` cost a `.item()` sync per step: only worth it with
        # a bar. Read at the start of each run, before Lightning's finders swap the trainer's
        # callbacks out, as a key must keep its `prog_bar` across the runs of a loop.
        self._has_progress_bar = self.trainer.progress_bar_callback is not None
        data = {name: data_value(self.trainer, name) for name in self.data_values}
        for name, value in data.items():
            problem = None if value is None else self._data_mismatch(name, value)
            if problem is not None:
                raise ValueError(problem)
        if self.num_classes is None and data.get("num_classes") is None:
            raise ValueError(
                f"{type(self).__name__} was created without `num_classes`, and the run has no data module that "
                f"knows it ({self._data_module_example} does). Give `num_classes=...`."
            )
        learnt = {name: value for name, value in data.items() if getattr(self, name) is None and value is not None}
        if learnt:
            self._adopt_data_values(learnt)
            self.save_hyperparameters({**self.hparams, **learnt})  # logged with the run, and in its checkpoints
        _sync_hparams(self, self.hparams)  # before Lightning logs them

    def _data_mismatch(self, name: str, data: int) -> str | None:
        """Why the model's `name` does not fit the data module's value `data`, or `None` when it fits (or is unset)."""
        value = getattr(self, name)
        if value is None or value == data:
            return None
        if name == "num_classes":
            names = getattr(getattr(self.trainer, "datamodule", None), "class_names", "")
            return (
                f"The model has `num_classes={value}` but the data has {data} {self._class_word} ({names}). "
                f"Leave `num_classes` out (the model then takes the data's), or give `num_classes={data}`."
            )
        return (
            f"The model has `{name}={value}` but the data module has `{name}={data}`. Leave the model's "
            f"`{name}` out (it then takes the data's), or give both the same `{name}`."
        )

    def _adopt_data_values(self, values: Mapping[str, int]) -> None:
        """Take the data module's `values` (`{"num_classes": 3}`) the model was created without.

        Sets them as attributes; a task extends this to build what waited for them (its head).
        """
        for name, value in values.items():
            setattr(self, name, value)

    # ---- prediction on new images ----------------------------------------------------------
    def _predict_images(
        self,
        source: Any,
        batch_size: int,
        on_bad_file: str,
        progress: bool,
        run_batch: PredictBatch,
        gradients: bool = False,
    ) -> Predictions:
        """Run `run_batch` over the images of `source`, `batch_size` at a time, in eval mode without gradients
        (with them for `gradients=True`, as class-activation maps need).

        The model's training mode is restored afterwards. Files that cannot be read are skipped
        (named in a warning and in `Predictions.skipped`) or raise, as `on_bad_file` says.
        """
        training = self.training
        self.eval()
        try:
            with torch.enable_grad() if gradients else torch.inference_mode():
                return predict_images(source, batch_size, on_bad_file, progress, run_batch)  # type: ignore[arg-type]
        finally:
            self.train(training)

    def class_name(self, index: int) -> str:
        """The name of class `index`: from `class_names` (kept in checkpoints), else the index as text.

        Examples:
            >>> model.class_name(2)  # doctest: +SKIP
            'fox'
        """
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    # ---- a portable model folder -------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model to `folder`: `config.json` (task, hyperparameters, class names, preprocessing)
        and `model.safetensors`; `autotimm.load(folder)` rebuilds it, offline.

        A classifier's folder is in timm's own layout too: `timm.create_model("local-dir:" + folder,
        pretrained=True)` loads it offline, with the trained head, `label_names` and preprocessing.

        Returns:
            The folder.

        Examples:
            >>> model.save_pretrained("my_model")  # doctest: +SKIP
            PosixPath('my_model')
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._write_pretrained(folder, self._pretrained_section())
        return folder

    def _pretrained_section(self) -> dict[str, Any]:
        """autotimm's part of `config.json`: what `autotimm.load` needs to rebuild the task."""
        section = {
            "task": type(self).__name__,
            "version": __version__,
            "hparams": dict(self.hparams),
            "class_names": self.class_names,
            "data_config": self.trained_data_config,
            **self._checkpoint_extras(),
        }
        _sync_hparams(self, section["hparams"])
        try:
            return json.loads(json.dumps(section))
        except TypeError as error:
            raise ValueError(f"The model's hyperparameters cannot be written to JSON: {error}.") from error

    def _write_pretrained(self, folder: Path, section: dict[str, Any]) -> None:
        """Write the weights (all of the module's state, the loss's left out) and the config."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("loss_fn.")}
        with atomic_path(folder / PRETRAINED_WEIGHTS) as tmp:
            safetensors.torch.save_file(state, str(tmp))
        with atomic_path(folder / PRETRAINED_CONFIG) as tmp:
            tmp.write_text(json.dumps({PRETRAINED_KEY: section}, indent=2), encoding="utf-8")

    def load_pretrained_weights(self, folder: str | os.PathLike[str]) -> None:
        """Load the weights of a `save_pretrained` folder into this model (built with the folder's config)."""
        state = safetensors.torch.load_file(str(Path(folder) / PRETRAINED_WEIGHTS))
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("loss_fn.")]
        if missing or unexpected:
            raise ValueError(
                f"The weights in {str(folder)!r} do not fit the model its config describes: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )

    # ---- checkpoints ---------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Rebuild the model from a checkpoint; the backbone is not downloaded again.

        Examples:
            >>> model = ImageClassifier.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
        """
        _check_checkpoint_task(cls, checkpoint_path)
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


def checkpoint_task(checkpoint: Any) -> str | None:
    """The name of the task class a loaded checkpoint holds: as autotimm wrote it, else recognised by the
    hyperparameters of older checkpoints; `None` when neither tells.

    Examples:
        >>> checkpoint_task({"autotimm": {"task": "ObjectDetector"}})
        'ObjectDetector'
    """
    if not isinstance(checkpoint, Mapping):
        return None
    saved = checkpoint.get(_CHECKPOINT_KEY)
    name = saved.get("task") if isinstance(saved, Mapping) else None
    if isinstance(name, str):
        return name
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        return None
    return "ObjectDetector" if "architecture" in hparams else "ImageClassifier" if "multi_label" in hparams else None


def _check_checkpoint_task(cls: type[BaseTask], path: Any) -> None:
    """Refuse a checkpoint file of another autotimm task, naming the file, its task and the call that loads it.

    Files that cannot be read here are left to Lightning, which says what is wrong with them.
    """
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        return
    try:  # memory-mapped: the weights are not read
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 (not a checkpoint this can peek into: Lightning's load reports it)
        return
    held = checkpoint_task(checkpoint)
    tasks = {task.__name__: task for task in _subclasses(BaseTask)}
    other = tasks.get(held) if held is not None else None
    if other is None or issubclass(cls, other) or issubclass(other, cls):
        return
    raise ValueError(
        f"{str(path)!r} holds a checkpoint of {held}, not of {cls.__name__}: load it with "
        f"`{held}.load_from_checkpoint({str(path)!r})`, or with `autotimm.load({str(path)!r})`, which finds the task."
    )


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def labels_outside(labels: torch.Tensor, high: float, *, high_inclusive: bool = False) -> list[Any]:
    """The distinct values of `labels` outside `[0, high)` (`[0, high]` with `high_inclusive`), at most 10.

    Cheap when every value is inside: one min/max over the tensor (meant for CPU tensors).

    Examples:
        >>> labels_outside(torch.tensor([0, 3, 12, 12]), 10)
        [12]
    """
    if labels.numel() == 0:
        return []
    low, top = torch.aminmax(labels)
    if low >= 0 and (top <= high if high_inclusive else top < high):
        return []
    bad = (labels < 0) | ((labels > high) if high_inclusive else (labels >= high))
    return torch.unique(labels[bad])[:10].tolist()


def data_value(trainer: pl.Trainer, name: str) -> int | None:
    """The attached data module's `name` (`num_classes`, `image_size`) when it is an int, else `None`.

    Examples:
        >>> data_value(trainer, "num_classes")  # doctest: +SKIP
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
