"""Data loader settings shared by the data modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset

from autotimm._errors import check_number

__all__ = ["check_optional_bool", "default_num_workers", "create_loader"]


def default_num_workers() -> int:
    """Loader worker processes by default: the usable CPUs, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def check_optional_bool(name: str, value: object) -> bool | None:
    """Return `value` if it is True, False or None, else raise a `TypeError` naming `name`."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be True, False or None, but got {type(value).__name__} {value!r}.")
    return value


def create_loader(
    dataset: Dataset,
    datamodule: pl.LightningDataModule,
    *,
    train: bool,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A `DataLoader` with the data modules' defaults, read from `datamodule`'s `batch_size`,
    `num_workers`, `pin_memory` and `persistent_workers` (and its trainer).

    Training shuffles and drops a last batch of a single sample (BatchNorm cannot train on
    it); `pin_memory=None` pins only when the trainer runs on CUDA; workers persist between
    epochs unless `persistent_workers=False`.
    """
    batch_size = check_number("batch_size", datamodule.batch_size, low=1, integer=True)
    num_workers, pin_memory = datamodule.num_workers, datamodule.pin_memory
    if pin_memory is None:
        trainer = datamodule.trainer
        pin_memory = trainer is not None and isinstance(trainer.accelerator, CUDAAccelerator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train and len(dataset) > batch_size and len(dataset) % batch_size == 1,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0 and datamodule.persistent_workers is not False,
        collate_fn=collate_fn,
    )
