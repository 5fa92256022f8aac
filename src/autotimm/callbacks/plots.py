"""The `RunPlots` callback: draws a run's pictures at the end of `fit` with `autotimm.runs.plots`."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from autotimm._atomic import write_json_atomic
from autotimm._warnings import warn
from autotimm.analysis import best_confusion
from autotimm.callbacks.run_record import RunRecord, scalar_metrics
from autotimm.runs.plots import CONFUSION_DATA, LR_FINDER_DATA, PLOT_FILES, plot_jobs

log = logging.getLogger(__name__)

__all__ = ["RunPlots"]


class RunPlots(Callback):
    """Draw a run's pictures at the end of `fit` (also after an early stop or a failure).

    Into `<run_dir>/plots/` (`trainer.run_dir`: an AutoTrainer's run folder, or a `RunRecord`
    callback's), or `<default_root_dir>/plots/` without one (overwritten by the next `fit`):

    - `loss.png`: train and val loss per epoch;
    - `metrics.png`: one panel per logged metric, its train/val/test curves together;
    - `lr_finder.png`: loss against learning rate, the suggestion marked, when the
      tuner's LR finder ran (its data is copied to `lr_finder.json`);
    - `confusion_matrix.png`: validation counts, shaded by row (its data in
      `confusion_matrix.json`), for a multi-class or binary `ImageClassifier`: made with the best
      checkpoint's weights when the run kept one (`checkpoint_monitor`; the validation set is run
      through them once more, see `autotimm.analysis.best_confusion`), else the counts of the last
      validation epoch (the model's `epoch_summaries()`). Its title names the weights. Not drawn
      after a failure.

    Only global rank 0 draws. A picture that cannot be drawn or written gives a warning and never
    fails the run. AutoTrainer adds this callback unless `plots=False`.

    Attributes:
        plots_dir: The folder the last `fit` drew into (`None` before).

    Examples:
        >>> trainer = pl.Trainer(callbacks=[RunRecord(), RunPlots()])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.plots_dir: Path | None = None
        self._epochs: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epochs = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only needed without a run record, whose metrics.json holds the same values.
        if trainer.is_global_zero and not trainer.sanity_checking and _run_record(trainer) is None:
            entry = {"epoch": trainer.current_epoch, "step": trainer.global_step}
            self._epochs = [e for e in self._epochs if e["epoch"] != trainer.current_epoch]
            self._epochs.append({**entry, **scalar_metrics(trainer.callback_metrics)})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            _guarded("the plots", lambda: self._draw(trainer, pl_module, failed=False))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            _guarded("the plots", lambda: self._draw(trainer, pl_module, failed=True))

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, failed: bool) -> None:
        record = _run_record(trainer)
        run_dir = getattr(trainer, "run_dir", None)
        if record is None:
            root, epochs = Path(run_dir or trainer.default_root_dir), self._epochs
        elif record.run_dir is not None and (record.run_dir / "metrics.json").is_file():
            root, epochs = record.run_dir, json.loads((record.run_dir / "metrics.json").read_text(encoding="utf-8"))
        else:
            root, epochs = None, []
        if root is None or (failed and not epochs):
            return  # the run ended before its first epoch: nothing to draw
        out = root / "plots"
        if _guarded("the plots folder", lambda: out.mkdir(parents=True, exist_ok=True) or out) is None:
            return
        self.plots_dir = out
        if record is None and run_dir is None:  # shared by every fit: what an earlier fit drew must not stay
            for name in PLOT_FILES:
                _guarded(name, lambda name=name: (out / name).unlink(missing_ok=True))
        curve = getattr(trainer, "tuning_results", {}).get("lr_find_curve")
        if curve is not None and Path(curve).is_file() and Path(curve).resolve() != (out / LR_FINDER_DATA).resolve():
            _guarded(LR_FINDER_DATA, lambda: shutil.copyfile(curve, out / LR_FINDER_DATA))
        if not failed:
            _guarded(CONFUSION_DATA, lambda: _save_confusion(trainer, pl_module, out / CONFUSION_DATA))
        written = [path for name, draw in plot_jobs(epochs, out, data_dir=out) if (path := _guarded(name, draw))]
        if written:  # the run's folder was named when it started; a folder without a run record was not
            say = log.debug if record is not None else rank_zero_info
            say(f"autotimm: plots written to {out} ({', '.join(p.name for p in written)})")


def _run_record(trainer: pl.Trainer) -> RunRecord | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, RunRecord)), None)


def _guarded(what: str, action: Callable[[], Any]) -> Any:
    """Run `action`; if it fails, warn and return `None`: a picture must never fail a training run."""
    try:
        return action()
    except Exception as e:  # any plotting error is reported, and the run goes on
        warn(f"autotimm: could not write {what}: {type(e).__name__}: {e}")
        return None


def _save_confusion(trainer: pl.Trainer, pl_module: pl.LightningModule, path: Path) -> None:
    """Write the validation confusion matrix to `path` as JSON: the best checkpoint's, else the model's last
    validation epoch's, if it keeps one."""
    confusion = best_confusion(trainer, pl_module)
    if confusion is None:
        summaries = pl_module.epoch_summaries() if callable(getattr(pl_module, "epoch_summaries", None)) else {}
        confusion = summaries.get("confusion_matrix")
        if confusion is not None:
            confusion = {**confusion, "weights": "the last validation epoch's weights"}
    if confusion is not None:
        write_json_atomic(path, confusion)
