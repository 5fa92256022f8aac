"""`ImageDataModule`: image classification data from class folders, tables or torchvision built-ins.

Folder layout::

    data_dir/
        train/<class_name>/*.jpg|png|...
        val/<class_name>/...     (optional: else a seeded, stratified split of train)
        test/<class_name>/...    (optional)

A table (a CSV file, a DataFrame or a list of records, `data/classification/tables.py`) lists
image paths with a label, a set of labels (multi-label), a split and a group per row.

Transforms follow the backbone's data config (input size, mean/std, interpolation,
crop), read from the attached `LightningModule.data_config` when `setup()` runs.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from autotimm._deprecation import renamed_argument
from autotimm._errors import check_bool, check_choice, check_image_size, check_number, check_seed
from autotimm._warnings import warn
from autotimm.data.base import BaseDataModule
from autotimm.data.classification.datasets import (
    TransformedSubset,
    balanced_sample_weights,
    iterative_split,
    resolve_builtin,
    stratified_split,
)
from autotimm.data.classification.folders import LAYOUT, check_folder_layout, scan_split
from autotimm.data.classification.tables import (
    SPLITS,
    ImageTable,
    ImageTableDataset,
    TableColumns,
    check_groups,
    encode,
    label_indices,
    read_table,
    table_classes,
)
from autotimm.data.classification.transforms import (
    AugmentationName,
    check_augmentation_preset,
    create_eval_transform,
    create_train_transform,
    resolve_data_config,
)

__all__ = ["ImageDataModule", "MultiLabelImageDataModule"]

log = logging.getLogger(__name__)


class ImageDataModule(BaseDataModule):
    """Image classification data from class folders, a table or a torchvision built-in, with timm transforms.

    Args:
        data_dir: Root of the image folder (`train/<class>/...`, optional `val/`, `test/`), or
            where a built-in data set is downloaded to; with a table, where its image paths start
            (`image_dir` does the same).
        dataset_name: `"CIFAR10"`, `"CIFAR100"`, `"MNIST"` or `"FashionMNIST"` (case-insensitive)
            to use a torchvision built-in (downloaded by `prepare_data()`); `None` for an image folder.
            Grayscale sets are converted to 3-channel RGB.
        image_size: Overrides the backbone's input height and width (an int, or `(height, width)`),
            each side >= 32 (`autotimm._errors.MIN_IMAGE_SIZE`, the same for every data module and model).
        batch_size: Samples per batch; read each time a dataloader is built, so the batch-size
            finder can change it.
        num_workers: DataLoader worker processes; `None` means `min(8, usable CPUs)`.
        val_split: Fraction of each class of `train` held out for validation when there is no
            `val/` folder or `val` rows (built-ins always split). `0` means no validation set.
        seed: Seed of that split and of the balanced sampler, an int in `[0, 2**32)` (their own
            generators; global RNGs are untouched).
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
        sampler: `"balanced"` draws training images with replacement, each class equally often
            (a `WeightedRandomSampler` on inverse class frequency; a multi-label image weighs as its
            rarest label); `None` shuffles.
        balanced_sampling: `True` is `sampler="balanced"` (the original AutoTimm's name).
        train_csv: The training table: a CSV path, a DataFrame (anything with `to_dict("records")`
            and `columns`) or a list of records (mappings, or `(path, label)` pairs). With a
            `split_column` it holds every split.
        val_csv: A validation table (else the `val` rows, else `val_split` of the training rows).
        test_csv: A test table (else the `test` rows).
        image_dir: The folder the table's image paths are relative to (default: `data_dir`, else the
            folder of the `train_csv` file, else the working folder).
        image_column: The column of image paths.
        image_suffix: Appended to each image path (`".jpg"` when the table lists `ISIC_0027419`).
        label_column: The column of labels: class names or class indices (`0..K-1`); with
            `label_delim`, a delimited set of class names per image.
        label_columns: One 0/1 column per class (multi-label); their order is the class order.
        label_delim: Splits `label_column` into class names (multi-label), e.g. `" "` for `"cat dog"`.
        split_column: The column of `train`, `val` or `test` per row.
        group_column: Rows of one group (several images of one lesion) stay in one split.
        class_names: The classes in label order; by default the names found, sorted (or `0..K-1`
            for index labels, the `label_columns` for 0/1 columns). Needed for index labels when
            some class has no image.

    Attributes:
        train_dataset: The training `TransformedSubset`, set by `setup()`.
        val_dataset: The validation `TransformedSubset`, or `None` without a validation split.
        test_dataset: The test `TransformedSubset`, or `None` without a test split.
        multi_label: Whether each image has a set of labels (a float 0/1 vector per image).

    Transforms come from the data config: the one given to `set_data_config()` if any,
    else the attached `LightningModule`'s `data_config` attribute (as returned by
    `timm.data.resolve_model_data_config`), else timm's ImageNet defaults; `image_size`
    then overrides the size. They are rebuilt at every `setup()`.

    A table is read and checked when the data module is built (columns, files, labels, splits),
    so `class_names` is known then; `ImageDataModule.from_table` is the short way to give one.
    Under DDP, Lightning wraps the balanced sampler so that each process draws its share.

    The saved hyperparameters (written into checkpoints) leave `data_dir` and the tables out:
    pass them again to `ImageDataModule.load_from_checkpoint(path, data_dir=...)`.

    The train loader sets `drop_last=True` only when the last batch would hold a single
    sample (BatchNorm fails on it); other loaders keep every sample.

    `setup()` only lists the files; an image is decoded when a loader reads it, and one that
    cannot be decoded (truncated, not an image) raises `CorruptImageError` naming the file,
    also from worker processes. Truncated images are never padded with grey.

    Raises:
        FileNotFoundError: If `data_dir` or its `train/` folder is missing, or image files a table
            lists (the first few are named, with the count).
        ValueError: If an argument is out of range, `dataset_name` is unknown, the class folders
            of `val/`/`test/` differ from those of `train/`, or a table is malformed (a missing
            column, a label outside the classes, an unknown split value, an empty split).
        TypeError: If an argument has the wrong type.

    Examples:
        >>> data = ImageDataModule("data/pets", image_size=224, batch_size=32)  # doctest: +SKIP
        >>> data = ImageDataModule.from_table("labels.csv", "images", label_column="dx")  # doctest: +SKIP
        >>> model = ImageClassifier(backbone="resnet18", num_classes=data.num_classes)  # doctest: +SKIP
        >>> AutoTrainer(max_epochs=3).fit(model, datamodule=data)  # doctest: +SKIP
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
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
        sampler: Literal["balanced"] | None = None,
        balanced_sampling: bool = False,
        train_csv: Any = None,
        val_csv: Any = None,
        test_csv: Any = None,
        image_dir: str | os.PathLike[str] | None = None,
        image_column: str = "image_path",
        image_suffix: str = "",
        label_column: str = "label",
        label_columns: Sequence[str] | None = None,
        label_delim: str | None = None,
        split_column: str | None = None,
        group_column: str | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        columns = TableColumns(
            image_column, label_column, label_columns, label_delim, split_column, group_column, image_suffix
        ).checked(train_csv is not None, class_names)
        root = _data_root(data_dir, dataset_name, train_csv, val_csv, test_csv, image_dir)
        super().__init__(root, batch_size, num_workers, pin_memory, persistent_workers)
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
        check_choice("sampler", sampler, [None, "balanced"])
        if check_bool("balanced_sampling", balanced_sampling):
            sampler = "balanced"

        self.image_size = image_size
        self.val_split = float(val_split)
        self.seed = seed
        self.augmentation_preset = augmentation_preset
        self.sampler = sampler
        self._train_transforms = train_transforms
        self._eval_transforms = eval_transforms
        self._builtin = resolve_builtin(dataset_name) if dataset_name is not None else None
        self._bases: dict[str, Dataset] = {}
        self._groups: list[str] | None = None
        self.multi_label = train_csv is not None and columns.multi_label
        if train_csv is not None:
            tables = {"train": train_csv, "val": val_csv, "test": test_csv}
            self._class_names = self._read_tables(tables, columns, class_names)
        elif self._builtin is not None:
            self._class_names = list(self._builtin.classes)
        else:
            self._class_names = check_folder_layout(self.data_dir)
        # Primitives only, so that checkpoints load with `torch.load(weights_only=True)`; no
        # `data_dir` or tables: a path is machine-specific and often holds the user's name.
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
                "sampler": sampler,
                **(
                    {
                        "image_column": image_column,
                        "image_suffix": image_suffix,
                        "label_column": label_column,
                        "label_columns": None if label_columns is None else list(label_columns),
                        "label_delim": label_delim,
                        "split_column": split_column,
                        "group_column": group_column,
                        "class_names": list(self._class_names),
                    }
                    if train_csv is not None
                    else {}
                ),
            }
        )
        self._explicit_data_config: dict[str, Any] | None = None
        self._data_config: dict[str, Any] | None = None
        self._split: tuple[list[int], list[int]] | None = None

    @classmethod
    def from_table(
        cls,
        table: Any,
        image_dir: str | os.PathLike[str] | None = None,
        *,
        val_table: Any = None,
        test_table: Any = None,
        **kwargs: Any,
    ) -> ImageDataModule:
        """Classification data from a table: a CSV path, a DataFrame or a list of records.

        Args:
            table: The training table, or every split with `split_column="..."`.
            image_dir: The folder of the table's image paths (default: the CSV file's folder, else
                the working folder).
            val_table: A validation table (else the `val` rows, else `val_split` of the training rows).
            test_table: A test table.
            **kwargs: The other arguments of `ImageDataModule` (`image_column`, `label_column`,
                `label_delim`, `label_columns`, `split_column`, `group_column`, `image_size`, ...).

        Examples:
            >>> data = ImageDataModule.from_table(  # doctest: +SKIP
            ...     "metadata.csv", "images", image_column="image_id", label_column="dx", group_column="lesion_id"
            ... )
        """
        return cls(train_csv=table, val_csv=val_table, test_csv=test_table, image_dir=image_dir, **kwargs)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> ImageDataModule:  # type: ignore[override]
        """Rebuild the data module from a checkpoint; `data_dir` (or the tables) must be given (checkpoints
        do not store them).

        Examples:
            >>> data = ImageDataModule.load_from_checkpoint("best.ckpt", data_dir="data/pets")  # doctest: +SKIP
        """
        if "data_dir" not in kwargs and "train_csv" not in kwargs:
            raise TypeError(
                f"{cls.__name__}.load_from_checkpoint needs `data_dir=...` (or `train_csv=...`): checkpoints do not "
                "store the data's paths."
            )
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def _read_tables(
        self, given: Mapping[str, Any], columns: TableColumns, class_names: Sequence[str] | None
    ) -> list[str]:
        """Read and check the tables, build the data set of each split and return the class names."""
        read = {
            # The split column is the training table's; a validation or test table is that split as a whole.
            s: read_table(
                t, f"{s}_csv", columns if s == "train" else replace(columns, split_column=None), self.data_dir
            )
            for s, t in given.items()
            if t is not None
        }
        tables: dict[str, ImageTable] = {}
        for split in SPLITS:
            parts = [read[s].select(split) for s in read if s == split or read[s].splits is not None]
            parts = [p for p in parts if len(p)]
            if parts:
                tables[split] = sum(parts[1:], parts[0])
        if "train" not in tables:
            raise ValueError(
                f"{read['train'].name} has no 'train' rows (column {columns.split_column!r}): the training split is "
                "empty."
            )
        if columns.group_column is not None:
            check_groups(tables)
            self._groups = tables["train"].groups
        names = table_classes(list(tables.values()), columns, class_names)
        indices = label_indices(list(tables.values()), columns)
        for split, table in tables.items():
            labels = encode(table, names, columns, indices)
            self._bases[split] = ImageTableDataset(table.paths, labels, len(names), self.multi_label)
        return names

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
        """Download a built-in data set into `data_dir` (nothing to do for image folders and tables)."""
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

    @property
    def _from_table(self) -> bool:
        return "train" in self._bases and isinstance(self._bases["train"], ImageTableDataset)

    def _has_split(self, split: str) -> bool:
        if self._from_table:
            return split in self._bases
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
            base = self._base("train")
            if isinstance(base, ImageTableDataset) and (self.multi_label or self._groups is not None):
                label_sets = base.label_sets()
                self._split = iterative_split(label_sets, self.val_split, self.seed, self._groups)
            else:
                label_sets = [(int(t),) for t in base.targets]
                self._split = stratified_split(base.targets, self.val_split, self.seed)
            counts = Counter(c for labels in label_sets for c in labels)
            single = [self._class_names[c] for c in sorted(counts) if counts[c] == 1]
            if single and self.val_split > 0:
                warn(
                    f"{len(single)} class(es) have a single training image, which stays in training (none of it is "
                    f"held out for validation): {single[:10]}."
                )
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
                    log.info("No validation set: no 'val' split and val_split=%s.", self.val_split)
        if needs_test and self._has_split("test"):
            self.test_dataset = TransformedSubset(self._base("test"), None, eval_tf)

    # ------------------------------------------------------------------ loaders

    def _train_sampler(self) -> Sampler | None:
        if self.sampler != "balanced" or self.train_dataset is None:
            return None
        weights = balanced_sample_weights(self.train_dataset.targets)
        generator = torch.Generator().manual_seed(self.seed)  # the same draws on every DDP process
        return WeightedRandomSampler(weights.double(), len(weights), replacement=True, generator=generator)

    def _split_exists(self, split: str) -> bool | None:
        if split == "val" and not self._has_split("val"):
            # Held out of train by `setup()`: known once it ran (empty with val_split=0 or tiny classes).
            return None if self.train_dataset is None else self.val_dataset is not None
        return split == "train" or self._has_split(split)

    def _missing_split_reason(self, split: str) -> str:
        val = ", or set `val_split` > 0." if split == "val" else "."
        if self._from_table:
            return f"the tables have no '{split}' rows. Give `{split}_csv=...` or rows whose split is '{split}'{val}"
        return (
            f"'{self.data_dir}' has no '{split}' folder. Add "
            f"'{self.data_dir / split}/<class_name>/...' with the same class folders as 'train'" + val
        )


