"""Rewrite a COCO shapes folder in the YOLO, Pascal VOC or CSV layout (the same images and boxes)."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = ["SHAPE_FORMATS", "ShapesFormat", "convert_coco_folder", "count_images"]

ShapesFormat = Literal["coco", "yolo", "voc", "csv"]
SHAPE_FORMATS: tuple[str, ...] = ("coco", "yolo", "voc", "csv")
_BOX_COLUMNS = ["image_path", "x_min", "y_min", "x_max", "y_max", "label"]


def _voc_xml(file_name: str, width: int, height: int, objects: list[tuple[str, list[float]]]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, (x, y, w, h) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        # VOC pixels are 1-based and inclusive: the COCO box [x, y, w, h] spans pixels x+1 .. x+w.
        for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, key).text = f"{value:g}"
    return ET.ElementTree(root)


def convert_coco_folder(folder: Path, splits: list[str], format: str) -> None:
    """Rewrite the COCO shapes in `folder` (`<split>2017/`, `annotations/`) in `format`, in place.

    `"yolo"`: `data.yaml`, `images/<split>/`, `labels/<split>/*.txt`; `"voc"`: `Annotations/`,
    `JPEGImages/`, `ImageSets/Main/<split>.txt`; `"csv"`: `images/` and `<split>.csv` (a row per
    box, a negative image as a row with empty box fields). `"coco"` leaves the folder as it is.

    Examples:
        >>> convert_coco_folder(Path("staging"), ["train", "val"], "yolo")  # doctest: +SKIP
    """
    if format == "coco":
        return
    names: list[str] = []
    for split in splits:
        coco = json.loads((folder / "annotations" / f"instances_{split}2017.json").read_text())
        names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
        per_image: dict[int, list[dict[str, Any]]] = {image["id"]: [] for image in coco["images"]}
        for ann in coco["annotations"]:
            per_image[ann["image_id"]].append(ann)
        source = folder / f"{split}2017"
        if format == "yolo":
            (folder / "images").mkdir(exist_ok=True)
            source.rename(folder / "images" / split)
            (folder / "labels" / split).mkdir(parents=True)
        elif format == "voc":
            for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        else:
            (folder / "images").mkdir(exist_ok=True)
        rows: list[list[Any]] = []
        for image in coco["images"]:
            stem, w, h = Path(image["file_name"]).stem, image["width"], image["height"]
            anns = per_image[image["id"]]
            if format == "yolo":
                lines = [
                    f"{a['category_id'] - 1} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                    for a in anns
                    for x, y, bw, bh in [a["bbox"]]
                ]
                (folder / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
                continue
            shutil.move(source / image["file_name"], folder / ("JPEGImages" if format == "voc" else "images"))
            if format == "voc":
                objects = [(names[a["category_id"] - 1], a["bbox"]) for a in anns]
                _voc_xml(image["file_name"], w, h, objects).write(folder / "Annotations" / f"{stem}.xml")
            else:
                path = f"images/{image['file_name']}"
                rows += [
                    [path, x, y, x + bw, y + bh, names[a["category_id"] - 1]]
                    for a in anns
                    for x, y, bw, bh in [a["bbox"]]
                ] or [[path, "", "", "", "", ""]]
        if format == "voc":
            ids = "".join(f"{Path(image['file_name']).stem}\n" for image in coco["images"])
            (folder / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
            source.rmdir()
        elif format == "csv":
            with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([_BOX_COLUMNS, *rows])
            source.rmdir()
    if format == "yolo":
        data = {"path": ".", **{split: f"images/{split}" for split in splits}, "names": names}
        (folder / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.rmtree(folder / "annotations")


def count_images(root: Path, split: str, format: str) -> int:
    """How many images of `split` the shapes folder `root` in `format` holds (to tell whether it is complete)."""
    if format == "voc":
        ids = root / "ImageSets" / "Main" / f"{split}.txt"
        listed = ids.read_text().split() if ids.is_file() else []
        return sum(1 for stem in listed if (root / "JPEGImages" / f"{stem}.png").is_file())
    if format == "csv":
        table = root / f"{split}.csv"
        if not table.is_file():
            return 0
        with open(table, newline="", encoding="utf-8") as f:
            paths = {row["image_path"] for row in csv.DictReader(f)}
        return sum(1 for p in paths if (root / p).is_file())
    folder = root / ("images" / Path(split) if format == "yolo" else Path(f"{split}2017"))
    return sum(1 for p in folder.iterdir() if p.suffix == ".png") if folder.is_dir() else 0
