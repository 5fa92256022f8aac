"""A time budget that plans the run: as many epochs as fit, and a schedule that ends with them."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, Timer
from pytorch_lightning.utilities import rank_zero_info

from autotimm._errors import check_number
from autotimm._warnings import warn
from autotimm.optim import set_schedule_length

__all__ = ["TimeBudget"]


class TimeBudget(Callback):
    """Fit the run to the trainer's `max_time`: plan the epochs and the learning-rate schedule to end in time.

    Lightning's `max_time` alone stops a run when the time is up, wherever its schedule is
    (a cosine cut off half way, at a high learning rate). With this callback the first epoch
    runs the schedule of a provisional run (`provisional_epochs`, capped by `max_epochs`); at
    its end the callback measures the epoch, sets `max_epochs` to the epochs that fit in the
    time left (less `margin`), and stretches or shrinks the schedule (`set_schedule_length`)
    so that it ends with the last of them. After each later epoch the plan shrinks if the
    epochs grew slower. `max_epochs`, when the trainer has one, caps the plan.

    The plan is logged as `time_budget/planned_epochs` (in `metrics.json` of the run
    record) and said once with `rank_zero_info`; it is kept in checkpoints, so a resumed
    run keeps it. `AutoTrainer(max_time=...)` adds this callback itself.

    Args:
        margin: Fraction of the time left that the plan leaves unused, in [0, 1).
        provisional_epochs: Length of the schedule that the first epoch follows, >= 1 (with
            the default `cosine_warmup`, 20 epochs make the first epoch its warmup).

    Raises:
        ValueError: At `fit`, if the trainer has no `max_time`.

    Examples:
        >>> trainer = pl.Trainer(max_time="00:00:10:00", callbacks=[TimeBudget()])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # ends its cosine at about 10 minutes  # doctest: +SKIP
    """

    def __init__(self, margin: float = 0.05, provisional_epochs: int = 20) -> None:
        self.margin = float(check_number("margin", margin, low=0, high=1, high_inclusive=False))
        self.provisional_epochs = int(check_number("provisional_epochs", provisional_epochs, low=1, integer=True))
        self.planned_epochs: int | None = None
        self._cap: int | None = None
        self._epoch_seconds: list[float] = []
        self._epoch_start = 0.0
        self._warned = False

    def state_dict(self) -> dict[str, Any]:
        return {"planned_epochs": self.planned_epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.planned_epochs = state_dict.get("planned_epochs")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if _timer(trainer) is None:
            raise ValueError(
                "TimeBudget plans the run in the trainer's time budget, but the trainer has none: "
                "give it `max_time` (for example `max_time='00:00:10:00'` or `{'minutes': 10}`)."
            )
        # Before `configure_optimizers` builds the schedule, which needs a finite run.
        cap = trainer.fit_loop.max_epochs
        self._cap = cap if cap is not None and cap > 0 else None
        provisional = self.planned_epochs or self.provisional_epochs
        trainer.fit_loop.max_epochs = min(provisional, self._cap) if self._cap else provisional
        self._epoch_seconds = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.planned_epochs is not None:  # a resumed run: its plan came back with the checkpoint
            trainer.fit_loop.max_epochs = self.planned_epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._epoch_seconds.append(time.monotonic() - self._epoch_start)
        timer = _timer(trainer)
        done = trainer.current_epoch + 1
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None:
            return
        # The first epoch carries one-off costs (workers, sanity check): later ones measure better.
        recent = self._epoch_seconds[1:] or self._epoch_seconds
        per_epoch = max(sum(recent) / len(recent), 1e-6)
        fits = done + max(0, math.floor(remaining * (1 - self.margin) / per_epoch))
        planned = min(fits, self._cap) if self._cap else fits
        planned = int(trainer.strategy.broadcast(planned))
        first = self.planned_epochs is None or len(self._epoch_seconds) == 1
        if first or planned < self.planned_epochs:
            self._apply(trainer, planned, per_epoch)
        pl_module.log("time_budget/planned_epochs", float(self.planned_epochs), on_epoch=True, batch_size=1)

    def _apply(self, trainer: pl.Trainer, planned: int, per_epoch: float) -> None:
        self.planned_epochs = planned
        trainer.fit_loop.max_epochs = planned
        total_steps = max(1, int(trainer.estimated_stepping_batches))
        for config in trainer.lr_scheduler_configs:
            changed = set_schedule_length(config.scheduler, total_steps=total_steps, max_epochs=planned)
            if not changed and not self._warned:
                self._warned = True
                warn(
                    f"TimeBudget cannot re-plan the {type(config.scheduler).__name__} schedule: it keeps the length "
                    "it was built with, and the run may end before it does. The `cosine_warmup` (the default) and "
                    "`cosine` schedules follow the plan."
                )
        rank_zero_info(
            f"autotimm: time budget: {planned} epochs planned (about {per_epoch:.1f} s each), "
            f"the schedule ends after {total_steps} steps."
        )


def _timer(trainer: pl.Trainer) -> Timer | None:
    """The trainer's `max_time` timer, when it has one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, Timer) and cb.time_remaining() is not None), None)
