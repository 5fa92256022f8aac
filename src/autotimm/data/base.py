"""`BaseDataModule`: the loader settings, their checks and the four loaders shared by the data modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
from pytorch_lightning.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset, Sampler

from autotimm._errors import check_number

__all__ = ["BaseDataModule"]


def _default_num_workers() -> int:
    """Loader worker processes by default: the usable CPUs, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def _check_optional_bool(name: str, value: object) -> bool | None:
    """Return `value` if it is True, False or None, else raise a `TypeError` naming `name`.

    Examples:
        >>> _check_optional_bool("pin_memory", None) is None
        True
    """
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be True, False or None, but got {type(value).__name__} {value!r}.")
    return value


class BaseDataModule(pl.LightningDataModule):
    """What every autotimm data module shares: where the data lies, the loader settings and the loaders.

    A subclass says what is its own: it checks its own arguments, builds `train_dataset`,
    `val_dataset` and `test_dataset` in `setup()`, names its classes (`class_names`), sets
    `collate_fn` if its samples need one, and answers `_split_exists(split)` and
    `_missing_split_reason(split)` so that the loaders can explain a missing split.

    Args:
        data_dir: The data's root folder (a path; `~` is expanded).
        batch_size: Samples per batch, >= 1; read each time a dataloader is built, so the
            batch-size finder can change it.
        num_workers: DataLoader worker processes; `None` means `min(8, usable CPUs)`.
        pin_memory: `None` pins memory only when the trainer runs on CUDA.
        persistent_workers: `None` keeps workers alive between epochs when `num_workers > 0`.

    The train loader shuffles and sets `drop_last=True` only when the last batch would hold a
    single sample (BatchNorm fails on it); the other loaders keep every sample in order.
    `val_dataloader()` returns an empty list (Lightning then skips validation) when the data
    has no validation split; `predict_dataloader()` reads the test split if there is one,
    else the validation split.

    Raises:
        ValueError: If an argument is out of range.
        TypeError: If an argument has the wrong type.

    Example:
        >>> class Pairs(BaseDataModule):  # doctest: +SKIP
        ...     class_names = ["no", "yes"]
        ...     def setup(self, stage=None):
        ...         self.train_dataset = self.val_dataset = my_dataset
        ...     def _split_exists(self, split):
        ...         return split != "test"
        ...     def _missing_split_reason(self, split):
        ...         return "this data has no test split."
    """

    #: Merges a list of samples into a batch (`None`: PyTorch's default); a module-level
    #: function, so that worker processes can pickle it.
    collate_fn: ClassVar[Callable[[list[Any]], Any] | None] = None

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        batch_size: int,
        num_workers: int | None,
        pin_memory: bool | None,
        persistent_workers: bool | None,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"Expected `data_dir` to be a path, but got {type(data_dir).__name__} {data_dir!r}.")
        self.batch_size = check_number("batch_size", batch_size, low=1, integer=True)
        self.num_workers = (
            _default_num_workers()
            if num_workers is None
            else check_number("num_workers", num_workers, low=0, integer=True)
        )
        self.pin_memory = _check_optional_bool("pin_memory", pin_memory)
        self.persistent_workers = _check_optional_bool("persistent_workers", persistent_workers)
        if persistent_workers and self.num_workers == 0:
            raise ValueError("`persistent_workers=True` needs `num_workers` > 0, but got num_workers=0.")
        self.data_dir = Path(data_dir).expanduser()
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    # ------------------------------------------------------------------ metadata

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (known right after construction)."""
        raise NotImplementedError(f"{type(self).__name__} must define `class_names`.")

    @property
    def num_classes(self) -> int:
        """Number of classes, `len(class_names)` (known right after construction)."""
        return len(self.class_names)

    # ------------------------------------------------------------------ what the subclass answers

    def _split_exists(self, split: str) -> bool | None:
        """Whether the data has `split` (`"train"`, `"val"` or `"test"`); `None` when only `setup()` can tell."""
        raise NotImplementedError(f"{type(self).__name__} must define `_split_exists`.")

    def _missing_split_reason(self, split: str) -> str:
        """Why the data has no `split`, and how to add one (ends the error "There is no <split> set: ...")."""
        raise NotImplementedError(f"{type(self).__name__} must define `_missing_split_reason`.")

    def _train_sampler(self) -> Sampler | None:
        """The sampler of the train loader; `None` shuffles (a subclass may draw samples its own way)."""
        return None

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: Dataset | None, split: str, stage: str, *, train: bool = False) -> DataLoader:
        """A `DataLoader` over `dataset` with the module's settings; explains a missing or not yet built split."""
        if dataset is None:
            if self._split_exists(split) is False:
                raise RuntimeError(f"There is no {split} set: {self._missing_split_reason(split)}")
            raise RuntimeError(
                f"The {split} set is not built yet: call `setup({stage!r})` first (the Trainer does this for you)."
            )
        batch_size = check_number("batch_size", self.batch_size, low=1, integer=True)
        pin_memory = self.pin_memory
        if pin_memory is None:
            pin_memory = self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)
        sampler = self._train_sampler() if train else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(dataset) > batch_size and len(dataset) % batch_size == 1,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0 and self.persistent_workers is not False,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.train_dataset, "train", "fit", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches; an empty list (Lightning then skips validation) when the data has no val split."""
        if self.val_dataset is None and self._split_exists("val") is False:
            return []
        return self._loader(self.val_dataset, "val", "validate")

    def test_dataloader(self) -> DataLoader:
        """Test batches; raises if the data has no test split."""
        return self._loader(self.test_dataset, "test", "test")

    def predict_dataloader(self) -> DataLoader:
        """Batches of the test split if there is one, else of the validation split."""
        if self.test_dataset is not None or self._split_exists("test"):
            return self._loader(self.test_dataset, "test", "predict")
        return self._loader(self.val_dataset, "val", "predict")
