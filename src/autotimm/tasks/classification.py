"""Image classification over any timm backbone."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import timm.data
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from timm.data.mixup import mixup_target
from timm.models import save_for_hf
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix

from autotimm._errors import check_bool, check_choice, check_mapping, check_number
from autotimm.backbones import BackboneConfig, create_backbone, pooled_width
from autotimm.data import create_eval_transform, eval_input_box, resolve_data_config
from autotimm.export import TorchScriptMethod, export_onnx, export_torchscript
from autotimm.inference import (
    EXPLAIN_METHODS,
    ClassificationResult,
    Explanation,
    ImageSource,
    OnBadFile,
    Predictions,
    check_layer,
    default_layer,
    grad_cam,
    require_captum,
    to_image_size,
)
from autotimm.loggers import LoggingConfig
from autotimm.losses import balanced_class_weights, check_loss_kwargs, create_loss, resolve_loss
from autotimm.metrics import MetricConfig
from autotimm.tasks.base import PRETRAINED_CONFIG, PRETRAINED_KEY, PRETRAINED_WEIGHTS, BaseTask, labels_outside

__all__ = ["ImageClassifier"]

log = logging.getLogger(__name__)


def _default_metrics() -> list[MetricConfig]:
    return [MetricConfig("accuracy", metric_class="Accuracy", stages=["val", "test"], prog_bar=True)]


@dataclass(frozen=True)
class _LossChoice:
    """The checked loss arguments: a registry name with its kwargs and class weights, or a custom loss."""

    name: str
    kwargs: dict[str, Any]
    class_weights: list[float] | Literal["balanced"] | None
    custom: nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None

    def hparams(self) -> dict[str, Any]:
        """A custom loss cannot be a hyperparameter: `loss_fn` is then `None` (checkpoints keep its class name)."""
        name = None if self.custom is not None else self.name
        return {"loss_fn": name, "loss_kwargs": self.kwargs or None, "class_weights": self.class_weights}


def _check_loss(
    loss_fn: object,
    loss_kwargs: object,
    class_weights: object,
    label_smoothing: float,
    multi_label: bool,
    num_weights: int | None,
) -> _LossChoice:
    """Check the loss arguments of `ImageClassifier` before anything is built."""
    default = "binary_cross_entropy" if multi_label else "cross_entropy"
    if loss_fn is not None and not isinstance(loss_fn, str):
        if not callable(loss_fn):
            raise TypeError(
                "Expected `loss_fn` to be a name from `list_losses()`, an nn.Module or a callable, but got "
                f"{type(loss_fn).__name__} {loss_fn!r}."
            )
        given = {"loss_kwargs": loss_kwargs, "class_weights": class_weights, "label_smoothing": label_smoothing or None}
        for argument, value in given.items():
            if value is not None:
                raise ValueError(f"`{argument}` applies to a named loss; build it into your own `loss_fn` instead.")
        return _LossChoice(default, {}, None, loss_fn)
    name = default if loss_fn is None else resolve_loss(loss_fn)
    kwargs = check_mapping("loss_kwargs", loss_kwargs, optional=True)
    check_loss_kwargs(name, kwargs)
    if isinstance(class_weights, torch.Tensor):
        class_weights = class_weights.tolist()
    if class_weights is not None and class_weights != "balanced":
        if isinstance(class_weights, str) or not isinstance(class_weights, Sequence):
            raise TypeError(
                "Expected `class_weights` to be a list of numbers or 'balanced', but got "
                f"{type(class_weights).__name__} {class_weights!r}."
            )
        _check_weight_count(class_weights, num_weights)
        class_weights = [float(check_number("class_weights", w, low=0, low_inclusive=False)) for w in class_weights]
    # Built once here, so that a loss that does not fit the task fails at construction.
    weights = None if class_weights == "balanced" else class_weights
    create_loss(name, multi_label=multi_label, class_weights=weights, label_smoothing=label_smoothing, **kwargs)
    return _LossChoice(name, kwargs, class_weights, None)


MixupMode = Literal["batch", "pair", "elem"]
_MIXUP_DEFAULTS: dict[str, Any] = {
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "mixup_mode": "batch",
    "mixup_off_epoch": 0,
}


def _check_mixup(
    mixup_alpha: float,
    cutmix_alpha: float,
    mixup_prob: float,
    mixup_switch_prob: float,
    mixup_mode: str,
    mixup_off_epoch: int,
) -> dict[str, Any]:
    """Check the Mixup / CutMix arguments of `ImageClassifier`; return them as hyperparameters."""
    check_number("mixup_alpha", mixup_alpha, low=0)
    check_number("cutmix_alpha", cutmix_alpha, low=0)
    check_number("mixup_prob", mixup_prob, low=0, high=1, high_inclusive=True)
    check_number("mixup_switch_prob", mixup_switch_prob, low=0, high=1, high_inclusive=True)
    check_choice("mixup_mode", mixup_mode, ("batch", "pair", "elem"))
    check_number("mixup_off_epoch", mixup_off_epoch, low=0, integer=True)
    given = {
        "mixup_prob": float(mixup_prob),
        "mixup_switch_prob": float(mixup_switch_prob),
        "mixup_mode": mixup_mode,
        "mixup_off_epoch": int(mixup_off_epoch),
    }
    if mixup_alpha == 0 and cutmix_alpha == 0:
        changed = [f"{name}={value!r}" for name, value in given.items() if value != _MIXUP_DEFAULTS[name]]
        if changed:
            raise ValueError(
                f"{', '.join(changed)} apply to Mixup / CutMix, which are off: set `mixup_alpha` and/or "
                "`cutmix_alpha` > 0 (1.0 is usual) to turn them on."
            )
    return {"mixup_alpha": float(mixup_alpha), "cutmix_alpha": float(cutmix_alpha), **given}


def _check_soft_target_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_classes: int) -> None:
    """Mixup gives the loss probability rows `[B, C]`: a custom loss must take them (tried on a tiny batch)."""
    logits, targets = torch.zeros(2, num_classes), torch.full((2, num_classes), 1.0 / num_classes)
    problem = None
    try:
        value = loss(logits, targets)
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not torch.isfinite(value).all():
            problem = f"it returned {value!r} rather than a finite scalar tensor"
    except Exception as error:  # noqa: BLE001 (any failure means the loss cannot take soft targets)
        problem = f"it raised {type(error).__name__}: {error}"
    if problem is not None:
        raise ValueError(
            f"Mixup / CutMix train on soft targets (rows of class probabilities [B, {num_classes}]), but the "
            f"`loss_fn` {_qualified_name(loss)} cannot take them: {problem}. Use a named loss (for example "
            "'cross_entropy' or 'binary_cross_entropy'), a loss that takes soft targets "
            "(timm.loss.SoftTargetCrossEntropy), or turn Mixup / CutMix off."
        )


def _num_weights(num_classes: int, multi_label: bool) -> int:
    """How many class weights a classifier takes: one per class, 2 for a binary one (negative, positive)."""
    return 2 if multi_label and num_classes == 1 else num_classes


def _check_weight_count(class_weights: Sequence[float], num_weights: int | None) -> None:
    """One weight per class; `num_weights=None` (classes not known yet) checks nothing."""
    if num_weights is not None and len(class_weights) != num_weights:
        raise ValueError(
            f"Expected `class_weights` to hold {num_weights} weights (one per class), but got {list(class_weights)!r}."
        )


def _qualified_name(loss: object) -> str:
    """`module.Class` of a loss module, `module.function` of a function."""
    source = loss if not isinstance(loss, nn.Module) and hasattr(loss, "__qualname__") else type(loss)
    return f"{source.__module__}.{source.__qualname__}"


def _data_config(backbone: nn.Module, in_chans: int) -> dict[str, Any]:
    """timm's data config for `backbone`, with the input size the model was built for.

    timm reads the size from the pretrained config, so a ViT built with `img_size=64` would
    otherwise report 224 (and a data module reading it would feed it 224 px images), and a
    model built with `in_chans=1` would report 3 channels.
    """
    config = timm.data.resolve_model_data_config(backbone)
    size = config["input_size"][1:]
    built_for = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
    if isinstance(built_for, (tuple, list)) and len(built_for) == 2:
        size = tuple(int(s) for s in built_for)
    config["input_size"] = (in_chans, *size)
    return config


class ImageClassifier(BaseTask):
    """Image classifier: a timm backbone, a linear head, and the training loop around them.

    Multi-class by default (softmax, cross-entropy). With `multi_label=True` each output is
    an independent sigmoid trained with `BCEWithLogitsLoss`; `num_classes=1` with
    `multi_label=True` is a binary classifier (for a folder of two classes, label 1 is the
    positive class).

    Logs `train/loss` (each step), `train/loss_epoch`, `val/loss`, `test/loss` and
    `<stage>/<metric name>` for each metric. `predict_step` returns class probabilities.

    Args:
        backbone: A timm model name (`"resnet50"`, `"convnext_tiny.fb_in22k"`) or a `BackboneConfig`.
        num_classes: Number of classes (outputs); `None` takes the data module's `num_classes` when
            `fit` (or `validate`, `test`, `predict`) starts, builds the head then and saves the value
            in the hyperparameters. Given, it must match the data's.
        metrics: Metrics to compute; `None` gives accuracy on val and test, `[]` none.
        logging_config: Learning-rate and gradient-norm logging.
        optimizer: A name from `list_optimizers()`.
        lr: Learning rate (also settable as `model._lr` before `fit`).
        weight_decay: Weight decay, not applied to biases and norm weights.
        optimizer_kwargs: Extra optimizer arguments.
        scheduler: A name from `list_schedulers()`, or `None` for a constant learning rate. The
            default, `"cosine_warmup"`, warms up linearly over the first 5% of the optimizer steps,
            then follows a cosine to 0 at the run's last step (the run's real length:
            `trainer.estimated_stepping_batches`, after the batch-size finder, re-planned by
            `TimeBudget` under `max_time`).
        scheduler_kwargs: Extra scheduler arguments.
        freeze_backbone: Train only the head; the backbone's BatchNorm statistics stay frozen too.
        backbone_lr_scale: The backbone's learning rate over `lr`, which the head keeps
            (`0.1`: the backbone learns ten times slower).
        layer_decay: Layer-wise learning-rate decay inside the backbone, in (0, 1] (see `BaseTask`).
        label_smoothing: Label smoothing in [0, 1).
        head_dropout: Dropout before the linear head.
        multi_label: Independent sigmoid outputs with `BCEWithLogitsLoss`.
        loss_fn: A name from `autotimm.list_losses()` (`None`: `"cross_entropy"`, or
            `"binary_cross_entropy"` with `multi_label`), or any `nn.Module` or callable taking
            `(logits [B, C], targets)`: class indices `[B]`, or float multi-hot targets `[B, C]` with
            `multi_label`. A module or callable is not stored in checkpoints (its class name is):
            pass it again to `load_from_checkpoint(path, loss_fn=...)` to train on with it.
        loss_kwargs: Arguments of a named loss (`{"gamma": 2.0}` for `"focal"`).
        class_weights: One weight per class (a binary classifier: negative, positive) for a named
            loss, or `"balanced"`: `n_samples / (n_classes * count)` from the data module's training
            labels at `fit`, so that rare classes count as much as common ones.
        mixup_alpha: Mixup's Beta(alpha, alpha) for training batches, through timm's `Mixup`; 0 (the
            default) is off. With Mixup or CutMix on, training uses the soft-target form of the loss
            (timm's `SoftTargetCrossEntropy` for the default cross-entropy; a named loss without label
            smoothing otherwise) and `label_smoothing` goes into the mixed targets. Validation and
            testing are never mixed. Train metrics are not logged while batches are mixed (they would
            compare predictions with labels the batch no longer has); `train/loss` is.
        cutmix_alpha: CutMix's alpha; 0 (the default) is off. With both alphas > 0, each batch uses
            one of the two (see `mixup_switch_prob`).
        mixup_prob: The probability of mixing a batch (or an image, in the `"pair"` and `"elem"` modes).
        mixup_switch_prob: With both on, the probability of CutMix rather than Mixup.
        mixup_mode: `"batch"` (one mix for the whole batch), `"pair"` (one per pair of images) or
            `"elem"` (one per image). An odd batch mixes all but its last image.
        mixup_off_epoch: The epoch (0-based) from which training stops mixing and uses the loss and
            train metrics of plain batches, as timm's `--mixup-off-epoch`; 0 mixes to the end. Read
            from the trainer's epoch, so a resumed run switches off at the same epoch.

    Raises:
        TypeError: If an argument has the wrong type (`freeze_backbone="no"`, `lr="1e-3"`).
        ValueError: If an argument is out of range or names an unknown optimizer, scheduler
            or backbone; when a run starts, if the data's class count does not match a given
            `num_classes`, or `num_classes` is neither given nor known to the data;
            at each train/val/test batch, if a label lies outside `[0, num_classes)` (checked on
            the CPU before the batch moves to the device; the message names the label and batch).

    Examples:
        >>> model = ImageClassifier(BackboneConfig("resnet18", pretrained=False), num_classes=10)
        >>> model(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 10])
    """

    _data_module_example = "an `ImageDataModule`"

    def __init__(
        self,
        backbone: str | BackboneConfig | dict[str, Any],
        num_classes: int | None = None,
        metrics: Sequence[MetricConfig | dict[str, Any]] | None = None,
        logging_config: LoggingConfig | dict[str, Any] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer_kwargs: dict[str, Any] | None = None,
        scheduler: str | None = "cosine_warmup",
        scheduler_kwargs: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        label_smoothing: float = 0.0,
        head_dropout: float = 0.0,
        multi_label: bool = False,
        loss_fn: str | nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        loss_kwargs: dict[str, Any] | None = None,
        class_weights: Sequence[float] | Literal["balanced"] | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: MixupMode = "batch",
        mixup_off_epoch: int = 0,
    ) -> None:
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            metrics=metrics,
            default_metrics=_default_metrics,
            freeze_backbone=freeze_backbone,
            backbone_lr_scale=backbone_lr_scale,
            layer_decay=layer_decay,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs,
            scheduler=scheduler,
            scheduler_kwargs=scheduler_kwargs,
            logging_config=logging_config,
        )
        check_bool("multi_label", multi_label)
        num_classes = self.num_classes
        if num_classes == 1 and not multi_label:
            raise ValueError(
                "`num_classes=1` needs `multi_label=True` (a binary classifier with one sigmoid output); "
                "or use `num_classes=2` for a two-class softmax classifier."
            )
        check_number("label_smoothing", label_smoothing, low=0, high=1)
        check_number("head_dropout", head_dropout, low=0, high=1)
        num_weights = None if num_classes is None else _num_weights(num_classes, multi_label)
        loss_choice = _check_loss(loss_fn, loss_kwargs, class_weights, label_smoothing, multi_label, num_weights)
        mixup = _check_mixup(mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, mixup_mode, mixup_off_epoch)
        self._save_hparams(
            {
                "label_smoothing": float(label_smoothing),
                "head_dropout": float(head_dropout),
                "multi_label": multi_label,
                **loss_choice.hparams(),
                **mixup,
            }
        )
        self.multi_label = multi_label
        self.label_smoothing = float(label_smoothing)
        self._loss_choice = loss_choice
        self._num_weights = num_weights
        self._balanced_weights: list[float] | None = None  # set at `fit` for class_weights="balanced"
        self._mixup: timm.data.Mixup | None = None  # built with the head when mixup or cutmix is on
        self._build_losses()
        self._summaries: dict[str, Any] = {}  # see `epoch_summaries`

        backbone_cfg = self._backbone_config
        self.backbone = create_backbone(backbone_cfg, num_classes=0)
        self.head: nn.Module | None = None  # built with `num_classes`, given or the data's
        self.data_config: dict[str, Any] = _data_config(self.backbone, backbone_cfg.kwargs.get("in_chans", 3))
        if num_classes is not None:
            self._build_head(num_classes)
        self._freeze_if_asked()

    def _build_head(self, num_classes: int) -> None:
        """The linear head and the metrics, for `num_classes` outputs."""
        self.num_classes = num_classes
        self._num_weights = _num_weights(num_classes, self.multi_label)
        if isinstance(self._loss_choice.class_weights, list):
            _check_weight_count(self._loss_choice.class_weights, self._num_weights)
        head_dropout = self.hparams["head_dropout"]
        # Sized from what the pooled backbone returns: a pre-logits head can make it wider than `num_features`.
        width = pooled_width(self.backbone, self.data_config["input_size"])
        self.head = nn.Sequential(nn.Dropout(float(head_dropout)), nn.Linear(width, num_classes))
        task = ("binary" if num_classes == 1 else "multilabel") if self.multi_label else "multiclass"
        self._create_stage_metrics(self.metric_configs, num_classes=num_classes, task=task)
        self.val_confusion = _confusion_matrix(num_classes, self.multi_label)
        self._build_mixup(num_classes)

    def _build_mixup(self, num_classes: int) -> None:
        """timm's `Mixup` for `num_classes` outputs, when mixup or cutmix is on."""
        hp = self.hparams
        if hp["mixup_alpha"] == 0 and hp["cutmix_alpha"] == 0:
            return
        if self._loss_choice.custom is not None:
            _check_soft_target_loss(self._loss_choice.custom, num_classes)
        self._mixup = timm.data.Mixup(
            mixup_alpha=hp["mixup_alpha"],
            cutmix_alpha=hp["cutmix_alpha"],
            prob=hp["mixup_prob"],
            switch_prob=hp["mixup_switch_prob"],
            mode=hp["mixup_mode"],
            label_smoothing=self.label_smoothing,
            num_classes=num_classes,
            multi_label=self.multi_label,
        )

    @property
    def mixing(self) -> bool:
        """Whether training batches are mixed now: Mixup or CutMix is on and `mixup_off_epoch` not reached."""
        off = self.hparams["mixup_off_epoch"]
        return self._mixup is not None and (off == 0 or self.current_epoch < off)

    def _built_head(self) -> nn.Module:
        if self.head is None:
            raise RuntimeError(
                "The classifier has no head yet: it was created without `num_classes`, which it takes from the data "
                "module when a run starts. Give `num_classes=...` to use it before `fit` (or `predict`)."
            )
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits `[B, num_classes]` of a normalised image batch `[B, 3, H, W]`."""
        return self._built_head()(self.backbone(x))

    def inference_module(self) -> nn.Module:
        """The plain module computing `forward` (backbone, then head), without the Lightning parts.

        What the exporters trace or script: TorchScript cannot compile a LightningModule.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> model.inference_module()(torch.randn(2, 3, 32, 32)).shape
            torch.Size([2, 3])
        """
        return nn.Sequential(self.backbone, self._built_head())

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes, or per-output sigmoid with `multi_label=True`."""
        return torch.sigmoid(logits) if self.multi_label else logits.softmax(dim=-1)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "multi_label", False) is True and not self.multi_label:
            raise ValueError(
                f"The data is multi-label (a set of labels per image, {type(datamodule).__name__}.multi_label=True), "
                "but the model is not: create it with `ImageClassifier(..., multi_label=True)`."
            )
        super().setup(stage)
        self._balance_class_weights(datamodule, stage)

    def _adopt_data_values(self, values: Mapping[str, int]) -> None:
        super()._adopt_data_values(values)
        self._build_head(values["num_classes"])

    def _data_mismatch(self, name: str, data: int) -> str | None:
        """A binary classifier (`num_classes=1, multi_label=True`) needs data with 2 classes."""
        if not (name == "num_classes" and self.multi_label and self.num_classes == 1):
            return super()._data_mismatch(name, data)
        if data == 2:
            return None
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", "")
        return (
            f"The model is a binary classifier (`num_classes=1, multi_label=True`), which needs data with "
            f"2 classes, but the data has {data} classes ({names}). Leave `num_classes` out (the model "
            "then takes the data's), with `multi_label=False` for one label per image."
        )

    def _label_problem(self, batch: Any) -> str | None:
        """Class indices must lie in `[0, num_classes)` (in `{0, 1}` for a binary classifier), and
        multi-hot or probability targets `[B, C]` need `C == num_classes` (and values in `[0, 1]`
        with `multi_label`)."""
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[1], torch.Tensor)):
            return None
        y, n = batch[1], self.num_classes
        if y.device.type != "cpu" or y.dtype == torch.bool or y.is_complex():
            return None
        if y.ndim == 2:
            if y.shape[1] != n:
                return f"targets of shape {tuple(y.shape)} need {n} columns, one per class (`num_classes={n}`)"
            bad = labels_outside(y, 1, high_inclusive=True) if self.multi_label else []
            return f"multi-hot targets must be in [0, 1], but got values {bad}" if bad else None
        if y.ndim != 1 or (y.is_floating_point() and not self.multi_label):
            return None  # not class indices: the loss explains the shape or dtype itself
        if self.multi_label and n == 1:
            bad = labels_outside(y, 1, high_inclusive=True)
            kind = "a binary classifier (`num_classes=1, multi_label=True`) takes labels 0 and 1"
        else:
            bad = labels_outside(y, n)
            kind = f"labels must be in [0, {n}) for `num_classes={n}`"
        return f"{kind}, but got label(s) {bad}" if bad else None

    # ---- loss ----------------------------------------------------------------------------
    def _create_loss(self, mixed: bool = False) -> nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss of `self._loss_choice`, with the class weights known now.

        `mixed=True` gives the loss of mixed batches: without label smoothing (Mixup smooths the
        targets), and timm's `SoftTargetCrossEntropy` in place of an unweighted cross-entropy.
        """
        choice = self._loss_choice
        if choice.custom is not None:
            return choice.custom
        weights = choice.class_weights if choice.class_weights != "balanced" else self._balanced_weights
        name = "soft_target_cross_entropy" if mixed and choice.name == "cross_entropy" and not weights else choice.name
        return create_loss(
            name,
            multi_label=self.multi_label,
            class_weights=weights,
            label_smoothing=0.0 if mixed else self.label_smoothing,
            **choice.kwargs,
        )

    def _build_losses(self) -> None:
        """`loss_fn`, and `mixup_loss_fn` for mixed batches when Mixup or CutMix is on (a custom loss serves both)."""
        self.loss_fn = self._create_loss()
        hp = self.hparams
        mixes = hp["mixup_alpha"] > 0 or hp["cutmix_alpha"] > 0
        self.mixup_loss_fn = self._create_loss(mixed=True) if mixes and self._loss_choice.custom is None else None

    def _balance_class_weights(self, datamodule: Any, stage: str) -> None:
        """For `class_weights="balanced"`, weigh the classes by the inverse frequency of the training labels."""
        if self._loss_choice.class_weights != "balanced":
            return
        labels = getattr(getattr(datamodule, "train_dataset", None), "targets", None)
        if labels is None:
            if stage != "fit" or self._balanced_weights is not None:
                return  # evaluation keeps the weights of training (restored from the checkpoint)
            raise ValueError(
                "`class_weights='balanced'` needs the training labels, but the data module has no "
                "`train_dataset.targets` (ImageDataModule has them). Pass the weights as a list instead."
            )
        if isinstance(labels, torch.Tensor) and labels.ndim == 2:
            raise ValueError(
                "`class_weights='balanced'` weighs classes by their count of class-index labels, but the training "
                "labels are multi-label 0/1 vectors. Pass the weights as a list instead."
            )
        self._balanced_weights = balanced_class_weights(labels, self._num_weights)
        log.info("Balanced class weights (inverse frequency of the training labels): %s", self._balanced_weights)
        self._build_losses()

    def _checkpoint_extras(self) -> dict[str, Any]:
        custom = self._loss_choice.custom
        return {
            "class_weights": self._balanced_weights,
            "custom_loss": None if custom is None else _qualified_name(custom),
        }

    def _restore_checkpoint_extras(self, saved: Mapping[str, Any]) -> None:
        if saved.get("class_weights") is not None and self._loss_choice.class_weights == "balanced":
            self._balanced_weights = saved["class_weights"]
            self._build_losses()
        if saved.get("custom_loss") and self._loss_choice.custom is None:
            log.warning(
                "This model was trained with the loss %s, which checkpoints do not store; it now uses %r. Pass "
                "`loss_fn=...` to `load_from_checkpoint` to train on with the same loss.",
                saved["custom_loss"],
                self._loss_choice.name,
            )

    # ---- steps ---------------------------------------------------------------------------
    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        """Loss targets: class indices, or float multi-hot / binary targets with `multi_label`."""
        if not self.multi_label:
            return y
        if y.ndim == 1:
            y = y.unsqueeze(1) if self.num_classes == 1 else F.one_hot(y.long(), self.num_classes)
        return y.float()

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, targets)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        targets = self._targets(y)
        loss = self._loss(logits, targets)
        metrics: nn.ModuleDict = getattr(self, f"{stage}_metrics")
        if len(metrics):
            probs = self.probabilities(logits.detach())
            metric_target = targets.long()
            if self.multi_label and self.num_classes == 1:
                probs, metric_target = probs.squeeze(1), metric_target.squeeze(1)
            for name, metric in metrics.items():
                metric.update(probs, metric_target)
                self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=self._metric_on_bar(name))
        if stage == "val" and self.val_confusion is not None:
            self._count_confusion(logits.detach(), y)
        self._log_loss(stage, loss, x.shape[0])
        return loss

    # ---- epoch summaries: the validation confusion matrix ----------------------------------
    def _count_confusion(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        probabilities = self.probabilities(logits.float())
        if self.multi_label:  # binary: one sigmoid output, labels 0/1
            self.val_confusion.update(probabilities[:, 0], y.reshape(-1).long())
        else:  # class indices, or one-hot / probability targets [B, C]
            self.val_confusion.update(probabilities, (y.argmax(-1) if y.ndim == 2 else y).long())

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._summaries = {}
        if self._mixup is not None and len(self.train_metrics):
            off = self.hparams["mixup_off_epoch"]
            until = f"before epoch {off}" if off else "in this run"
            log.info("Train metrics are not logged while Mixup / CutMix mix the batches (%s).", until)

    def on_validation_epoch_start(self) -> None:
        if self.val_confusion is not None:
            self.val_confusion.reset()

    def on_validation_epoch_end(self) -> None:
        confusion = self.val_confusion
        if confusion is None or not confusion.update_called:
            return
        counts = confusion.compute().tolist()  # summed over all ranks
        confusion.reset()
        if self.trainer.sanity_checking:
            return
        names = self.class_names if self.class_names is not None and len(self.class_names) == len(counts) else None
        self._summaries["confusion_matrix"] = {
            "split": "val",
            "class_names": names or [str(i) for i in range(len(counts))],
            "counts": counts,
        }

    def epoch_summaries(self) -> dict[str, Any]:
        """The last validation epoch's `"confusion_matrix"` (multi-class and binary classifiers); see `BaseTask`.

        Examples:
            >>> model.epoch_summaries()["confusion_matrix"]["counts"]  # doctest: +SKIP
            [[6, 0, 0], [1, 4, 1], [0, 0, 6]]
        """
        return copy.deepcopy(self._summaries)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if not self.mixing:
            return self._step(batch, "train")
        x, targets = self._mix(batch[0], batch[1])
        loss_fn = self.loss_fn if self.mixup_loss_fn is None else self.mixup_loss_fn
        loss = loss_fn(self(x), targets)
        self._log_loss("train", loss, x.shape[0])
        return loss

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch mixed by timm's `Mixup`, with its soft targets `[B, C]`; the loader's tensors stay as they were.

        Mixup mixes pairs of images, so an odd batch mixes all but its last image, whose target is
        its own (smoothed) label.
        """
        targets = self._targets(y)
        if not self.multi_label and targets.ndim != 1:
            raise ValueError(
                "Mixup / CutMix mix class-index labels [B] of a multi-class classifier, but got targets of shape "
                f"{tuple(targets.shape)}; turn them off (mixup_alpha=0, cutmix_alpha=0) to train on these targets."
            )
        even = x.shape[0] - x.shape[0] % 2
        mixed_x, mixed_targets = [x[even:]], []
        if even:
            mixed, soft = self._mixup(x[:even].clone(), targets[:even])
            mixed_x.insert(0, mixed)
            mixed_targets.append(soft)
        if even < x.shape[0]:
            last = mixup_target(targets[even:], self.num_classes, 1.0, self.label_smoothing, self.multi_label)
            mixed_targets.append(last.to(x.dtype))
        return torch.cat(mixed_x), torch.cat(mixed_targets)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities `[B, num_classes]` for a batch `x` or `(x, y)`."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.probabilities(self(x))

    # ---- prediction on new images ------------------------------------------------------------
    @property
    def eval_data_config(self) -> dict[str, Any]:
        """The preprocessing of new images: the data config the model was trained with (kept in its
        checkpoints), else its backbone's; see `resolve_data_config`."""
        return resolve_data_config(self.trained_data_config or self.data_config)

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The eval transform of `eval_data_config` (resize, centre crop, normalise): an RGB PIL image to `[3, H, W]`.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> tuple(model.eval_transform()(Image.new("RGB", (300, 200))).shape)
            (3, 160, 160)
        """
        return create_eval_transform(self.eval_data_config)

    def predict(
        self,
        source: Any,
        batch_size: int = 32,
        tta: bool = False,
        top_k: int = 5,
        on_bad_file: OnBadFile = "skip",
        progress: bool = False,
    ) -> Predictions:
        """Classify new images: files, a folder, a glob, PIL images, arrays or a tensor batch.

        Each image is converted to 8-bit RGB, preprocessed with `eval_transform()` (the size and
        normalisation the model was trained with), and run through the model in eval mode on its
        device, `batch_size` images at a time (a folder streams through memory).

        Args:
            source: A file, a folder (its images, recursively), a glob pattern, a PIL image, a numpy
                array, a `[B, 3, H, W]` tensor in [0, 1], or a list of these; see `collect_images`.
            batch_size: Images per forward pass.
            tta: Test-time augmentation: average the probabilities of each image and its mirror image.
            top_k: How many classes each result's `top_k` lists.
            on_bad_file: `"skip"` files that are not readable images (a warning names each; they are
                listed in `Predictions.skipped`), or `"raise"` a `NotAnImageError` naming the first.
            progress: Show a progress bar.

        Returns:
            One `ClassificationResult` per image, in order, with `.to_csv()` / `.to_json()`.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> result = model.predict(Image.new("RGB", (64, 48)))[0]
            >>> result.label in ("0", "1", "2"), len(result.probs)
            (True, 3)
        """
        check_bool("tta", tta)
        top_k = int(check_number("top_k", top_k, low=1, integer=True))
        transform = self.eval_transform()

        def run(entries: list[ImageSource], images: list[Image.Image]) -> list[ClassificationResult]:
            dtype = next(self.parameters()).dtype
            x = torch.stack([transform(image) for image in images]).to(self.device, dtype)
            probs = self._class_probabilities(x)
            if tta:
                probs = (probs + self._class_probabilities(x.flip(-1))) / 2
            return [
                self._classification_result(entry, p.float().cpu(), top_k)
                for entry, p in zip(entries, probs, strict=True)
            ]

        return self._predict_images(source, batch_size, on_bad_file, progress, run)

    def _class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, C]` probabilities of a normalised batch; a binary classifier's one output as `[1 - p, p]`."""
        probs = self.probabilities(self(x))
        if self.multi_label and self.num_classes == 1:
            probs = torch.cat([1 - probs, probs], dim=1)
        return probs

    def _classification_result(self, entry: ImageSource, probs: torch.Tensor, top_k: int) -> ClassificationResult:
        return ClassificationResult.from_probs(entry, probs, top_k, self.class_name)

    # ---- explanations ----------------------------------------------------------------------
    def explain(
        self,
        source: Any,
        target: str | int | None = None,
        method: str = "gradcam",
        layer: str | None = None,
        batch_size: int = 8,
        on_bad_file: OnBadFile = "skip",
        progress: bool = False,
    ) -> Predictions:
        """Class-activation maps: where in each image the evidence for a class lies (Grad-CAM, by captum).

        Needs the `explain` extra (captum): `pip install -e '.[explain]'` in a clone of autotimm. Takes the
        same sources as `predict`; each map is computed on the model's input (after `eval_transform()`)
        and laid back onto the image as read, so that it has the image's size.

        Args:
            source: A file, a folder, a glob pattern, a PIL image, a numpy array, a `[B, 3, H, W]` tensor
                in [0, 1], or a list of these; see `predict`.
            target: The class to explain: `None` for each image's predicted class, a class name, or an index.
            method: `"gradcam"`.
            layer: The backbone module whose activations are weighed (a name from
                `model.backbone.named_modules()`); `None` takes the last stage of a CNN (`layer4` of a
                ResNet) or the last block of a vision transformer (its tokens laid out on the patch grid).
            batch_size: Images per forward and backward pass.
            on_bad_file: `"skip"` or `"raise"` for files that are not readable images, as in `predict`.
            progress: Show a progress bar.

        Returns:
            One `Explanation` per image (`heatmap` `[H, W]` in [0, 1], `label`, `score`), with `.save(path)`
            writing the overlay and `.save_images(folder)` / `.to_csv(path)` on the list.

        Raises:
            ImportError: Without captum installed; the message says how to install it.
            ValueError: For an unknown class name or layer (the message lists the closest ones), or an
                index outside the classes.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> explanation = model.explain(Image.new("RGB", (64, 48)))[0]
            >>> tuple(explanation.heatmap.shape)
            (48, 64)
        """
        require_captum()
        check_choice("method", method, EXPLAIN_METHODS)
        chosen = self._target_index(target)
        layer = default_layer(self.backbone) if layer is None else layer
        check_layer(self.backbone, layer)
        transform, config = self.eval_transform(), self.eval_data_config

        def logits(x: torch.Tensor) -> torch.Tensor:
            out = self(x)
            return torch.cat([-out, out], dim=1) if self.multi_label and self.num_classes == 1 else out

        def run(entries: list[ImageSource], images: list[Image.Image]) -> list[Explanation]:
            dtype = next(self.parameters()).dtype
            x = torch.stack([transform(image) for image in images]).to(self.device, dtype)
            with torch.no_grad():
                probs = self._class_probabilities(x).float().cpu()
            ids = probs.argmax(dim=1) if chosen is None else torch.full((len(images),), chosen)
            cams = grad_cam(logits, self.backbone, layer, x, ids.to(self.device)).cpu()
            results = []
            for entry, image, cam, p, i in zip(entries, images, cams, probs, ids.tolist(), strict=True):
                size = (image.height, image.width)
                heatmap = to_image_size(cam, eval_input_box(config, size), size)
                results.append(Explanation(entry.name, self.class_name(i), i, float(p[i]), heatmap, method, entry))
            return results

        return self._predict_images(source, batch_size, on_bad_file, progress, run, gradients=True)

    def _target_index(self, target: str | int | None) -> int | None:
        """The class index `explain` is asked for: `None` (each image's prediction), a class name or an index."""
        count = 2 if self.multi_label and self.num_classes == 1 else self._built_head()[-1].out_features
        if target is None:
            return None
        if isinstance(target, str):
            names = self.class_names or [str(i) for i in range(count)]
            check_choice("target", target, names)
            return names.index(target)
        check_number("target", target, low=0, high=count, high_inclusive=False, integer=True)
        return int(target)

    # ---- a portable model folder, in timm's layout ----------------------------------------------
    # `save_pretrained` (BaseTask) writes a classifier in timm's own layout: `timm.create_model("local-dir:" +
    # folder, pretrained=True)` loads it offline with the trained head, its `label_names` and preprocessing.
    def _timm_model(self) -> nn.Module:
        """The backbone as a whole timm classifier, its classifier layer holding the trained head; checked."""
        head = self._built_head()[1]
        model = copy.deepcopy(self.backbone).cpu().eval()
        model.reset_classifier(self.num_classes)
        classifier = model.get_classifier()
        if not isinstance(classifier, nn.Linear) or classifier.weight.shape != head.weight.shape:
            raise ValueError(
                f"The backbone {self._backbone_config.model_name!r} has no single linear classifier of the head's "
                f"shape {tuple(head.weight.shape)}, so the model cannot be written in timm's layout."
            )
        classifier.load_state_dict(head.state_dict())
        x = torch.randn(2, *self.eval_data_config["input_size"])
        ours = nn.Sequential(copy.deepcopy(self.backbone), copy.deepcopy(self._built_head())).cpu().eval()
        with torch.no_grad():
            if not torch.allclose(model(x), ours(x), atol=1e-4, rtol=1e-4):
                raise ValueError(
                    f"timm's {self._backbone_config.model_name!r} with the trained head does not compute the "
                    "model's logits, so the model cannot be written in timm's layout."
                )
        return model

    def _write_pretrained(self, folder: Path, section: dict[str, Any]) -> None:
        model = self._timm_model()
        model_config: dict[str, Any] = {PRETRAINED_KEY: section}
        if self.class_names is not None and len(self.class_names) == self.num_classes:
            model_config["label_names"] = list(self.class_names)
        config = self.eval_data_config
        data_config = {key: config[key] for key in ("input_size", "interpolation", "mean", "std", "crop_pct")}
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            save_for_hf(
                model,
                tmp,
                model_config=model_config,
                model_args={"num_classes": self.num_classes},
                safe_serialization=True,
                data_config=data_config,
            )
            for name in (PRETRAINED_WEIGHTS, PRETRAINED_CONFIG):
                os.replace(Path(tmp) / name, folder / name)

    def load_pretrained_weights(self, folder: str | os.PathLike[str]) -> None:
        """Load a `save_pretrained` folder's weights (timm's layout: the head is the backbone's classifier)."""
        state = safetensors.torch.load_file(str(Path(folder) / PRETRAINED_WEIGHTS))
        name = self.backbone.pretrained_cfg.get("classifier")
        keys = (f"{name}.weight", f"{name}.bias")
        if not isinstance(name, str) or not all(k in state for k in keys):
            raise ValueError(f"The weights in {str(folder)!r} have no classifier layer {name!r} for the head.")
        self._built_head()[1].load_state_dict({"weight": state.pop(keys[0]), "bias": state.pop(keys[1])})
        self.backbone.load_state_dict(state)

    # ---- export --------------------------------------------------------------------------
    def to_onnx(  # type: ignore[override]
        self, file_path: str | os.PathLike[str], input_sample: torch.Tensor | None = None, **kwargs: Any
    ) -> Path:
        """Export to a single ONNX file, checked with ONNX Runtime; see `autotimm.export.export_onnx`.

        Args:
            file_path: The `.onnx` file to write.
            input_sample: An example batch `[B, C, H, W]`; its height and width set the input
                size (and `B` the batch size with `dynamic_batch=False`). `None` takes the size
                from the data config (the attached data module's, else `self.data_config`).
            **kwargs: Options of `export_onnx`: `image_size`, `class_names`, `dynamic_batch`,
                `opset_version`, `check`, `atol`, `rtol`.

        Returns:
            The path written.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> model.to_onnx("model.onnx", class_names=["cat", "dog", "fox"])  # doctest: +SKIP
            PosixPath('model.onnx')
        """
        if input_sample is not None:
            kwargs = {**_sample_size(input_sample, "input_sample"), **kwargs}
            if kwargs.get("dynamic_batch") is False:
                kwargs.setdefault("batch_size", input_sample.shape[0])
        return export_onnx(self, file_path, **kwargs)

    def to_torchscript(  # type: ignore[override]
        self,
        file_path: str | os.PathLike[str] | None = None,
        method: TorchScriptMethod = "trace",
        example_inputs: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.jit.ScriptModule:
        """Export to TorchScript, checked by loading it back; see `autotimm.export.export_torchscript`.

        Args:
            file_path: The file to write (with the metadata as `metadata.json` inside); `None`
                writes nothing and only returns the module.
            method: `"trace"` or `"script"`.
            example_inputs: An example batch `[B, C, H, W]` whose height and width set the input
                size; `None` takes it from the data config.
            **kwargs: Options of `export_torchscript`: `image_size`, `class_names`, `check`, `atol`, `rtol`.

        Returns:
            The exported module, as loaded from the file.

        Examples:
            >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
            >>> scripted = model.to_torchscript("model.pt")  # doctest: +SKIP
        """
        if example_inputs is not None:
            kwargs = {**_sample_size(example_inputs, "example_inputs"), **kwargs}
        if file_path is not None:
            return torch.jit.load(export_torchscript(self, file_path, method=method, **kwargs), map_location="cpu")
        with tempfile.TemporaryDirectory() as folder:
            path = export_torchscript(self, Path(folder) / "model.pt", method=method, **kwargs)
            return torch.jit.load(path, map_location="cpu")


def _confusion_matrix(num_classes: int, multi_label: bool) -> nn.Module | None:
    """The validation confusion matrix of a classifier; `None` for a multi-label one (it would need one per class).

    Labels are checked before each batch (`_label_problem`), so torchmetrics need not check them again.
    """
    if not multi_label:
        return MulticlassConfusionMatrix(num_classes, validate_args=False)
    return BinaryConfusionMatrix(validate_args=False) if num_classes == 1 else None


def _sample_size(sample: object, argument: str) -> dict[str, tuple[int, int]]:
    """The `image_size` an example batch `[B, C, H, W]` stands for."""
    expected = f"Expected `{argument}` to be an image batch tensor [B, C, H, W], but got"
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"{expected} {type(sample).__name__}.")
    if sample.ndim != 4:
        raise ValueError(f"{expected} shape {tuple(sample.shape)}.")
    return {"image_size": (int(sample.shape[2]), int(sample.shape[3]))}
