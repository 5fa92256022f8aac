"""Learning-rate and batch-size tuning before training, with Lightning's finder callbacks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BatchSizeFinder, Callback, LearningRateFinder
from pytorch_lightning.utilities import rank_zero_info

from autotimm._errors import check_choice, unknown_choice

if TYPE_CHECKING:
    from pytorch_lightning.tuner.lr_finder import _LRFinder

__all__ = ["TunerConfig", "TuningError", "run_tuning"]

_LR_FIND_KEYS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
_BATCH_SIZE_KEYS = ("mode", "steps_per_trial", "init_val", "max_trials", "margin", "max_val")
_MIN_LR_POINTS = 8


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
        lr_find_kwargs: `min_lr`, `max_lr`, `num_training`, `mode` (`"exponential"` or
            `"linear"`), `early_stop_threshold`.
        batch_size_kwargs: `mode` (`"power"` or `"binsearch"`), `steps_per_trial`,
            `init_val`, `max_trials`, `margin`, `max_val`.

    Example:
        >>> cfg = TunerConfig(auto_lr=True, lr_find_kwargs={"min_lr": 1e-6, "max_lr": 1.0})
        >>> cfg.enabled
        True
    """

    auto_lr: bool = True
    auto_batch_size: bool = False
    lr_find_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kwargs, keys in (
            ("lr_find_kwargs", self.lr_find_kwargs, _LR_FIND_KEYS),
            ("batch_size_kwargs", self.batch_size_kwargs, _BATCH_SIZE_KEYS),
        ):
            if not isinstance(kwargs, dict):
                raise TypeError(f"Expected `{name}` to be a dict, but got {kwargs!r}.")
            for key in kwargs:
                if key not in keys:
                    raise unknown_choice(f"key in `{name}`", key, keys)
        lr = self.lr_find_kwargs
        if "mode" in lr:
            check_choice("lr_find_kwargs['mode']", lr["mode"], ("exponential", "linear"))
        min_lr, max_lr = lr.get("min_lr", 1e-8), lr.get("max_lr", 1.0)
        if not 0 < min_lr < max_lr:
            raise ValueError(f"Expected 0 < min_lr < max_lr in `lr_find_kwargs`, but got min_lr={min_lr}, max_lr={max_lr}.")
        if "num_training" in lr and (not isinstance(lr["num_training"], int) or lr["num_training"] < _MIN_LR_POINTS):
            raise ValueError(
                f"Expected `lr_find_kwargs['num_training']` to be an integer >= {_MIN_LR_POINTS}, but got {lr['num_training']!r}."
            )
        bs = self.batch_size_kwargs
        if "mode" in bs:
            check_choice("batch_size_kwargs['mode']", bs["mode"], ("power", "binsearch"))
        for key in ("steps_per_trial", "init_val", "max_trials", "max_val"):
            if key in bs and (not isinstance(bs[key], int) or bs[key] < 1):
                raise ValueError(f"Expected `batch_size_kwargs[{key!r}]` to be a positive integer, but got {bs[key]!r}.")
        if "margin" in bs and not 0.0 <= bs["margin"] < 1.0:
            raise ValueError(f"Expected `batch_size_kwargs['margin']` in [0, 1), but got {bs['margin']!r}.")

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
    if config.auto_batch_size:
        off = "Turn this step off with `TunerConfig(auto_batch_size=False)` and set `batch_size` on the data module yourself."
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
        if size is not None and found > size:
            found = size
        datamodule.batch_size = found
        if "batch_size" in getattr(datamodule, "hparams", {}):
            datamodule.hparams["batch_size"] = found
        results["batch_size"] = found
        rank_zero_info(f"autotimm: batch-size finder chose batch_size={found}")
    if config.auto_lr:
        results.update(_find_lr(trainer, config, model, loaders))
    return results


