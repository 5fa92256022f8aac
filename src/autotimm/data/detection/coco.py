"""Reading COCO detection annotations: categories, images and boxes, with errors naming the culprit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autotimm.data.detection.records import (
    CocoRecord,
    DetectionSource,
    check_files,
    make_record,
    warn_degenerate,
)

__all__ = ["LAYOUT", "CocoRecord", "CocoSource", "parse_split", "read_categories"]

_SPLITS = ("train", "val", "test")
LAYOUT = (
    "Expected the COCO layout: data_dir/train2017/<images>, data_dir/annotations/instances_train2017.json, and "
    "optionally val2017/ + annotations/instances_val2017.json and test2017/ + annotations/instances_test2017.json "
    "(the folder and file names can be changed with `train_images=...`, `train_annotations=...` and so on)."
)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' is not valid JSON: {e}.") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"'{path}' is not a UTF-8 JSON file: {e}.") from e
    if not isinstance(data, dict):
        raise ValueError(f"'{path}' should hold a COCO JSON object, but holds a {type(data).__name__}.")
    return data


def _require(entry: Any, keys: Sequence[str], what: str, path: Path) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"'{path}': {what} should be a JSON object, but got {entry!r}.")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise ValueError(f"'{path}': {what} lacks the key(s) {missing}; it has {sorted(entry)}.")


def read_categories(path: Path) -> list[tuple[int, str]]:
    """The `(category id, name)` pairs of a COCO file, sorted by id.

    Raises:
        ValueError: If the file is not valid JSON or its `categories` are malformed (the file is named).

    Examples:
        >>> read_categories(Path("coco/annotations/instances_train2017.json"))[:2]  # doctest: +SKIP
        [(1, 'person'), (2, 'bicycle')]
    """
    data = _load_json(path)
    return _parse_categories(data, path)


def _parse_categories(data: dict[str, Any], path: Path) -> list[tuple[int, str]]:
    _require(data, ["categories"], "the top-level object", path)
    categories = data["categories"]
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"'{path}': `categories` should be a non-empty list, but got {categories!r}.")
    pairs: dict[int, str] = {}
    for i, cat in enumerate(categories):
        _require(cat, ["id", "name"], f"category #{i}", path)
        cid = cat["id"]
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise ValueError(f"'{path}': category #{i} has a non-integer id {cid!r}.")
        if cid in pairs:
            raise ValueError(f"'{path}': category id {cid} appears twice ({pairs[cid]!r} and {cat['name']!r}).")
        pairs[cid] = str(cat["name"])
    return sorted(pairs.items())


def parse_split(
    ann_path: Path, image_dir: Path, categories: list[tuple[int, str]], *, need_annotations: bool
) -> list[CocoRecord]:
    """Read and check one COCO annotation file against the train categories; list its images.

    Raises:
        ValueError: If the file is malformed or its categories differ from `categories` (the culprit is named).
        FileNotFoundError: If `image_dir` or an image named in the file is missing.

    Examples:
        >>> categories = read_categories(Path("coco/annotations/instances_train2017.json"))  # doctest: +SKIP
        >>> records = parse_split(  # doctest: +SKIP
        ...     Path("coco/annotations/instances_val2017.json"), Path("coco/val2017"), categories, need_annotations=True
        ... )
    """
    data = _load_json(ann_path)
    _require(data, ["images", "categories"] + (["annotations"] if need_annotations else []), "the top-level", ann_path)
    if _parse_categories(data, ann_path) != categories:
        raise ValueError(
            f"'{ann_path}' defines the categories {_parse_categories(data, ann_path)}, but the training annotations "
            f"define {categories}; every split must use the same categories."
        )
    label_of = {cid: k for k, (cid, _) in enumerate(categories)}

    images: dict[int, str] = {}
    for i, img in enumerate(data["images"]):
        _require(img, ["id", "file_name"], f"image #{i}", ann_path)
        if img["id"] in images:
            raise ValueError(f"'{ann_path}': image id {img['id']!r} appears twice.")
        images[img["id"]] = str(img["file_name"])

    per_image: dict[int, list[tuple[list[float], int, int]]] = {image_id: [] for image_id in images}
    degenerate: list[Any] = []
    for i, ann in enumerate(data.get("annotations") or []):
        _require(ann, ["id", "image_id", "category_id", "bbox"], f"annotation #{i}", ann_path)
        ann_id, image_id, cid, bbox = ann["id"], ann["image_id"], ann["category_id"], ann["bbox"]
        if image_id not in images:
            raise ValueError(f"'{ann_path}': annotation id {ann_id} refers to image id {image_id!r}, not in `images`.")
        if cid not in label_of:
            raise ValueError(
                f"'{ann_path}': annotation id {ann_id} has category id {cid!r}, which is not in `categories` "
                f"(ids {sorted(label_of)})."
            )
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            raise ValueError(f"'{ann_path}': annotation id {ann_id} has bbox {bbox!r}; expected [x, y, width, height].")
        if not (bbox[2] > 0 and bbox[3] > 0):
            degenerate.append(ann_id)
            continue
        per_image[image_id].append((bbox, label_of[cid], int(bool(ann.get("iscrowd", 0)))))
    warn_degenerate(ann_path, degenerate)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"Image folder '{image_dir}' (for '{ann_path}') does not exist. {LAYOUT}")
    check_files([image_dir / name for name in images.values()], ann_path, image_dir)
    records = []
    for image_id, name in images.items():
        anns = per_image[image_id]
        boxes = [[x, y, x + w, y + h] for (x, y, w, h), _, _ in anns]
        records.append(make_record(image_dir / name, image_id, boxes, [a[1] for a in anns], [a[2] for a in anns]))
    return records


class CocoSource(DetectionSource):
    """The COCO layout: an image folder and a COCO JSON file per split.

    Raises:
        FileNotFoundError: If the training folder or annotations, or an explicitly named split, is missing.

    Examples:
        >>> source = CocoSource(Path("data/coco"), {"train": "train2017", "val": "val2017", "test": "test2017"},
        ...     {"train": None, "val": None, "test": None})  # doctest: +SKIP
        >>> source.class_names[:2]  # doctest: +SKIP
        ['person', 'bicycle']
    """

    format = "coco"
    layout = LAYOUT

    def __init__(self, root: Path, folders: dict[str, Any], annotations: dict[str, Any]) -> None:
        self.image_dirs = {split: root / folders[split] for split in _SPLITS}
        self.ann_paths = {
            split: root / annotations[split]
            if annotations[split] is not None
            else root / "annotations" / f"instances_{Path(folders[split]).name}.json"
            for split in _SPLITS
        }
        for split in _SPLITS:
            required = split == "train" or annotations[split] is not None
            ann, folder = self.ann_paths[split], self.image_dirs[split]
            if required or ann.exists() or folder.exists():
                for path, kind in ((ann, "annotation file"), (folder, "image folder")):
                    exists = path.is_file() if kind == "annotation file" else path.is_dir()
                    if not exists:
                        raise FileNotFoundError(f"The {split} {kind} '{path}' does not exist. {LAYOUT}")
        self.categories = read_categories(self.ann_paths["train"])
        self.class_names = [name for _, name in self.categories]
        self.category_ids = [cid for cid, _ in self.categories]

    def has_split(self, split: str) -> bool:
        return self.ann_paths[split].is_file() and self.image_dirs[split].is_dir()

    def read(self, split: str) -> list[CocoRecord]:
        return parse_split(
            self.ann_paths[split], self.image_dirs[split], self.categories, need_annotations=split != "test"
        )

    def where(self, split: str) -> str:
        return f"'{self.ann_paths[split]}' or '{self.image_dirs[split]}'"
