"""The batch-size search: Lightning's public `Tuner.scale_batch_size`, capped at the training-set size."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities import rank_zero_info

from autotimm.tuner.base import run_step, sweep_trainer
from autotimm.tuner.config import TunerConfig, TuningError

__all__ = ["find_batch_size"]

_OFF = "Turn this step off with `TunerConfig(auto_batch_size=False)` and set `batch_size` on the data module yourself."


def find_batch_size(
    trainer: pl.Trainer,
    config: TunerConfig,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None,
    loaders: dict[str, Any],
) -> int:
    """Find the largest batch size that fits, set it on `datamodule` and return it.

    Lightning's batch-size finder runs with `config.batch_size_kwargs` in a trainer of its own
    (`sweep_trainer`) on `trainer`'s device and precision; its result is capped at the size of
    the training set (a larger batch only repeats nothing: it is the whole set).

    Raises:
        TuningError: If there is no data module with a `batch_size`, or the finder fails.

    Examples:
        >>> config = TunerConfig(auto_batch_size=True)
        >>> find_batch_size(trainer, config, model, data, {"datamodule": data})  # doctest: +SKIP
        30
    """
    if datamodule is None or not hasattr(datamodule, "batch_size"):
        raise TuningError(
            f"The batch-size finder needs a data module with a `batch_size` attribute (such as ImageDataModule). {_OFF}"
        )
    sweep = sweep_trainer(trainer)
    found = run_step(
        "batch-size finder", _OFF, lambda: Tuner(sweep).scale_batch_size(model, **loaders, **config.batch_size_kwargs)
    )
    if not found:
        raise TuningError(f"The batch-size finder returned no batch size. {_OFF}")
    size = _train_set_size(sweep)
    if size is not None:
        found = min(found, size)
    datamodule.batch_size = found
    if "batch_size" in getattr(datamodule, "hparams", {}):
        datamodule.hparams["batch_size"] = found
    rank_zero_info(f"autotimm: batch-size finder chose batch_size={found}")
    return found


def _train_set_size(trainer: pl.Trainer) -> int | None:
    try:
        return len(trainer.train_dataloader.dataset)
    except (AttributeError, TypeError):
        return None
