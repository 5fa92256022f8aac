"""Checkpoint writing that a crash cannot corrupt: temporary file, fsync, atomic rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "last_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic.

    The checkpoint is written to a hidden temporary file beside its destination, flushed to
    disk, then renamed over the destination (`os.replace`). A process killed at any moment,
    even with SIGKILL, leaves either the previous checkpoint or the new one, never half a
    file. Lightning's own save stages the file in the system temporary folder, which is a
    copy, not a rename, when that folder is on another file system. Remote paths
    (`s3://...`) are saved by Lightning as usual.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{path.name}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        # Leftovers of a process that was killed while writing this same checkpoint.
        for stale in path.parent.glob(f"{prefix}*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path of the newest end-of-epoch checkpoint on disk (`last.ckpt`), or None."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            path = callback.last_model_path
            if path and Path(path).is_file():
                return path
    return None
