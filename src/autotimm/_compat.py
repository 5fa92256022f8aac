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


# ---- cli -------------------------------------------------------------------------------------


class LightningCLIPrivateSteps:
    """Mixin for a `LightningCLI` subclass: two private steps of `LightningCLI.__init__` as public methods.

    `LightningCLI.__init__` calls `_parse_ckpt_path` (merge a checkpoint's hyperparameters into
    the model config) and `_set_seed` (seed from the `seed_everything` key) between parsing and
    instantiating; neither has a public hook. A subclass overrides `parse_ckpt_path` and
    `set_seed` instead; by default they do what Lightning does. Put the mixin first in the bases.

    Examples:
        >>> from pytorch_lightning.cli import LightningCLI
        >>> class MyCLI(LightningCLIPrivateSteps, LightningCLI):
        ...     def set_seed(self) -> None:
        ...         pass  # seed elsewhere
    """

    def _parse_ckpt_path(self) -> None:
        self.parse_ckpt_path()

    def _set_seed(self) -> None:
        self.set_seed()

    def parse_ckpt_path(self) -> None:
        """Lightning's step: merge the hyperparameters of `ckpt_path` into the model config."""
        super()._parse_ckpt_path()  # type: ignore[misc]

    def set_seed(self) -> None:
        """Lightning's step: seed from the `seed_everything` key."""
        super()._set_seed()  # type: ignore[misc]


def instantiation_error(error: ValueError) -> BaseException:
    """The error a class's `__init__` raised, when `error` is jsonargparse's wrapper around it; else `error`.

    jsonargparse raises a `ValueError` ("Does not validate against any of the Union subtypes
    ...") from the class's own error when it instantiates a class in subclass mode.

    Examples:
        >>> instantiation_error(ValueError("plain")).args
        ('plain',)
    """
    cause = error.__cause__
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    module: Any = traceback.tb_frame.f_globals.get("__name__", "") if traceback is not None else ""
    return cause if isinstance(cause, Exception) and str(module).startswith("jsonargparse") else error
