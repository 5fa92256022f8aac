"""The LR range test: inside AutoTrainer.fit, and as a callback of a plain Trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from autotimm import ImageClassifier, ImageDataModule, TunerConfig, TuningError
from autotimm.tuner import LRRangeTest, suggest_lr
from helpers import cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_finder_sets_a_sane_lr_and_saves_its_curve(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, lr=0.5)
    config = TunerConfig(
        auto_lr=True, auto_batch_size=False, lr_find_kwargs={"min_lr": 1e-6, "max_lr": 1.0, "num_training": 16}
    )
    trainer = cpu_trainer(tmp_path, max_epochs=2, max_steps=3, tuner_config=config, limit_val_batches=1)
    trainer.fit(model, datamodule=digits_data)
    lr = trainer.tuning_results["lr"]
    assert model._lr == lr != 0.5 and 1e-6 <= lr < 1.0
    assert model.hparams["lr"] == lr
    curve = json.loads(Path(trainer.tuning_results["lr_find_curve"]).read_text())
    # One point per step, up to the high learning rates (it may stop sooner on divergence).
    assert 8 <= len(curve["lr"]) <= 16 and curve["suggestion"] == lr
    assert curve["lr"][-1] > 1e-2
    assert trainer.global_step == 3  # the real run happened after tuning


# Learning rates so high that the loss diverges at once: the LR finder has no curve to read.
_DIVERGING = TunerConfig(auto_lr=True, lr_find_kwargs={"min_lr": 1e3, "max_lr": 1e5, "num_training": 10})


def test_failed_lr_finder_says_how_to_turn_it_off(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0)
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=_DIVERGING)
    with pytest.raises(TuningError, match=r"diverged(.|\n)*Lower `min_lr` \(now 1000\)(.|\n)*auto_lr=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)


class _PlainModule(pl.LightningModule):
    """Any LightningModule, not an autotimm task."""

    def __init__(self, lr: float | None = 0.5) -> None:
        super().__init__()
        if lr is not None:
            self.lr = lr
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=getattr(self, "lr", 0.1))


def test_tuned_lr_reaches_any_lightning_module(digits_data, tmp_path):
    model = _PlainModule(lr=0.5)
    trainer = cpu_trainer(
        tmp_path, max_epochs=2, max_steps=2, tuner_config=TunerConfig(auto_lr=True), limit_val_batches=0
    )
    trainer.fit(model, datamodule=digits_data)
    assert model.lr == trainer.tuning_results["lr"] != 0.5
    assert trainer.optimizers[0].param_groups[0]["lr"] == model.lr


def test_module_without_lr_attribute_is_refused_before_tuning(digits_data, tmp_path):
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=TunerConfig(auto_lr=True))
    with pytest.raises(TuningError, match="learning_rate"):
        trainer.fit(_PlainModule(lr=None), datamodule=digits_data)
    assert trainer.global_step == 0


def test_failed_finder_leaves_the_trainer_as_it_was(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0)
    trainer = cpu_trainer(tmp_path, max_epochs=3, tuner_config=_DIVERGING)
    with pytest.raises(TuningError):
        trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)
    # The sweep ran over more epochs than max_epochs, without validation: both are back.
    assert trainer.fit_loop.max_epochs == 3 and trainer.check_val_every_n_epoch == 1
    trainer.tuner_config = None  # the error's advice: turn the step off, then fit again
    trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)
    assert trainer.current_epoch == 3 and trainer.global_step == 3 * 2


def test_lr_finder_with_accumulation_sweeps_the_whole_range(digits_data, backbone, tmp_path):
    # 12 steps of 4 batches: more than the one epoch of `max_epochs` holds.
    config = TunerConfig(auto_lr=True, lr_find_kwargs={"num_training": 12})
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        max_steps=1,
        accumulate_grad_batches=4,
        tuner_config=config,
        limit_train_batches=20,
        limit_val_batches=0,
    )
    try:
        trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    except TuningError:
        pass  # only the sweep is checked here
    curve = json.loads(next(tmp_path.rglob("lr_finder.json")).read_text())
    assert curve["lr"][-1] > 0.1  # reached the top of the range (or diverged high up), not 1e-5


def test_each_run_keeps_its_own_lr_curve(digits_data, backbone, tmp_path):
    run_dirs = []
    for _ in range(2):
        config = TunerConfig(auto_lr=True, lr_find_kwargs={"num_training": 10})
        trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=1, tuner_config=config, limit_val_batches=0)
        run_dirs.append(trainer.run_dir)
        try:
            trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
        except TuningError:
            pass
    curves = sorted(p for p in tmp_path.rglob("*.json") if p.name.startswith("lr_find"))
    assert curves == sorted(run_dir / "plots" / "lr_finder.json" for run_dir in run_dirs)


def test_training_after_a_multi_epoch_lr_sweep_with_a_progress_bar(digits_data, backbone, tmp_path):
    # The sweep spans epochs (validation runs inside it, without the trainer's callbacks);
    # the real run must then log the same keys with the progress bar on.
    config = TunerConfig(auto_lr=True, lr_find_kwargs={"num_training": 24})
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=3,
        max_steps=10,
        tuner_config=config,
        limit_train_batches=8,
        limit_val_batches=2,
        enable_progress_bar=True,
    )
    trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    assert trainer.global_step == 10 and "val/accuracy" in trainer.progress_bar_metrics


# ---- LRRangeTest as a callback of a plain Trainer ---------------------------------------------


class _Linear(pl.LightningModule):
    """A linear classifier on 8 features: quick to sweep, with a loss that falls at a good learning rate."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def _loader(n: int = 24, batch_size: int = 8) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 3
    x = torch.randn(n, 8, generator=generator) + 2.0 * F.one_hot(y, 8).float()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def _sweep(test: LRRangeTest, tmp_path: Path, **kwargs) -> _Linear:
    torch.manual_seed(0)
    model = _Linear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(
        accelerator="cpu",
        callbacks=[test],
        max_epochs=test.num_training + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    trainer.fit(model, train_dataloaders=_loader())
    # The weights (and BatchNorm's running statistics) are back as they were before the test.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    return model


def test_lr_range_test_records_every_step_over_epochs_and_suggests_inside_the_range(tmp_path):
    test = LRRangeTest(min_lr=1e-4, max_lr=1.0, num_training=30)
    _sweep(test, tmp_path)  # 3 batches per epoch: 10 epochs
    assert len(test.lrs) == len(test.losses) == 30
    assert test.lrs[0] == 1e-4 and test.lrs[-1] == 1.0
    ratios = [b / a for a, b in zip(test.lrs, test.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios))  # exponential: evenly spaced in log space
    suggestion = suggest_lr(test.lrs, test.losses)
    assert suggestion is not None and 1e-4 <= suggestion <= 1.0
    assert min(test.losses) < 0.9 * test.losses[0]  # raw losses: the loss fell on the way up


def test_lr_range_test_linear_ramp_with_accumulation(tmp_path):
    test = LRRangeTest(min_lr=0.01, max_lr=0.1, num_training=8, mode="linear")
    _sweep(test, tmp_path, accumulate_grad_batches=2)  # 3 batches, 2 steps per epoch
    assert len(test.losses) == 8 and test.lrs[-1] == 0.1
    steps = [b - a for a, b in zip(test.lrs, test.lrs[1:], strict=False)]
    assert max(steps) == pytest.approx(min(steps)) == pytest.approx(0.09 / 7)


def test_lr_range_test_stops_when_the_loss_diverges(tmp_path):
    test = LRRangeTest(min_lr=1.0, max_lr=1e6, num_training=40, early_stop_threshold=2.0)
    _sweep(test, tmp_path)
    assert 1 <= len(test.losses) < 40
    last = test.losses[-1]
    assert not math.isfinite(last) or last > min(test.losses)  # stopped on a loss that blew up


def test_lr_range_test_names_a_bad_argument():
    with pytest.raises(ValueError, match=r"mode.*'linear'.*'cubic'"):
        LRRangeTest(mode="cubic")
    with pytest.raises(ValueError, match="max_lr"):
        LRRangeTest(min_lr=1.0, max_lr=0.5)
