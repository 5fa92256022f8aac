"""Task modules: one LightningModule per task."""

from autotimm.tasks.base import BaseTask
from autotimm.tasks.classification import ImageClassifier
from autotimm.tasks.detection import ObjectDetector

__all__ = ["BaseTask", "ImageClassifier", "ObjectDetector"]
