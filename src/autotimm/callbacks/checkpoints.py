"""The checkpoints AutoTrainer keeps (the best by a metric, `last.ckpt` every epoch) and finds again to resume."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from autotimm._errors import closest

__all__ = ["BEST_NAME", "checkpoint_callbacks", "find_checkpoint", "last_checkpoint"]

# The best checkpoint's file name, `best.ckpt` (the last is Lightning's `last.ckpt`).
BEST_NAME = "best"


class _BestCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that checks, right after the sanity check, that its validation metric is logged.

    Lightning finds out only at the end of the first training epoch; the sanity check's
    validation steps already show which metrics the model logs.
    """

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logged = sorted(trainer.callback_metrics)
        if not self.monitor.startswith("val") or self.monitor in logged or not logged:
            return
        matches = closest(self.monitor, logged)
        hint = f" Did you mean {matches[0]!r}?" if matches else ""
        raise ValueError(
            f"`checkpoint_monitor={self.monitor!r}` is never logged: validation logs {logged}.{hint} Pass one of "
            "these names, or log the metric with `self.log(...)` in `validation_step`."
        )


class _LastCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, `last.ckpt`, written at every epoch end; `last_model_path` names it,
    as with Lightning's `save_last=True` (which writes it only next to a top-k checkpoint).

    With no monitor and `save_top_k=1`, Lightning keeps one file and names it in
    `best_model_path` before writing it; `last_model_path` reads the same name, so a Ctrl-C
    right after the file lands still finds it, and the checkpoint's own state names it.
    """

    @property
    def last_model_path(self) -> str:
        return self.best_model_path

    @last_model_path.setter
    def last_model_path(self, path: str) -> None:  # Lightning sets it in `__init__` and `load_state_dict`
        self.best_model_path = path


def checkpoint_callbacks(
    monitor: str | None, mode: str, user_callbacks: list[Callback], dirpath: str | os.PathLike | None = None
) -> list[ModelCheckpoint]:
    """The checkpoint callbacks autotimm adds: `best.ckpt` by `monitor` (if any) and `last.ckpt`.

    The names are fixed, so that a program can open them; the best value is in the checkpoint
    (its `ModelCheckpoint` state) and in the run record. `last.ckpt` is written at every epoch
    end by a callback of its own: Lightning's `save_last=True` writes it only when a top-k
    checkpoint is saved at the same step. With no `monitor` and a `ModelCheckpoint` of the
    user's, none is added.

    Args:
        monitor: The metric to keep the best checkpoint by, or None.
        mode: `"max"` or `"min"`.
        user_callbacks: The user's callbacks.
        dirpath: The folder of both files (`<run_dir>/checkpoints`); None for Lightning's choice.

    Examples:
        >>> [type(cb).__name__ for cb in checkpoint_callbacks("val/accuracy", "max", [])]
        ['_BestCheckpoint', '_LastCheckpoint']
    """
    last = _LastCheckpoint(
        dirpath=dirpath,
        filename=ModelCheckpoint.CHECKPOINT_NAME_LAST,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    if monitor is None:
        if any(isinstance(cb, ModelCheckpoint) for cb in user_callbacks):
            return []
        return [last]  # one file per epoch, not Lightning's `epoch=...ckpt` plus a copy as `last.ckpt`
    best = _BestCheckpoint(
        dirpath=dirpath,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        filename=BEST_NAME,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    return [best, last]


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
    run_dir = getattr(trainer, "run_dir", None)
    if run_dir is not None:
        own += [str(p) for p in (_recorded_checkpoint(run_dir / "run.json", which),) if p and Path(p).is_file()]
    if own:
        return max(own, key=os.path.getmtime)
    root = Path(trainer.default_root_dir)
    runs_dir = Path(getattr(trainer, "runs_dir", None) or root / "runs")
    places = [str(runs_dir / "*" / "run.json")]
    candidates = [_recorded_checkpoint(path, which) for path in runs_dir.glob("*/run.json")]
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
