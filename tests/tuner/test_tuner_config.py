"""TunerConfig, AutoTrainer's tuning steps and their switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotimm import ImageClassifier, TunerConfig
from helpers import cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


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

    config = Path(__file__).resolve().parents[2] / "examples" / "configs" / "classify_folder.yaml"
    args = ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.init_args.data_dir", str(make_image_folder())]
    args += ["--model.init_args.backbone.model_name", "test_resnet"]
    cli = AutoTimmCLI([*args, "--trainer.tuner_config", "false"], run=False)
    assert cli.trainer.tuner_config is None
    cli = AutoTimmCLI([*args, "--trainer.tuner_config", "{auto_lr: true, auto_batch_size: true}"], run=False)
    assert cli.trainer.tuner_config == TunerConfig(auto_lr=True, auto_batch_size=True)
