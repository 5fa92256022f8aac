"""TunerConfig and tuning inside AutoTrainer.fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F

from autotimm import ImageClassifier, ImageDataModule, TunerConfig, TuningError
from helpers import colour_folder, cpu_trainer

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


def test_batch_size_finder_never_exceeds_the_data_set(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 12, "b": 12}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=2, num_workers=0)
    config = TunerConfig(auto_lr=False, auto_batch_size=True, batch_size_kwargs={"init_val": 4, "steps_per_trial": 1})
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=config)
    trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)
    assert trainer.tuning_results["batch_size"] == data.batch_size
    assert 4 < data.batch_size <= 24


def test_unknown_tuner_keys_fail_at_construction():
    with pytest.raises(ValueError, match="num_training"):
        TunerConfig(lr_find_kwargs={"num_trainings": 50})
    with pytest.raises(ValueError, match="steps_per_trial"):
        TunerConfig(batch_size_kwargs={"step_per_trial": 2})
    with pytest.raises(ValueError, match="binsearch"):
        TunerConfig(batch_size_kwargs={"mode": "linear"})
    with pytest.raises(ValueError, match="min_lr"):
        TunerConfig(lr_find_kwargs={"min_lr": 1.0, "max_lr": 0.1})
    with pytest.raises(TypeError, match="auto_lr"):
        TunerConfig(auto_lr="no")
    with pytest.raises(TypeError, match="margin"):
        TunerConfig(batch_size_kwargs={"margin": "x"})
    with pytest.raises(TypeError, match="steps_per_trial"):
        TunerConfig(batch_size_kwargs={"steps_per_trial": True})
    with pytest.raises(TypeError, match="lr_find_kwargs"):
        TunerConfig(lr_find_kwargs=[("min_lr", 1e-5)])


# Learning rates so high that the loss diverges at once: the LR finder has no curve to read.
_DIVERGING = TunerConfig(auto_lr=True, lr_find_kwargs={"min_lr": 1e3, "max_lr": 1e5, "num_training": 10})


def test_failed_lr_finder_says_how_to_turn_it_off(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0)
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=_DIVERGING)
    with pytest.raises(TuningError, match=r"diverged(.|\n)*Lower `min_lr` \(now 1000\)(.|\n)*auto_lr=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)


def test_batch_size_finder_needs_a_datamodule(digits_data, backbone, tmp_path):
    digits_data.setup("fit")
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=TunerConfig(auto_lr=False, auto_batch_size=True))
    with pytest.raises(TuningError, match="auto_batch_size=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=10), train_dataloaders=digits_data.train_dataloader())


def test_resume_does_not_retune(digits_data, backbone, tmp_path):
    first = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    first.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    model = ImageClassifier(backbone, num_classes=10, lr=2e-3)
    resumed = cpu_trainer(
        tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, tuner_config=TunerConfig(auto_lr=True)
    )
    resumed.fit(model, datamodule=digits_data, ckpt_path=first.checkpoint_callback.best_model_path)
    assert resumed.tuning_results == {} and model._lr == 2e-3


def test_tuning_refuses_distributed_runs_up_front(tmp_path):
    with pytest.raises(ValueError, match="single-device"):
        cpu_trainer(tmp_path, devices=2, strategy="ddp", tuner_config=TunerConfig(auto_batch_size=True))


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
    curve = json.loads(next(tmp_path.rglob("lr_find.json")).read_text())
    assert curve["lr"][-1] > 0.1  # reached the top of the range (or diverged high up), not 1e-5


def test_second_run_keeps_the_first_lr_curve(digits_data, backbone, tmp_path):
    for _ in range(2):
        config = TunerConfig(auto_lr=True, lr_find_kwargs={"num_training": 10})
        trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=1, tuner_config=config, limit_val_batches=0)
        try:
            trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
        except TuningError:
            pass
    assert sorted(p.name for p in tmp_path.glob("lr_find*.json")) == ["lr_find-v1.json", "lr_find.json"]


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


def test_both_finders_on_48_images_train_with_the_found_batch_size(make_image_folder, backbone, tmp_path):
    # Issue 12, defect 1: the batch-size finder found 30, autotimm shrank it to 1 so that the LR
    # finder got 30 steps in one epoch, and BatchNorm failed on the batch of one.
    data = ImageDataModule(colour_folder(make_image_folder, size=32), image_size=32, batch_size=8, num_workers=0)
    config = TunerConfig(
        auto_lr=True,
        auto_batch_size=True,
        lr_find_kwargs={"num_training": 20},
        batch_size_kwargs={"mode": "binsearch", "init_val": 8, "steps_per_trial": 1, "max_trials": 3},
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=config)
    model = ImageClassifier(backbone, num_classes=3)
    trainer.fit(model, datamodule=data)
    # Lightning's binsearch tries 8, 16, 32 and keeps 95% of 32: that is what the run trains with.
    assert trainer.tuning_results["batch_size"] == data.batch_size == 30
    assert len(data.train_dataloader()) == 2  # 48 images: batches of 30 and 18
    # The 20-step sweep ran over 10 epochs of 2 batches, to the top of its range, and suggested
    # a learning rate ...
    curve = json.loads(Path(trainer.tuning_results["lr_find_curve"]).read_text())
    assert len(curve["lr"]) == 20 and curve["lr"][-1] == 1.0
    assert model._lr == trainer.tuning_results["lr"] == curve["suggestion"]
    # ... and the real run then trained its own single epoch.
    assert trainer.max_epochs == 1 and trainer.current_epoch == 1 and trainer.global_step == 2


def test_tuner_config_false_means_no_tuning(digits_data, backbone, tmp_path):
    # Issue 12, defect 3: Lightning's "off" (`logger=False`) was refused with a TypeError.
    model = ImageClassifier(backbone, num_classes=10, lr=2e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, tuner_config=False)
    trainer.fit(model, datamodule=digits_data)
    assert trainer.tuner_config is None and trainer.tuning_results == {}
    assert model._lr == 2e-3 and trainer.global_step == 2
    with pytest.raises(TypeError, match=r"None or False for no tuning, but got bool True\. Pass `TunerConfig\(\)`"):
        cpu_trainer(tmp_path, tuner_config=True)


def test_tuner_config_false_from_the_command_line(make_image_folder, tmp_path):
    from autotimm.cli import AutoTimmCLI

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "classify_folder.yaml"
    args = ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.init_args.data_dir", str(make_image_folder())]
    args += ["--model.init_args.backbone.model_name", "test_resnet"]
    cli = AutoTimmCLI([*args, "--trainer.tuner_config", "false"], run=False)
    assert cli.trainer.tuner_config is None
    cli = AutoTimmCLI([*args, "--trainer.tuner_config", "{auto_lr: true, auto_batch_size: true}"], run=False)
    assert cli.trainer.tuner_config == TunerConfig(auto_lr=True, auto_batch_size=True)
