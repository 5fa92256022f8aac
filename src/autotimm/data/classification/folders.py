"""Class folders on disk: layout checks and scanning into a torchvision `ImageFolder`."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder, has_file_allowed_extension

from autotimm._warnings import warn
from autotimm.data.images import load_rgb_image

__all__ = ["IMAGE_EXTENSIONS", "LAYOUT", "check_folder_layout", "scan_split"]

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
LAYOUT = (
    "Expected layout: <data_dir>/train/<class_name>/<image files>, with optional "
    "<data_dir>/val/<class_name>/... and <data_dir>/test/<class_name>/..."
)
# Files that operating systems drop into folders; never reported as stray files.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
_MAX_LISTED = 5


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


def check_folder_layout(data_dir: Path) -> list[str]:
    """Check the folder layout (cheap: directory listings only) and return the class names.

    Raises:
        FileNotFoundError: If `data_dir`, its `train/` folder or its class folders are missing.
        ValueError: If the class folders of `val/` or `test/` differ from those of `train/`.

    Examples:
        >>> check_folder_layout(Path("data/pets"))  # doctest: +SKIP
        ['cat', 'dog']
    """
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


def scan_split(directory: Path) -> ImageFolder:
    """Build the (untransformed) `ImageFolder` of one split; warn on non-image files, raise on empty classes.

    Examples:
        >>> scan_split(Path("data/pets/train")).classes  # doctest: +SKIP
        ['cat', 'dog']
    """
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
