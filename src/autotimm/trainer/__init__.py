"""The trainer and its tuning."""

from autotimm.callbacks import AtomicCheckpointIO, NonFiniteLossError, StopOnNonFiniteLoss
from autotimm.trainer.auto_trainer import AutoTrainer
from autotimm.trainer.plots import RunPlots, plot_run
from autotimm.trainer.run_record import RunRecord, read_run
from autotimm.trainer.summary import summarize
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
