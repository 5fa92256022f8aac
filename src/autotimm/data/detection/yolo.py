"""Reading YOLO detection labels: a `data.yaml` with class names and image folders, a `.txt` of boxes per image."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from torchvision.datasets.folder import IMG_EXTENSIONS

from autotimm.data.detection.records import CocoRecord, DetectionSource, check_files, make_record, warn_degenerate

__all__ = ["LAYOUT", "YoloSource", "find_yaml"]

log = logging.getLogger(__name__)

LAYOUT = (
    "Expected the YOLO layout: data_dir/data.yaml (or dataset.yaml) with `names` (a list, or a dict of class id "
    "-> name) and `train` (and optionally `val`, `test`): image folders, lists of them or .txt files of image "
    "paths, relative to the yaml's `path` (default: its folder); each image's boxes in a .txt file of the same "
    "name under the matching `labels` folder (images/train/a.jpg -> labels/train/a.txt), one "
    "`class cx cy w h` line per box, normalised to [0, 1]."
)
_YAML_NAMES = ("data.yaml", "dataset.yaml")


def find_yaml(root: Path) -> Path | None:
    """The YOLO data file of `root`: `data.yaml`, `dataset.yaml` or its only `*.yaml`; `None` if there is none.

    Examples:
        >>> find_yaml(Path("data/shapes_yolo"))  # doctest: +SKIP
        PosixPath('data/shapes_yolo/data.yaml')
    """
    for name in _YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
    return found[0] if len(found) == 1 else None


def _label_path(image: Path) -> Path:
    """`.../images/x/a.jpg` -> `.../labels/x/a.txt` (the last `images` folder); beside the image without one."""
    marker = f"{os.sep}images{os.sep}"
    text = str(image)
    if marker in text:
        head, tail = text.rsplit(marker, 1)
        return Path(f"{head}{os.sep}labels{os.sep}{tail}").with_suffix(".txt")
    return image.with_suffix(".txt")


class YoloSource(DetectionSource):
    """The YOLO (Ultralytics) layout; boxes stay normalised in the records until the image is read.

    Raises:
        FileNotFoundError: If the yaml, the `path` it names or a split's folder or list is missing.
        ValueError: If the yaml is malformed (no `names` or `train`, `nc` not matching `names`).

    Examples:
        >>> YoloSource(Path("data/shapes_yolo/data.yaml")).class_names  # doctest: +SKIP
        ['circle', 'square', 'triangle']
    """

    format = "yolo"
    layout = LAYOUT

    def __init__(self, yaml_path: Path) -> None:
        self.yaml_path = yaml_path
        try:
            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"'{yaml_path}' is not valid YAML: {e}") from e
        if not isinstance(data, dict) or "names" not in data or not data.get("train"):
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"'{yaml_path}' should map at least `names` and `train`, but has {keys}. {LAYOUT}")
        names = data["names"]
        if isinstance(names, dict) and names and all(isinstance(k, int) and not isinstance(k, bool) for k in names):
            self.category_ids = sorted(names)
            self.class_names = [str(names[k]) for k in self.category_ids]
        elif isinstance(names, list) and names:
            self.category_ids = list(range(len(names)))
            self.class_names = [str(n) for n in names]
        else:
            raise ValueError(
                f"'{yaml_path}': `names` should be a non-empty list of class names or a dict of integer class id "
                f"-> name, but got {names!r}."
            )
        if "nc" in data and data["nc"] != len(self.class_names):
            raise ValueError(
                f"'{yaml_path}': `nc` is {data['nc']!r} but `names` lists {len(self.class_names)} classes."
            )
        self.root = yaml_path.parent / str(data.get("path") or "")
        if not self.root.is_dir():
            raise FileNotFoundError(f"'{yaml_path}': its `path` '{self.root}' is not a folder. {LAYOUT}")
        self.entries: dict[str, list[Path]] = {}
        for split in ("train", "val", "test"):
            value = data.get(split)
            if value:
                values = value if isinstance(value, list) else [value]
                self.entries[split] = [self.root / str(v) for v in values]
                for path in self.entries[split]:
                    if not path.exists():
                        raise FileNotFoundError(f"'{yaml_path}': the {split} images '{path}' do not exist. {LAYOUT}")
        self._label_of = {cid: k for k, cid in enumerate(self.category_ids)}

    def has_split(self, split: str) -> bool:
        return split in self.entries

    def where(self, split: str) -> str:
        return f"`{split}` in '{self.yaml_path}'"

    def _images(self, split: str) -> list[Path]:
        images: list[Path] = []
        for entry in self.entries[split]:
            if entry.is_dir():
                images += sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
            else:  # a .txt file of image paths, relative to its folder
                lines = entry.read_text(encoding="utf-8").splitlines()
                listed = [entry.parent / line.strip() for line in lines if line.strip()]
                check_files(listed, entry)
                images += listed
        if not images:
            raise FileNotFoundError(f"'{self.yaml_path}': no images found for `{split}` in {self.entries[split]}.")
        return images

    def _parse(self, path: Path, degenerate: list[str]) -> tuple[list[list[float]], list[int]]:
        boxes, labels = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            where = f"'{path}', line {number}"
            if len(parts) < 5 or (len(parts) > 5 and len(parts) % 2 == 0):
                raise ValueError(
                    f"{where}: expected `class cx cy w h` (or `class x1 y1 x2 y2 ...`, a polygon), but got {line!r}."
                )
            try:
                cid, values = int(parts[0]), [float(v) for v in parts[1:]]
            except ValueError:
                raise ValueError(f"{where}: expected an integer class and numbers, but got {line!r}.") from None
            if cid not in self._label_of:
                raise ValueError(
                    f"{where}: class id {cid} is not in `names` of '{self.yaml_path}' "
                    f"(ids {self.category_ids[0]}..{self.category_ids[-1]}: {self.class_names})."
                )
            outside = [v for v in values if not 0 <= v <= 1]
            if outside:
                raise ValueError(f"{where}: box value {outside[0]} is outside [0, 1] (YOLO boxes are normalised).")
            if len(values) == 4:
                cx, cy, w, h = values
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            else:
                xs, ys = values[0::2], values[1::2]
                box = [min(xs), min(ys), max(xs), max(ys)]
            box = [min(max(v, 0.0), 1.0) for v in box]
            if not (box[2] > box[0] and box[3] > box[1]):
                degenerate.append(f"{path.name}:{number}")
                continue
            boxes.append(box)
            labels.append(self._label_of[cid])
        return boxes, labels

    def read(self, split: str) -> list[CocoRecord]:
        records, degenerate, unlabelled = [], [], 0
        for image_id, image in enumerate(self._images(split), start=1):
            label = _label_path(image)
            boxes: list[Any] = []
            labels: list[int] = []
            if label.is_file():
                boxes, labels = self._parse(label, degenerate)
            else:
                unlabelled += 1
            records.append(make_record(image, image_id, boxes, labels, [0] * len(labels), normalized=True))
        warn_degenerate(self.yaml_path, degenerate, what="file:line")
        if unlabelled:
            log.info("%d %s image(s) have no label file and are used as negatives.", unlabelled, split)
        return records
