"""Object detection data: COCO annotations, box-aware transforms, the data module and COCO evaluation."""

from autotimm.data.detection.coco_eval import coco_evaluate, to_coco_results
from autotimm.data.detection.datamodule import (
    CocoDetectionDataset,
    DetectionDataModule,
    boxes_to_original,
    detection_collate,
)
from autotimm.data.detection.transforms import DetectionAugmentation

__all__ = [
    "CocoDetectionDataset",
    "DetectionAugmentation",
    "DetectionDataModule",
    "boxes_to_original",
    "coco_evaluate",
    "detection_collate",
    "to_coco_results",
]
