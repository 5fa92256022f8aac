"""Stop a run, then resume it from `last.ckpt` with `fit(ckpt_path=...)`: the step count continues.

AutoTrainer writes `last.ckpt` at the end of every epoch (atomically: a crash never leaves
half a file) next to the best checkpoint. It holds the weights, the optimizer and scheduler
state and the loop position, so a new trainer given `ckpt_path` carries on where the old
one stopped: same epoch, same global step, same learning-rate schedule, same run record.

Here the first run (planned for 4 epochs) is stopped after 2 by a small callback that
stands in for a crash, a time limit or Ctrl-C; the second trainer resumes it. Run:

    python examples/resume_training.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Callback

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
ROOT = Path("runs/resume_training")
EPOCHS = 4


class StopAfter(Callback):
    """Stop training at the end of epoch `epochs` (as if the process had been stopped there)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def make_trainer(callbacks: list[Callback]) -> AutoTrainer:
    return AutoTrainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        default_root_dir=ROOT,  # the run's folder: ROOT / "runs" / <run_name>, checkpoints in its checkpoints/
        checkpoint_monitor="val/accuracy",
        callbacks=callbacks,
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

    first = make_trainer([StopAfter(epochs=2)])
    first.fit(model, datamodule=data)
    print(f"first run stopped after {first.current_epoch} of {EPOCHS} epochs, at step {first.global_step}")
    last = first.run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    print(f"{last} was written in epoch {saved['epoch']} (counted from 0), at global step {saved['global_step']}")

    # A new process would rebuild the model and data the same way; the checkpoint restores the rest, and
    # the run goes on in its own folder. `ckpt_path="last"` finds the same file.
    second = make_trainer([])
    second.fit(model, datamodule=data, ckpt_path=last)
    steps_per_epoch = second.num_training_batches
    print(f"resumed from step {saved['global_step']}; finished at step {second.global_step} ", end="")
    print(f"({EPOCHS} epochs x {steps_per_epoch} steps = {EPOCHS * steps_per_epoch})")
    print(f"same run record: {first.run_dir == second.run_dir} ({second.run_dir})")
    (result,) = second.test(model, datamodule=data, verbose=False)
    print(f"test accuracy: {result['test/accuracy']:.3f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
