"""Deterministic image folders that some examples train on, generated here so that everything runs offline.

Not an example itself: `custom_folder.py`, `medical_classifier.py`, `real_vs_fake.py` and
`clip_frozen_then_unfrozen.py` import it (Python puts the script's folder on `sys.path`).
Each function writes its folder once (to a temporary sibling, renamed when complete) and
returns it as it is on later calls; the folder name holds the arguments, so other
arguments give another folder. The same arguments give the same images.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def _build(root: Path, write: Callable[[Path], None]) -> Path:
    """Return `root`, writing it with `write(folder)` through a temporary sibling if it does not exist."""
    if root.is_dir():
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    partial.rename(root)
    return root


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(path)


# ---------------------------------------------------------------- shapes (custom_folder.py)


def _shape_image(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """One dark shape of a random size, place and rotation on a light background, both with a random tint."""
    tint = rng.uniform(-40, 40, size=3)
    background = np.clip(rng.uniform(160, 255) + tint, 0, 255)
    colour = np.clip(rng.uniform(0, 90) + tint, 0, 255)
    image = Image.new("RGB", (size, size), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.25, 0.45) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    fill = tuple(int(c) for c in colour)
    if shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        sides = 4 if shape == "square" else 3
        draw.regular_polygon((cx, cy, radius), n_sides=sides, rotation=float(rng.uniform(0, 360)), fill=fill)
    return np.asarray(image, dtype=np.float64) + rng.normal(0, 8, size=(size, size, 3))


def make_shapes_folder(root: str | Path, per_class: int = 200, image_size: int = 32, seed: int = 0) -> Path:
    """Write `train/<shape>/`, `test/<shape>/` (JPEG) and `new/` (unlabelled, the true shape in the file name).

    `train/` holds `per_class` images per shape and `test/` a quarter as many; `new/`
    holds two images per shape, named `<shape>_<i>.jpg`.
    """
    root = Path(root) / f"shapes_{per_class}x{image_size}px_seed{seed}"

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        for split, count in (("train", per_class), ("test", max(2, per_class // 4))):
            for shape in SHAPES:
                for i in range(count):
                    _save(_shape_image(rng, shape, image_size), folder / split / shape / f"{i:04d}.jpg")
        for shape in SHAPES:
            for i in range(2):
                _save(_shape_image(rng, shape, image_size), folder / "new" / f"{shape}_{i}.jpg")

    return _build(root, write)


# ---------------------------------------------------------------- real vs synthetic digits


def make_real_vs_fake_folder(root: str | Path, per_class: int = 800, image_size: int = 32, seed: int = 0) -> Path:
    """Write `train/`, `val/`, `test/` (70/15/15%) with the classes `real/` and `synthetic/` (PNG).

    `real` images are scikit-learn's handwritten digit scans, upscaled, with a little
    sensor noise. `synthetic` ones imitate a generator: the blend of two scans of the same
    digit (ghosted strokes), upscaled, with a faint checkerboard pattern of random strength
    (the trace that transposed convolutions leave) and the same noise. The weakest fakes
    are hard to tell from real scans. Needs scikit-learn.
    """
    from sklearn.datasets import load_digits

    root = Path(root) / f"real_vs_fake_{per_class}x{image_size}px_seed{seed}"

    def write(folder: Path) -> None:
        digits = load_digits()
        scans, labels = digits.images / 16.0, digits.target
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:image_size, 0:image_size]
        checkerboard = np.where((yy + xx) % 2 == 0, 1.0, -1.0)

        def upscale(scan: np.ndarray) -> np.ndarray:
            image = Image.fromarray((scan * 255).astype(np.uint8)).resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(image, dtype=np.float64)

        for kind in ("real", "synthetic"):
            for i in range(per_class):
                index = int(rng.integers(len(scans)))
                if kind == "real":
                    pixels = upscale(scans[index])
                else:
                    same_digit = np.flatnonzero(labels == labels[index])
                    partner = int(rng.choice(same_digit))
                    pixels = upscale((scans[index] + scans[partner]) / 2)
                    pixels += rng.uniform(4, 30) * checkerboard
                pixels = pixels + rng.normal(0, rng.uniform(0, 10), size=pixels.shape)
                split = "train" if i < 0.7 * per_class else "val" if i < 0.85 * per_class else "test"
                _save(np.repeat(pixels[..., None], 3, axis=2), folder / split / kind / f"{i:04d}.png")

    return _build(root, write)


# ---------------------------------------------------------------- skin lesions (medical_classifier.py)


def _lesion_image(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
    """A skin-coloured, textured patch with a lesion drawn after the ABCD rule of thumb.

    Malignant lesions tend to be larger, with more irregular borders and a second, darker
    colour; the ranges of benign and malignant lesions overlap, so some cases are ambiguous.
    """
    scale = 4  # drawn at 4x and downsampled, for smooth borders
    big = size * scale
    skin = rng.uniform([190, 130, 110], [240, 190, 160])
    radius = big * (rng.uniform(0.18, 0.36) if malignant else rng.uniform(0.12, 0.28))
    irregularity = rng.uniform(0.15, 0.45) if malignant else rng.uniform(0.0, 0.25)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    wobble = sum(rng.uniform(0, 1) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5, 7)) / 2.0
    radii = radius * (1 + irregularity * wobble)
    cx, cy = big / 2 + rng.uniform(-0.1, 0.1, size=2) * big
    outline = Image.new("L", (big, big), 0)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    ImageDraw.Draw(outline).polygon([tuple(p) for p in points.tolist()], fill=255)
    lesion = np.asarray(outline.resize((size, size), Image.BILINEAR)) >= 128
    pixels = np.empty((size, size, 3))
    pixels[:] = skin
    pixels += rng.normal(0, 6, size=(size, size, 1))  # skin texture
    pixels[lesion] = rng.uniform([110, 60, 35], [160, 110, 75])  # brown
    if rng.uniform() < (0.75 if malignant else 0.2):  # a second, darker colour inside the lesion
        r2 = radius * rng.uniform(0.3, 0.6)
        ox, oy = cx + rng.uniform(-0.4, 0.4, size=2) * radius
        blob = Image.new("L", (big, big), 0)
        ImageDraw.Draw(blob).ellipse((ox - r2, oy - r2, ox + r2, oy + r2), fill=255)
        dark = lesion & (np.asarray(blob.resize((size, size), Image.BILINEAR)) >= 128)
        pixels[dark] = rng.uniform([40, 35, 50], [90, 70, 90])  # blue-grey
    return pixels + rng.normal(0, 5, size=pixels.shape)


def make_lesion_folder(
    root: str | Path, num_images: int = 1200, image_size: int = 48, malignant_fraction: float = 0.25, seed: int = 0
) -> Path:
    """Write `train/`, `val/`, `test/` (70/15/15%) with the classes `benign/` and `malignant/` (PNG).

    About `malignant_fraction` of the images are malignant (an imbalanced set, as in
    dermatology data sets).
    """
    root = Path(root) / f"lesions_{num_images}x{image_size}px_seed{seed}"

    def write(folder: Path) -> None:
        rng = np.random.default_rng(seed)
        for i in range(num_images):
            malignant = bool(rng.uniform() < malignant_fraction)
            split = "train" if i < 0.7 * num_images else "val" if i < 0.85 * num_images else "test"
            kind = "malignant" if malignant else "benign"
            _save(_lesion_image(rng, image_size, malignant), folder / split / kind / f"{i:04d}.png")

    return _build(root, write)
