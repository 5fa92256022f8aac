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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torchvision.datasets
from PIL import Image
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder, has_file_allowed_extension

from autotimm._errors import unknown_choice
from autotimm.data.transforms import (
    AugmentationName,
    ToRGB,
    _check_augmentation,
    _check_image_size,
    build_eval_transform,
    build_train_transform,
    resolve_data_config,
)

__all__ = ["CorruptImageError", "ImageDataModule", "TransformedSubset", "load_rgb_image", "stratified_split"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMG_EXTENSIONS)
_LAYOUT = (
    "Expected layout: <data_dir>/train/<class_name>/<image files>, with optional "
    "<data_dir>/val/<class_name>/... and <data_dir>/test/<class_name>/..."
)
# Files that operating systems drop into folders; never reported as stray files.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})
_MAX_LISTED = 5


# --------------------------------------------------------------------------- files


class CorruptImageError(OSError):
    """Raised when a file with an image extension cannot be decoded; the message names the file."""


def load_rgb_image(path: str) -> Image.Image:
    """Open an image file as RGB, raising `CorruptImageError` naming `path` if it cannot be decoded.

    A module-level function, so datasets using it pickle into DataLoader workers.

    Example:
        >>> image = load_rgb_image("cat.png")  # doctest: +SKIP
    """
    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's decoders raise all three
        raise CorruptImageError(
            f"Could not read image file '{path}' ({type(e).__name__}: {e}). Remove or replace this file."
        ) from e


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


class _ImageFileFilter:
    """`is_valid_file` for torchvision's `make_dataset` that records the non-image files it skips."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.skipped: list[str] = []

    def __call__(self, path: str) -> bool:
        if any(_is_hidden(part) for part in Path(os.path.relpath(path, self.root)).parts):
            return False
        if has_file_allowed_extension(path, IMAGE_EXTENSIONS):
            return True
        self.skipped.append(path)
        return False


class _ClassFolders(ImageFolder):
    """torchvision's `ImageFolder`, except that hidden folders (`.ipynb_checkpoints`) are not classes."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = _list_class_folders(Path(directory))
        return classes, {name: i for i, name in enumerate(classes)}


def _list_class_folders(directory: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.is_dir() and not _is_hidden(e.name))


