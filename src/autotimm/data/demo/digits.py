"""Small, real demo data written as an image folder, for examples and tests that run offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from autotimm._deprecation import renamed_argument
from autotimm._errors import check_image_size, check_number, check_seed
from autotimm.data.demo.folder import DemoKind, build_demo_folder

__all__ = ["make_digits_folder"]

log = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")


def _check_params(
    image_size: int, val_split: float, test_split: float, seed: int, max_per_class: int | None
) -> dict[str, Any]:
    check_image_size(image_size, pair=False)
    check_seed(seed)
    if max_per_class is not None:
        check_number("max_per_class", max_per_class, low=1, integer=True)
    val_split = float(check_number("val_split", val_split, low=0, high=1))
    test_split = float(check_number("test_split", test_split, low=0, high=1))
    if val_split + test_split >= 1:
        raise ValueError(
            f"Expected `val_split + test_split` < 1 to leave images for training, but got {val_split} + {test_split}."
        )
    needed = 1 + (val_split > 0) + (test_split > 0)
    if max_per_class is not None and max_per_class < needed:
        raise ValueError(
            f"Expected `max_per_class` >= {needed} (one image per class in each non-empty split), "
            f"but got {max_per_class!r}."
        )
    return {
        "image_size": image_size,
        # The manifest's keys (a file format): folders written before the rename stay reusable.
        "val_fraction": val_split,
        "test_fraction": test_split,
        "seed": seed,
        "max_per_class": max_per_class,
    }


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("make_digits_folder needs scikit-learn: pip install scikit-learn.") from e
    digits = load_digits()
    return digits.images, digits.target


def _split_counts(n: int, val_split: float, test_split: float) -> dict[str, int]:
    n_val = max(1, round(val_split * n)) if val_split > 0 else 0
    n_test = max(1, round(test_split * n)) if test_split > 0 else 0
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def _is_complete(root: Path, manifest: dict[str, Any]) -> bool:
    for split, per_class in manifest["counts"].items():
        for label, count in per_class.items():
            folder = root / split / label
            if not folder.is_dir() or sum(1 for p in folder.iterdir() if p.suffix == ".png") != count:
                return False
    return True


def _write(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Write the images into `folder`; return the image counts per split and class."""
    images, targets = _load_digits()
    rng = np.random.default_rng(params["seed"])
    size = params["image_size"]
    counts: dict[str, dict[str, int]] = {split: {} for split in _SPLITS}
    for label in sorted(set(targets.tolist())):
        members = rng.permutation(np.flatnonzero(targets == label))
        if params["max_per_class"] is not None:
            members = members[: params["max_per_class"]]
        n = _split_counts(len(members), params["val_fraction"], params["test_fraction"])
        parts = {
            "test": members[: n["test"]],
            "val": members[n["test"] : n["test"] + n["val"]],
            "train": members[n["test"] + n["val"] :],
        }
        for split, indices in parts.items():
            if len(indices) == 0:
                continue
            out = folder / split / str(label)
            out.mkdir(parents=True)
            for i in sorted(indices.tolist()):
                pixels = np.round(images[i] * (255.0 / 16.0)).astype(np.uint8)  # digits are 0..16
                image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
                image.convert("RGB").save(out / f"{i:04d}.png")
            counts[split][str(label)] = len(indices)
    return {split: per_class for split, per_class in counts.items() if per_class}


_DIGITS = DemoKind(kind="digits", version=1, title="digits demo", maker="make_digits_folder", is_complete=_is_complete)


def make_digits_folder(
    root: str | os.PathLike[str],
    image_size: int = 32,
    val_split: float = 0.15,
    test_split: float = 0.15,
    seed: int = 0,
    max_per_class: int | None = None,
    *,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
) -> Path:
    """Write scikit-learn's handwritten digits (1797 real 8x8 scans, 10 classes) as an image folder.

    Creates `root/train/<digit>/`, `root/val/<digit>/` and `root/test/<digit>/` (folders
    `"0"`..`"9"`) of RGB PNG files upscaled to `image_size`, split per class (stratified)
    with a generator seeded by `seed`, so the same arguments give the same files. A split
    whose fraction is 0 is not written. A manifest (`autotimm_demo.json`) records the
    arguments: calling again with the same ones reuses the folder. The files are written
    to a temporary sibling folder and moved into place when complete.

    Args:
        root: The folder to create (it may exist if empty).
        image_size: Side of the square images, >= 32 (`autotimm._errors.MIN_IMAGE_SIZE`).
        val_split: Fraction of each class written to `val/`, in [0, 1).
        test_split: Fraction of each class written to `test/`, in [0, 1).
        seed: Seed of the split and of the `max_per_class` subsample, an int in `[0, 2**32)`.
        max_per_class: Keep at most this many images per class (for quick tests).
        val_fraction: Deprecated name of `val_split`.
        test_fraction: Deprecated name of `test_split`.

    Returns:
        `root` as a `pathlib.Path`.

    Raises:
        ModuleNotFoundError: If scikit-learn is not installed.
        FileExistsError: If `root` is a file, or a non-empty folder that is not a digits demo.
        ValueError: If an argument is out of range, or `root` holds a demo made with other arguments.

    Examples:
        >>> from autotimm.data import ImageDataModule, make_digits_folder
        >>> root = make_digits_folder("demo_digits", image_size=32)  # doctest: +SKIP
        >>> ImageDataModule(root, image_size=32).num_classes  # doctest: +SKIP
        10
    """
    val_split = renamed_argument("val_fraction", val_fraction, "val_split", val_split, 0.15, owner="make_digits_folder")
    test_split = renamed_argument(
        "test_fraction", test_fraction, "test_split", test_split, 0.15, owner="make_digits_folder"
    )
    params = _check_params(image_size, val_split, test_split, seed, max_per_class)
    root = Path(root).expanduser()
    root, counts = build_demo_folder(root, params, _DIGITS, lambda folder: _write(folder, params))
    if counts is not None:
        n_images = sum(sum(per_class.values()) for per_class in counts.values())
        log.info("Wrote the digits demo (%d images) to '%s'.", n_images, root)
    return root
