"""Classification data from a table: a CSV file, a DataFrame or a list of records, checked when read.

A table has one row per image: a path column (relative to an image folder), and the label as a
class name or index, a delimited set of names (multi-label), or one 0/1 column per label; an
optional split column (`train`, `val`, `test`) and an optional group column (images that must
stay in one split, such as several photographs of one lesion).
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from autotimm._errors import closest, unknown_choice
from autotimm._warnings import warn
from autotimm.data.images import load_rgb_image

__all__ = [
    "SPLITS",
    "ImageTable",
    "ImageTableDataset",
    "TableColumns",
    "check_groups",
    "class_counts",
    "encode",
    "label_indices",
    "read_table",
    "table_classes",
]

SPLITS = ("train", "val", "test")
_MAX_LISTED = 5
_TRUE, _FALSE = frozenset({"1", "1.0", "true"}), frozenset({"0", "0.0", "false"})


@dataclass(frozen=True)
class TableColumns:
    """Which columns of a table hold what.

    Args:
        image_column: The image path (relative to the image folder, or absolute).
        label_column: The label: a class name or index, or with `label_delim` a delimited set of names.
        label_columns: One 0/1 column per label (multi-label); `label_column` is then not read.
        label_delim: Splits `label_column` into several names (multi-label), e.g. `" "` for `"cat dog"`.
        split_column: `train`, `val` or `test` per row; `None` to split the table by `val_split`.
        group_column: Rows of one group stay in one split (several images of one lesion).
        image_suffix: Appended to each path (`".jpg"` when the table lists `ISIC_0027419`).

    Examples:
        >>> TableColumns(label_delim=" ").multi_label
        True
    """

    image_column: str = "image_path"
    label_column: str = "label"
    label_columns: tuple[str, ...] | None = None
    label_delim: str | None = None
    split_column: str | None = None
    group_column: str | None = None
    image_suffix: str = ""

    @property
    def multi_label(self) -> bool:
        """Whether a row holds a set of labels (0/1 columns or a delimited column)."""
        return self.label_columns is not None or self.label_delim is not None

    def checked(self, has_table: bool, class_names: Sequence[str] | None) -> TableColumns:
        """These options, checked, with `label_columns` as a tuple; `has_table`: whether a table was given.

        Raises:
            TypeError: If an option has the wrong type, or table options come without a table.
            ValueError: If both `label_columns` and `label_delim` are given, or `class_names` repeats a name.

        Examples:
            >>> TableColumns(label_columns=["cat", "dog"]).checked(True, None).label_columns
            ('cat', 'dog')
        """
        if not has_table:
            table_only = {"label_columns": self.label_columns, "label_delim": self.label_delim}
            table_only.update(split_column=self.split_column, group_column=self.group_column, class_names=class_names)
            given = [name for name, value in table_only.items() if value is not None]
            if given:
                raise TypeError(f"{given} describe a table: give it as `train_csv=...` too.")
        for name in ("image_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TypeError(
                    f"Expected `{name}` to be a column name (a non-empty str), but got {getattr(self, name)!r}."
                )
        if not isinstance(self.image_suffix, str):
            raise TypeError(f"Expected `image_suffix` to be a str, but got {self.image_suffix!r}.")
        for name in ("label_delim", "split_column", "group_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"Expected `{name}` to be a non-empty str or None, but got {value!r}.")
        if class_names is not None and (
            isinstance(class_names, str) or len(set(map(str, class_names))) != len(class_names) or len(class_names) < 2
        ):
            raise ValueError(
                f"Expected `class_names` to be a list of 2 or more distinct names, but got {class_names!r}."
            )
        label_columns = self.label_columns
        if label_columns is None:
            return self
        if isinstance(label_columns, str) or not label_columns or not all(isinstance(c, str) for c in label_columns):
            raise TypeError(f"Expected `label_columns` to be a list of column names, but got {label_columns!r}.")
        if self.label_delim is not None:
            raise ValueError("Give `label_columns` (0/1 columns) or `label_delim` (a delimited column), not both.")
        return replace(self, label_columns=tuple(label_columns))

    def needed(self) -> list[str]:
        """The columns a table must have."""
        labels = list(self.label_columns) if self.label_columns is not None else [self.label_column]
        optional = [c for c in (self.split_column, self.group_column) if c is not None]
        return [self.image_column, *labels, *optional]


@dataclass
class ImageTable:
    """The rows of one table, read and checked: absolute paths, raw labels, splits and groups.

    `labels` holds a class name or index per row (single-label) or a tuple of names per row
    (multi-label); `table_classes` and `encode` turn them into class indices.
    """

    name: str
    paths: list[str]
    labels: list[Any]
    splits: list[str] | None = None
    groups: list[str] | None = None
    rows: list[str] = field(default_factory=list)  # how messages name each row ("line 3", "row 2")

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, split: str) -> ImageTable:
        """The rows whose split is `split` (all rows when the table has no split column)."""
        if self.splits is None:
            return self
        keep = [i for i, s in enumerate(self.splits) if s == split]
        pick = lambda values: None if values is None else [values[i] for i in keep]  # noqa: E731
        return replace(
            self,
            name=f"{self.name} ({split} rows)",
            paths=pick(self.paths),
            labels=pick(self.labels),
            splits=None,
            groups=pick(self.groups),
            rows=pick(self.rows),
        )

    def __add__(self, other: ImageTable) -> ImageTable:
        join = lambda a, b: None if a is None or b is None else a + b  # noqa: E731
        return ImageTable(
            f"{self.name} + {other.name}",
            self.paths + other.paths,
            self.labels + other.labels,
            None,
            join(self.groups, other.groups),
            self.rows + other.rows,
        )


def _records(table: Any, argument: str, columns: TableColumns) -> tuple[list[Mapping[str, Any]], list[str], str]:
    """The rows of `table` as mappings, its column names, and how messages name it."""
    if isinstance(table, (str, os.PathLike)):
        path = Path(table).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"`{argument}` '{path}' does not exist or is not a file.")
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return rows, list(reader.fieldnames or []), f"'{path}'"
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # a pandas (or pandas-like) DataFrame
        return table.to_dict("records"), [str(c) for c in table.columns], f"the `{argument}` DataFrame"
    if isinstance(table, Sequence) and not isinstance(table, (str, bytes)):
        positional = [columns.image_column, columns.label_column]
        rows = []
        for i, row in enumerate(table):
            if isinstance(row, Mapping):
                rows.append(row)
            elif isinstance(row, Sequence) and not isinstance(row, (str, bytes)) and len(row) == 2:
                rows.append(dict(zip(positional, row, strict=True)))
            else:
                raise TypeError(
                    f"Expected each record of `{argument}` to be a mapping or a (path, label) pair, but row {i} is "
                    f"{type(row).__name__} {row!r}."
                )
        names = list(dict.fromkeys(k for row in rows for k in row)) if rows else []
        return rows, names, f"the `{argument}` records"
    raise TypeError(
        f"Expected `{argument}` to be a CSV path, a DataFrame or a list of records, but got "
        f"{type(table).__name__} {table!r}."
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _index(value: Any) -> int | None:
    """`value` as a class index if it is an integer (`3`, `"3"`, `3.0` from a DataFrame), else `None`."""
    if isinstance(value, bool):
        return None
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def read_table(table: Any, argument: str, columns: TableColumns, image_dir: Path) -> ImageTable:
    """Read and check one table: its columns, paths (which must exist), labels, splits and groups.

    Raises:
        FileNotFoundError: If a CSV file or image files are missing (the first few are named, with the count).
        ValueError: If a column is missing (the columns found and the closest match are named), a row has no
            path or label, a 0/1 column holds another value, or a split value is unknown.
        TypeError: If `table` is not a CSV path, a DataFrame or a list of records.

    Examples:
        >>> read_table("train.csv", "train_csv", TableColumns(label_column="dx"), Path("images"))  # doctest: +SKIP
    """
    rows, found, name = _records(table, argument, columns)
    for column in columns.needed():
        if column not in found:
            near = closest(column, found)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"{name} has no column {column!r} (its columns: {found}).{hint}")
    if not rows:
        raise ValueError(f"{name} has no rows.")
    is_csv = name.startswith("'")
    where = [f"line {i + 2}" if is_csv else f"row {i}" for i in range(len(rows))]

    given = []
    for row, at in zip(rows, where, strict=True):
        value = row[columns.image_column]
        if _missing(value):
            raise ValueError(f"{name}, {at} has no image path (column {columns.image_column!r}).")
        given.append(str(value).strip() + columns.image_suffix)
    folder = str(image_dir)
    paths = [os.path.join(folder, p) for p in given]
    absent = [g for g, p in zip(given, paths, strict=True) if not os.path.isfile(p)]
    if absent:
        listed = ", ".join(f"'{p}'" for p in absent[:_MAX_LISTED])
        more = f" and {len(absent) - _MAX_LISTED} more" if len(absent) > _MAX_LISTED else ""
        raise FileNotFoundError(
            f"{len(absent)} of the {len(paths)} image files of {name} do not exist: {listed}{more}. Paths are read "
            f"relative to the image folder '{image_dir}' (`image_dir`)."
        )
    labels = [_row_labels(row, f"{name}, {at}", columns) for row, at in zip(rows, where, strict=True)]
    splits = None
    if columns.split_column is not None:
        splits = [str(row[columns.split_column]).strip().lower() for row in rows]
        bad = sorted({s for s in splits if s not in SPLITS})
        if bad:
            raise unknown_choice(f"each value of the split column {columns.split_column!r}", bad[0], SPLITS)
    groups = None if columns.group_column is None else [str(row[columns.group_column]) for row in rows]
    if columns.multi_label:
        empty = [at for at, names in zip(where, labels, strict=True) if not names]
        if empty:
            warn(
                f"{len(empty)} row(s) of {name} have no label ({', '.join(empty[:_MAX_LISTED])}): they are kept as "
                "images of none of the classes (all-zero targets)."
            )
    return ImageTable(name, paths, labels, splits, groups, where)


def _row_labels(row: Mapping[str, Any], at: str, columns: TableColumns) -> Any:
    """A class name or index (single-label), or a tuple of names (multi-label)."""
    if columns.label_columns is not None:
        names = []
        for column in columns.label_columns:
            text = str(row[column]).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError(f"{at}: expected 0 or 1 in the label column {column!r}, but got {row[column]!r}.")
            if text in _TRUE:
                names.append(column)
        return tuple(names)
    value = row[columns.label_column]
    if columns.label_delim is not None:
        if isinstance(value, (list, tuple)):
            return tuple(str(v) for v in value)
        return () if _missing(value) else tuple(v for v in str(value).split(columns.label_delim) if v.strip())
    if _missing(value):
        raise ValueError(f"{at} has no label (column {columns.label_column!r}).")
    index = _index(value)
    return index if index is not None else str(value).strip()


def table_classes(tables: Sequence[ImageTable], columns: TableColumns, class_names: Sequence[str] | None) -> list[str]:
    """The class names, in label order: `class_names` if given, the 0/1 columns in their order, class indices
    `0..K-1` as text, or the names found, sorted.

    Raises:
        ValueError: If a label is outside `class_names`, or a class index is negative or outside `class_names`.
    """
    if columns.label_columns is not None:
        return list(columns.label_columns)
    labels = [(t, i, label) for t in tables for i, label in enumerate(t.labels)]
    if columns.multi_label:
        labels = [(t, i, name) for t, i, names in labels for name in names]
    if label_indices(tables, columns):
        size = len(class_names) if class_names is not None else max(label for _, _, label in labels) + 1
        bad = [(t, i, label) for t, i, label in labels if not 0 <= label < size]
        if bad:
            t, i, label = bad[0]
            why = f"`class_names` names {size} classes" if class_names is not None else "indices start at 0"
            raise ValueError(
                f"{t.name}, {t.rows[i]}: class index {label} is outside the classes [0, {size}) ({why}; "
                f"{len(bad)} row(s) like it)."
            )
        return list(class_names) if class_names is not None else [str(i) for i in range(size)]
    found = {str(label) for _, _, label in labels}
    if class_names is None:
        return sorted(found)
    for t, i, label in labels:
        if str(label) not in class_names:
            raise unknown_choice(f"the label of {t.name}, {t.rows[i]}", str(label), class_names, sort=False)
    return list(class_names)


def label_indices(tables: Sequence[ImageTable], columns: TableColumns) -> bool:
    """Whether the labels are class indices: a single label per row, an integer in every row of every table."""
    return not columns.multi_label and all(isinstance(label, int) for t in tables for label in t.labels)


def encode(table: ImageTable, class_names: Sequence[str], columns: TableColumns, indices: bool) -> list[Any]:
    """Class indices per row (single-label), or tuples of class indices (multi-label).

    `indices` (from `label_indices`) says the labels are class indices already.
    """
    if indices:
        return list(table.labels)
    index = {name: i for i, name in enumerate(class_names)}
    if columns.multi_label:
        return [tuple(sorted(index[str(n)] for n in set(names))) for names in table.labels]
    return [index[str(label)] for label in table.labels]


def check_groups(tables: Mapping[str, ImageTable]) -> None:
    """Raise if a group's rows lie in more than one split.

    Raises:
        ValueError: Naming the first such group and its splits.
    """
    where: dict[str, set[str]] = {}
    for split, table in tables.items():
        for group in table.groups or ():
            where.setdefault(group, set()).add(split)
    crossing = {g: s for g, s in where.items() if len(s) > 1}
    if crossing:
        group, splits = next(iter(crossing.items()))
        raise ValueError(
            f"{len(crossing)} group(s) have rows in more than one split, e.g. group {group!r} in {sorted(splits)}: "
            "the rows of a group must share one split value."
        )


class ImageTableDataset(Dataset):
    """Images listed in a table with their labels: `(PIL image, class index)`, or `(PIL image, float 0/1
    vector)` with `multi_label`.

    Args:
        paths: Image file paths.
        labels: A class index per image, or with `multi_label` a sequence of class indices per image.
        num_classes: The number of classes (the length of the multi-label vectors).
        multi_label: Whether each image has a set of labels.

    Attributes:
        targets: The class indices (a list), or the `[N, num_classes]` float 0/1 tensor with `multi_label`.
        samples: `(path, label)` pairs, as in torchvision's `ImageFolder`.

    Examples:
        >>> data = ImageTableDataset(["a.png", "b.png"], [(0, 2), (1,)], num_classes=3, multi_label=True)
        >>> data.targets.tolist()
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """

    def __init__(
        self, paths: Sequence[str], labels: Sequence[Any], num_classes: int, multi_label: bool = False
    ) -> None:
        self.samples = list(zip(paths, labels, strict=True))
        self.multi_label = multi_label
        if multi_label:
            rows = [row for row, indices in enumerate(labels) for _ in indices]
            columns = [index for indices in labels for index in indices]
            self.targets: Any = torch.zeros(len(labels), num_classes)
            self.targets[rows, columns] = 1.0
        else:
            self.targets = [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return load_rgb_image(self.samples[index][0]), self.targets[index]

    def label_sets(self) -> list[tuple[int, ...]]:
        """The class indices of each image (one per image without `multi_label`)."""
        return [tuple(labels) if self.multi_label else (labels,) for _, labels in self.samples]


def class_counts(label_sets: Sequence[Sequence[int]]) -> Counter[int]:
    """How many images each class has."""
    return Counter(label for labels in label_sets for label in labels)
