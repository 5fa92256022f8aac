"""Every private name of Lightning, timm, torchvision and jsonargparse that autotimm still needs, in one place.

Each shim says what it couples to and has a test in `tests/test_compat.py` that fails when the
library changes under it.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch.nn as nn

# ---- trainer ---------------------------------------------------------------------------------


def step_is_logged(trainer: pl.Trainer) -> bool:
    """Whether the loggers get the step values of the training batch that runs now.

    Lightning's own answer (`trainer._logger_connector.should_update_logs`, which its
    `LearningRateMonitor` reads too): a batch whose optimizer step makes the count of
    batches that stepped a multiple of `log_every_n_steps`, or the last one when the run
    stops. Read it in the batch's hooks, before its step.

    Examples:
        >>> step_is_logged(trainer)  # doctest: +SKIP
        True
    """
    return trainer._logger_connector.should_update_logs


def compiled_in_place(module: nn.Module) -> bool:
    """Whether `module.compile()` (`nn.Module.compile`, which sets torch's `module._compiled_call_impl`) ran on it.

    Examples:
        >>> layer = nn.Linear(2, 2)
        >>> compiled_in_place(layer)
        False
    """
    return getattr(module, "_compiled_call_impl", None) is not None
