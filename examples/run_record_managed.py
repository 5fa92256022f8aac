"""Manage a run through its record: `run.json` (status, config, results) and `metrics.json` (per epoch).

Every `AutoTrainer` run keeps a machine-readable record in its folder, `<default_root_dir>/runs/<run_name>/`,
rewritten atomically at each epoch end and when the run ends, so another process (a GUI, a
job scheduler, a dashboard) can poll it. `autotimm.read_run(trainer.run_dir)` returns
`run.json` with the per-epoch entries of `metrics.json` under `epochs`.

This script plays the whole lifecycle: a run starts (`running`; a callback reads the record
at each epoch start, as a poller would), crashes in its third epoch (`failed`, with the
error), and is resumed from the `last.ckpt` that the record names. The resumed run keeps
its folder and its record: the epochs continue and `resumed_from` says from where; the
status ends `completed`. Run:

    python examples/run_record_managed.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Callback

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, read_run
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"


class PollRecord(Callback):
    """Read the run record at each epoch start, as a GUI polling `run.json` would."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = read_run(trainer.run_dir)
        print(f"  [poll] epoch {trainer.current_epoch} starts: status {record['status']}, ", end="")
        print(f"{record['epochs_completed']} epochs recorded, global step {record['global_step']}")


class CrashAt(Callback):
    """Fail at the start of epoch `epoch`, as a lost machine or a bug would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated crash at the start of epoch {self.epoch}")


def show(record: dict[str, Any]) -> None:
    """Print what a run manager shows: status, progress, per-epoch metrics, checkpoints."""
    print(f"run {record['run_id']}: status {record['status']}, {record['epochs_completed']} epochs recorded")
    if record["error"]:
        print(f"  error: {record['error']['type']}: {record['error']['message']}")
    for entry in record["epochs"]:
        print(f"  epoch {entry['epoch']}: step {entry['step']}, ", end="")
        print(f"val/loss {entry['val/loss']:.3f}, val/accuracy {entry['val/accuracy']:.3f}")
    for resume in record.get("resumed_from", []):
        print(f"  resumed at epoch {resume['epoch']} from {resume['checkpoint']}")
    print(f"  best: {json.dumps(record['metrics']['best'])}")
    print(f"  checkpoints: {json.dumps(record['checkpoints'])}")


def make_trainer(callbacks: list[Callback]) -> AutoTrainer:
    return AutoTrainer(
        max_epochs=4 if SMOKE else 6,
        accelerator="cpu",
        default_root_dir="runs/run_record_managed",
        checkpoint_monitor="val/accuracy",
        callbacks=callbacks,
        enable_progress_bar=False,  # the record is the progress report here
        enable_model_summary=False,
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )


def main() -> None:
    start = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=32)
    seed_everything(0, workers=True)
    data = ImageDataModule(
        root, image_size=32, batch_size=32, num_workers=0 if SMOKE else 2, augmentation_preset="none"
    )
    model = ImageClassifier(BackboneConfig(BACKBONE, pretrained=False), num_classes=data.num_classes, lr=3e-3)

    print("1. start the run")
    trainer = make_trainer([PollRecord(), CrashAt(epoch=2)])
    try:
        trainer.fit(model, datamodule=data)
    except RuntimeError as error:
        print(f"fit raised: {error}")
    record = read_run(trainer.run_dir)
    show(record)
    print(f"files: {sorted(p.name for p in trainer.run_dir.iterdir())}")

    print("2. resume it from the last checkpoint named in its record")
    resumed = make_trainer([PollRecord()])
    resumed.fit(model, datamodule=data, ckpt_path=record["checkpoints"]["last"])
    record = read_run(resumed.run_dir)
    show(record)
    print(f"same run: {resumed.run_dir == trainer.run_dir}; duration of the last attempt: {record['duration_s']} s")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
