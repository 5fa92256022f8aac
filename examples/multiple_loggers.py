"""Log to CSV and TensorBoard at once, then read the logged metrics back.

`AutoTrainer(logger=[LoggerConfig("csv"), LoggerConfig("tensorboard")])` builds both
Lightning loggers (`LoggerManager([...])` is the same as a list); every metric goes to each.
`LoggingConfig` adds the learning rate and the gradient norm to what the model logs. The
CSV file is plain text (`metrics.csv`, one row per logging step); view the TensorBoard
event files with `tensorboard --logdir runs/multiple_loggers`. Run:

    python examples/multiple_loggers.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

from pytorch_lightning import seed_everything

from autotimm import (
    AutoTrainer,
    BackboneConfig,
    ImageClassifier,
    ImageDataModule,
    LoggerConfig,
    LoggingConfig,
    MetricConfig,
)
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"


def main() -> None:
    start = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=32)
    seed_everything(0, workers=True)

    data = ImageDataModule(
        root, image_size=32, batch_size=32, num_workers=0 if SMOKE else 2, augmentation_preset="none"
    )
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=data.num_classes,
        metrics=[
            MetricConfig("accuracy", metric_class="Accuracy", stages=["train", "val", "test"], prog_bar=True),
            MetricConfig("f1", metric_class="F1Score", params={"average": "macro"}, stages=["val", "test"]),
        ],
        logging_config=LoggingConfig(log_learning_rate=True, log_gradient_norm=True),
        lr=3e-3,
        scheduler="cosine",
    )
    trainer = AutoTrainer(
        max_epochs=2 if SMOKE else 5,
        accelerator="cpu",
        default_root_dir="runs/multiple_loggers",
        logger=[
            LoggerConfig("csv"),  # without a save_dir: the run folder's logs/csv/
            LoggerConfig("tensorboard"),  # logs/tensorboard/
        ],
        checkpoint_monitor="val/accuracy",
        log_every_n_steps=2 if SMOKE else 10,
        limit_train_batches=4 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
        limit_test_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)

    for logger in trainer.loggers:
        print(f"{type(logger).__name__} wrote to {logger.log_dir}")
    csv_file = Path(trainer.loggers[0].log_dir) / "metrics.csv"
    with csv_file.open(newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"{csv_file} has {len(rows)} rows and the columns {sorted(rows[0])}")
    for row in rows:
        if row.get("val/accuracy"):  # the rows written at the end of a validation run
            accuracy, f1 = float(row["val/accuracy"]), float(row["val/f1"])
            print(f"  epoch {row['epoch']}: val/accuracy {accuracy:.3f}, val/f1 {f1:.3f}")
    event_files = sorted(Path(trainer.loggers[1].log_dir).glob("events.out.tfevents.*"))
    print(f"TensorBoard event files: {[f.name for f in event_files]}")
    print(f"test accuracy: {result['test/accuracy']:.3f}, test macro F1: {result['test/f1']:.3f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
