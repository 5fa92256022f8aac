"""A real-vs-fake binary image classifier, with per-run artifacts and a training summary at the end.

Modelled on a fake-art detector: a binary classifier trained with `BCEWithLogitsLoss`
(`ImageClassifier(num_classes=1, multi_label=True)`: one logit, `sigmoid > 0.5`, that is
`logit > 0`, means "synthetic"), with the optimizer, precision, data-loader workers and
profiler chosen on the command line. The data is generated: `real/` holds scikit-learn's
handwritten digit scans, `synthetic/` blends of two scans with a faint checkerboard (the
trace of a generator's transposed convolutions), some nearly invisible.

Each run leaves everything in one folder, `runs/real_vs_fake/runs/<run_name>/`: `run.json`
(status, the resolved configuration of trainer, model and data, library versions, best,
final and test metrics), `metrics.json` (per epoch), `config.yaml`, `train.log`, CSV and
TensorBoard logs (`logs/csv/metrics.csv`, `logs/tensorboard/`), `checkpoints/best.ckpt` (by
`val/loss`) and `last.ckpt`, the profiler's report (`profiler/fit-simple.txt`,
`fit-advanced.txt`, or the PyTorch profiler's trace) and the model's `state_dict`
(`real_vs_fake.pth`). It ends by printing `autotimm.summarize(trainer.run_dir)`: one row
per epoch. Run:

    python examples/real_vs_fake.py
    python examples/real_vs_fake.py --optimizer sgd --precision bf16-mixed --num-workers 0 --epochs 5
    python examples/real_vs_fake.py --profiler advanced --epochs 1

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _data import make_real_vs_fake_folder
from pytorch_lightning import seed_everything

import autotimm
from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig, MetricConfig

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
ROOT = Path("runs/real_vs_fake")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="adam", help="any name from autotimm.list_optimizers()")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--precision", default="32", help="32, bf16-mixed, 16-mixed (GPU) ...")
    parser.add_argument("--num-workers", type=int, default=0 if SMOKE else 2)
    parser.add_argument("--epochs", type=int, default=2 if SMOKE else 8)
    parser.add_argument("--profiler", choices=["none", "simple", "advanced", "pytorch"], default="simple")
    args = parser.parse_args()
    start = time.perf_counter()
    root = make_real_vs_fake_folder("data", per_class=40 if SMOKE else 800, image_size=32)
    seed_everything(0, workers=True)

    data = ImageDataModule(root, image_size=32, batch_size=32, num_workers=args.num_workers, augmentation_preset="none")
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=1,  # one logit: P(synthetic) = sigmoid(logit)
        multi_label=True,  # BCEWithLogitsLoss
        metrics=[MetricConfig("accuracy", metric_class="Accuracy", stages=["train", "val", "test"], prog_bar=True)],
        optimizer=args.optimizer,
        lr=args.lr,
    )
    trainer = AutoTrainer(
        max_epochs=args.epochs,
        accelerator="auto",
        precision=args.precision,
        default_root_dir=ROOT,
        logger=[LoggerConfig("csv"), LoggerConfig("tensorboard")],  # into the run folder's logs/
        checkpoint_monitor="val/loss",
        checkpoint_mode="min",
        profiler=None if args.profiler == "none" else args.profiler,  # into the run folder's profiler/
        limit_train_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    torch.save(model.state_dict(), trainer.run_dir / "real_vs_fake.pth")

    record = autotimm.read_run(trainer.run_dir)
    print(f"classes: {data.class_names} (label 1, the positive class: {data.class_names[1]})")
    print(f"run record: {trainer.run_dir / 'run.json'} (status {record['status']}, optimizer ", end="")
    print(
        f"{record['config']['model']['hparams']['optimizer']}, precision {record['config']['resolved']['precision']})"
    )
    print(f"best checkpoint (val/loss): {record['checkpoints']['best']}")
    print(f"CSV log: {Path(trainer.loggers[0].log_dir) / 'metrics.csv'}; TensorBoard: {trainer.loggers[1].log_dir}")
    if args.profiler != "none":
        print(f"profiler report: {sorted(str(p) for p in (trainer.run_dir / 'profiler').iterdir())}")
    print(f"state dict: {trainer.run_dir / 'real_vs_fake.pth'}")
    print(f"run folder: {sorted(p.name for p in trainer.run_dir.iterdir())}")
    print(f"test accuracy: {result['test/accuracy']:.3f}")
    print("training summary:")
    autotimm.summarize(trainer.run_dir)
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