class _EpochCappedLRFinder(LearningRateFinder):
    """Lightning's LR finder, with its steps capped to one epoch's training batches.

    Past one epoch the finder would run validation loops between its steps; on a small data
    set that costs time and gives no better curve.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        if math.isfinite(batches):
            self._num_training_steps = max(2, min(self._num_training_steps, int(batches)))
        super().on_fit_start(trainer, pl_module)


def _run_finder(
    trainer: pl.Trainer, finder: Callback, model: pl.LightningModule, loaders: dict[str, Any], what: str, off: str
) -> None:
    """Run one of Lightning's finder callbacks in a fit that stops once it has its result."""
    finder._early_exit = True  # stop the fit after the search, as Lightning's Tuner does
    callbacks = trainer.callbacks
    trainer.callbacks = [finder, *callbacks]
    try:
        pl.Trainer.fit(trainer, model, **loaders)
    except Exception as e:
        raise TuningError(f"The {what} failed: {e}. {off}") from e
    finally:
        trainer.callbacks = callbacks


def _find_lr(trainer: pl.Trainer, config: TunerConfig, model: pl.LightningModule, loaders: dict[str, Any]) -> dict[str, Any]:
    kwargs = {"num_training_steps": config.lr_find_kwargs.get("num_training", 100)}
    kwargs.update({k: v for k, v in config.lr_find_kwargs.items() if k != "num_training"})
    off = "Turn this step off with `TunerConfig(auto_lr=False)` and set `lr` on the model yourself."
    callback = _EpochCappedLRFinder(update_attr=False, **kwargs)
    _run_finder(trainer, callback, model, loaders, "learning-rate finder", off)
    finder = callback.optimal_lr
    if finder is None:
        raise TuningError(f"The learning-rate finder returned no result. {off}")
    lrs, losses = list(finder.results["lr"]), list(finder.results["loss"])
    if len(lrs) < _MIN_LR_POINTS:
        raise TuningError(
            f"The learning-rate finder recorded only {len(lrs)} points (one per training batch of one epoch; it needs "
            f"at least {_MIN_LR_POINTS}). Use more data or a smaller batch size. {off}"
        )
    lr = _suggest(finder, lrs, losses, kwargs.get("min_lr", 1e-8), kwargs.get("max_lr", 1.0))
    if lr is None:
        raise TuningError(f"The learning-rate finder could not suggest a learning rate (the loss never fell). {off}")
    model._lr = lr
    if "lr" in model.hparams:
        model.hparams["lr"] = lr
    curve = _save_curve(trainer, lrs, losses, lr)
    rank_zero_info(f"autotimm: learning-rate finder chose lr={lr:.3g} (curve saved to {curve})")
    return {"lr": lr, "lr_find_curve": str(curve)}


def _suggest(finder: _LRFinder, lrs: list[float], losses: list[float], min_lr: float, max_lr: float) -> float | None:
    """Lightning's steepest-descent suggestion, kept below the LR at the loss minimum.

    On short, noisy curves the steepest drop can sit in the diverging tail; an LR at or past
    the loss minimum trains badly, so such a suggestion is replaced by a tenth of the LR at
    the minimum.
    """
    skip_begin = min(10, len(lrs) // 5)
    suggestion = finder.suggestion(skip_begin=skip_begin, skip_end=1)
    finite = [(loss, lr) for loss, lr in zip(losses, lrs) if math.isfinite(loss)]
    if suggestion is None or not finite:
        return None
    lr_at_min = min(finite)[1]
    if suggestion >= lr_at_min:
        suggestion = lr_at_min / 10
    return float(min(max(suggestion, min_lr), max_lr))


def _save_curve(trainer: pl.Trainer, lrs: list[float], losses: list[float], suggestion: float) -> Path:
    out_dir = Path(trainer.log_dir or trainer.default_root_dir)
    path = out_dir / "lr_find.json"
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"lr": lrs, "loss": [loss if math.isfinite(loss) else None for loss in losses], "suggestion": suggestion}
        path.write_text(json.dumps(payload, indent=1))
    return path


def _train_set_size(trainer: pl.Trainer) -> int | None:
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return None
