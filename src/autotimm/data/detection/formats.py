"""Which annotation format a detection folder holds, and the source that reads it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from autotimm.data.detection import coco, csv_boxes, voc, yolo
from autotimm.data.detection.records import DetectionSource, first

__all__ = ["FORMATS", "DetectionFormat", "detect_format", "open_source"]

DetectionFormat = Literal["auto", "coco", "yolo", "voc", "csv"]
FORMATS: tuple[str, ...] = ("auto", "coco", "yolo", "voc", "csv")
_LOOKED_FOR = (
    "COCO: annotations/instances_<train_images>.json; YOLO: data.yaml, dataset.yaml or one *.yaml; "
    "Pascal VOC: Annotations/; CSV: train.csv or `train_csv=`"
)


def detect_format(data_dir: Path, train_annotations: Any = None, train_csv: Any = None) -> str:
    """The annotation format of `data_dir`, told from its layout (COCO, YOLO, Pascal VOC, then CSV).

    Raises:
        FileNotFoundError: If no layout matches; the message lists what was looked for and what is there.

    Examples:
        >>> detect_format(Path("data/shapes_yolo"))  # doctest: +SKIP
        'yolo'
    """
    if train_csv is not None:
        return "csv"
    if train_annotations is not None or (data_dir / "annotations").is_dir():
        return "coco"
    if yolo.find_yaml(data_dir) is not None:
        return "yolo"
    if (data_dir / "Annotations").is_dir():
        return "voc"
    if (data_dir / "train.csv").is_file():
        return "csv"
    there = sorted(p.name + ("/" if p.is_dir() else "") for p in data_dir.iterdir()) if data_dir.is_dir() else []
    raise FileNotFoundError(
        f"Could not tell the detection format of '{data_dir}': looked for {_LOOKED_FOR}; "
        f"found {first(there) if there else 'nothing'}. Pass `format=` to name it. {coco.LAYOUT}"
    )


def open_source(
    format: str,
    data_dir: Path,
    *,
    folders: dict[str, Any],
    annotations: dict[str, Any],
    csvs: dict[str, Any],
    image_dir: str | os.PathLike[str] | None,
    image_column: str,
    bbox_columns: Sequence[str],
    label_column: str,
    class_names: Sequence[str] | None,
) -> DetectionSource:
    """Open the splits of `data_dir` in `format` (`"auto"` detects it); see `DetectionDataModule`.

    Examples:
        >>> open_source("auto", Path("data/coco"), folders={"train": "train2017", "val": "val2017",
        ...     "test": "test2017"}, annotations=dict.fromkeys(("train", "val", "test")),
        ...     csvs=dict.fromkeys(("train", "val", "test")), image_dir=None, image_column="image_path",
        ...     bbox_columns=("x_min", "y_min", "x_max", "y_max"), label_column="label",
        ...     class_names=None).format  # doctest: +SKIP
        'coco'
    """
    if format == "auto":
        format = detect_format(data_dir, annotations["train"], csvs["train"])
    if class_names is not None and format in ("coco", "yolo"):
        raise ValueError(
            f"`class_names` is for the VOC and CSV formats; {format} files name their classes themselves "
            f"(got {list(class_names)!r})."
        )
    if format == "coco":
        return coco.CocoSource(data_dir, folders, annotations)
    if format == "yolo":
        found = yolo.find_yaml(data_dir)
        if found is None:
            raise FileNotFoundError(f"No data.yaml or dataset.yaml in '{data_dir}'. {yolo.LAYOUT}")
        return yolo.YoloSource(found)
    if format == "voc":
        return voc.VocSource(data_dir, class_names)
    if csvs["train"] is None:
        csvs = {split: data_dir / f"{split}.csv" for split in csvs}
        csvs = {split: path for split, path in csvs.items() if split == "train" or path.is_file()}
    else:
        csvs = {split: Path(path).expanduser() for split, path in csvs.items() if path is not None}
    return csv_boxes.CsvSource(
        csvs,
        Path(image_dir).expanduser() if image_dir is not None else data_dir,
        image_column,
        bbox_columns,
        label_column,
        class_names,
    )
