"""Network building blocks that the tasks assemble: feature pyramids and detectors."""

from autotimm.models.detectors import (
    ARCHITECTURES,
    LetterboxTransform,
    build_detector,
    create_detector,
    losses_and_detections,
)
from autotimm.models.exportable import ExportableDetector, letterbox_batch, to_image_pixels
from autotimm.models.features import TimmFeaturePyramid, create_feature_extractor, create_feature_pyramid

__all__ = [
    "ARCHITECTURES",
    "ExportableDetector",
    "LetterboxTransform",
    "TimmFeaturePyramid",
    "build_detector",
    "create_detector",
    "create_feature_extractor",
    "create_feature_pyramid",
    "letterbox_batch",
    "losses_and_detections",
    "to_image_pixels",
]