def _check_folder_layout(data_dir: Path) -> list[str]:
    """Check the folder layout (cheap: directory listings only) and return the class names."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"`data_dir` '{data_dir}' does not exist or is not a folder. {_LAYOUT}")
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        found = sorted(p.name for p in data_dir.iterdir())[:10]
        raise FileNotFoundError(f"No 'train' folder in '{data_dir}' (it holds {found}). {_LAYOUT}")
    classes = _list_class_folders(train_dir)
    if not classes:
        n_files = sum(1 for p in train_dir.iterdir() if p.is_file())
        raise FileNotFoundError(
            f"No class folders in '{train_dir}' ({n_files} files lie directly in it). "
            f"Put each class's images in its own sub-folder. {_LAYOUT}"
        )
    for split in ("val", "test"):
        split_dir = data_dir / split
        if not split_dir.is_dir():
            continue
        other = _list_class_folders(split_dir)
        missing, extra = sorted(set(classes) - set(other)), sorted(set(other) - set(classes))
        if missing or extra:
            raise ValueError(
                f"The class folders of '{split_dir}' do not match those of '{train_dir}': "
                f"missing in {split}/: {missing}; extra in {split}/: {extra}. "
                f"Every split needs the same class folders (an empty one is not allowed either)."
            )
    return classes


def _scan_split(directory: Path) -> ImageFolder:
    """Build the (untransformed) `ImageFolder` of one split; warn on non-image files, raise on empty classes."""
    is_image = _ImageFileFilter(str(directory))
    dataset = _ClassFolders(str(directory), loader=load_rgb_image, is_valid_file=is_image, allow_empty=True)
    if is_image.skipped:
        listed = ", ".join(f"'{p}'" for p in is_image.skipped[:_MAX_LISTED])
        more = f" and {len(is_image.skipped) - _MAX_LISTED} more" if len(is_image.skipped) > _MAX_LISTED else ""
        rank_zero_warn(
            f"Ignoring {len(is_image.skipped)} file(s) without an image extension in '{directory}': "
            f"{listed}{more}. Image extensions: {IMAGE_EXTENSIONS}."
        )
    counts = Counter(dataset.targets)
    empty = [name for name, idx in dataset.class_to_idx.items() if counts[idx] == 0]
    if empty:
        raise FileNotFoundError(
            f"Class folder(s) {empty} in '{directory}' hold no image files (extensions {IMAGE_EXTENSIONS}). "
            f"Add images or remove the folder(s) from every split."
        )
    return dataset


# --------------------------------------------------------------------------- datasets


class TransformedSubset(Dataset):
    """A view of `dataset` (optionally restricted to `indices`) with its own image transform.

    Lets the train and validation parts of one split use different transforms.

    Args:
        dataset: A dataset of `(PIL image, label)` pairs with a `targets` sequence.
        indices: The positions of `dataset` to expose; `None` for all of them.
        transform: Applied to each image.

    Example:
        >>> train = TransformedSubset(folder, [0, 2, 5], build_train_transform())  # doctest: +SKIP
    """

    def __init__(
        self, dataset: Dataset, indices: Sequence[int] | None = None, transform: Callable | None = None
    ) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = self.dataset[self.indices[index]]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target)

    @property
    def targets(self) -> list[int]:
        """The labels of the exposed samples, in order (no image is read)."""
        targets = self.dataset.targets
        return [int(targets[i]) for i in self.indices]


def stratified_split(targets: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split sample positions into train and validation parts, class by class.

    Each class sends `round(val_fraction * n)` of its `n` samples to validation, at least
    one when `n >= 2` and `val_fraction > 0`, and always keeps at least one for training.
    The shuffle uses its own generator seeded with `seed` (the global RNG is untouched).

    Returns:
        `(train_indices, val_indices)`, each sorted.

    Example:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)
        >>> len(train), len(val)
        (6, 2)
    """
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label]
        n = len(members)
        n_val = 0
        if val_fraction > 0 and n >= 2:
            n_val = min(max(1, round(val_fraction * n)), n - 1)
        order = torch.randperm(n, generator=generator).tolist()
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    return sorted(train), sorted(val)


# --------------------------------------------------------------------------- built-in data sets

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel "
    "can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur "
    "dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion "
    "lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree "
    "pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea "
    "seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table "
    "tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman "
    "worm".split()
)


@dataclass(frozen=True)
class _BuiltinDataset:
    """A torchvision data set with a `train=` flag, and what is known about it without downloading."""

    name: str  # class name in `torchvision.datasets`
    classes: tuple[str, ...]
    grayscale: bool

    def load(self, root: Path, train: bool, download: bool) -> Dataset:
        cls = getattr(torchvision.datasets, self.name)
        return cls(str(root), train=train, download=download, transform=ToRGB() if self.grayscale else None)


_BUILTINS: dict[str, _BuiltinDataset] = {
    "cifar10": _BuiltinDataset("CIFAR10", _CIFAR10_CLASSES, grayscale=False),
    "cifar100": _BuiltinDataset("CIFAR100", _CIFAR100_CLASSES, grayscale=False),
    "mnist": _BuiltinDataset("MNIST", tuple(torchvision.datasets.MNIST.classes), grayscale=True),
    "fashionmnist": _BuiltinDataset("FashionMNIST", tuple(torchvision.datasets.FashionMNIST.classes), grayscale=True),
}
_BUILTIN_ALIASES = {"fashion_mnist": "fashionmnist", "fashion-mnist": "fashionmnist"}


def _resolve_builtin(dataset_name: str) -> _BuiltinDataset:
    if not isinstance(dataset_name, str):
        raise TypeError(f"Expected `dataset_name` to be a str or None, but got {dataset_name!r}.")
    key = dataset_name.lower()
    key = _BUILTIN_ALIASES.get(key, key)
    if key not in _BUILTINS:
        raise unknown_choice("dataset_name", dataset_name, _BUILTINS)
    return _BUILTINS[key]


