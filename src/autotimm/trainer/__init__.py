"""The trainer and its tuning."""

from autotimm.trainer.auto_trainer import AutoTrainer
from autotimm.trainer.tuning import TunerConfig, TuningError

__all__ = ["AutoTrainer", "TunerConfig", "TuningError"]
