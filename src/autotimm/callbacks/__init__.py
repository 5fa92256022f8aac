"""Callbacks (and the checkpoint plugin) that AutoTrainer adds to a run; each also works with a plain `pl.Trainer`."""

from autotimm.callbacks.analysis import RunAnalysis
from autotimm.callbacks.checkpoint_io import AtomicCheckpointIO
from autotimm.callbacks.checkpoints import find_checkpoint
from autotimm.callbacks.ema import ModelEMA
from autotimm.callbacks.fast_path import FastPath
from autotimm.callbacks.finetune import FineTune
from autotimm.callbacks.guards import NonFiniteLossError, StopOnNonFiniteLoss
from autotimm.callbacks.oom import OOMBackoff
from autotimm.callbacks.plots import RunPlots
from autotimm.callbacks.run_record import RunRecord
from autotimm.callbacks.time_budget import TimeBudget

__all__ = [
    "AtomicCheckpointIO",
    "FastPath",
    "FineTune",
    "ModelEMA",
    "NonFiniteLossError",
    "OOMBackoff",
    "RunAnalysis",
    "RunPlots",
    "RunRecord",
    "StopOnNonFiniteLoss",
    "TimeBudget",
    "find_checkpoint",
]
