"""`TunerConfig`: which tuning steps `AutoTrainer.fit` runs before training, and their settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autotimm._errors import check_bool, check_choice, check_keys, check_mapping, check_number

__all__ = ["LR_RANGE", "MIN_LR_POINTS", "TunerConfig", "TuningError"]

_LR_FIND_KEYS = ("min_lr", "max_lr", "num_training", "mode", "early_stop_threshold")
_BATCH_SIZE_KEYS = ("mode", "steps_per_trial", "init_val", "max_trials", "margin", "max_val")
MIN_LR_POINTS = 8
"""The fewest points of an LR range test that a suggestion is read from (and the smallest `num_training`)."""
LR_RANGE = {"min_lr": 1e-6, "max_lr": 1.0}
"""The LR range test's search range unless `lr_find_kwargs` says otherwise: six decades around every
learning rate that fine-tuning uses."""


class TuningError(RuntimeError):
    """A tuning step failed; the message says how to turn that step off."""


@dataclass
class TunerConfig:
    """Automatic learning-rate and batch-size tuning, run by `AutoTrainer.fit` before training.

    The batch size is tuned first (it changes the loss landscape the LR finder sees), then
    the learning rate. Tuning is skipped with `fast_dev_run` and when `fit` resumes from a
    checkpoint.

    Args:
        auto_lr: Run an LR range test (`LRRangeTest`) and train with its suggestion.
        auto_batch_size: Run Lightning's batch-size finder on the data module's `batch_size`.
        lr_find_kwargs: `min_lr` (default 1e-6), `max_lr` (default 1.0), `num_training`
            (optimizer steps, default 100; on a small data set the sweep runs over as many epochs
            as they need, whatever `max_epochs`), `mode` (`"exponential"`, the default, or `"linear"`),
            `early_stop_threshold` (stop once the smoothed loss exceeds this multiple of its best and
            the first loss, default 4; `None`: only on a non-finite loss).
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
            "lr_find_kwargs['min_lr']", lr.get("min_lr", LR_RANGE["min_lr"]), low=0, low_inclusive=False
        )
        max_lr = check_number(
            "lr_find_kwargs['max_lr']", lr.get("max_lr", LR_RANGE["max_lr"]), low=0, low_inclusive=False
        )
        if not min_lr < max_lr:
            raise ValueError(f"Expected min_lr < max_lr in `lr_find_kwargs`, but got min_lr={min_lr}, max_lr={max_lr}.")
        if "num_training" in lr:
            check_number("lr_find_kwargs['num_training']", lr["num_training"], low=MIN_LR_POINTS, integer=True)
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
