"""Checkpoint writing that a crash cannot corrupt: temporary file, atomic rename (and fsync on request)."""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from autotimm._atomic import atomic_path

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic.

    The checkpoint is written to a hidden temporary file beside its destination, then renamed
    over the destination (`os.replace`). A process killed at any moment, even with SIGKILL,
    leaves either the previous checkpoint or the new one, never half a file. Lightning's own
    save stages the file in the system temporary folder, which is a copy, not a rename, when
    that folder is on another file system. Remote paths (`s3://...`) are saved by Lightning
    as usual.

    Loading (`ckpt_path=` of `fit`, `validate`, `test`, `predict`, once Lightning has resolved
    `"last"`, `"hpc"`, ...) refuses a local file that `torch.save` did not write, before it is
    unpickled, naming the file and its size.

    Args:
        durable: Also flush the file and the rename to the disk (`fsync`) before the save
            returns, so that the checkpoint survives a power cut or a kernel crash as well, not
            only the death of the process. It costs the time of writing the file out (about
            50-70 ms for a 130 MB checkpoint on a local SSD, far more on network storage).

    Examples:
        >>> trainer = AutoTrainer(plugins=[AtomicCheckpointIO(durable=True)])  # doctest: +SKIP
    """

    def __init__(self, durable: bool = False) -> None:
        super().__init__()
        self.durable = durable

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        _drop_cached_pages(path)
        with atomic_path(path, durable=self.durable) as tmp:
            torch.save(checkpoint, tmp)  # by name: torch writes the file itself, not through Python

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Lightning's load, after checking that a local file is a `torch.save` archive.

        Raises:
            ValueError: If `path` is a local file but not a PyTorch checkpoint (truncated, or another kind of file).
            FileNotFoundError: If `path` does not exist (raised by Lightning, naming the path).
        """
        local = Path(path) if "://" not in str(path) else None
        if local is not None and local.is_file() and not zipfile.is_zipfile(local):
            raise ValueError(
                f"`ckpt_path` {str(path)!r} is not a PyTorch checkpoint (not a torch.save archive; "
                f"{local.stat().st_size} bytes): it may be truncated or another kind of file. Pass a .ckpt file "
                "written by Lightning, or `ckpt_path='last'` for the newest one under `default_root_dir`."
            )
        return super().load_checkpoint(path, *args, **kwargs)


def _drop_cached_pages(path: Path) -> None:
    """Tell the operating system that its cached copy of `path`, about to be replaced, is not needed.

    The file on disk is untouched. The new checkpoint is written while the old one still
    exists, so without this the write needs fresh memory for every page; with it, the memory
    that held the old file's pages is reused at once. On the development machine (a virtual
    machine) a 130 MB `last.ckpt` took 0.16 s to save instead of 0.33 s. A no-op where
    `posix_fadvise` does not exist (Windows, macOS).
    """
    if not hasattr(os, "posix_fadvise") or not path.is_file():
        return
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
