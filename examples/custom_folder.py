"""Train on your own image folder, then predict the class of new, unlabelled images.

The layout autotimm reads is one sub-folder per class; the folder names are the class names
(in sorted order, they are the labels 0, 1, ...):

    my_images/
        train/<class_name>/*.jpg     required
        val/<class_name>/...         optional: without it, a stratified `val_split` of train is held out
        test/<class_name>/...        optional

This script writes such a folder of JPEG images of circles, squares and triangles (train/
and test/, no val/, so 20% of train is held out for validation) plus a `new/` folder of
unlabelled images, trains on it, and prints the top class of each new image. With your own
images, point it at your folders:

    python examples/custom_folder.py
    python examples/custom_folder.py --data-dir path/to/my_images --predict-dir path/to/new_images \\
        --image-size 224 --augmentation-preset light

Set `AUTOTIMM_SMOKE=1` for a few-second check that everything is wired up.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _data import make_shapes_folder
from PIL import Image
from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig
from autotimm.data import create_eval_transform, list_augmentations

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="image folder with train/<class>/..., optional val/, test/")
    parser.add_argument("--predict-dir", default=None, help="folder of new images to classify")
    parser.add_argument("--image-size", type=int, default=32)
    # For your own photos, "light" or "default" (random crops, flips) usually generalise better;
    # in a short run on the small generated shapes, "none" gets further.
    parser.add_argument("--augmentation-preset", choices=list_augmentations(), default="none")
    parser.add_argument("--max-epochs", type=int, default=1 if SMOKE else 8)
    args = parser.parse_args()
    start = time.perf_counter()
    if args.data_dir is None:
        root = make_shapes_folder("data", per_class=20 if SMOKE else 300, image_size=args.image_size)
        data_dir, predict_dir = root, Path(args.predict_dir or root / "new")
    else:
        data_dir, predict_dir = Path(args.data_dir), Path(args.predict_dir or Path(args.data_dir) / "new")
    seed_everything(0, workers=True)

    data = ImageDataModule(
        data_dir,
        image_size=args.image_size,
        batch_size=32,
        num_workers=0 if SMOKE else 2,
        val_split=0.2,  # used only when there is no val/ folder
        augmentation_preset=args.augmentation_preset,
    )
    print(f"classes (label order): {data.class_names}")
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=data.num_classes,
        lr=1e-3,
        scheduler="cosine",
    )
    trainer = AutoTrainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        default_root_dir="runs/custom_folder",
        logger=[LoggerConfig("csv")],
        checkpoint_monitor="val/accuracy",
        limit_train_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    if (Path(data_dir) / "test").is_dir():
        (result,) = trainer.test(model, datamodule=data, verbose=False)
        print(f"test accuracy: {result['test/accuracy']:.3f}")

    # Predict with the best checkpoint, through the same eval transform (resize, crop, normalise) as validation.
    best = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path).eval()
    transform = create_eval_transform(data.data_config)
    files = sorted(p for p in predict_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        probabilities = best.probabilities(best(batch))
    scores, labels = probabilities.max(dim=1)
    print(f"predictions for {len(files)} new images in {predict_dir}:")
    for file, label, score in zip(files, labels.tolist(), scores.tolist(), strict=True):
        print(f"  {file.name}: {data.class_names[label]} ({score:.2f})")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
