"""Data modules, transforms and demo data for autotimm tasks."""

from autotimm.data.coco_demo import make_coco_shapes
from autotimm.data.coco_eval import coco_evaluate, to_coco_results
from autotimm.data.datasets import TransformedSubset, stratified_split
from autotimm.data.demo import make_digits_folder
from autotimm.data.detection import DetectionDataModule, boxes_to_original, detection_collate
from autotimm.data.folders import CorruptImageError
from autotimm.data.image_folder import ImageDataModule
from autotimm.data.transforms import (
    ToRGB,
    build_eval_transform,
    build_train_transform,
    create_eval_transform,
    create_train_transform,
    default_data_config,
    list_augmentations,
    resolve_data_config,
)

__all__ = [
    "CorruptImageError",
    "DetectionDataModule",
    "ImageDataModule",
    "ToRGB",
    "TransformedSubset",
    "build_eval_transform",
    "boxes_to_original",
    "build_train_transform",
    "coco_evaluate",
    "create_eval_transform",
    "create_train_transform",
    "default_data_config",
    "detection_collate",
    "list_augmentations",
    "make_coco_shapes",
    "make_digits_folder",
    "resolve_data_config",
    "stratified_split",
    "to_coco_results",
]