class MultiLabelImageDataModule(ImageDataModule):
    """Multi-label image data from a table: each image has a set of labels, a float 0/1 vector per image.

    The original AutoTimm's name: `ImageDataModule` with `label_columns` or `label_delim` does the
    same. Train it with `ImageClassifier(multi_label=True)`.

    Args:
        train_csv: The training table (a CSV path, a DataFrame or a list of records).
        image_dir: The folder of the table's image paths.
        label_columns: One 0/1 column per class.
        label_delim: Or: the delimiter of the names in `label_column` (`" "` for `"cat dog"`).
        **kwargs: The other arguments of `ImageDataModule`.

    Raises:
        TypeError: If neither `label_columns` nor `label_delim` is given.

    Examples:
        >>> data = MultiLabelImageDataModule(  # doctest: +SKIP
        ...     train_csv="labels.csv", image_dir="images", label_columns=["cat", "dog", "outdoor"]
        ... )
        >>> model = ImageClassifier("resnet18", num_classes=data.num_classes, multi_label=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        train_csv: Any,
        image_dir: str | os.PathLike[str] | None = None,
        label_columns: Sequence[str] | None = None,
        label_delim: str | None = None,
        **kwargs: Any,
    ) -> None:
        if label_columns is None and label_delim is None:
            raise TypeError(
                "MultiLabelImageDataModule needs `label_columns=[...]` (one 0/1 column per class) or `label_delim` "
                "(the delimiter of the names in `label_column`)."
            )
        super().__init__(
            train_csv=train_csv, image_dir=image_dir, label_columns=label_columns, label_delim=label_delim, **kwargs
        )


def _data_root(
    data_dir: Any, dataset_name: str | None, train_csv: Any, val_csv: Any, test_csv: Any, image_dir: Any
) -> Path:
    """The data module's root: the image folder, or the folder that the table's paths start from."""
    if train_csv is None:
        if val_csv is not None or test_csv is not None or image_dir is not None:
            raise TypeError("`val_csv`, `test_csv` and `image_dir` need a training table: give `train_csv=...` too.")
        if data_dir is None:
            raise TypeError("ImageDataModule needs `data_dir` (an image folder) or `train_csv` (a table).")
        return data_dir
    if dataset_name is not None:
        raise ValueError("Give `dataset_name` (a built-in data set) or `train_csv` (a table), not both.")
    if data_dir is not None and image_dir is not None and Path(data_dir) != Path(image_dir):
        raise ValueError(f"Give the image folder once: `data_dir` {data_dir!r} and `image_dir` {image_dir!r} differ.")
    root = image_dir if image_dir is not None else data_dir
    if root is None:
        root = Path(train_csv).parent if isinstance(train_csv, (str, os.PathLike)) else Path.cwd()
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"Expected `image_dir` to be a path, but got {type(root).__name__} {root!r}.")
    if not Path(root).expanduser().is_dir():
        raise FileNotFoundError(f"The image folder '{root}' (`image_dir`) does not exist or is not a folder.")
    return Path(root).expanduser().absolute()
