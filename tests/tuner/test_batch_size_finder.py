"""The batch-size finder inside AutoTrainer.fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autotimm import ImageClassifier, ImageDataModule, TunerConfig, TuningError
from helpers import colour_folder, cpu_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_size_finder_never_exceeds_the_data_set(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"a": 12, "b": 12}, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=2, num_workers=0)
    config = TunerConfig(auto_lr=False, auto_batch_size=True, batch_size_kwargs={"init_val": 4, "steps_per_trial": 1})
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=config)
    trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)
    assert trainer.tuning_results["batch_size"] == data.batch_size
    assert 4 < data.batch_size <= 24
    # The default schedule (warmup, cosine) was sized for the batch size found, not the one given.
    schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert schedule.total == trainer.global_step == len(data.train_dataloader()) < 24 // 2


def test_batch_size_finder_needs_a_datamodule(digits_data, backbone, tmp_path):
    digits_data.setup("fit")
    trainer = cpu_trainer(tmp_path, max_epochs=1, tuner_config=TunerConfig(auto_lr=False, auto_batch_size=True))
    with pytest.raises(TuningError, match="auto_batch_size=False"):
        trainer.fit(ImageClassifier(backbone, num_classes=10), train_dataloaders=digits_data.train_dataloader())


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
