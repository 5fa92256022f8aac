"""A small synthetic COCO detection data set (filled shapes on textured backgrounds), for examples and tests."""

from __future__ import annotations

import colorsys
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from autotimm._errors import check_choice, check_image_size, check_number, check_seed
from autotimm.data.demo.detection_formats import SHAPE_FORMATS, ShapesFormat, convert_coco_folder, count_images
from autotimm.data.demo.folder import DemoKind, build_demo_folder

__all__ = ["DIFFICULTIES", "Difficulty", "make_coco_shapes"]

log = logging.getLogger(__name__)

_VERSION = 1
_SPLITS = ("train", "val", "test")
_NEGATIVE_FRACTION = 0.05
_MIN_VISIBLE_PIXELS = 4  # an instance occluded down to fewer pixels is dropped

Difficulty = Literal["easy", "hard"]
DIFFICULTIES: tuple[str, ...] = ("easy", "hard")


def _draw_circle(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    r = size / 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)


def _draw_square(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    draw.regular_polygon((cx, cy, size / 2), n_sides=4, rotation=float(rng.uniform(0, 90)), fill=255)


def _draw_triangle(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    draw.regular_polygon((cx, cy, size / 2), n_sides=3, rotation=float(rng.uniform(0, 120)), fill=255)


def _draw_diamond(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    rx, ry = size / 2, size / 3
    draw.polygon([(cx, cy - rx), (cx + ry, cy), (cx, cy + rx), (cx - ry, cy)], fill=255)


def _draw_ring(draw: ImageDraw.ImageDraw, cx: float, cy: float, size: float, rng: np.random.Generator) -> None:
    r = size / 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(2, round(size / 6)))


_ShapeFn = Callable[[ImageDraw.ImageDraw, float, float, float, np.random.Generator], None]

# The shapes `make_coco_shapes` can draw; `classes` picks among them.
_SHAPES: dict[str, _ShapeFn] = {
    "circle": _draw_circle,
    "square": _draw_square,
    "triangle": _draw_triangle,
    "diamond": _draw_diamond,
    "ring": _draw_ring,
}


def _check_params(
    image_size: int,
    num_train: int,
    num_val: int,
    num_test: int,
    classes: Sequence[str],
    max_objects: int,
    seed: int,
    difficulty: str,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "image_size": check_image_size(image_size, pair=False),
        "num_train": check_number("num_train", num_train, low=1, integer=True),
        "num_val": check_number("num_val", num_val, low=0, integer=True),
        "num_test": check_number("num_test", num_test, low=0, integer=True),
    }
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise TypeError(f"Expected `classes` to be a sequence of shape names, but got {classes!r}.")
    if len(classes) == 0:
        raise ValueError(f"Expected `classes` to name at least one of {sorted(_SHAPES)}, but got {classes!r}.")
    for name in classes:
        if name not in _SHAPES:
            raise ValueError(f"Expected each of `classes` to be one of {sorted(_SHAPES)}, but got {name!r}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"Expected `classes` to hold distinct names, but got {list(classes)!r}.")
    params["classes"] = list(classes)
    params["max_objects"] = check_number("max_objects", max_objects, low=0, integer=True)
    params["seed"] = check_seed(seed)
    check_choice("difficulty", difficulty, DIFFICULTIES)
    params["difficulty"] = difficulty
    return params


def _split_sizes(params: dict[str, Any]) -> dict[str, int]:
    sizes = {split: params[f"num_{split}"] for split in _SPLITS}
    return {split: n for split, n in sizes.items() if n > 0}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation textured background: a grey level with a faint tint, smooth waves and grain."""
    base = rng.uniform(50, 205)
    tint = rng.uniform(-8, 8, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    texture = np.zeros((size, size))
    for _ in range(3):
        fx, fy = rng.uniform(0.5, 6, size=2)
        texture += rng.uniform(4, 12) * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    grain = rng.normal(0, 6, size=(size, size))
    luminance = base + texture + grain  # the same on every channel, so the tint alone sets the saturation
    return np.clip(luminance[..., None] + tint, 0, 255)


def _colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour, far from the grey backgrounds (max - min channel >= 0.6 * 0.55 * 255)."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    return np.round(np.array(rgb) * 255)


def _hard_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A coloured background: a smooth two-colour field, stripes or a checkerboard, as busy as the shapes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    first, second = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    kind = int(rng.integers(3))
    if kind == 0:  # a smooth field: the two colours blended along a wave
        fx, fy = rng.uniform(0.3, 2, size=2)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # stripes at any angle, 4..16 periods across the image
        angle, periods = rng.uniform(0, np.pi), rng.uniform(4, 16)
        weight = (np.sin(2 * np.pi * periods * (np.cos(angle) * xx + np.sin(angle) * yy)) > 0).astype(np.float64)
    else:  # a checkerboard of 4..12 cells across
        cells = rng.uniform(4, 12)
        weight = ((np.floor(cells * xx) + np.floor(cells * yy)) % 2).astype(np.float64)
    return first * weight[..., None] + second * (1 - weight[..., None])


def _draw_distractors(pixels: np.ndarray, rng: np.random.Generator) -> None:
    """Un-annotated thin lines and dots in random colours, drawn onto `pixels` in place."""
    size = pixels.shape[0]
    canvas = Image.fromarray(np.round(pixels).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, size=4))
        draw.line((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)), width=1)
    for _ in range(int(rng.integers(2, 12))):
        cx, cy = rng.uniform(0, size, size=2)
        r = float(rng.uniform(1, max(1.5, size * 3 / 128)))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(c) for c in rng.integers(0, 256, size=3)))
    pixels[...] = np.asarray(canvas, dtype=np.float64)


def _render(
    rng: np.random.Generator, size: int, num_objects: int, classes: Sequence[str], difficulty: str
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Draw one image; return its pixels and, per visible instance, `(class index, visible mask)`."""
    hard = difficulty == "hard"
    pixels = _hard_background(rng, size) if hard else _background(rng, size)
    if hard:
        _draw_distractors(pixels, rng)
    owner = np.full((size, size), -1, dtype=np.int64)  # which instance each pixel shows; later shapes occlude
    labels = []
    lo = max(6, round(size * 12 / 128))
    hi = max(lo + 1, round(size * (60 if hard else 48) / 128))
    for index in range(num_objects):
        label = int(rng.integers(len(classes)))
        shape_size = float(rng.uniform(lo, hi))
        # The centre may lie near the border, so some shapes are cut by the image edge.
        cx, cy = rng.uniform(shape_size / 4, size - shape_size / 4, size=2)
        mask_image = Image.new("L", (size, size), 0)
        _SHAPES[classes[label]](ImageDraw.Draw(mask_image), float(cx), float(cy), shape_size, rng)
        mask = np.asarray(mask_image) > 0
        pixels[mask] = rng.uniform(0, 255, size=3) if hard else _colour(rng)
        owner[mask] = index
        labels.append(label)
    if hard:
        pixels += rng.normal(0, rng.uniform(4, 14), size=pixels.shape)
    instances = []
    for index, label in enumerate(labels):
        visible = owner == index
        if visible.sum() >= _MIN_VISIBLE_PIXELS:
            instances.append((label, visible))
    return np.round(np.clip(pixels, 0, 255)).astype(np.uint8), instances


def _tight_box(mask: np.ndarray) -> list[int]:
    """The `[x, y, width, height]` box (pixels) that just holds the `True` pixels of `mask`."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _write_split(folder: Path, split: str, params: dict[str, Any], first_image_id: int, first_ann_id: int) -> dict:
    """Write the images of one split and return its COCO dictionary (also written to `annotations/`)."""
    size, classes = params["image_size"], params["classes"]
    n = params[f"num_{split}"]
    # One generator per split, so a split's content does not depend on the size of the others.
    rng = np.random.default_rng([params["seed"], _SPLITS.index(split)])
    n_negative = max(1, round(_NEGATIVE_FRACTION * n)) if n >= 2 else 0
    negative = set(rng.choice(n, size=n_negative, replace=False).tolist()) if n_negative else set()
    image_dir = folder / f"{split}2017"
    image_dir.mkdir()
    images, annotations = [], []
    ann_id = first_ann_id
    for i in range(n):
        image_id = first_image_id + i
        num_objects = (
            0 if i in negative or params["max_objects"] == 0 else int(rng.integers(1, params["max_objects"] + 1))
        )
        pixels, instances = _render(rng, size, num_objects, classes, params["difficulty"])
        file_name = f"{image_id:012d}.png"
        Image.fromarray(pixels).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for label, mask in instances:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": _tight_box(mask),
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    coco = {
        "info": {"description": f"autotimm synthetic shapes ({split})", "version": str(_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(classes)],
    }
    (folder / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
    return coco


def _write(folder: Path, params: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Write every split into `folder`; return the image and box counts per split."""
    (folder / "annotations").mkdir()
    counts: dict[str, dict[str, int]] = {}
    image_id, ann_id = 1, 1  # ids are unique across splits, so the splits can be merged
    for split in _split_sizes(params):
        coco = _write_split(folder, split, params, image_id, ann_id)
        counts[split] = {"images": len(coco["images"]), "annotations": len(coco["annotations"])}
        image_id += len(coco["images"])
        ann_id += len(coco["annotations"])
    convert_coco_folder(folder, list(counts), params.get("format", "coco"))
    return counts


def _is_complete(root: Path, manifest: dict[str, Any]) -> bool:
    format = manifest.get("params", {}).get("format", "coco")
    if format == "coco" and not (root / "annotations").is_dir():
        return False
    return all(count_images(root, split, format) == c["images"] for split, c in manifest.get("counts", {}).items())


_DEMO = DemoKind(
    kind="coco_shapes", version=_VERSION, title="COCO shapes", maker="make_coco_shapes", is_complete=_is_complete
)


def make_coco_shapes(
    root: str | os.PathLike[str],
    image_size: int = 128,
    num_train: int = 200,
    num_val: int = 50,
    num_test: int = 0,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    max_objects: int = 4,
    seed: int = 0,
    difficulty: Difficulty = "easy",
    format: ShapesFormat = "coco",
) -> Path:
    """Write a synthetic object detection data set in the COCO layout: filled shapes on textured backgrounds.

    Creates `root/train2017/`, `root/val2017/` and, if `num_test > 0`, `root/test2017/` of
    square RGB PNG images (lossless, so boxes are pixel-exact), and
    `root/annotations/instances_{train,val,test}2017.json` in the COCO format: `images`
    (`id`, `file_name`, `width`, `height`), `annotations` (`id`, `image_id`, `category_id`,
    `bbox` as `[x, y, width, height]` in pixels, `area` in visible pixels, `iscrowd=0`) and
    `categories` (`id` 1..K in the order of `classes`, `name`). Image and annotation ids
    are unique across the splits.

    Each image has a grey, textured, noisy background and 1..`max_objects` shapes of
    saturated colours and sizes of about 9%..38% of `image_size` (12..48 px at 128);
    shapes may overlap (later ones occlude earlier ones) and be cut by the border. About
    5% of the images (at least one per split of two or more images) have no objects. Each
    box is the tight box of the shape's visible pixels; a shape occluded to fewer than 4
    pixels gets no annotation.

    `difficulty="hard"` makes a set on which a detector that does not really learn boxes
    scores near zero: coloured backgrounds (smooth two-colour fields, stripes at any angle,
    checkerboards), un-annotated thin lines and dots, shapes of any colour (also close to
    the background's) from 9% to 47% of `image_size` (12..60 px at 128), and Gaussian
    pixel noise of a standard deviation drawn from 4..14 per image.

    The same arguments give the same bytes. A manifest (`autotimm_demo.json`) records the
    arguments: calling again with the same ones reuses the folder. The files are written to
    a temporary sibling folder and moved into place when complete.

    Args:
        root: The folder to create (it may exist if empty).
        image_size: Side of the square images, >= 32.
        num_train: Number of training images, >= 1.
        num_val: Number of validation images (0 writes no `val2017/`).
        num_test: Number of test images (0 writes no `test2017/`).
        classes: Names of the shapes to draw, in category order; any of `"circle"`,
            `"square"`, `"triangle"`, `"diamond"`, `"ring"`.
        max_objects: Most shapes in one image (0 makes every image a negative).
        seed: Seed of the images, an int in `[0, 2**32)`.
        difficulty: `"easy"` (grey backgrounds, saturated shapes) or `"hard"` (see above).
        format: The layout written, with the same images and boxes: `"coco"` (above), `"yolo"`
            (`data.yaml`, `images/<split>/`, `labels/<split>/*.txt` of normalised `class cx cy w h`),
            `"voc"` (`Annotations/*.xml`, `JPEGImages/`, `ImageSets/Main/<split>.txt`) or `"csv"`
            (`images/`, `<split>.csv` with a row per box, `image_path,x_min,y_min,x_max,y_max,label`).

    Returns:
        `root` as a `pathlib.Path`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, or `root` holds shapes made with other arguments.
        FileExistsError: If `root` is a file, or a non-empty folder that is not a COCO shapes folder.

    Example:
        >>> from autotimm.data import make_coco_shapes
        >>> root = make_coco_shapes("demo_shapes", num_train=20, num_val=5)  # doctest: +SKIP
        >>> sorted(p.name for p in (root / "annotations").iterdir())  # doctest: +SKIP
        ['instances_train2017.json', 'instances_val2017.json']
    """
    params = _check_params(image_size, num_train, num_val, num_test, classes, max_objects, seed, difficulty)
    check_choice("format", format, SHAPE_FORMATS)
    if format != "coco":  # COCO folders made before `format` existed keep their manifest
        params["format"] = format
    root = Path(root).expanduser()
    root, counts = build_demo_folder(root, params, _DEMO, lambda folder: _write(folder, params))
    if counts is None:
        return root
    log.info(
        "Wrote COCO shapes (%s) in the %s layout to '%s'.",
        ", ".join(f"{split}: {c['images']} images, {c['annotations']} boxes" for split, c in counts.items()),
        format,
        root,
    )
    return root
