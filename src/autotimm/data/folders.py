"""Class folders on disk: layout checks, scanning, and reading image files with clear errors."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder, has_file_allowed_extension

from autotimm._warnings import warn

__all__ = ["CorruptImageError", "IMAGE_EXTENSIONS", "LAYOUT", "load_rgb_image"]

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
LAYOUT = (
    "Expected layout: <data_dir>/train/<class_name>/<image files>, with optional "
    "<data_dir>/val/<class_name>/... and <data_dir>/test/<class_name>/..."
)
# Files that operating systems drop into folders; never reported as stray files.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
_MAX_LISTED = 5


class CorruptImageError(OSError):
    """Raised when a file with an image extension cannot be decoded; the message names the file."""


def load_rgb_image(path: str) -> Image.Image:
    """Open an image file as RGB, raising `CorruptImageError` naming `path` if it cannot be decoded.

    A module-level function, so datasets using it pickle into DataLoader workers.

    Examples:
        >>> image = load_rgb_image("cat.png")  # doctest: +SKIP
    """
    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's decoders raise all three
        raise CorruptImageError(
            f"Could not read image file '{path}' ({type(e).__name__}: {e}). Remove or replace this file."
        ) from e


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


class _ImageFileFilter:
    """`is_valid_file` for torchvision's `make_dataset` that records the non-image files it skips."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.skipped: list[str] = []

    def __call__(self, path: str) -> bool:
        if any(_is_hidden(part) for part in Path(os.path.relpath(path, self.root)).parts):
            return False
        if has_file_allowed_extension(path, IMAGE_EXTENSIONS):
            return True
        self.skipped.append(path)
        return False


class _ClassFolders(ImageFolder):
    """torchvision's `ImageFolder`, except that hidden folders (`.ipynb_checkpoints`) are not classes."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = _list_class_folders(Path(directory))
        return classes, {name: i for i, name in enumerate(classes)}


def _list_class_folders(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not _is_hidden(e.name))


def _check_folder_layout(data_dir: Path) -> list[str]:
    """Check the folder layout (cheap: directory listings only) and return the class names."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"`data_dir` '{data_dir}' does not exist or is not a folder. {LAYOUT}")
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        found = sorted(p.name for p in data_dir.iterdir())[:10]
        raise FileNotFoundError(f"No 'train' folder in '{data_dir}' (it holds {found}). {LAYOUT}")
    classes = _list_class_folders(train_dir)
    if not classes:
        n_files = sum(1 for p in train_dir.iterdir() if p.is_file())
        raise FileNotFoundError(
            f"No class folders in '{train_dir}' ({n_files} files lie directly in it). "
            f"Put each class's images in its own sub-folder. {LAYOUT}"
        )
    for split in ("val", "test"):
        split_dir = data_dir / split
        if not split_dir.is_dir():
            continue
        other = _list_class_folders(split_dir)
        missing, extra = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
        if missing or extra:
            raise ValueError(
                f"The class folders of '{split_dir}' do not match those of '{train_dir}': "
                f"missing in {split}/: {missing}; extra in {split}/: {extra}. "
                f"Every split needs the same class folders (an empty one is not allowed either)."
            )
    return classes


def _scan_split(directory: Path) -> ImageFolder:
    """Build the (untransformed) `ImageFolder` of one split; warn on non-image files, raise on empty classes."""
    is_image = _ImageFileFilter(str(directory))
    dataset = _ClassFolders(str(directory), loader=load_rgb_image, is_valid_file=is_image, allow_empty=True)
    if is_image.skipped:
        listed = ", ".join(f"'{p}'" for p in is_image.skipped[:_MAX_LISTED])
        more = f" and {len(is_image.skipped) - _MAX_LISTED} more" if len(is_image.skipped) > _MAX_LISTED else ""
        warn(
            f"Ignoring {len(is_image.skipped)} file(s) without an image extension in '{directory}': "
            f"{listed}{more}. Image extensions: {IMAGE_EXTENSIONS}."
        )
    counts = Counter(dataset.targets)
    empty = [name for name, idx in dataset.class_to_idx.items() if counts[idx] == 0]
    if empty:
        raise FileNotFoundError(
            f"Class folder(s) {empty} in '{directory}' hold no image files (extensions {IMAGE_EXTENSIONS}). "
            f"Add images or remove the folder(s) from every split."
        )
    return dataset
