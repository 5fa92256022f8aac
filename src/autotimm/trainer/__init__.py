"""The trainer and its tuning."""

from autotimm.trainer.auto_trainer import AutoTrainer
from autotimm.trainer.checkpoint_io import AtomicCheckpointIO
from autotimm.trainer.guards import NonFiniteLossError, StopOnNonFiniteLoss
from autotimm.trainer.plots import RunPlots, plot_run
from autotimm.trainer.run_record import RunRecord, read_run
from autotimm.trainer.summary import summarize
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
