"""Task modules: one LightningModule per task, and `load` to rebuild any of them for inference."""

from autotimm.tasks.base import BaseTask
from autotimm.tasks.classification import ImageClassifier
from autotimm.tasks.detection import ObjectDetector
from autotimm.tasks.pretrained import load

__all__ = ["BaseTask", "ImageClassifier", "ObjectDetector", "load"]
