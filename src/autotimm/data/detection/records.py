"""The one record every detection format is read into, and the checks all formats share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotimm._warnings import warn

__all__ = ["CocoRecord", "check_files", "first", "make_record", "warn_degenerate"]

_SHOW = 5  # how many offending names an error or warning lists


@dataclass(frozen=True)
class CocoRecord:
    """One image of a split: its file, id and boxes (`xyxy`).

    Boxes are in original pixels, or in `[0, 1]` of the image's width and height when
    `normalized` (YOLO labels: the pixels are known once the image is read).
    """

    path: Path
    image_id: int
    boxes: np.ndarray  # float32 [N, 4] xyxy
    labels: np.ndarray  # int64 [N], contiguous 0-based
    iscrowd: np.ndarray  # int64 [N]
    normalized: bool = False


def first(items: Sequence[Any]) -> str:
    """The first few of `items`, comma-separated, with how many more there are.

    Examples:
        >>> first(["a", "b", "c", "d", "e", "f", "g"])
        'a, b, c, d, e and 2 more'
    """
    shown = ", ".join(str(i) for i in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


def make_record(
    path: Path,
    image_id: int,
    boxes: list[Sequence[float]],
    labels: list[int],
    iscrowd: list[int],
    normalized: bool = False,
) -> CocoRecord:
    """Build a record from per-box lists (`xyxy` boxes).

    Examples:
        >>> make_record(Path("a.png"), 1, [[0, 0, 4, 4]], [2], [0]).boxes.shape
        (1, 4)
    """
    return CocoRecord(
        path=path,
        image_id=image_id,
        boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64),
        iscrowd=np.array(iscrowd, dtype=np.int64),
        normalized=normalized,
    )


def warn_degenerate(source: Any, where: Sequence[Any], what: str = "annotation ids") -> None:
    """Warn that boxes of non-positive width or height in `source` were dropped, naming the first few."""
    if where:
        warn(f"'{source}': dropped {len(where)} box(es) with non-positive width or height ({what} {first(where)}).")


def check_files(paths: Sequence[Path], source: Any, folder: Path | None = None) -> None:
    """Raise `FileNotFoundError` naming the first few of `paths` that are not files, and their count.

    Examples:
        >>> check_files([Path("nowhere.png")], "train.csv")  # doctest: +SKIP
        FileNotFoundError: 1 image file(s) named in 'train.csv' do not exist: nowhere.png.
    """
    missing = [p.name if folder is not None else str(p) for p in paths if not p.is_file()]
    if missing:
        inside = f" in '{folder}'" if folder is not None else ""
        raise FileNotFoundError(
            f"{len(missing)} image file(s) named in '{source}' do not exist{inside}: {first(missing)}."
        )


class DetectionSource(ABC):
    """Where the splits of one annotation format lie: class names, which splits exist, their records.

    Subclasses set `class_names` and `category_ids` when built (checking the training split's
    layout), and read a split's records, with every check, in `read`.
    """

    format: str
    layout: str
    class_names: list[str]
    category_ids: list[int]

    @abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether `split` (`"train"`, `"val"` or `"test"`) is there."""

    @abstractmethod
    def read(self, split: str) -> list[CocoRecord]:
        """Read and check the records of `split`."""

    @abstractmethod
    def where(self, split: str) -> str:
        """Where `split` was looked for, for messages."""
