"""Saved runs, read offline: their records (`read_run`), tables (`summarize`) and pictures (`plot_run`).

Examples:
    >>> from autotimm.runs import plot_run, read_run, summarize
    >>> read_run("outputs/runs/20250301-101500-3fa2c1")["status"]  # doctest: +SKIP
    'completed'
"""

from autotimm.runs.plots import plot_run
from autotimm.runs.record import read_run
from autotimm.runs.summary import summarize

__all__ = ["plot_run", "read_run", "summarize"]
