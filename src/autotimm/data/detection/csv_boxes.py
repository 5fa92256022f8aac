"""Reading detection boxes from CSV files: one row per box, one file per split."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from autotimm._errors import closest
from autotimm.data.detection.records import CocoRecord, DetectionSource, check_files, make_record, warn_degenerate

__all__ = ["LAYOUT", "CsvSource"]

LAYOUT = (
    "Expected CSV files with one row per box, `image_path,x_min,y_min,x_max,y_max,label` (pixels; an image "
    "without boxes is a row with empty box and label fields): `train_csv=` (and optionally `val_csv=`, "
    "`test_csv=`) or data_dir/train.csv, val.csv, test.csv, image paths relative to `image_dir` (default: data_dir)."
)

# Per image path, in the order of the file: its boxes, labels and the line of each box.
_Rows = dict[str, tuple[list[list[float]], list[str], list[int]]]


def _sort_labels(labels: set[str]) -> list[str]:
    """Sorted labels; numerically when every label is an integer (so "10" comes after "2")."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class CsvSource(DetectionSource):
    """Boxes from CSV files; class names are `class_names` when given, else the training labels, sorted.

    Raises:
        FileNotFoundError: If a CSV file or an image it names is missing (the first few named, and the count).
        ValueError: If a column is missing (the columns found and the closest are named), or a row is malformed
            or has a label not among the class names (its file and line are named).

    Examples:
        >>> source = CsvSource({"train": Path("boxes.csv")}, Path("images"))  # doctest: +SKIP
        >>> source.class_names  # doctest: +SKIP
        ['cat', 'dog']
    """

    format = "csv"
    layout = LAYOUT

    def __init__(
        self,
        csvs: dict[str, Path],
        image_dir: Path,
        image_column: str = "image_path",
        bbox_columns: Sequence[str] = ("x_min", "y_min", "x_max", "y_max"),
        label_column: str = "label",
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.csvs, self.image_dir = csvs, image_dir
        self.columns = {"image_column": image_column, "label_column": label_column}
        self.columns.update({f"bbox_columns[{i}]": name for i, name in enumerate(bbox_columns)})
        for split, path in csvs.items():
            if not path.is_file():
                raise FileNotFoundError(f"The {split} CSV '{path}' does not exist. {LAYOUT}")
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Image folder '{image_dir}' does not exist. {LAYOUT}")
        self._train = self._rows("train")
        if class_names is None:
            class_names = _sort_labels({label for _, labels, _ in self._train.values() for label in labels})
        self.class_names = list(class_names)
        self.category_ids = list(range(len(self.class_names)))

    def has_split(self, split: str) -> bool:
        return split in self.csvs

    def where(self, split: str) -> str:
        return f"`{split}_csv`"

    def _rows(self, split: str) -> _Rows:
        path = self.csvs[split]
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            found = list(reader.fieldnames or [])
            for argument, name in self.columns.items():
                if name not in found:
                    near = closest(name, found)
                    raise ValueError(
                        f"'{path}' has no column {name!r} (`{argument}`); the columns found are {found}."
                        + (f" Did you mean {near[0]!r}?" if near else "")
                    )
            image_key, label_key = self.columns["image_column"], self.columns["label_column"]
            box_keys = [self.columns[f"bbox_columns[{i}]"] for i in range(4)]
            rows: _Rows = {}
            for row in reader:
                where = f"'{path}', line {reader.line_num}"
                image = (row[image_key] or "").strip()
                if not image:
                    raise ValueError(f"{where}: the `{image_key}` field is empty.")
                boxes, labels, lines = rows.setdefault(image, ([], [], []))
                fields = [(row[key] or "").strip() for key in box_keys]
                label = (row[label_key] or "").strip()
                if not any(fields) and not label:
                    continue  # an image without boxes
                try:
                    boxes.append([float(v) for v in fields])
                except ValueError:
                    raise ValueError(f"{where}: expected four numbers in {box_keys}, but got {fields}.") from None
                if not label:
                    raise ValueError(f"{where}: the box has an empty `{label_key}`.")
                labels.append(label)
                lines.append(reader.line_num)
        return rows

    def read(self, split: str) -> list[CocoRecord]:
        rows = self._train if split == "train" else self._rows(split)
        label_of = {name: k for k, name in enumerate(self.class_names)}
        records, degenerate = [], []
        for image_id, (image, (boxes, labels, lines)) in enumerate(rows.items(), start=1):
            kept, kept_labels = [], []
            for box, label, line in zip(boxes, labels, lines, strict=True):
                if label not in label_of:
                    near = closest(label, self.class_names)
                    raise ValueError(
                        f"'{self.csvs[split]}', line {line}: label {label!r} is not one of the class names "
                        f"{self.class_names}." + (f" Did you mean {near[0]!r}?" if near else "")
                    )
                if not (box[2] > box[0] and box[3] > box[1]):
                    degenerate.append(line)
                    continue
                kept.append(box)
                kept_labels.append(label_of[label])
            records.append(make_record(self.image_dir / image, image_id, kept, kept_labels, [0] * len(kept)))
        warn_degenerate(self.csvs[split], degenerate, what="lines")
        check_files([r.path for r in records], self.csvs[split])
        return records
