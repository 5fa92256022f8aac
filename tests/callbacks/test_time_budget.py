"""TimeBudget: under `max_time` the run plans its epochs and its schedule ends with them."""

from __future__ import annotations

import json

import pytest
import torch
from pytorch_lightning.callbacks import LearningRateMonitor

from autotimm import ImageClassifier, ImageDataModule
from autotimm.callbacks import TimeBudget
from helpers import colour_folder, cpu_trainer


class _LastLR(LearningRateMonitor):
    """Keeps the learning rate of every optimizer step (no logger needed)."""

    def __init__(self) -> None:
        super().__init__(logging_interval="step")
        self.values: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.values.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.slow
def test_the_schedule_ends_with_the_planned_epochs_within_the_budget(make_image_folder, backbone, tmp_path, one_thread):
    root = colour_folder(make_image_folder)
    data = ImageDataModule(root, image_size=32, batch_size=8, num_workers=0)
    model = ImageClassifier(backbone, lr=1e-2)  # the default schedule: warmup, then cosine
    lrs = _LastLR()
    trainer = cpu_trainer(tmp_path, max_time={"seconds": 8}, callbacks=[lrs], seed=0)
    budget = next(cb for cb in trainer.callbacks if isinstance(cb, TimeBudget))
    trainer.fit(model, datamodule=data)

    planned = budget.planned_epochs
    assert planned is not None and planned >= 2  # more than the measured epoch fit in 8 s
    assert trainer.current_epoch == planned  # stopped by the plan, not cut off by the timer
    steps_per_epoch = len(lrs.values) // planned
    assert len(lrs.values) == planned * steps_per_epoch
    assert max(lrs.values) == pytest.approx(1e-2, rel=0.05)  # the schedule reached its peak...
    assert lrs.values[-1] < 0.05 * 1e-2  # ...and its last step ran near the cosine's end (0)
    # The plan is in the run record.
    epochs = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert epochs[-1]["time_budget/planned_epochs"] == planned
    # ... and in the checkpoints, for a resumed run.
    checkpoint = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=False)
    assert checkpoint["callbacks"]["TimeBudget"] == {"planned_epochs": planned}


def test_time_budget_needs_max_time(make_image_folder, backbone, tmp_path):
    root = colour_folder(make_image_folder, per_class=4)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0)
    trainer = cpu_trainer(tmp_path, max_epochs=1, callbacks=[TimeBudget()])
    with pytest.raises(ValueError, match="max_time"):
        trainer.fit(ImageClassifier(backbone), datamodule=data)


@pytest.mark.parametrize(("kwargs", "match"), [({"margin": 1.0}, "margin"), ({"provisional_epochs": 0}, "provisional")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimeBudget(**kwargs)
