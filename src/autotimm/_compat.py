"""Every private name of Lightning, timm, torchvision or jsonargparse that autotimm still needs, one shim each.

Each shim says what it couples to and has a test in `tests/test_compat.py` that fails when the
library changes under it.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch.nn as nn

# ---- tasks / export ------------------------------------------------------------------------


def attached_trainer(module: Any) -> Any | None:
    """The Lightning trainer `module` is attached to, or `None` (also for a plain `nn.Module`).

    Lightning's public `LightningModule.trainer` raises a `RuntimeError` when no trainer is
    attached; this reads the attribute behind it (`_trainer`) instead.

    Examples:
        >>> import pytorch_lightning as pl
        >>> attached_trainer(pl.LightningModule()) is None
        True
    """
    return getattr(module, "_trainer", None)


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
