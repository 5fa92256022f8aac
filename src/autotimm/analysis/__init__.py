"""Error analysis of a trained model on labelled data: per-class tables, the confusion matrix, the worst images.

`analyze` runs without a trainer; the `RunAnalysis` callback calls it after `trainer.test`, and
`RunPlots` draws the confusion matrix of a `fit` from the best checkpoint with `best_confusion`.

Examples:
    >>> from autotimm.analysis import analyze
"""

from autotimm.analysis.api import analyze, batch_limit, best_checkpoint, best_confusion
from autotimm.analysis.base import Analysis, checkpoint_weights, sample_names

__all__ = [
    "Analysis",
    "analyze",
    "batch_limit",
    "best_checkpoint",
    "best_confusion",
    "checkpoint_weights",
    "sample_names",
]
