"""Every private name of Lightning, timm, torchvision or jsonargparse that autotimm still needs, one shim each.

Each shim has a test in `tests/test_compat.py` that fails if the library changes under it.
"""

from __future__ import annotations

from typing import Any

# ---- tasks / export slice ----------------------------------------------------------------


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
