"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from autotimm import AutoTrainer


def cpu_trainer(root: Path, **kwargs: Any) -> AutoTrainer:
    """A quiet CPU `AutoTrainer` writing under `root`; `kwargs` override the defaults."""
    defaults = {
        "accelerator": "cpu",
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "plots": False,  # drawn and checked in test_plots.py; elsewhere they only cost time
    }
    return AutoTrainer(**{**defaults, **kwargs})


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
