"""The trainer and its tuning."""

from autotimm.callbacks import RunPlots, RunRecord
from autotimm.runs import plot_run, read_run, summarize
from autotimm.trainer.auto_trainer import AutoTrainer
from autotimm.trainer.checkpoint_io import AtomicCheckpointIO
from autotimm.trainer.guards import NonFiniteLossError, StopOnNonFiniteLoss
from autotimm.trainer.tuning import TunerConfig, TuningError

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
