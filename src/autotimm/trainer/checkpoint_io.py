"""Checkpoint writing that a crash cannot corrupt: temporary file, atomic rename (and fsync on request)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from autotimm._atomic import atomic_path

__all__ = ["AtomicCheckpointIO", "find_checkpoint", "last_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic.

    The checkpoint is written to a hidden temporary file beside its destination, then renamed
    over the destination (`os.replace`). A process killed at any moment, even with SIGKILL,
    leaves either the previous checkpoint or the new one, never half a file. Lightning's own
    save stages the file in the system temporary folder, which is a copy, not a rename, when
    that folder is on another file system. Remote paths (`s3://...`) are saved by Lightning
    as usual.

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


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path of the newest end-of-epoch checkpoint on disk (`last.ckpt`), or None."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            path = callback.last_model_path
            if path and Path(path).is_file():
                return path
    return None


def find_checkpoint(trainer: pl.Trainer, which: Literal["last", "best"]) -> str:
    """The checkpoint that `ckpt_path="last"` (or `"best"`) means for `fit` or `test`: never none.

    This trainer's own checkpoint when an earlier `fit` of it wrote one; otherwise the newest
    (by modification time) of those that earlier runs under `default_root_dir` wrote: the ones
    their run records (`runs/*/run.json`) name and, for `"last"`, the `last.ckpt` files in the
    folders where checkpoints are written (the checkpoint callbacks' `dirpath`,
    `checkpoints/`, and `<save_dir>/<name>/<version>/checkpoints/` of each logger and of
    Lightning's default `lightning_logs`). A logger starts a new version folder for each
    run, so Lightning alone looks only in the new, empty one.

    Raises:
        FileNotFoundError: No such checkpoint exists; the message lists where it looked.

    Examples:
        >>> trainer.fit(model, datamodule=data, ckpt_path=find_checkpoint(trainer, "last"))  # doctest: +SKIP
    """
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    own = [
        cb.last_model_path if which == "last" else cb.best_model_path
        for cb in callbacks
        if which == "last" or cb.monitor
    ]
    own = [path for path in own if path and Path(path).is_file()]
    if own:
        return max(own, key=os.path.getmtime)
    root = Path(trainer.default_root_dir)
    places = [str(root / "runs" / "*" / "run.json")]
    candidates = [_recorded_checkpoint(path, which) for path in root.glob("runs/*/run.json")]
    if which == "last":
        folders = {Path(cb.dirpath) for cb in callbacks if cb.dirpath} | {root / "checkpoints"}
        versions = {Path(lg.save_dir) / str(lg.name or "") for lg in trainer.loggers if lg.save_dir}
        versions.add(root / "lightning_logs")
        places += sorted(map(str, folders)) + sorted(str(base / "*" / "checkpoints") for base in versions)
        folders.update(folder for base in versions for folder in base.glob("*/checkpoints"))
        candidates += [str(path) for folder in folders for path in folder.glob("last*.ckpt") if _is_last(path)]
    found = [str(path) for path in candidates if path is not None and Path(path).is_file()]
    if not found:
        hint = " A best checkpoint is kept only with `checkpoint_monitor`." if which == "best" else ""
        raise FileNotFoundError(
            f"`ckpt_path={which!r}` found no checkpoint to resume from; it looked in {', '.join(places)}.{hint} "
            "Pass the path of a .ckpt file, or leave `ckpt_path` out to train from scratch."
        )
    return max(found, key=os.path.getmtime)


def _is_last(path: Path) -> bool:
    """`last.ckpt`, or `last-v1.ckpt`, ... (Lightning's name when `last.ckpt` is already taken)."""
    return re.fullmatch(rf"{ModelCheckpoint.CHECKPOINT_NAME_LAST}(-v\d+)?", path.stem) is not None


def _recorded_checkpoint(run_json: Path, which: str) -> str | None:
    """The `which` checkpoint a run record names, or None (also for an unreadable record)."""
    try:
        return json.loads(run_json.read_text(encoding="utf-8"))["checkpoints"][which]
    except (OSError, ValueError, KeyError, TypeError):
        return None
