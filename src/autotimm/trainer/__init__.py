"""The trainer and its tuning."""

from autotimm.callbacks import AtomicCheckpointIO, NonFiniteLossError, RunPlots, RunRecord, StopOnNonFiniteLoss
from autotimm.runs import plot_run, read_run, summarize
from autotimm.trainer.auto_trainer import AutoTrainer
from autotimm.tuner import TunerConfig, TuningError

__all__ = [
    "AtomicCheckpointIO",
    "AutoTrainer",
    "NonFiniteLossError",
    "RunPlots",
    "RunRecord",
    "StopOnNonFiniteLoss",
    "TunerConfig",
    "TuningError",
    "plot_run",
    "read_run",
    "summarize",
]
