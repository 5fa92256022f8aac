"""Reading COCO detection annotations: categories, images and boxes, with errors naming the culprit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autotimm._warnings import warn

__all__ = ["LAYOUT", "CocoRecord", "parse_split", "read_categories"]

_SHOW = 5  # how many offending names an error or warning lists
LAYOUT = (
    "Expected the COCO layout: data_dir/train2017/<images>, data_dir/annotations/instances_train2017.json, and "
    "optionally val2017/ + annotations/instances_val2017.json and test2017/ + annotations/instances_test2017.json "
    "(the folder and file names can be changed with `train_images=...`, `train_annotations=...` and so on)."
)


def _first(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOW])
    return shown + (f" and {len(items) - _SHOW} more" if len(items) > _SHOW else "")


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


@dataclass(frozen=True)
class CocoRecord:
    """One image of a split: its file, COCO id and boxes (`xyxy`, original pixels)."""

    path: Path
    image_id: int
    boxes: np.ndarray  # float32 [N, 4] xyxy
    labels: np.ndarray  # int64 [N], contiguous 0-based
    iscrowd: np.ndarray  # int64 [N]


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
    if degenerate:
        warn(
            f"'{ann_path}': dropped {len(degenerate)} box(es) with non-positive width or height "
            f"(annotation ids {_first(degenerate)})."
        )

    if not image_dir.is_dir():
        raise FileNotFoundError(f"Image folder '{image_dir}' (for '{ann_path}') does not exist. {LAYOUT}")
    missing = [name for name in images.values() if not (image_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) named in '{ann_path}' do not exist in '{image_dir}': {_first(missing)}."
        )

    records = []
    for image_id, name in images.items():
        anns = per_image[image_id]
        xywh = np.array([a[0] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        records.append(
            CocoRecord(
                path=image_dir / name,
                image_id=image_id,
                boxes=boxes,
                labels=np.array([a[1] for a in anns], dtype=np.int64),
                iscrowd=np.array([a[2] for a in anns], dtype=np.int64),
            )
        )
    return records
