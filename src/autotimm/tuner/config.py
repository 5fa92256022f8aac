"""Learning-rate and batch-size tuning before training, with Lightning's finder callbacks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BatchSizeFinder, Callback, LearningRateFinder
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.parsing import lightning_hasattr, lightning_setattr

from autotimm._errors import check_bool, check_choice, check_keys, check_mapping, check_number
from autotimm.data.folders import CorruptImageError
from autotimm.trainer.lr_curve import raw_losses, suggest_lr

__all__ = ["TunerConfig", "TuningError", "run_tuning"]

_LR_FIND_KEYS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
_BATCH_SIZE_KEYS = ("mode", "steps_per_trial", "init_val", "max_trials", "margin", "max_val")
_MIN_LR_POINTS = 8
# The LR finder's search range unless `lr_find_kwargs` says otherwise: six decades around
# every learning rate that fine-tuning uses (Lightning's own default starts at 1e-8).
_LR_RANGE = {"min_lr": 1e-6, "max_lr": 1.0}
# The loss must fall by at least this fraction somewhere on the curve for a suggestion.
_MIN_LOSS_DROP = 0.05
# Where a tuned learning rate is written, as Lightning's own LR finder looks for it.
_LR_ATTRIBUTES = ("lr", "learning_rate")


class TuningError(RuntimeError):
    """A tuning step failed; the message says how to turn that step off."""


@dataclass
class TunerConfig:
    """Automatic learning-rate and batch-size tuning, run by `AutoTrainer.fit` before training.

    The batch size is tuned first (it changes the loss landscape the LR finder sees), then
    the learning rate. Tuning is skipped with `fast_dev_run` and when `fit` resumes from a
    checkpoint.

    Args:
        auto_lr: Run Lightning's learning-rate finder and train with its suggestion.
        auto_batch_size: Run Lightning's batch-size finder on the data module's `batch_size`.
        lr_find_kwargs: `min_lr` (default 1e-6), `max_lr` (default 1.0), `num_training`
            (optimizer steps, default 100; on a small data set the sweep runs over as many epochs
            as they need, whatever `max_epochs`), `mode` (`"exponential"` or `"linear"`),
            `early_stop_threshold`.
        batch_size_kwargs: `mode` (`"power"` or `"binsearch"`), `steps_per_trial`,
            `init_val`, `max_trials`, `margin`, `max_val`.

    Examples:
        >>> cfg = TunerConfig(auto_lr=True, lr_find_kwargs={"min_lr": 1e-6, "max_lr": 1.0})
        >>> cfg.enabled
        True
    """

    auto_lr: bool = True
    auto_batch_size: bool = False
    lr_find_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_bool("auto_lr", self.auto_lr)
        check_bool("auto_batch_size", self.auto_batch_size)
        self.lr_find_kwargs = check_mapping("lr_find_kwargs", self.lr_find_kwargs, optional=True)
        self.batch_size_kwargs = check_mapping("batch_size_kwargs", self.batch_size_kwargs, optional=True)
        check_keys("lr_find_kwargs", self.lr_find_kwargs, _LR_FIND_KEYS)
        check_keys("batch_size_kwargs", self.batch_size_kwargs, _BATCH_SIZE_KEYS)
        lr = self.lr_find_kwargs
        if "mode" in lr:
            check_choice("lr_find_kwargs['mode']", lr["mode"], ("exponential", "linear"))
        min_lr = check_number(
            "lr_find_kwargs['min_lr']", lr.get("min_lr", _LR_RANGE["min_lr"]), low=0, low_inclusive=False
        )
        max_lr = check_number(
            "lr_find_kwargs['max_lr']", lr.get("max_lr", _LR_RANGE["max_lr"]), low=0, low_inclusive=False
        )
        if not min_lr < max_lr:
            raise ValueError(f"Expected min_lr < max_lr in `lr_find_kwargs`, but got min_lr={min_lr}, max_lr={max_lr}.")
        if "num_training" in lr:
            check_number("lr_find_kwargs['num_training']", lr["num_training"], low=_MIN_LR_POINTS, integer=True)
        if lr.get("early_stop_threshold") is not None:
            check_number(
                "lr_find_kwargs['early_stop_threshold']", lr["early_stop_threshold"], low=1, low_inclusive=False
            )
        bs = self.batch_size_kwargs
        if "mode" in bs:
            check_choice("batch_size_kwargs['mode']", bs["mode"], ("power", "binsearch"))
        for key in ("steps_per_trial", "init_val", "max_trials", "max_val"):
            if key in bs:
                check_number(f"batch_size_kwargs[{key!r}]", bs[key], low=1, integer=True)
        if "margin" in bs:
            check_number("batch_size_kwargs['margin']", bs["margin"], low=0, high=1)

    @property
    def enabled(self) -> bool:
        """Whether any tuning step is on."""
        return bool(self.auto_lr or self.auto_batch_size)


def run_tuning(
    trainer: pl.Trainer,
    config: TunerConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
) -> dict[str, Any]:
    """Run the tuning steps `config` asks for and apply their results to `model` / `datamodule`.

    Returns:
        The results: `batch_size`, `lr` and `lr_find_curve` (the path of the saved loss-vs-LR
        curve) for the steps that ran.

    Raises:
        TuningError: when a step fails; the message names the step and how to turn it off.
    """
    results: dict[str, Any] = {}
    loaders = {"train_dataloaders": train_dataloaders, "val_dataloaders": val_dataloaders, "datamodule": datamodule}
    lr_attribute = _lr_attribute(model) if config.auto_lr else None
    if config.auto_batch_size:
        results["batch_size"] = _find_batch_size(trainer, config, model, datamodule, loaders)
    if config.auto_lr:
        results.update(_find_lr(trainer, config, model, loaders, lr_attribute))
    return results


def _lr_attribute(model: pl.LightningModule) -> str:
    for name in _LR_ATTRIBUTES:
        if lightning_hasattr(model, name):
            return name
    raise TuningError(
        f"The learning-rate finder needs the model to read its learning rate from an attribute or hyperparameter "
        f"named one of {list(_LR_ATTRIBUTES)}, and {type(model).__name__} has none. Add one, or turn this step off "
        "with `TunerConfig(auto_lr=False)`."
    )


def _find_batch_size(
    trainer: pl.Trainer,
    config: TunerConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    loaders: dict[str, Any],
) -> int:
    off = (
        "Turn this step off with `TunerConfig(auto_batch_size=False)` and set `batch_size` on the data module yourself."
    )
    if datamodule is None or not hasattr(datamodule, "batch_size"):
        raise TuningError(
            f"The batch-size finder needs a data module with a `batch_size` attribute (such as ImageDataModule). {off}"
        )
    finder = BatchSizeFinder(**config.batch_size_kwargs)
    _run_finder(trainer, finder, model, loaders, "batch-size finder", off)
    found = finder.optimal_batch_size
    if not found:
        raise TuningError(f"The batch-size finder returned no batch size. {off}")
    size = _train_set_size(trainer)
    if size is not None:
        found = min(found, size)
    datamodule.batch_size = found
    if "batch_size" in getattr(datamodule, "hparams", {}):
        datamodule.hparams["batch_size"] = found
    rank_zero_info(f"autotimm: batch-size finder chose batch_size={found}")
    return found


class _MultiEpochLRFinder(LearningRateFinder):
    """Lightning's LR finder, allowed as many epochs as its `num_training_steps` need.

    The finder stops with the run's `max_epochs`: on a small data set (a few batches per
    epoch) it would end having tried only the lowest learning rates. For the sweep, the fit
    loop's `max_epochs` is raised to what the steps need and epoch-end validation is skipped
    (the sweep reads training losses only); `_run_finder` puts both back afterwards.
    """

    def __init__(self, num_training_steps: int, **kwargs: Any) -> None:
        super().__init__(num_training_steps=num_training_steps, **kwargs)
        self.sweep_steps = num_training_steps

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.fit_loop.setup_data()
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        loop = trainer.fit_loop
        if 0 < per_epoch < math.inf and loop.max_epochs is not None and loop.max_epochs >= 0:
            epochs = loop.epoch_progress.current.processed + math.ceil(self.sweep_steps / per_epoch)
            loop.max_epochs = max(loop.max_epochs, epochs)
            if trainer.check_val_every_n_epoch is not None:  # None: validation every N steps, left as it is
                trainer.check_val_every_n_epoch = loop.max_epochs + 1
        super().on_fit_start(trainer, pl_module)


def _run_finder(
    trainer: pl.Trainer, finder: Callback, model: pl.LightningModule, loaders: dict[str, Any], what: str, off: str
) -> None:
    """Run one of Lightning's finder callbacks in a fit that stops once it has its result.

    The trainer's loop limits are put back afterwards, also when the finder fails. Errors
    of the finder become a `TuningError` that says how to turn the step off; errors in the
    user's model or data (`ValueError`, `TypeError`, `CorruptImageError`) are raised as they are.
    """
    finder._early_exit = True  # stop the fit after the search, as Lightning's Tuner does
    callbacks = trainer.callbacks
    epoch_loop = trainer.fit_loop.epoch_loop
    saved = (
        epoch_loop.max_steps,
        trainer.fit_loop.max_epochs,
        trainer.check_val_every_n_epoch,
        trainer.limit_val_batches,
        trainer.limit_train_batches,
    )
    trainer.callbacks = [finder, *callbacks]
    try:
        pl.Trainer.fit(trainer, model, **loaders)
    except (ValueError, TypeError, CorruptImageError):
        # Bad input (labels outside `num_classes`, a class count or image size that does not
        # match the data, an unreadable image) fails the same way without tuning: let it through.
        raise
    except Exception as e:
        raise TuningError(f"The {what} failed: {e}. {off}") from e
    finally:
        trainer.callbacks = callbacks
        (
            epoch_loop.max_steps,
            trainer.fit_loop.max_epochs,
            trainer.check_val_every_n_epoch,
            trainer.limit_val_batches,
            trainer.limit_train_batches,
        ) = saved


def _find_lr(
    trainer: pl.Trainer, config: TunerConfig, model: pl.LightningModule, loaders: dict[str, Any], attribute: str
) -> dict[str, Any]:
    kwargs = {"num_training_steps": config.lr_find_kwargs.get("num_training", 100), **_LR_RANGE}
    kwargs.update({k: v for k, v in config.lr_find_kwargs.items() if k != "num_training"})
    off = "Turn this step off with `TunerConfig(auto_lr=False)` and set `lr` on the model yourself."
    callback = _MultiEpochLRFinder(update_attr=False, **kwargs)
    _run_finder(trainer, callback, model, loaders, "learning-rate finder", off)
    finder = callback.optimal_lr
    if finder is None:
        raise TuningError(f"The learning-rate finder returned no result. {off}")
    lrs = [float(lr) for lr in finder.results["lr"]]
    losses = raw_losses(finder.results["loss"])
    if len(lrs) < _MIN_LR_POINTS:
        raise TuningError(
            f"The learning-rate finder recorded only {len(lrs)} points (it needs at least {_MIN_LR_POINTS}): the "
            f"loss diverged at lr={lrs[-1]:.1e} if not sooner. Lower `min_lr` (now {kwargs['min_lr']:g}) or raise "
            f"`early_stop_threshold` in `lr_find_kwargs`. {off}"
        )
    lr = suggest_lr(lrs, losses, min_drop=_MIN_LOSS_DROP)
    if lr is not None:
        lr = float(min(max(lr, kwargs["min_lr"]), kwargs["max_lr"]))
    curve = _save_curve(trainer, lrs, losses, lr)
    if lr is None:
        raise TuningError(
            f"The learning-rate finder could not suggest a learning rate: over {len(lrs)} steps from "
            f"{lrs[0]:.1e} to {lrs[-1]:.1e} the smoothed loss never fell {_MIN_LOSS_DROP:.0%} below its start. "
            f"Give it more steps (`num_training`) or another range in `lr_find_kwargs`; the curve is in {curve}. "
            f"{off}"
        )
    lightning_setattr(model, attribute, lr)
    rank_zero_info(f"autotimm: learning-rate finder chose {attribute}={lr:.3g} (curve saved to {curve})")
    return {"lr": lr, "lr_find_curve": str(curve)}


def _save_curve(trainer: pl.Trainer, lrs: list[float], losses: list[float], suggestion: float | None) -> Path:
    """Write the curve to `lr_find.json` in the run's folder, never over an earlier run's file."""
    out_dir = Path(trainer.log_dir or trainer.default_root_dir)
    path = out_dir / "lr_find.json"
    version = 0
    while path.exists():
        version += 1
        path = out_dir / f"lr_find-v{version}.json"
    path = Path(trainer.strategy.broadcast(str(path)))
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "lr": lrs,
            "loss": [loss if math.isfinite(loss) else None for loss in losses],
            "suggestion": suggestion,
        }
        path.write_text(json.dumps(payload, indent=1))
    return path


def _train_set_size(trainer: pl.Trainer) -> int | None:
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return None