# --------------------------------------------------------------------------- the data module


def _default_num_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int, but got {value!r}.")
    if value < minimum:
        raise ValueError(f"Expected `{name}` to be >= {minimum}, but got {value!r}.")
    return value


def _check_optional_bool(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be True, False or None, but got {value!r}.")
    return value


class ImageDataModule(pl.LightningDataModule):
    """Image classification data from class folders or a torchvision built-in, with timm transforms.

    Args:
        data_dir: Root of the image folder (`train/<class>/...`, optional `val/`, `test/`), or
            where a built-in data set is downloaded to.
        dataset_name: `"CIFAR10"`, `"CIFAR100"`, `"MNIST"` or `"FashionMNIST"` (case-insensitive)
            to use a torchvision built-in (downloaded by `prepare_data()`); `None` for an image folder.
            Grayscale sets are converted to 3-channel RGB.
        image_size: Overrides the backbone's input height and width (an int, or `(height, width)`).
        batch_size: Samples per batch; read each time a dataloader is built, so the batch-size
            finder can change it.
        num_workers: DataLoader worker processes; `None` means `min(8, usable CPUs)`.
        val_split: Fraction of each class of `train` held out for validation when there is no
            `val/` folder (built-ins always split). `0` means no validation set.
        seed: Seed of that split (its own generator; global RNGs are untouched).
        augmentation: Training augmentation preset: `"default"`, `"light"`, `"strong"` or `"none"`
            (see `autotimm.data.build_train_transform`).
        train_transforms: A callable (PIL image -> tensor) used instead of the preset.
        eval_transforms: A callable used instead of the eval transform built from the data config.
        pin_memory: `None` pins memory only when the trainer runs on CUDA.
        persistent_workers: `None` keeps workers alive between epochs when `num_workers > 0`.

    Attributes:
        train_dataset, val_dataset, test_dataset: `TransformedSubset`s, set by `setup()`;
            `val_dataset`/`test_dataset` stay `None` when the split does not exist.

    Transforms come from the data config: the one given to `set_data_config()` if any,
    else the attached `LightningModule`'s `data_config` attribute (as returned by
    `timm.data.resolve_model_data_config`), else timm's ImageNet defaults; `image_size`
    then overrides the size. They are rebuilt at every `setup()`.

    The saved hyperparameters (written into checkpoints) leave `data_dir` out: pass it
    again to `ImageDataModule.load_from_checkpoint(path, data_dir=...)`.

    The train loader sets `drop_last=True` only when the last batch would hold a single
    sample (BatchNorm fails on it); other loaders keep every sample.

    Raises:
        FileNotFoundError: If `data_dir` or its `train/` folder is missing.
        ValueError: If an argument is out of range, `dataset_name` is unknown, or the class
            folders of `val/`/`test/` differ from those of `train/`.
        TypeError: If an argument has the wrong type.

    Example:
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
        augmentation: AugmentationName = "default",
        train_transforms: Callable | None = None,
        eval_transforms: Callable | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(data_dir, (str, os.PathLike)):
            raise TypeError(f"Expected `data_dir` to be a path, but got {data_dir!r}.")
        _check_image_size(image_size)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_workers = _default_num_workers() if num_workers is None else _check_int("num_workers", num_workers, 0)
        if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
            raise TypeError(f"Expected `val_split` to be a float, but got {val_split!r}.")
        if not 0 <= val_split < 1:
            raise ValueError(f"Expected `val_split` to be in [0, 1), but got {val_split!r}.")
        _check_int("seed", seed, -(2**63))
        _check_augmentation(augmentation)
        for name, tf in (("train_transforms", train_transforms), ("eval_transforms", eval_transforms)):
            if tf is not None and not callable(tf):
                raise TypeError(f"Expected `{name}` to be a callable (PIL image -> tensor) or None, but got {tf!r}.")
        self.pin_memory = _check_optional_bool("pin_memory", pin_memory)
        self.persistent_workers = _check_optional_bool("persistent_workers", persistent_workers)
        if persistent_workers and self.num_workers == 0:
            raise ValueError("`persistent_workers=True` needs `num_workers` > 0, but got num_workers=0.")

        self.data_dir = Path(data_dir).expanduser()
        self.image_size = image_size
        self.val_split = float(val_split)
        self.seed = seed
        self.augmentation = augmentation
        self._train_transforms = train_transforms
        self._eval_transforms = eval_transforms
        self._builtin = _resolve_builtin(dataset_name) if dataset_name is not None else None
        self._class_names = (
            list(self._builtin.classes) if self._builtin is not None else _check_folder_layout(self.data_dir)
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
                "augmentation": augmentation,
                "pin_memory": pin_memory,
                "persistent_workers": persistent_workers,
            }
        )
        self._explicit_data_config: dict[str, Any] | None = None
        self._data_config: dict[str, Any] | None = None
        self._bases: dict[str, Dataset] = {}
        self._split: tuple[list[int], list[int]] | None = None
        self.train_dataset: TransformedSubset | None = None
        self.val_dataset: TransformedSubset | None = None
        self.test_dataset: TransformedSubset | None = None

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> ImageDataModule:  # type: ignore[override]
        """Rebuild the data module from a checkpoint; `data_dir` must be given (checkpoints do not store it).

        Example:
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
    def num_classes(self) -> int:
        """Number of classes (known right after construction)."""
        return len(self._class_names)

    @property
    def data_config(self) -> dict[str, Any]:
        """The data config the transforms were built from at the last `setup()` (resolved now if none ran)."""
        return dict(self._data_config) if self._data_config is not None else self._resolve_data_config()

    def set_data_config(self, data_config: Mapping[str, Any] | None) -> None:
        """Fix the data config, taking precedence over the attached model's; `None` clears it.

        Takes effect at the next `setup()`.

        Example:
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
                    f"an image folder with dataset_name=None. {_LAYOUT}"
                ) from e

    def _has_split(self, split: str) -> bool:
        if self._builtin is not None:
            return split in ("train", "test")
        return (self.data_dir / split).is_dir()

    def _base(self, split: str) -> Dataset:
        """The untransformed data set of one split, read once and cached."""
        if split not in self._bases:
            if self._builtin is None:
                self._bases[split] = _scan_split(self.data_dir / split)
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
            train_tf = build_train_transform(self._data_config, self.augmentation)
        eval_tf = self._eval_transforms
        if eval_tf is None:
            eval_tf = build_eval_transform(self._data_config)
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

    def _loader(self, dataset: TransformedSubset | None, split: str, stage: str, *, train: bool = False) -> DataLoader:
        if dataset is None:
            if self._data_config is None or self._has_split(split):
                raise RuntimeError(
                    f"The {split} set is not built yet: call `setup({stage!r})` first (the Trainer does this for you)."
                )
            raise RuntimeError(
                f"There is no {split} set: '{self.data_dir}' has no '{split}' folder. Add "
                f"'{self.data_dir / split}/<class_name>/...' with the same class folders as 'train'"
                + (", or set `val_split` > 0." if split == "val" else ".")
            )
        batch_size = _check_int("batch_size", self.batch_size, 1)
        drop_last = train and len(dataset) > batch_size and len(dataset) % batch_size == 1
        pin_memory = self.pin_memory
        if pin_memory is None:
            pin_memory = self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0 and self.persistent_workers is not False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches of `(images [B, 3, H, W], labels [B])`."""
        return self._loader(self.train_dataset, "train", "fit", train=True)

    def val_dataloader(self) -> DataLoader | list:
        """Validation batches; an empty list (Lightning then skips validation) when `val_split=0` and no `val/`."""
        if self.val_dataset is None and self.train_dataset is not None:
            return []
        return self._loader(self.val_dataset, "val", "validate")

    def test_dataloader(self) -> DataLoader:
        """Test batches; raises if the data has no test split."""
        return self._loader(self.test_dataset, "test", "test")

    def predict_dataloader(self) -> DataLoader:
        """Batches of the test split if there is one, else of the validation split."""
        if self.test_dataset is not None or self._has_split("test"):
            return self._loader(self.test_dataset, "test", "predict")
        return self._loader(self.val_dataset, "val", "predict")
