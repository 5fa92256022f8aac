"""Prediction on new images, apart from the tasks that run it: what a source holds and what a result is.

Below the tasks in the package tree: `predict` on `ImageClassifier` and `ObjectDetector` reads its
images with `collect_images` / `iter_batches` and returns `Predictions` of `ClassificationResult`
or `DetectionResult`; `explain` returns `Explanation`s, maps made by `grad_cam` (captum, an extra).

Examples:
    >>> from autotimm.inference import Predictions, collect_images
"""

from autotimm.inference.explain import (
    EXPLAIN_METHODS,
    check_layer,
    default_layer,
    grad_cam,
    require_captum,
    to_image_size,
)
from autotimm.inference.results import (
    ClassificationResult,
    DetectionResult,
    Explanation,
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
    "EXPLAIN_METHODS",
    "IMAGE_EXTENSIONS",
    "ClassificationResult",
    "DetectionResult",
    "Explanation",
    "ImageSource",
    "NotAnImageError",
    "OnnxPredictor",
    "OnBadFile",
    "Predictions",
    "check_layer",
    "collect_images",
    "default_layer",
    "grad_cam",
    "iter_batches",
    "predict_images",
    "select_detections",
    "require_captum",
    "to_image_size",
    "to_rgb",
]
