"""Callbacks that AutoTrainer adds to a run; each also works with a plain `pl.Trainer`."""

from autotimm.callbacks.plots import RunPlots
from autotimm.callbacks.run_record import RunRecord

__all__ = ["RunPlots", "RunRecord"]
