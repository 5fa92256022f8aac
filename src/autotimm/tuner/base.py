"""What both finders share: a trainer of their own for the search, and one way to report its failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pytorch_lightning as pl

from autotimm.data import CorruptImageError
from autotimm.tuner.config import TuningError

__all__ = ["run_step", "sweep_trainer"]

T = TypeVar("T")


def sweep_trainer(trainer: pl.Trainer, **kwargs: Any) -> pl.Trainer:
    """A plain Lightning `Trainer` for a search, on `trainer`'s device, with its precision and optimizer settings.

    It has no logger, checkpoints, progress bar, model summary or sanity check, and none of
    `trainer`'s callbacks, so the search leaves `trainer`, its run record and its loggers as
    they are. `kwargs` are further `Trainer` arguments (`callbacks`, `max_epochs`, ...).

    Examples:
        >>> sweep = sweep_trainer(trainer, max_epochs=-1, limit_val_batches=0)  # doctest: +SKIP
    """
    device = trainer.strategy.root_device
    settings: dict[str, Any] = {
        "accelerator": trainer.accelerator,
        "devices": [device.index] if device.index is not None else 1,
        "precision": trainer.precision,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": trainer.gradient_clip_algorithm,
        "default_root_dir": trainer.default_root_dir,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**{**settings, **kwargs})


def run_step(what: str, off: str, search: Callable[[], T]) -> T:
    """Run a finder's `search` and return its result; its failures become a `TuningError` that says `off`.

    Errors in the user's model or data (`ValueError`, `TypeError`, `CorruptImageError`) are raised
    as they are: they fail the same way without tuning.

    Examples:
        >>> run_step("batch-size finder", "Turn it off.", lambda: 32)
        32
    """
    try:
        return search()
    except (ValueError, TypeError, CorruptImageError):
        raise
    except Exception as e:
        raise TuningError(f"The {what} failed: {e}. {off}") from e
