"""The API document's "Full Training Example", on your own image folder and a CPU.

Differences from the document: an image folder instead of CIFAR10 (`--data-dir`, by default the
digits demo folder), `pretrained=False` (no download needed), and `accelerator="cpu"`.
Everything else is as written there: tuning, TensorBoard logging, checkpointing on
`val/accuracy`, gradient clipping, early stopping, then testing the best checkpoint.

    python examples/full_training_example.py --data-dir path/to/images --max-epochs 50

`AUTOTIMM_SMOKE=1` shrinks it (resnet18, 32 px, a few batches, 32-bit) to check the wiring in seconds.
"""

from __future__ import annotations

import argparse
import os

from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import EarlyStopping

from autotimm import (
    AutoTrainer,
    BackboneConfig,
    ImageClassifier,
    ImageDataModule,
    LoggerConfig,
    LoggingConfig,
    MetricConfig,
    TunerConfig,
)
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="image folder with train/<class>/..., val/, test/")
    parser.add_argument("--backbone", default="resnet18" if SMOKE else "resnet50")
    parser.add_argument("--image-size", type=int, default=32 if SMOKE else 224)
    parser.add_argument("--max-epochs", type=int, default=3 if SMOKE else 50)
    parser.add_argument("--root-dir", default="runs/full_training_example")
    args = parser.parse_args()
    data_dir = args.data_dir or make_digits_folder("data/digits", image_size=32)
    seed_everything(42, workers=True)

    # Data
    data = ImageDataModule(
        data_dir=data_dir,
        image_size=args.image_size,
        batch_size=64,
        num_workers=2 if SMOKE else 8,
        # Flips and small crops turn digits into other digits: the demo folder trains without them.
        augmentation_preset="default" if args.data_dir else "none",
    )

    # Metrics
    metrics = [
        MetricConfig(
            name="accuracy",
            backend="torchmetrics",
            metric_class="Accuracy",
            params={"task": "multiclass"},
            stages=["train", "val", "test"],
            prog_bar=True,
        ),
    ]

    # Model with enhanced logging
    model = ImageClassifier(
        backbone=BackboneConfig(args.backbone, pretrained=False),
        num_classes=data.num_classes,
        metrics=metrics,
        logging_config=LoggingConfig(
            log_learning_rate=True,
            log_gradient_norm=True,
        ),
    )

    # Trainer with all features
    smoke = {"limit_train_batches": 8, "limit_val_batches": 2, "limit_test_batches": 2} if SMOKE else {}
    trainer = AutoTrainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        devices=1,
        precision=32 if SMOKE else "bf16-mixed",  # bf16 is emulated, and slow, on most CPUs
        logger=[LoggerConfig(backend="tensorboard", params={"save_dir": f"{args.root_dir}/logs"})],
        tuner_config=TunerConfig(auto_lr=True, auto_batch_size=False),
        checkpoint_monitor="val/accuracy",
        gradient_clip_val=1.0,
        callbacks=[EarlyStopping(monitor="val/loss", patience=10, mode="min")],
        default_root_dir=args.root_dir,
        **smoke,
    )

    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)

    print(f"learning rate found by the tuner: {trainer.tuning_results['lr']:.3g}")
    print(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    print(f"TensorBoard logs: {trainer.logger.log_dir}")
    print(f"test accuracy: {result['test/accuracy']:.3f}")


if __name__ == "__main__":
    main()
