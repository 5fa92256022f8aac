"""`DetectionDataModule`: object detection data in the COCO, YOLO, Pascal VOC or CSV layout.

The COCO layout (the others: `formats.py`, `yolo.py`, `voc.py`, `csv_boxes.py`)::

    data_dir/
        train2017/*.jpg|png|...
        val2017/...                  (optional)
        test2017/...                 (optional)
        annotations/
            instances_train2017.json
            instances_val2017.json   (optional, with val2017/)
            instances_test2017.json  (optional, with test2017/)

Samples are `(image, target)`: `image` a float tensor `[3, S, S]` in `[0, 1]`, not
normalised (detectors normalise internally, as torchvision's do), letterboxed to
`S = image_size`: the longer side is resized to `S` keeping the aspect ratio and the
image is padded on the right and bottom with grey (114), so box coordinates keep their
origin and map back to the original image by dividing by `target["scale"]`
(see `boxes_to_original`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from autotimm._errors import check_choice, check_image_size, check_number
from autotimm.data.base import BaseDataModule
from autotimm.data.detection.coco import LAYOUT
from autotimm.data.detection.formats import FORMATS, DetectionFormat, open_source
from autotimm.data.detection.records import CocoRecord
from autotimm.data.detection.transforms import DetectionAugmentation, DetectionTransform
from autotimm.data.images import load_rgb_image
from autotimm.geometry import boxes_to_original

__all__ = ["DetectionDataModule", "boxes_to_original", "detection_collate"]

log = logging.getLogger(__name__)

_AUGMENTATIONS = ("default", "strong", "none")
_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------- data set and collate


class CocoDetectionDataset(Dataset):
    """The images of one COCO split with their boxes, passed through a `DetectionTransform`.

    `keep_crowd=False` (training) drops `iscrowd=1` boxes; with `True` (evaluation) they stay
    in `boxes`, flagged by `target["iscrowd"]`.
    """

    def __init__(self, records: list[CocoRecord], transform: DetectionTransform, *, keep_crowd: bool) -> None:
        self.records = records
        self.transform = transform
        self.keep_crowd = keep_crowd

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record = self.records[index]
        image = F.pil_to_tensor(load_rgb_image(str(record.path)))
        h, w = image.shape[-2:]
        keep = np.ones(len(record.labels), dtype=bool) if self.keep_crowd else record.iscrowd == 0
        boxes = torch.from_numpy(record.boxes[keep])
        if record.normalized:
            boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(record.labels[keep]),
            "iscrowd": torch.from_numpy(record.iscrowd[keep]),
            "image_id": record.image_id,
            "orig_size": (int(h), int(w)),
        }
        image, target = self.transform(tv_tensors.Image(image), target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor).float()
        return image.as_subclass(torch.Tensor), target


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[Any, list[dict[str, Any]]]:
    """Collate detection samples into `(images, targets)`.

    `images` is a `[B, 3, H, W]` tensor when all images have the same size (always the case
    with `DetectionDataModule`'s letterbox), else a list of `[3, H, W]` tensors; `targets`
    is the list of target dicts. Module-level, so worker processes can pickle it.
    """
    images = [sample[0] for sample in batch]
    targets = [sample[1] for sample in batch]
    if images and all(img.shape == images[0].shape for img in images):
        return torch.stack(images), targets
    return images, targets


# ---------------------------------------------------------------------- data module


class DetectionDataModule(BaseDataModule):
    """Object detection data in the COCO, YOLO, Pascal VOC or CSV layout, with box-aware torchvision v2 augmentation.

    Args:
        data_dir: Root of the data (see the module docstring for the COCO layout); may be left out
            with `train_csv`.
        image_size: Side `S` of the square letterboxed images, >= 32 (`autotimm._errors.MIN_IMAGE_SIZE`,
            the same for every data module and model).
        batch_size: Samples per batch; read each time a dataloader is built.
        num_workers: DataLoader worker processes; `None` means `min(8, usable CPUs)`.
        augmentation_preset: Training augmentation: `"default"` (photometric distortion,
            horizontal flip, mild scale/translate jitter), `"strong"` (also zoom-out,
            random IoU crop and stronger jitter) or `"none"` (letterbox only). Evaluation
            samples are always letterboxed only (deterministic).
        train_images: Folder of the training images, relative to `data_dir` (or absolute).
        val_images: Folder of the validation images.
        test_images: Folder of the test images.
        train_annotations: COCO JSON of the training split; `None` means
            `annotations/instances_<train_images>.json`.
        val_annotations: As above for validation; when left `None`, the split is optional.
        test_annotations: As above for test; when left `None`, the split is optional.
        min_box_size: Training boxes narrower or shorter than this (pixels of the transformed
            image) after augmentation are dropped; >= 1 (`SanitizeBoundingBoxes` requires it).
            Evaluation keeps every box, so small objects still count as misses.
        pin_memory: `None` pins memory only when the trainer runs on CUDA.
        persistent_workers: `None` keeps workers alive between epochs when `num_workers > 0`.
        format: `"coco"`, `"yolo"` (`data.yaml` + `labels/*.txt`), `"voc"` (`Annotations/*.xml`),
            `"csv"` (a row per box) or `"auto"`: told from what lies in `data_dir`.
        class_names: VOC and CSV only: the classes in label order (another class is an error);
            `None` takes the names found, sorted.
        train_csv: CSV of the training boxes, one row per box (`image_path,x_min,y_min,x_max,y_max,label`,
            pixels; empty box fields for an image without boxes); `None` with `format="csv"` reads
            `data_dir/train.csv`.
        val_csv: As above for validation (optional).
        test_csv: As above for test (optional).
        image_dir: CSV only: the folder the image paths are relative to; `None` means `data_dir`,
            else the folder of `train_csv`.
        image_column: CSV column of the image paths.
        bbox_columns: CSV columns of `x_min`, `y_min`, `x_max`, `y_max`.
        label_column: CSV column of the class names.

    Samples are `(image, target)` with `image` a float `[3, S, S]` tensor in `[0, 1]`
    (not normalised) and `target` a dict: `boxes` (float `[N, 4]`, `xyxy`, pixels of the
    transformed image), `labels` (int64 `[N]`, contiguous 0-based labels: the order
    of `class_names`), `iscrowd` (int64 `[N]`; VOC's `difficult`), `image_id` (the COCO id; for
    the other formats the image's 1-based position in its split), `orig_size`
    (`(h, w)` of the file) and `scale` (`(sx, sy)`, transformed / original pixels; for
    evaluation samples `boxes_to_original` maps boxes back). Training targets leave out
    `iscrowd=1` (and VOC `difficult`) boxes; evaluation targets keep them, flagged in `iscrowd` (as
    `torchmetrics.detection.MeanAveragePrecision` expects), so a validation loss should
    mask them. Images without annotations are kept as negatives.

    Raises:
        FileNotFoundError: If `data_dir`, the training folder or annotations, an explicitly
            named split, or an image named in the annotations is missing.
        ValueError: If an argument is out of range or an annotation file is malformed
            (invalid JSON, missing keys, unknown category or image ids, a YOLO value outside
            [0, 1], a class not in `class_names`, a CSV without a column; file and line named).
        TypeError: If an argument has the wrong type.

    Example:
        >>> data = DetectionDataModule("data/coco", image_size=512, batch_size=8)  # doctest: +SKIP
        >>> data.num_classes, data.class_names[:2]  # doctest: +SKIP
        (80, ['person', 'bicycle'])
        >>> data.setup("fit")  # doctest: +SKIP
        >>> images, targets = next(iter(data.train_dataloader()))  # doctest: +SKIP
        >>> DetectionDataModule("data/shapes_yolo").format  # doctest: +SKIP
        'yolo'
    """

    collate_fn = staticmethod(detection_collate)

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        image_size: int = 640,
        batch_size: int = 16,
        num_workers: int | None = None,
        augmentation_preset: DetectionAugmentation = "default",
        train_images: str = "train2017",
        val_images: str = "val2017",
        test_images: str = "test2017",
        train_annotations: str | os.PathLike[str] | None = None,
        val_annotations: str | os.PathLike[str] | None = None,
        test_annotations: str | os.PathLike[str] | None = None,
        min_box_size: float = 1.0,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        format: DetectionFormat = "auto",
        class_names: Sequence[str] | None = None,
        train_csv: str | os.PathLike[str] | None = None,
        val_csv: str | os.PathLike[str] | None = None,
        test_csv: str | os.PathLike[str] | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        image_column: str = "image_path",
        bbox_columns: Sequence[str] = ("x_min", "y_min", "x_max", "y_max"),
        label_column: str = "label",
    ) -> None:
        csvs = {"train": train_csv, "val": val_csv, "test": test_csv}
        if data_dir is None:
            if train_csv is None:
                raise TypeError("Expected `data_dir` (a folder of annotated images) or `train_csv`, but got neither.")
            data_dir = image_dir if image_dir is not None else Path(train_csv).expanduser().parent
        super().__init__(data_dir, batch_size, num_workers, pin_memory, persistent_workers)
        self.image_size = check_image_size(image_size, pair=False)
        check_choice("augmentation_preset", augmentation_preset, _AUGMENTATIONS)
        self.augmentation_preset = augmentation_preset
        self.min_box_size = float(check_number("min_box_size", min_box_size, low=1))
        check_choice("format", format, FORMATS)
        paths = {
            "train_images": (train_images, False),
            "val_images": (val_images, False),
            "test_images": (test_images, False),
            "train_annotations": (train_annotations, True),
            "val_annotations": (val_annotations, True),
            "test_annotations": (test_annotations, True),
            **{f"{split}_csv": (path, True) for split, path in csvs.items()},
            "image_dir": (image_dir, True),
        }
        for name, (value, optional) in paths.items():
            if not (isinstance(value, (str, os.PathLike)) or (optional and value is None)):
                raise TypeError(f"Expected `{name}` to be a path{' or None' if optional else ''}, but got {value!r}.")
        if train_csv is None and (val_csv is not None or test_csv is not None):
            raise ValueError("`val_csv` and `test_csv` need `train_csv` as well.")
        if train_csv is not None and format not in ("auto", "csv"):
            raise ValueError(f"`train_csv` is for `format='csv'`, but got format={format!r}.")
        for name, value in (("image_column", image_column), ("label_column", label_column)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"Expected `{name}` to be a column name, but got {value!r}.")
        if isinstance(bbox_columns, str) or len(bbox_columns) != 4 or not all(isinstance(c, str) for c in bbox_columns):
            raise ValueError(
                f"Expected `bbox_columns` to be 4 column names (x_min, y_min, x_max, y_max), but got {bbox_columns!r}."
            )
        if class_names is not None:
            if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
                raise TypeError(f"Expected `class_names` to be a list of strings, but got {class_names!r}.")
            if not class_names or len(set(class_names)) != len(class_names):
                raise ValueError(f"Expected `class_names` to be distinct names, but got {list(class_names)!r}.")

        if train_csv is None and not self.data_dir.is_dir():
            raise FileNotFoundError(f"Data folder '{self.data_dir}' does not exist. {LAYOUT}")
        self._source = open_source(
            format,
            self.data_dir,
            folders={"train": train_images, "val": val_images, "test": test_images},
            annotations={"train": train_annotations, "val": val_annotations, "test": test_annotations},
            csvs=csvs,
            image_dir=image_dir,
            image_column=image_column,
            bbox_columns=tuple(bbox_columns),
            label_column=label_column,
            class_names=class_names,
        )
        self.save_hyperparameters(
            {
                "image_size": image_size,
                "batch_size": batch_size,
                "num_workers": num_workers,
                "augmentation_preset": augmentation_preset,
                "min_box_size": self.min_box_size,
                "pin_memory": pin_memory,
                "persistent_workers": persistent_workers,
                "format": self._source.format,
            }
        )
        self._records: dict[str, list[CocoRecord]] = {}

    # ------------------------------------------------------------------ metadata

    @property
    def format(self) -> str:
        """The annotation format read: `"coco"`, `"yolo"`, `"voc"` or `"csv"` (what `format="auto"` found)."""
        return self._source.format

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (known right after construction): COCO category ids ascending, YOLO `names`,
        VOC and CSV `class_names` or the names found, sorted."""
        return list(self._source.class_names)

    @property
    def category_ids(self) -> list[int]:
        """The category id of each label, `category_ids[label]`: COCO ids, YOLO class ids, else `0..K-1`."""
        return list(self._source.category_ids)

    # ------------------------------------------------------------------ data sets

    def _split_exists(self, split: str) -> bool:
        return self._source.has_split(split)

    def _split_records(self, split: str) -> list[CocoRecord]:
        if split not in self._records:
            self._records[split] = self._source.read(split)
        return self._records[split]

    def _dataset(self, split: str, train: bool) -> CocoDetectionDataset:
        transform = DetectionTransform(
            self.image_size, self.augmentation_preset if train else "none", self.min_box_size, train
        )
        return CocoDetectionDataset(self._split_records(split), transform, keep_crowd=not train)

    def setup(self, stage: str | None = None) -> None:
        """Parse and check the annotations that `stage` needs and build the data sets."""
        if stage in (None, "fit"):
            self.train_dataset = self._dataset("train", train=True)
        has_test = self._split_exists("test")
        if stage in (None, "fit", "validate") or (stage == "predict" and not has_test):
            self.val_dataset = self._dataset("val", train=False) if self._split_exists("val") else None
            if self.val_dataset is None:
                log.info("No validation set: %s is missing.", self._source.where("val"))
        if stage in (None, "test", "predict") and has_test:
            self.test_dataset = self._dataset("test", train=False)

    # ------------------------------------------------------------------ loaders

    def _missing_split_reason(self, split: str) -> str:
        return f"{self._source.where(split)} is missing. {self._source.layout}"
