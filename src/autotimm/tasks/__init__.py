"""Task modules: one LightningModule per task."""

from autotimm.tasks.base import BaseTask
from autotimm.tasks.classification import ImageClassifier

__all__ = ["BaseTask", "ImageClassifier"]
