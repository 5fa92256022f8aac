"""What `predict` reads: image files, folders, globs, PIL images, arrays and tensors, as 8-bit RGB images.

`collect_images` turns a source into a list of `ImageSource` entries (cheap: files are not opened
yet); `iter_batches` opens them batch by batch, so a folder of any size streams through memory.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from autotimm._errors import check_choice
from autotimm.data.images import CorruptImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "NotAnImageError",
    "OnBadFile",
    "collect_images",
    "iter_batches",
    "to_rgb",
]

log = logging.getLogger(__name__)

#: The file extensions a folder or glob is searched for (lower case).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
_GLOB_CHARS = frozenset("*?[")

OnBadFile = Literal["skip", "raise"]
_ON_BAD_FILE = ("skip", "raise")


class NotAnImageError(CorruptImageError):
    """A file named as an image source is not one (no image extension, or it cannot be decoded)."""


@dataclass
class ImageSource:
    """One image to predict on: a file (`path`) or an in-memory image (`image`), with a `name` for results."""

    name: str
    path: Path | None = None
    image: Image.Image | None = None

    def open(self) -> Image.Image:
        """The image as 8-bit RGB (see `to_rgb`); a file is read now and closed.

        Raises:
            NotAnImageError: If the file cannot be decoded; the message names it.
        """
        if self.image is not None:
            return self.image
        try:
            with Image.open(str(self.path)) as image:
                return to_rgb(image)
        except (OSError, SyntaxError, ValueError) as error:  # PIL's decoders raise all three
            raise NotAnImageError(
                f"Could not read image file '{self.path}' ({type(error).__name__}: {error})."
            ) from error


def to_rgb(image: Image.Image) -> Image.Image:
    """An image as 8-bit RGB: grayscale and palette images are expanded, the alpha channel is dropped
    (as the training loaders do), and 16-bit and 32-bit integer images are scaled to 8 bits (PIL's own
    conversion would clip them to white).

    Examples:
        >>> to_rgb(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0))
        (255, 255, 255)
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) <= 65535 else pixels.max()
        image = Image.fromarray(np.clip(pixels / top * 255 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        scale = 255.0 if pixels.max(initial=0) <= 1 else 1.0
        image = Image.fromarray(np.clip(pixels * scale + 0.5, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, what: str) -> Image.Image:
    """An `[H, W]`, `[H, W, C]` array (uint8, uint16, or float in [0, 1]) as an RGB image."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Expected {what} to be an image array [H, W] or [H, W, 3|4], but got shape {tuple(array.shape)}."
        )
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(f"Expected {what} to be uint8, uint16 or float in [0, 1], but got dtype {array.dtype}.")
    return to_rgb(Image.fromarray(np.ascontiguousarray(array)))


def _tensor_images(tensor: torch.Tensor) -> list[Image.Image]:
    """A `[3, H, W]` or `[B, 3, H, W]` tensor (float in [0, 1], or uint8) as RGB images."""
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"Expected an image tensor [3, H, W] or [B, 3, H, W] (values in [0, 1], not normalised), but got shape "
            f"{tuple(tensor.shape)}."
        )
    arrays = tensor.detach().cpu().permute(0, 2, 3, 1).numpy()
    return [_array_to_image(a, "the tensor") for a in arrays]


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _files_in(folder: Path) -> list[Path]:
    """The image files under `folder` (recursively, sorted); other files are left out and counted in a log line."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if _is_image_file(p)]
    if not images:
        raise FileNotFoundError(
            f"No image files in {str(folder)!r} ({len(files)} other files); looked for {', '.join(IMAGE_EXTENSIONS)}."
        )
    if len(images) < len(files):
        others = [p.name for p in files if not _is_image_file(p)]
        log.info("Left out %d files of %s that are not images: %s", len(others), folder, ", ".join(others[:5]))
    return images


def _path_sources(path: Path, on_bad_file: str) -> list[Path]:
    text = str(path)
    if _GLOB_CHARS & set(text) and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        images = [p for p in matches if p.is_file() and _is_image_file(p)]
        if not images:
            raise FileNotFoundError(f"The pattern {text!r} matches no image files ({len(matches)} other paths).")
        return images
    if path.is_dir():
        return _files_in(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file or folder: {text!r}.")
    if not _is_image_file(path):
        message = f"'{path}' is not an image file (its extension is not one of {', '.join(IMAGE_EXTENSIONS)})."
        if on_bad_file == "raise":
            raise NotAnImageError(message)
        log.warning("Skipped: %s", message)
        return []
    return [path]


def collect_images(source: Any, on_bad_file: OnBadFile = "skip") -> list[ImageSource]:
    """The images a `predict` source stands for, in order; files are not opened yet.

    Args:
        source: A file path, a folder (its image files, recursively, sorted), a glob pattern
            (`"photos/**/*.jpg"`), a PIL image, a numpy array (`[H, W]` or `[H, W, 3]`: uint8,
            uint16, or float in [0, 1]), a tensor (`[3, H, W]` or `[B, 3, H, W]`, values in
            [0, 1], not normalised), or a list of any of these.
        on_bad_file: What to do with a named file that is not an image: `"skip"` it (with a
            warning naming it) or `"raise"` a `NotAnImageError`.

    Returns:
        One `ImageSource` per image.

    Raises:
        FileNotFoundError: If a path does not exist, or a folder or pattern holds no image files.
        NotAnImageError: With `on_bad_file="raise"`, for a named file that is not an image.
        ValueError: If nothing is left to predict on.
        TypeError: If `source` is of none of these types.

    Examples:
        >>> [s.name for s in collect_images(Image.new("RGB", (8, 8)))]
        ['image_0']
    """
    check_choice("on_bad_file", on_bad_file, _ON_BAD_FILE)
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    found: list[ImageSource] = []
    for item in items:
        index = len(found)
        if isinstance(item, (str, os.PathLike)):
            found.extend(ImageSource(str(p), path=p) for p in _path_sources(Path(item), on_bad_file))
        elif isinstance(item, Image.Image):
            found.append(ImageSource(f"image_{index}", image=to_rgb(item)))
        elif isinstance(item, np.ndarray):
            found.append(ImageSource(f"image_{index}", image=_array_to_image(item, "the array")))
        elif isinstance(item, torch.Tensor):
            images = _tensor_images(item)
            found.extend(ImageSource(f"image_{index + i}", image=image) for i, image in enumerate(images))
        else:
            raise TypeError(
                "Expected `source` to be a path, a folder, a glob pattern, a PIL image, a numpy array, a tensor or a "
                f"list of these, but got {type(item).__name__}."
            )
    if not found:
        raise ValueError(f"Nothing to predict on: {source!r} holds no images.")
    return found


def iter_batches(
    sources: Sequence[ImageSource],
    batch_size: int,
    on_bad_file: OnBadFile = "skip",
    skipped: list[str] | None = None,
) -> Iterator[tuple[list[ImageSource], list[Image.Image]]]:
    """The sources in batches of `batch_size` opened images; unreadable files are skipped (a warning names
    each, and `skipped` gets its path) or raise `NotAnImageError`, as `on_bad_file` says.

    Examples:
        >>> batches = list(iter_batches(collect_images([Image.new("RGB", (8, 8))] * 3), 2))
        >>> [len(images) for _, images in batches]
        [2, 1]
    """
    entries: list[ImageSource] = []
    images: list[Image.Image] = []
    for entry in sources:
        try:
            image = entry.open()
        except NotAnImageError as error:
            if on_bad_file == "raise":
                raise
            log.warning("Skipped: %s", error)
            if skipped is not None:
                skipped.append(entry.name)
            continue
        entries.append(entry)
        images.append(image)
        if len(images) == batch_size:
            yield entries, images
            entries, images = [], []
    if images:
        yield entries, images
