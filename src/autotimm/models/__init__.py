"""Network building blocks that the tasks assemble: feature pyramids and detectors."""

from autotimm.models.detectors import ARCHITECTURES, build_detector, losses_and_detections
from autotimm.models.features import TimmFeaturePyramid, create_feature_extractor

__all__ = ["ARCHITECTURES", "TimmFeaturePyramid", "build_detector", "create_feature_extractor", "losses_and_detections"]
