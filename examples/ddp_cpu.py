"""Distributed data parallel (DDP) training with two CPU processes: the multi-GPU recipe, testable anywhere.

`AutoTrainer(accelerator="cpu", devices=2, strategy="ddp")` trains on two processes that
each see half of every epoch's batches and average their gradients (over `gloo`). With
GPUs, write `accelerator="gpu"` and the number of GPUs; nothing else changes.

How it runs: Lightning starts the second process by running this script again (same
arguments, same environment) when `fit` begins. So the script must be importable without
side effects (everything under `if __name__ == "__main__":`), must build the same model and
data in every process, and should print from one process only (`rank_zero_only`, or
`trainer.is_global_zero`). Checkpoints and the run record are written by rank 0;
validation metrics are computed over the samples of all processes. In a Jupyter notebook, use
`strategy="ddp_notebook"` instead. Run:

    python examples/ddp_cpu.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import os
import time

from pytorch_lightning import seed_everything
from pytorch_lightning.utilities import rank_zero_only

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, read_run
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"


@rank_zero_only
def report(trainer: AutoTrainer, data: ImageDataModule, start: float) -> None:
    """Print the results, from the first process only (the other returns `None` at once)."""
    record = read_run(trainer.run_dir)
    metrics = trainer.callback_metrics
    print(f"processes: {trainer.world_size} ({type(trainer.strategy).__name__}, {trainer.num_devices} CPU devices)")
    print(f"batch size per process: {data.batch_size}, effective batch size: {data.batch_size * trainer.world_size}")
    print(f"optimizer steps: {trainer.global_step} ({trainer.num_training_batches} per epoch and process)")
    print(f"val accuracy (over the samples of both processes): {metrics['val/accuracy'].item():.3f}")
    print(f"run record: status {record['status']}, world size {record['config']['resolved']['world_size']}")
    print(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


def main() -> None:
    start = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=32)  # the second process finds it made
    seed_everything(0, workers=True)

    data = ImageDataModule(
        root, image_size=32, batch_size=32, num_workers=0 if SMOKE else 1, augmentation_preset="none"
    )
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=data.num_classes,
        lr=3e-3,
        scheduler="cosine",
    )
    trainer = AutoTrainer(
        max_epochs=1 if SMOKE else 5,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        default_root_dir="runs/ddp_cpu",
        checkpoint_monitor="val/accuracy",
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    report(trainer, data, start)


if __name__ == "__main__":
    main()
