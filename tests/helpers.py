"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from autotimm import AutoTrainer, ImageClassifier, ImageDataModule


def cpu_trainer(root: Path, **kwargs: Any) -> AutoTrainer:
    """A quiet CPU `AutoTrainer` writing under `root`; `kwargs` override the defaults."""
    defaults = {
        "accelerator": "cpu",
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "plots": False,  # drawn and checked in test_plots.py; elsewhere they only cost time
        "analysis": False,  # written and checked in tests/analysis/
    }
    return AutoTrainer(**{**defaults, **kwargs})


def run_ddp_script(script: str, tmp_path: Path, data_root: Path) -> Path:
    """Run `script` (which starts a DDP run) as `python script.py <run root> <data_root>`; return the run root.

    A script rather than a function: Lightning's DDP launcher starts the other ranks by running it again.
    """
    path = tmp_path / "train_ddp.py"
    path.write_text(script)
    root = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(path), str(root), str(data_root)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


# Three solid colours: a loss the learning-rate finder sees fall within a few steps.
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 40, 210)}


def colour_folder(make_image_folder: Callable[..., Path], per_class: int = 16, size: int = 32) -> Path:
    """3 classes x `per_class` training images (48 by default) and 4 validation and test images each, one colour per
    class, written with conftest's `make_image_folder` fixture; returns the folder."""
    for name, colour in COLOURS.items():
        root = make_image_folder(classes={name: per_class}, splits=("train",), size=size, color=colour)
        make_image_folder(classes={name: 4}, splits=("val", "test"), size=size, color=colour)
    return root


def write_coco(
    root: Path,
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    splits: tuple[str, ...] = ("train", "val"),
) -> Path:
    """Write a COCO set: `images` entries carry `size=(h, w)`; every split gets the same content."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in splits:
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        entries = []
        for img in images:
            h, w = img["size"]
            pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / img["file_name"])
            entries.append({"id": img["id"], "file_name": img["file_name"], "height": h, "width": w})
        coco = {"images": entries, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
    return root


def ann(ann_id: int, image_id: int, category_id: int, bbox: list[float], iscrowd: int = 0) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd}


# ---- runs and their pictures (tests/runs, tests/callbacks) ----
PLOT_CLASSES = {"cat": 6, "dog": 6, "fox": 6}
# Short fits: one epoch of one batch, no sanity check, unless a test needs more.
QUICK = {"max_epochs": 1, "limit_train_batches": 1, "num_sanity_val_steps": 0}


def noise_data(make_image_folder: Callable[..., Path]) -> ImageDataModule:
    """`PLOT_CLASSES` as 32 px noise images in `train/` and `val/`, batches of 4."""
    root = make_image_folder(classes=PLOT_CLASSES, splits=("train", "val"), size=32)
    return ImageDataModule(root, image_size=32, batch_size=4, num_workers=0, augmentation_preset="none")


def finished_fit(
    make_image_folder: Callable[..., Path], backbone: Any, root: Path
) -> tuple[AutoTrainer, ImageClassifier, ImageDataModule]:
    """A completed two-epoch fit of a 3-class classifier on `noise_data` under `root`, plots on."""
    data = noise_data(make_image_folder)
    model = ImageClassifier(backbone, num_classes=3)
    trainer = cpu_trainer(root, max_epochs=2, checkpoint_monitor="val/accuracy", num_sanity_val_steps=0, plots=True)
    trainer.fit(model, datamodule=data)
    return trainer, model, data


def assert_png(path: Path, min_height: int = 200, min_width: int = 300) -> None:
    """`path` is a PNG of a sensible size with something drawn on it."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= min_height and pixels.shape[1] >= min_width, pixels.shape
    assert pixels.shape[0] <= 2000 and pixels.shape[1] <= 2000, pixels.shape
    assert pixels[..., :3].std() > 0  # something is drawn


# ---- trained models for inference (tests/tasks/test_predict.py, test_pretrained.py, test_cli.py) ----
def trained_classifier(root: Path) -> Path:
    """Fit a tiny 3-colour classifier (32 px, 3 epochs) under `root`; return its best checkpoint."""
    from autotimm import BackboneConfig

    for split, count in (("train", 8), ("val", 4)):
        for name, colour in COLOURS.items():
            folder = root / "data" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = np.random.default_rng(i).integers(-20, 20, size=(32, 32, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = ImageDataModule(root / "data", image_size=32, batch_size=8, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), lr=1e-2, scheduler=None)
    trainer = cpu_trainer(root, max_epochs=3, checkpoint_monitor="val/accuracy", num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return Path(trainer.checkpoint_callback.best_model_path)


def training_root(checkpoint: Path) -> Path:
    """The `root` a trained_classifier/trained_detector checkpoint was trained under (with `data/` or `coco/`)."""
    return next(p for p in checkpoint.parents if (p / "coco").is_dir() or (p / "data").is_dir())


def trained_detector(root: Path) -> Path:
    """Fit a tiny detector on 64 px synthetic shapes (1 epoch) under `root`; return its best checkpoint."""
    from autotimm import BackboneConfig, DetectionDataModule, ObjectDetector
    from autotimm.data import make_coco_shapes

    coco = make_coco_shapes(root / "coco", image_size=64, num_train=16, num_val=8)
    data = DetectionDataModule(coco, image_size=64, batch_size=8, num_workers=0, augmentation_preset="none")
    model = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), fpn_channels=64, lr=1e-3)
    trainer = cpu_trainer(root, max_epochs=1, checkpoint_monitor="val/map", num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return Path(trainer.checkpoint_callback.best_model_path)
