"""Datasets for the data modules: transformed subsets, stratified splits, torchvision built-ins."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.datasets
from torch.utils.data import Dataset

from autotimm._deprecation import renamed_argument
from autotimm._errors import unknown_choice
from autotimm.data.classification.transforms import ToRGB

__all__ = [
    "BuiltinDataset",
    "TransformedSubset",
    "balanced_sample_weights",
    "iterative_split",
    "resolve_builtin",
    "stratified_split",
]


class TransformedSubset(Dataset):
    """A view of `dataset` (optionally restricted to `indices`) with its own image transform.

    Lets the train and validation parts of one split use different transforms.

    Args:
        dataset: A dataset of `(PIL image, label)` pairs with a `targets` sequence.
        indices: The positions of `dataset` to expose; `None` for all of them.
        transform: Applied to each image.

    Examples:
        >>> train = TransformedSubset(folder, [0, 2, 5], create_train_transform())  # doctest: +SKIP
    """

    def __init__(
        self, dataset: Dataset, indices: Sequence[int] | None = None, transform: Callable | None = None
    ) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image, target = self.dataset[self.indices[index]]
        if self.transform is not None:
            image = self.transform(image)
        return image, target if isinstance(target, torch.Tensor) else int(target)

    @property
    def targets(self) -> list[int] | torch.Tensor:
        """The labels of the exposed samples, in order (no image is read): class indices, or the
        `[N, num_classes]` 0/1 tensor of multi-label data."""
        targets = self.dataset.targets
        if isinstance(targets, torch.Tensor) and targets.ndim == 2:
            return targets[self.indices]
        return [int(targets[i]) for i in self.indices]


def stratified_split(
    targets: Sequence[int], val_split: float | None = None, seed: int = 0, *, val_fraction: float | None = None
) -> tuple[list[int], list[int]]:
    """Split sample positions into train and validation parts, class by class.

    Each class sends `round(val_split * n)` of its `n` samples to validation, at least
    one when `n >= 2` and `val_split > 0`, and always keeps at least one for training.
    The shuffle uses its own generator seeded with `seed` (the global RNG is untouched).
    `val_fraction` is the deprecated name of `val_split`.

    Returns:
        `(train_indices, val_indices)`, each sorted.

    Examples:
        >>> train, val = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)
        >>> len(train), len(val)
        (6, 2)
    """
    val_split = renamed_argument("val_fraction", val_fraction, "val_split", val_split, None, owner="stratified_split")
    if val_split is None:
        raise TypeError("stratified_split() needs `val_split`, the fraction of each class held out for validation.")
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in sorted(by_class):
        members = by_class[label]
        n = len(members)
        n_val = 0
        if val_split > 0 and n >= 2:
            n_val = min(max(1, round(val_split * n)), n - 1)
        order = torch.randperm(n, generator=generator).tolist()
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    return sorted(train), sorted(val)


def iterative_split(
    label_sets: Sequence[Sequence[int]], val_split: float, seed: int = 0, groups: Sequence[Any] | None = None
) -> tuple[list[int], list[int]]:
    """Split sample positions into train and validation parts, stratified over sets of labels and by group.

    For multi-label data and for groups of images that must stay in one part (several images
    of one lesion): a greedy form of iterative stratification (Sechidis et al., 2011). Units
    (a group, or one sample) are taken rarest label first, in a seeded order, and each goes to
    the part that still wants more of that label (then more samples). A class with a single
    sample stays in training.

    Returns:
        `(train_indices, val_indices)`, each sorted.

    Examples:
        >>> train, val = iterative_split([(0,), (0, 1), (1,), (0,), (1,), (0, 1)], 0.34, seed=0)
        >>> len(train), len(val)
        (4, 2)
    """
    units: dict[Any, list[int]] = {}
    for i in range(len(label_sets)):
        units.setdefault(groups[i] if groups is not None else i, []).append(i)
    members = list(units.values())
    counts = [Counter(label for i in rows for label in label_sets[i]) for rows in members]
    totals: Counter[int] = Counter()
    for unit_counts in counts:
        totals.update(unit_counts)
    want = {
        "val": {c: val_split * n for c, n in totals.items()},
        "train": {c: (1 - val_split) * n for c, n in totals.items()},
    }
    want_size = {"val": val_split * len(label_sets), "train": (1 - val_split) * len(label_sets)}
    order = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed)).tolist()
    order.sort(key=lambda u: min((totals[c] for c in counts[u]), default=math.inf))
    parts: dict[str, list[int]] = {"train": [], "val": []}
    for u in order:
        rarest = min(counts[u], key=lambda c: (totals[c], c), default=None)
        desire = {p: (want[p][rarest] if rarest is not None else 0.0, want_size[p]) for p in parts}
        part = "val" if val_split > 0 and desire["val"] > desire["train"] else "train"
        parts[part] += members[u]
        want_size[part] -= len(members[u])
        for c, n in counts[u].items():
            want[part][c] -= n
    return sorted(parts["train"]), sorted(parts["val"])


def balanced_sample_weights(targets: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Sampling weights that draw each class equally often: `1 / count(class)` per sample.

    A multi-label sample (a row of a `[N, C]` 0/1 tensor) takes the weight of its rarest label;
    samples without a label share the weight of one class.

    Examples:
        >>> balanced_sample_weights([0, 0, 0, 1]).tolist()
        [0.3333333432674408, 0.3333333432674408, 0.3333333432674408, 1.0]
    """
    targets = torch.as_tensor(targets)
    if targets.ndim == 2:
        positives = targets > 0
        counts = positives.sum(0).clamp(min=1).float()
        per_label = torch.where(positives, 1.0 / counts, torch.zeros(()))
        weights = per_label.max(dim=1).values
        empty = ~positives.any(dim=1)
        return torch.where(empty, 1.0 / empty.sum().clamp(min=1), weights)
    counts = torch.bincount(targets.long())
    return 1.0 / counts[targets.long()].float()


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
class BuiltinDataset:
    """A torchvision data set with a `train=` flag, and what is known about it without downloading."""

    name: str  # class name in `torchvision.datasets`
    classes: tuple[str, ...]
    grayscale: bool
    upright: bool = False  # a mirrored image is not of its class (digits): no horizontal flip under "auto"

    def load(self, root: Path, train: bool, download: bool) -> Dataset:
        cls = getattr(torchvision.datasets, self.name)
        return cls(str(root), train=train, download=download, transform=ToRGB() if self.grayscale else None)


