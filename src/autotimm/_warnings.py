"""Warnings that point at the user's line, not at the library's."""

from __future__ import annotations

import inspect
import warnings

from pytorch_lightning.utilities import rank_zero_only

__all__ = ["warn"]

# Packages whose frames a warning skips: the line it names is the first one outside them.
_LIBRARIES = ("autotimm", "pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities", "torch")


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn on global rank 0, attributed to the user's code that led here.

    The location (and the source line Python prints under the message) is the first caller
    outside autotimm, Lightning and torch: the user's `AutoTrainer(...)`, `trainer.fit(...)` or
    `ImageDataModule(...)` line, whatever the depth of the library code in between. A fixed
    `stacklevel` names a line of the library instead, such as `rank_zero_warn(`.

    Examples:
        >>> warn("autotimm: 2 file(s) skipped")  # doctest: +SKIP
        train.py:12: UserWarning: autotimm: 2 file(s) skipped
          data.setup("fit")
    """
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    level, frame = 1, inspect.currentframe()
    while frame is not None and frame.f_back is not None and _in_library(frame):
        level, frame = level + 1, frame.f_back
    del frame  # no reference cycle through the frame
    warnings.warn(message, category, stacklevel=level)


def _in_library(frame: object) -> bool:
    module = frame.f_globals.get("__name__", "")  # type: ignore[attr-defined]
    return any(module == name or module.startswith(f"{name}.") for name in _LIBRARIES)
