"""Image classification data: class folders, tables or torchvision built-ins, timm transforms, the data module."""

from autotimm.data.classification.datamodule import ImageDataModule, MultiLabelImageDataModule
from autotimm.data.classification.datasets import (
    TransformedSubset,
    balanced_sample_weights,
    iterative_split,
    stratified_split,
)
from autotimm.data.classification.tables import ImageTableDataset
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
    "ImageTableDataset",
    "MultiLabelImageDataModule",
    "ToRGB",
    "TransformedSubset",
    "balanced_sample_weights",
    "build_eval_transform",
    "build_train_transform",
    "create_eval_transform",
    "create_train_transform",
    "default_data_config",
    "eval_input_box",
    "iterative_split",
    "list_augmentations",
    "resolve_data_config",
    "stratified_split",
]
