"""A medical-style binary classifier: sensitivity, specificity, AUROC and AUPRC, early stopping on AUROC.

Modelled on a skin-lesion classifier (benign vs malignant). The images are generated:
skin-coloured patches with a lesion drawn after the ABCD rule of thumb (malignant ones tend
to be larger, more irregular and two-coloured; the ranges overlap), about 25% malignant,
an imbalance like that of dermatology data sets. The folder is `train/`, `val/`, `test/`
with the classes `benign/` and `malignant/`, so label 1, the positive class, is malignant.

The model is a binary classifier (`num_classes=1, multi_label=True`: one sigmoid output,
`BCEWithLogitsLoss`). Each metric is a torchmetrics class named in a `MetricConfig`, with
`task="binary"` filled in from the model: `Recall` is the sensitivity, `Specificity`,
`AUROC`, and `AveragePrecision` (the area under the precision-recall curve). Lightning's
`EarlyStopping` stops when `val/auroc` has not improved for `patience` epochs, and the best
checkpoint by `val/auroc` is the one tested. Run:

    python examples/medical_classifier.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import os
import time

from _data import make_lesion_folder
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig, MetricConfig

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
IMAGE_SIZE = 48


def medical_metrics() -> list[MetricConfig]:
    """Sensitivity, specificity, AUROC, AUPRC and accuracy on the validation and test sets."""
    names = {
        "sensitivity": "Recall",  # true positive rate: the malignant lesions found
        "specificity": "Specificity",  # true negative rate: the benign lesions cleared
        "auroc": "AUROC",
        "auprc": "AveragePrecision",
        "accuracy": "Accuracy",
    }
    return [
        MetricConfig(name, metric_class=cls, stages=["val", "test"], prog_bar=name == "auroc")
        for name, cls in names.items()
    ]


def main() -> None:
    start = time.perf_counter()
    root = make_lesion_folder("data", num_images=120 if SMOKE else 1200, image_size=IMAGE_SIZE)
    seed_everything(0, workers=True)

    data = ImageDataModule(
        root, image_size=IMAGE_SIZE, batch_size=32, num_workers=0 if SMOKE else 2, augmentation_preset="light"
    )
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=1,  # one sigmoid output: P(malignant)
        multi_label=True,  # BCEWithLogitsLoss
        metrics=medical_metrics(),
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.01,
        scheduler="cosine",
    )
    early_stopping = EarlyStopping(monitor="val/auroc", mode="max", patience=4)
    trainer = AutoTrainer(
        max_epochs=2 if SMOKE else 25,
        accelerator="cpu",
        default_root_dir="runs/medical_classifier",
        logger=[LoggerConfig("csv")],
        checkpoint_monitor="val/auroc",
        checkpoint_mode="max",
        gradient_clip_val=1.0,
        callbacks=[early_stopping, LearningRateMonitor(logging_interval="epoch")],
    )
    trainer.fit(model, datamodule=data)
    # Read the early-stopping outcome now: testing the best checkpoint restores the callbacks' state saved in it.
    epochs, stopped, best = trainer.current_epoch, early_stopping.stopped_epoch, early_stopping.best_score.item()
    (result,) = trainer.test(model, datamodule=data, verbose=False)

    labels = data.train_dataset.targets
    print(f"classes: {data.class_names}; training set: {len(labels)} images, {sum(labels)} {data.class_names[1]}")
    how = f"early stopping after epoch {stopped} (counted from 0)" if stopped else "no early stop"
    print(f"trained {epochs} epochs ({how}); best val/auroc {best:.3f}")
    print("test metrics of the best checkpoint (threshold 0.5 for sensitivity, specificity and accuracy):")
    for name in ("sensitivity", "specificity", "auroc", "auprc", "accuracy"):
        print(f"  {name:<12} {result[f'test/{name}']:.3f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
