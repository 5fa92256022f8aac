"""Image classification data: class folders or torchvision built-ins, timm transforms, the data module."""

from autotimm.data.classification.datamodule import ImageDataModule
from autotimm.data.classification.datasets import TransformedSubset, stratified_split
from autotimm.data.classification.transforms import (
    AugmentationName,
    ToRGB,
    build_eval_transform,
    build_train_transform,
    create_eval_transform,
    create_train_transform,
    default_data_config,
    eval_input_box,
    list_augmentations,
    resolve_data_config,
)

__all__ = [
    "AugmentationName",
    "ImageDataModule",
    "ToRGB",
    "TransformedSubset",
    "build_eval_transform",
    "build_train_transform",
    "create_eval_transform",
    "create_train_transform",
    "default_data_config",
    "eval_input_box",
    "list_augmentations",
    "resolve_data_config",
    "stratified_split",
]
