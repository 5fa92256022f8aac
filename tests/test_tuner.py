"""TunerConfig and tuning inside AutoTrainer.fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, TunerConfig, TuningError


def _trainer(tmp_path, **kwargs):
    defaults = {"accelerator": "cpu", "default_root_dir": tmp_path, "enable_progress_bar": False, "enable_model_summary": False}
    return AutoTrainer(**{**defaults, **kwargs})


def test_lr_finder_sets_a_sane_lr_and_saves_its_curve(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, lr=0.5)
    config = TunerConfig(auto_lr=True, auto_batch_size=False, lr_find_kwargs={"min_lr": 1e-6, "max_lr": 1.0, "num_training": 1000})
    trainer = _trainer(tmp_path, max_epochs=1, max_steps=3, tuner_config=config, limit_val_batches=1)
    trainer.fit(model, datamodule=digits_data)
    lr = trainer.tuning_results["lr"]
    assert model._lr == lr != 0.5 and 1e-6 <= lr < 1.0
    assert model.hparams["lr"] == lr
    curve = json.loads(Path(trainer.tuning_results["lr_find_curve"]).read_text())
    # at most one point per batch of one epoch, not 1000 (fewer if the loss diverged early)
    assert 8 <= len(curve["lr"]) <= len(digits_data.train_dataloader()) and curve["suggestion"] == lr
    assert trainer.global_step == 3  # the real run happened after tuning


def test_batch_size_finder_never_exceeds_the_data_set(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 12, "b": 12}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=2, num_workers=0)
    config = TunerConfig(auto_lr=False, auto_batch_size=True, batch_size_kwargs={"init_val": 4, "steps_per_trial": 1})
    trainer = _trainer(tmp_path, max_epochs=1, tuner_config=config)
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


def test_failed_lr_finder_says_how_to_turn_it_off(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0)  # 2 batches: too few points
    trainer = _trainer(tmp_path, max_epochs=1, tuner_config=TunerConfig(auto_lr=True))
    with pytest.raises(TuningError, match=r"auto_lr=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)


def test_batch_size_finder_needs_a_datamodule(digits_data, backbone, tmp_path):
    digits_data.setup("fit")
    trainer = _trainer(tmp_path, max_epochs=1, tuner_config=TunerConfig(auto_lr=False, auto_batch_size=True))
    with pytest.raises(TuningError, match="auto_batch_size=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=10), train_dataloaders=digits_data.train_dataloader())


def test_resume_does_not_retune(digits_data, backbone, tmp_path):
    first = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    first.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    model = ImageClassifier(backbone, num_classes=10, lr=2e-3)
    resumed = _trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, tuner_config=TunerConfig(auto_lr=True))
    resumed.fit(model, datamodule=digits_data, ckpt_path=first.checkpoint_callback.best_model_path)
    assert resumed.tuning_results == {} and model._lr == 2e-3


def test_tuning_refuses_distributed_runs_up_front(tmp_path):
    with pytest.raises(ValueError, match="single-device"):
        _trainer(tmp_path, devices=2, strategy="ddp", tuner_config=TunerConfig(auto_batch_size=True))
