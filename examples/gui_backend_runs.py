"""A GUI's training back end on autotimm runs: create, start, watch, refuse, fail and retry.

Modelled on a training pipeline behind a GUI: a run is created as `pending` when the user
configures it, started in a background thread when the user clicks "Run", watched by polling
`metrics.json` (one entry per epoch, replaced atomically) and `run.json` (the status), and only
one run may be active at a time. Each run is one folder, `runs/gui_backend/runs/<run_name>/`,
with `checkpoints/best.ckpt` and `last.ckpt`, which the GUI opens by name.

The script plays it all:

1. create a run: its folder and `run.json` (`pending`) exist before training;
2. start it in a background thread, and poll its `metrics.json` from the main thread;
3. while it runs, a second run is refused at once by the lock (`exclusive=True`), naming the
   active run and its start time: the GUI's disabled "Run" button;
4. a run that fails in its second epoch is `failed`, with the error; its retry is a new run
   linked to it (`retry_of`), and completes;
5. `autotimm runs list` prints every run.

Run:

    python examples/gui_backend_runs.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Callback

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.cli import main as autotimm_command
from autotimm.data import make_digits_folder
from autotimm.runs import Run, RunLockedError

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
RUNS = Path("runs/gui_backend/runs")


class CrashAt(Callback):
    """Fail at the start of epoch `epoch`, as a bug or a lost device would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError(f"simulated failure at the start of epoch {self.epoch}")


def create_run(callbacks: list[Callback] | None = None, retry_of: Path | None = None) -> AutoTrainer:
    """What the back end does when the user creates an experiment: a pending run."""
    return AutoTrainer(
        max_epochs=3 if SMOKE else 6,
        accelerator="auto",
        runs_dir=RUNS,
        exclusive=True,  # one active run at a time in RUNS
        checkpoint_monitor="val/loss",
        checkpoint_mode="min",
        callbacks=callbacks,
        retry_of=retry_of,
        enable_progress_bar=False,  # the GUI shows metrics.json instead
        enable_model_summary=False,
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )


def start(trainer: AutoTrainer, model: pl.LightningModule, data: pl.LightningDataModule) -> threading.Thread:
    """What the back end does when the user clicks "Run": `fit` in a background thread."""

    def work() -> None:
        try:
            trainer.fit(model, datamodule=data)
        except Exception as error:  # recorded in run.json; the GUI reads it from there
            print(f"  [worker] the run ended with {type(error).__name__}")

    thread = threading.Thread(target=work, name=f"run {trainer.run_name}")
    thread.start()
    return thread


def poll(run_dir: Path, thread: threading.Thread) -> None:
    """Print each new epoch of `metrics.json` as it appears, as a GUI's chart would, until the run ends."""
    shown = 0
    while thread.is_alive() or shown == 0:
        path = run_dir / "metrics.json"
        epochs = json.loads(path.read_text()) if path.is_file() else []
        for entry in epochs[shown:]:
            print(f"  [poll] epoch {entry['epoch']}: val/loss {entry['val/loss']:.3f}, ", end="")
            print(f"val/accuracy {entry['val/accuracy']:.3f}, {entry.get('images_per_s', 0):.0f} images/s")
        shown = len(epochs)
        if not thread.is_alive():
            break
        time.sleep(0.2)


def main() -> None:
    start_time = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=32)
    seed_everything(0, workers=True)
    data = ImageDataModule(root, image_size=32, batch_size=32, num_workers=0, augmentation_preset="none")

    def new_model() -> ImageClassifier:
        return ImageClassifier(BackboneConfig(BACKBONE, pretrained=False), num_classes=data.num_classes, lr=3e-3)

    print("1. create a run")
    trainer = create_run()
    print(f"  {trainer.run_dir}: status {Run(trainer.run_dir).status}")

    print("2. start it in the background, and watch metrics.json")
    thread = start(trainer, new_model(), data)
    while Run(trainer.run_dir).status == "pending":
        time.sleep(0.05)
    print("3. a second run while it is active")
    second = create_run()
    try:
        second.fit(new_model(), datamodule=data)
    except RunLockedError as error:
        print(f"  refused: {error}")
    print(f"  the refused run stays {Run(second.run_dir).status}")
    poll(trainer.run_dir, thread)
    thread.join()
    run = Run(trainer.run_dir)
    print(f"  status {run.status}; best {run.best['monitor']} {run.best['value']:.3f} in {run.checkpoints['best']}")

    print("4. a run that fails, and its retry")
    failing = create_run(callbacks=[CrashAt(epoch=1)])
    thread = start(failing, new_model(), data)
    thread.join()
    failed = Run(failing.run_dir)
    print(f"  {failed.name}: status {failed.status}, error {failed.error['type']}: {failed.error['message']}")
    retry = create_run(retry_of=failing.run_dir)
    thread = start(retry, new_model(), data)
    thread.join()
    retried = Run(retry.run_dir)
    print(f"  retry {retried.name}: status {retried.status}, retry_of {retried.record['retry_of']['run']}")

    print("5. every run")
    autotimm_command(["runs", "list", str(RUNS)])
    print(f"wall time: {time.perf_counter() - start_time:.1f} s")


if __name__ == "__main__":
    main()
