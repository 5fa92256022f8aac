"""autotimm: train timm backbones on your own images in a few lines.

Examples:
    >>> from autotimm import AutoTrainer, ImageClassifier, ImageDataModule  # doctest: +SKIP
    >>> data = ImageDataModule("path/to/images", image_size=224)  # doctest: +SKIP
    >>> model = ImageClassifier("resnet18", num_classes=data.num_classes)  # doctest: +SKIP
    >>> AutoTrainer(max_epochs=5).fit(model, datamodule=data)  # doctest: +SKIP
"""

from autotimm._version import __version__ as __version__
from autotimm.analysis import Analysis, analyze
from autotimm.backbones import BackboneConfig, PretrainedWeightsError, list_backbones
from autotimm.callbacks import FineTune, ModelEMA
from autotimm.data import DetectionDataModule, ImageDataModule, MultiLabelImageDataModule
from autotimm.loggers import LoggerConfig, LoggerManager, LoggingConfig
from autotimm.losses import create_loss, list_losses
from autotimm.metrics import MetricConfig
from autotimm.optim import list_optimizers, list_schedulers
from autotimm.runs import read_run, summarize
from autotimm.tasks import ImageClassifier, ObjectDetector, load
from autotimm.trainer import AutoTrainer, NonFiniteLossError, TunerConfig, TuningError

__all__ = [
    "Analysis",
    "AutoTrainer",
    "BackboneConfig",
    "DetectionDataModule",
    "FineTune",
    "ImageClassifier",
    "ImageDataModule",
    "LoggerConfig",
    "LoggerManager",
    "LoggingConfig",
    "MetricConfig",
    "ModelEMA",
    "MultiLabelImageDataModule",
    "NonFiniteLossError",
    "ObjectDetector",
    "PretrainedWeightsError",
    "TunerConfig",
    "TuningError",
    "analyze",
    "create_loss",
    "list_backbones",
    "list_losses",
    "list_optimizers",
    "list_schedulers",
    "load",
    "read_run",
    "summarize",
]
