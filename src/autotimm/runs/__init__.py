"""Runs on disk: their folders and lock, and reading them offline (`read_run`, `Run`, `summarize`, `plot_run`).

Examples:
    >>> from autotimm.runs import Run, plot_run, read_run, summarize
    >>> read_run("outputs/runs/2026-12-05_14-03-22")["status"]  # doctest: +SKIP
    'completed'
"""

from autotimm.runs.folder import RunLock, RunLockedError
from autotimm.runs.plots import plot_run
from autotimm.runs.record import Run, RunRecordError, find_runs, read_run
from autotimm.runs.summary import summarize

__all__ = ["Run", "RunLock", "RunLockedError", "RunRecordError", "find_runs", "plot_run", "read_run", "summarize"]
