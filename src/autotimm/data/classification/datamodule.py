"""`ImageDataModule`: image classification data from class folders or torchvision built-ins.

Folder layout::

    data_dir/
        train/<class_name>/*.jpg|png|...
        val/<class_name>/...     (optional: else a seeded, stratified split of train)
        test/<class_name>/...    (optional)

Transforms follow the backbone's data config (input size, mean/std, interpolation,
crop), read from the attached `LightningModule.data_config` when `setup()` runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from torch.utils.data import Dataset

from autotimm._deprecation import renamed_argument
from autotimm._errors import check_image_size, check_number, check_seed
from autotimm.data.base import BaseDataModule
from autotimm.data.classification.datasets import TransformedSubset, resolve_builtin, stratified_split
from autotimm.data.classification.folders import LAYOUT, check_folder_layout, scan_split
from autotimm.data.classification.transforms import (
    AugmentationName,
    check_augmentation_preset,
    create_eval_transform,
    create_train_transform,
    resolve_data_config,
)

__all__ = ["ImageDataModule"]

log = logging.getLogger(__name__)


class ImageDataModule(BaseDataModule):
    """Image classification data from class folders or a torchvision built-in, with timm transforms.

    Args:
        data_dir: Root of the image folder (`train/<class>/...`, optional `val/`, `test/`), or
            where a built-in data set is downloaded to.
        dataset_name: `"CIFAR10"`, `"CIFAR100"`, `"MNIST"` or `"FashionMNIST"` (case-insensitive)
            to use a torchvision built-in (downloaded by `prepare_data()`); `None` for an image folder.
            Grayscale sets are converted to 3-channel RGB.
        image_size: Overrides the backbone's input height and width (an int, or `(height, width)`),
            each side >= 32 (`autotimm._errors.MIN_IMAGE_SIZE`, the same for every data module and model).
        batch_size: Samples per batch; read each time a dataloader is built, so the batch-size
            finder can change it.
        num_workers: DataLoader worker processes; `None` means `min(8, usable CPUs)`.
        val_split: Fraction of each class of `train` held out for validation when there is no
            `val/` folder (built-ins always split). `0` means no validation set.
        seed: Seed of that split, an int in `[0, 2**32)` (its own generator; global RNGs are untouched).
        augmentation_preset: Training augmentation preset from `list_augmentations()` (see
            `autotimm.data.create_train_transform`). `"auto"` fits the image size: shifts and flips
            for images of at most 64 px, timm's random-resized-crop recipe for larger ones; for
            the MNIST built-in it is `"no_flip"`. Pass `"no_flip"` when orientation matters in your
            images; any other name does exactly what it says.
        train_transforms: A callable (PIL image -> tensor) used instead of the preset.
        eval_transforms: A callable used instead of the eval transform built from the data config.
        pin_memory: `None` pins memory only when the trainer runs on CUDA.
        persistent_workers: `None` keeps workers alive between epochs when `num_workers > 0`.
        augmentation: Deprecated name of `augmentation_preset` (warns with a `FutureWarning`).

    Attributes:
        train_dataset: The training `TransformedSubset`, set by `setup()`.
        val_dataset: The validation `TransformedSubset`, or `None` without a validation split.
        test_dataset: The test `TransformedSubset`, or `None` without a `test/` split.

    Transforms come from the data config: the one given to `set_data_config()` if any,
    else the attached `LightningModule`'s `data_config` attribute (as returned by
    `timm.data.resolve_model_data_config`), else timm's ImageNet defaults; `image_size`
    then overrides the size. They are rebuilt at every `setup()`.

    The saved hyperparameters (written into checkpoints) leave `data_dir` out: pass it
    again to `ImageDataModule.load_from_checkpoint(path, data_dir=...)`.

    The train loader sets `drop_last=True` only when the last batch would hold a single
    sample (BatchNorm fails on it); other loaders keep every sample.

    `setup()` only lists the files; an image is decoded when a loader reads it, and one that
    cannot be decoded (truncated, not an image) raises `CorruptImageError` naming the file,
    also from worker processes. Truncated images are never padded with grey.

    Raises:
        FileNotFoundError: If `data_dir` or its `train/` folder is missing.
        ValueError: If an argument is out of range, `dataset_name` is unknown, or the class
            folders of `val/`/`test/` differ from those of `train/`.
        TypeError: If an argument has the wrong type.

    Examples:
        >>> data = ImageDataModule("data/pets", image_size=224, batch_size=32)  # doctest: +SKIP
        >>> model = ImageClassifier(backbone="resnet18", num_classes=data.num_classes)  # doctest: +SKIP
        >>> AutoTrainer(max_epochs=3).fit(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        dataset_name: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        val_split: float = 0.1,
        seed: int = 42,
        augmentation_preset: AugmentationName = "auto",
        train_transforms: Callable | None = None,
        eval_transforms: Callable | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        *,
        augmentation: AugmentationName | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory, persistent_workers)
        if image_size is not None:
            check_image_size(image_size)
        check_number("val_split", val_split, low=0, high=1)
        check_seed(seed)
        augmentation_preset = renamed_argument(
            "augmentation", augmentation, "augmentation_preset", augmentation_preset, "auto", owner="ImageDataModule"
        )
        check_augmentation_preset(augmentation_preset)
        for name, tf in (("train_transforms", train_transforms), ("eval_transforms", eval_transforms)):
            if tf is not None and not callable(tf):
                raise TypeError(
                    f"Expected `{name}` to be a callable (PIL image -> tensor) or None, but got "
                    f"{type(tf).__name__} {tf!r}."
                )

        self.image_size = image_size
        self.val_split = float(val_split)
        self.seed = seed
        self.augmentation_preset = augmentation_preset
        self._train_transforms = train_transforms
        self._eval_transforms = eval_transforms
        self._builtin = resolve_builtin(dataset_name) if dataset_name is not None else None
        self._class_names = (
            list(self._builtin.classes) if self._builtin is not None else check_folder_layout(self.data_dir)
        )
        # Primitives only, so that checkpoints load with `torch.load(weights_only=True)`; no
        # `data_dir`: a path is machine-specific and often holds the user's name.
        self.save_hyperparameters(
            {
                "dataset_name": self._builtin.name if self._builtin is not None else None,
                "image_size": image_size,
                "batch_size": batch_size,
                "num_workers": num_workers,
                "val_split": self.val_split,
                "seed": seed,
                "augmentation_preset": augmentation_preset,
                "pin_memory": pin_memory,
                "persistent_workers": persistent_workers,
            }
        )
        self._explicit_data_config: dict[str, Any] | None = None
        self._data_config: dict[str, Any] | None = None
        self._bases: dict[str, Dataset] = {}
        self._split: tuple[list[int], list[int]] | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> ImageDataModule:  # type: ignore[override]
        """Rebuild the data module from a checkpoint; `data_dir` must be given (checkpoints do not store it).

        Examples:
            >>> data = ImageDataModule.load_from_checkpoint("best.ckpt", data_dir="data/pets")  # doctest: +SKIP
        """
        if "data_dir" not in kwargs:
            raise TypeError(
                "ImageDataModule.load_from_checkpoint needs `data_dir=...`: checkpoints do not store the data "
                "folder's path."
            )
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # ------------------------------------------------------------------ metadata

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (known right after construction)."""
        return list(self._class_names)

    @property
    def data_config(self) -> dict[str, Any]:
        """The data config the transforms were built from at the last `setup()` (resolved now if none ran)."""
        return dict(self._data_config) if self._data_config is not None else self._resolve_data_config()

    def set_data_config(self, data_config: Mapping[str, Any] | None) -> None:
        """Fix the data config, taking precedence over the attached model's; `None` clears it.

        Takes effect at the next `setup()`.

        Examples:
            >>> import timm  # doctest: +SKIP
            >>> model = timm.create_model("resnet18", pretrained=False)  # doctest: +SKIP
            >>> data.set_data_config(timm.data.resolve_model_data_config(model))  # doctest: +SKIP
            >>> data.setup("fit")  # doctest: +SKIP
        """
        self._explicit_data_config = None if data_config is None else resolve_data_config(data_config)

    def _resolve_data_config(self) -> dict[str, Any]:
        source: Mapping[str, Any] | None = self._explicit_data_config
        if source is None and self.trainer is not None:
            source = getattr(getattr(self.trainer, "lightning_module", None), "data_config", None)
        return resolve_data_config(source, self.image_size)

    # ------------------------------------------------------------------ data sets

    def prepare_data(self) -> None:
        """Download a built-in data set into `data_dir` (nothing to do for image folders)."""
        if self._builtin is None:
            return
        for train in (True, False):
            try:
                self._builtin.load(self.data_dir, train=train, download=True)
            except (OSError, RuntimeError) as e:
                raise RuntimeError(
                    f"Could not download {self._builtin.name} ({'train' if train else 'test'} split) into "
                    f"'{self.data_dir}': {type(e).__name__}: {e}. Without internet access, place the files in "
                    f"'{self.data_dir}' the way `torchvision.datasets.{self._builtin.name}` stores them, or use "
                    f"an image folder with dataset_name=None. {LAYOUT}"
                ) from e

    def _has_split(self, split: str) -> bool:
        if self._builtin is not None:
            return split in ("train", "test")
        return (self.data_dir / split).is_dir()

    def _base(self, split: str) -> Dataset:
        """The untransformed data set of one split, read once and cached."""
        if split not in self._bases:
            if self._builtin is None:
                self._bases[split] = scan_split(self.data_dir / split)
            else:
                try:
                    self._bases[split] = self._builtin.load(self.data_dir, train=split == "train", download=False)
                except RuntimeError as e:
                    raise FileNotFoundError(
                        f"{self._builtin.name} was not found (or is incomplete) in '{self.data_dir}' ({e}). "
                        "Call `prepare_data()` to download it (the Trainer does), or place its files there."
                    ) from e
        return self._bases[split]

    def _train_val_indices(self) -> tuple[list[int], list[int]]:
        if self._split is None:
            self._split = stratified_split(self._base("train").targets, self.val_split, self.seed)
        return self._split

    def setup(self, stage: str | None = None) -> None:
        """Resolve the data config, build the transforms and the data sets that `stage` needs."""
        self._data_config = self._resolve_data_config()
        train_tf = self._train_transforms
        if train_tf is None:
            preset = self.augmentation_preset
            if preset == "auto" and self._builtin is not None and self._builtin.upright:
                preset = "no_flip"
            train_tf = create_train_transform(self._data_config, preset)
        eval_tf = self._eval_transforms
        if eval_tf is None:
            eval_tf = create_eval_transform(self._data_config)
        log.debug("ImageDataModule data config: %s", self._data_config)

        needs_test = stage in (None, "test") or (stage == "predict" and self._has_split("test"))
        if stage in (None, "fit", "validate") or (stage == "predict" and not needs_test):
            if self._has_split("val"):
                self.train_dataset = TransformedSubset(self._base("train"), None, train_tf)
                self.val_dataset = TransformedSubset(self._base("val"), None, eval_tf)
            else:
                train_idx, val_idx = self._train_val_indices()
                self.train_dataset = TransformedSubset(self._base("train"), train_idx, train_tf)
                self.val_dataset = TransformedSubset(self._base("train"), val_idx, eval_tf) if val_idx else None
                if self.val_dataset is None:
                    log.info("No validation set: no 'val' folder and val_split=%s.", self.val_split)
        if needs_test and self._has_split("test"):
            self.test_dataset = TransformedSubset(self._base("test"), None, eval_tf)

    # ------------------------------------------------------------------ loaders

    def _split_exists(self, split: str) -> bool | None:
        if split == "val" and not self._has_split("val"):
            # Held out of train by `setup()`: known once it ran (empty with val_split=0 or tiny classes).
            return None if self.train_dataset is None else self.val_dataset is not None
        return split == "train" or self._has_split(split)

    def _missing_split_reason(self, split: str) -> str:
        return (
            f"'{self.data_dir}' has no '{split}' folder. Add "
            f"'{self.data_dir / split}/<class_name>/...' with the same class folders as 'train'"
            + (", or set `val_split` > 0." if split == "val" else ".")
        )