_BUILTINS: dict[str, BuiltinDataset] = {
    "cifar10": BuiltinDataset("CIFAR10", _CIFAR10_CLASSES, grayscale=False),
    "cifar100": BuiltinDataset("CIFAR100", _CIFAR100_CLASSES, grayscale=False),
    "mnist": BuiltinDataset("MNIST", tuple(torchvision.datasets.MNIST.classes), grayscale=True, upright=True),
    "fashionmnist": BuiltinDataset("FashionMNIST", tuple(torchvision.datasets.FashionMNIST.classes), grayscale=True),
}
_BUILTIN_ALIASES = {"fashion_mnist": "fashionmnist", "fashion-mnist": "fashionmnist"}


def resolve_builtin(dataset_name: str) -> BuiltinDataset:
    """The torchvision data set named `dataset_name` (case-insensitive; `"fashion_mnist"` and the like accepted).

    Raises:
        TypeError: If `dataset_name` is not a str.
        ValueError: If it names no supported data set (the error lists them and the closest match).

    Examples:
        >>> resolve_builtin("cifar10").name
        'CIFAR10'
    """
    if not isinstance(dataset_name, str):
        raise TypeError(f"Expected `dataset_name` to be a str or None, but got {dataset_name!r}.")
    key = dataset_name.lower()
    key = _BUILTIN_ALIASES.get(key, key)
    if key not in _BUILTINS:
        raise unknown_choice("dataset_name", dataset_name, _BUILTINS)
    return _BUILTINS[key]
