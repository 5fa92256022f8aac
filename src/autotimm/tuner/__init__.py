"""Tuning before training: Lightning's batch-size finder and autotimm's LR range test.

`AutoTrainer.fit` calls `run_tuning` when it has a `TunerConfig`; `LRRangeTest` is a plain
Lightning callback that also works in any `Trainer`.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl

from autotimm.tuner.batch_size import find_batch_size
from autotimm.tuner.config import TunerConfig, TuningError
from autotimm.tuner.lr_finder import LRRangeTest, find_lr, lr_attribute, suggest_lr

__all__ = ["LRRangeTest", "TunerConfig", "TuningError", "run_tuning", "suggest_lr"]


def run_tuning(
    trainer: pl.Trainer,
    config: TunerConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
) -> dict[str, Any]:
    """Run the tuning steps `config` asks for and apply their results to `model` / `datamodule`.

    The batch size is found first (it changes the loss landscape the LR range test sees). Each
    search runs in a trainer of its own on `trainer`'s device: `trainer` is left as it is.

    Returns:
        The results: `batch_size`, `lr` and `lr_find_curve` (the path of the saved loss-vs-LR
        curve) for the steps that ran.

    Raises:
        TuningError: when a step fails; the message names the step and how to turn it off.

    Examples:
        >>> run_tuning(trainer, TunerConfig(auto_lr=True), model, data)  # doctest: +SKIP
        {'lr': 0.0021, 'lr_find_curve': 'runs/train/plots/lr_finder.json'}
    """
    results: dict[str, Any] = {}
    loaders = {"train_dataloaders": train_dataloaders, "val_dataloaders": val_dataloaders, "datamodule": datamodule}
    attribute = lr_attribute(model) if config.auto_lr else None
    if config.auto_batch_size:
        results["batch_size"] = find_batch_size(trainer, config, model, datamodule, loaders)
    if attribute is not None:
        results.update(find_lr(trainer, config, model, loaders, attribute))
    return results
