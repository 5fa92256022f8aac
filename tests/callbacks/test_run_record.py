"""The `RunRecord` callback: `run.json` and `metrics.json` of real short fits, read back with `read_run`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

import autotimm
from autotimm import ImageClassifier, read_run
from helpers import cpu_trainer, noise_data


def test_run_record_of_a_completed_run(digits_data, backbone, tmp_path: Path) -> None:
    model = ImageClassifier(backbone, num_classes=10)
    trainer = cpu_trainer(
        tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, checkpoint_monitor="val/accuracy"
    )
    trainer.fit(model, datamodule=digits_data)
    run_dir = trainer.run_dir
    assert run_dir.parent == tmp_path / "runs"
    record = read_run(run_dir)
    assert record["status"] == "completed" and record["error"] is None and record["duration_s"] > 0
    assert record["config"]["model"]["class"] == "autotimm.tasks.classification.ImageClassifier"
    assert record["config"]["model"]["hparams"]["num_classes"] == 10
    assert record["config"]["data"]["hparams"]["batch_size"] == digits_data.batch_size
    assert record["config"]["trainer"]["checkpoint_monitor"] == "val/accuracy"
    assert record["config"]["trainer"]["limit_train_batches"] == 2
    assert set(record["versions"]) >= {"torch", "timm", "pytorch-lightning", "autotimm"}
    assert record["metrics"]["best"]["monitor"] == "val/accuracy"
    assert Path(record["checkpoints"]["best"]).is_file() and Path(record["checkpoints"]["last"]).is_file()
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert {"val/loss", "val/accuracy", "train/loss_epoch"} <= set(record["epochs"][-1])
    assert record["metrics"]["final"] == record["epochs"][-1]
    json.dumps(record)  # plain JSON all the way down


def test_learning_rate_is_recorded_every_epoch_on_small_data(make_image_folder, backbone, tmp_path: Path) -> None:
    # 2 steps per epoch, far fewer than Lightning's log_every_n_steps=50: the run record, summarize
    # (and so metrics.png) and the loggers still get each epoch's learning rate, not one repeated value.
    from pytorch_lightning.loggers import CSVLogger

    model = ImageClassifier(backbone, num_classes=3, lr=0.1, scheduler="cosine")
    logger = CSVLogger(tmp_path / "logs")
    trainer = cpu_trainer(
        tmp_path, max_epochs=5, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False, logger=logger
    )
    trainer.fit(model, datamodule=noise_data(make_image_folder))
    assert trainer.log_every_n_steps == 50 and trainer.global_step == 10
    expected = [0.1 * (1 + math.cos(math.pi * epoch / 5)) / 2 for epoch in range(5)]  # CosineAnnealingLR per epoch

    epochs = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert [e["train/lr"] for e in epochs] == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(e["train/loss"], float) for e in epochs)
    assert len({e["train/loss"] for e in epochs}) == 5 and len({e["train/loss_epoch"] for e in epochs}) == 5
    rows = autotimm.summarize(trainer.run_dir, print_table=False)
    assert [row["train/lr"] for row in rows] == [e["train/lr"] for e in epochs]

    with open(Path(logger.log_dir) / "metrics.csv", newline="") as file:
        logged = [(int(row["epoch"]), float(row["train/lr"])) for row in csv.DictReader(file) if row["train/lr"]]
    assert [lr for _, lr in logged] == pytest.approx(expected, rel=1e-6)
    assert [epoch for epoch, _ in logged] == [0, 1, 2, 3, 4]
