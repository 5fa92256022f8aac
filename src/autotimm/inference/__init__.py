"""Prediction on new images, apart from the tasks that run it: what a source holds and what a result is.

Below the tasks in the package tree: `predict` on `ImageClassifier` and `ObjectDetector` reads its
images with `collect_images` / `iter_batches` and returns `Predictions` of `ClassificationResult`
or `DetectionResult`.

Examples:
    >>> from autotimm.inference import Predictions, collect_images
"""

from autotimm.inference.results import (
    ClassificationResult,
    DetectionResult,
    Predictions,
    predict_images,
    select_detections,
)
from autotimm.inference.runtime import OnnxPredictor
from autotimm.inference.sources import (
    IMAGE_EXTENSIONS,
    ImageSource,
    NotAnImageError,
    OnBadFile,
    collect_images,
    iter_batches,
    to_rgb,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ClassificationResult",
    "DetectionResult",
    "ImageSource",
    "NotAnImageError",
    "OnnxPredictor",
    "OnBadFile",
    "Predictions",
    "collect_images",
    "iter_batches",
    "predict_images",
    "select_detections",
    "to_rgb",
]
