"""Quickstart: train an image classifier on real handwritten digits, on a CPU, in about a minute.

The data is scikit-learn's digits data set (1,797 real 8x8 handwritten digits), written as
an image folder (`train/`, `val/`, `test/`, one sub-folder per class): the same layout as
your own images. Run:

    python examples/quickstart.py

Set `AUTOTIMM_SMOKE=1` for a few-second check that everything is wired up.
"""

from __future__ import annotations

import os
import time

from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig, MetricConfig
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"


def main() -> None:
    start = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=32)
    seed_everything(0, workers=True)

    data = ImageDataModule(root, image_size=32, batch_size=32, num_workers=2, augmentation_preset="none")
    model = ImageClassifier(
        # pretrained=False: trains from scratch, so no download is needed.
        backbone=BackboneConfig("resnet18", pretrained=False),
        num_classes=data.num_classes,
        metrics=[
            MetricConfig(
                "accuracy",
                metric_class="Accuracy",
                params={"task": "multiclass"},
                stages=["val", "test"],
                prog_bar=True,
            )
        ],
        lr=3e-3,
        scheduler="cosine",
    )
    trainer = AutoTrainer(
        max_epochs=1 if SMOKE else 5,
        accelerator="cpu",
        default_root_dir="runs/quickstart",
        logger=[LoggerConfig("csv")],
        checkpoint_monitor="val/accuracy",
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)

    print(f"test accuracy: {result['test/accuracy']:.3f}")
    print(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
