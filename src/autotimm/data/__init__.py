"""Data modules, transforms and demo data for autotimm tasks.

One sub-package per task's formats (`classification`, `detection`), the demo data apart
(`demo`), and what they share: `BaseDataModule` (loader settings and loaders) and image reading.
"""

from autotimm.data.base import BaseDataModule
from autotimm.data.classification import (
    ImageDataModule,
    ImageTableDataset,
    MultiLabelImageDataModule,
    ToRGB,
    TransformedSubset,
    balanced_sample_weights,
    build_eval_transform,
    build_train_transform,
    create_eval_transform,
    create_train_transform,
    default_data_config,
    eval_input_box,
    iterative_split,
    list_augmentations,
    resolve_data_config,
    stratified_split,
)
from autotimm.data.demo import make_coco_shapes, make_digits_folder
from autotimm.data.detection import (
    DetectionDataModule,
    boxes_to_original,
    coco_evaluate,
    detection_collate,
    to_coco_results,
)
from autotimm.data.images import CorruptImageError

__all__ = [
    "BaseDataModule",
    "CorruptImageError",
    "DetectionDataModule",
    "ImageDataModule",
    "ImageTableDataset",
    "MultiLabelImageDataModule",
    "ToRGB",
    "TransformedSubset",
    "balanced_sample_weights",
    "build_eval_transform",
    "boxes_to_original",
    "build_train_transform",
    "coco_evaluate",
    "create_eval_transform",
    "create_train_transform",
    "default_data_config",
    "eval_input_box",
    "detection_collate",
    "iterative_split",
    "list_augmentations",
    "make_coco_shapes",
    "make_digits_folder",
    "resolve_data_config",
    "stratified_split",
    "to_coco_results",
]
