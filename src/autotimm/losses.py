"""Loss registry for classification: every name that `create_loss` can build.

| name | what | tasks | `class_weights` |
|---|---|---|---|
| `cross_entropy` | `torch.nn.functional.cross_entropy` (softmax) | multi-class | yes |
| `binary_cross_entropy` | `binary_cross_entropy_with_logits`, one sigmoid per class | both | yes |
| `focal` | `torchvision.ops.sigmoid_focal_loss`, summed over classes, batch mean | both | yes |
| `asymmetric` | `timm.loss.AsymmetricLossMultiLabel`, summed over classes, batch mean | both | yes |
| `soft_target_cross_entropy` | `timm.loss.SoftTargetCrossEntropy` | multi-class | no |

The softmax losses take class indices or probability rows; the sigmoid losses take multi-hot
rows, and make class indices one-hot (one-vs-rest), so they train multi-class tasks too.
Names are case-insensitive and `-` counts as `_`; `LOSS_ALIASES` lists the short names
(`"ce"`, `"bce"`, ...). Class weights weight each sample by the weight of its class (each class
column for multi-hot targets), and the loss is the weighted mean, as `cross_entropy` does it.
`balanced_class_weights` computes the inverse-frequency weights of `class_weights="balanced"`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import timm.loss
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from autotimm._errors import check_mapping, check_number, unknown_choice

__all__ = [
    "LOSS_ALIASES",
    "balanced_class_weights",
    "check_loss_kwargs",
    "create_loss",
    "list_losses",
    "resolve_loss",
]

LOSS_ALIASES: dict[str, str] = {
    "ce": "cross_entropy",
    "bce": "binary_cross_entropy",
    "bce_with_logits": "binary_cross_entropy",
    "sigmoid_focal": "focal",
    "asl": "asymmetric",
    "soft_target": "soft_target_cross_entropy",
}


def _one_hot(targets: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """Dense float targets `[B, C]`: probabilities and multi-hot rows as they are, indices made one-hot."""
    if targets.ndim == 2:
        return targets.float()
    if num_outputs == 1:  # a binary classifier: labels 0 and 1 for its one output
        return targets.float().unsqueeze(1)
    return F.one_hot(targets.long(), num_outputs).float()


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over class indices or probabilities, with class weights and label smoothing."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)


class SoftTargetCrossEntropyLoss(nn.Module):
    """timm's `SoftTargetCrossEntropy`; class indices are made one-hot, then smoothed by `label_smoothing`."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.loss = timm.loss.SoftTargetCrossEntropy()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 1:
            targets = _one_hot(targets, logits.shape[1])
            targets = targets * (1.0 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        return self.loss(logits, targets)


class SigmoidLoss(nn.Module):
    """One sigmoid per output: an element-wise loss on dense targets, weighted and reduced.

    Label smoothing moves targets towards 0.5 (`t * (1 - s) + s / 2`). Class weights weight
    each sample by the weight of its class (class-index targets; a binary classifier's
    weights are `[negative, positive]`) or each class column (multi-hot targets).

    Args:
        elementwise: `(logits, dense targets) -> loss [B, C]`.
        weight: One weight per class, or `None`.
        label_smoothing: In [0, 1).
        per_class_sum: Sum over classes and average over the batch (focal losses); `False`
            averages over every element (binary cross-entropy).
        name: What the loss is, for `repr`.
    """

    def __init__(
        self,
        elementwise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        per_class_sum: bool = False,
        name: str = "",
    ) -> None:
        super().__init__()
        self.elementwise = elementwise
        self.register_buffer("weight", weight, persistent=False)
        self.label_smoothing = label_smoothing
        self.per_class_sum = per_class_sum
        self.name = name

    def extra_repr(self) -> str:
        return f"{self.name}, label_smoothing={self.label_smoothing}"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dense = _one_hot(targets, logits.shape[1])
        if self.label_smoothing:
            dense = dense * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        loss = self.elementwise(logits.float(), dense)
        scale = logits.shape[1] if self.per_class_sum else 1
        if self.weight is None:
            return loss.mean() * scale
        weight = self.weight.to(loss.dtype)
        if targets.ndim == 1 or loss.shape[1] == 1:  # each sample by its class (binary: [negative, positive])
            classes = targets.long() if targets.ndim == 1 else targets[:, 0].round().long()
            weights = weight[classes].unsqueeze(1).expand_as(loss)
        else:  # multi-hot: each class column
            weights = weight.expand_as(loss)
        return (loss * weights).sum() / weights.sum() * scale


def _cross_entropy(weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
    return CrossEntropyLoss(weight, label_smoothing)


def _binary_cross_entropy(weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
    def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    return SigmoidLoss(bce, weight=weight, label_smoothing=label_smoothing, name="binary_cross_entropy")


def _focal(weight: torch.Tensor | None, label_smoothing: float, alpha: float = 0.25, gamma: float = 2.0) -> nn.Module:
    def focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")

    name = f"focal, alpha={alpha}, gamma={gamma}"
    return SigmoidLoss(focal, weight=weight, label_smoothing=label_smoothing, per_class_sum=True, name=name)


def _asymmetric(weight: torch.Tensor | None, label_smoothing: float, **kwargs: Any) -> nn.Module:
    asl = timm.loss.AsymmetricLossMultiLabel(**kwargs, reduction="none")
    return SigmoidLoss(asl, weight=weight, label_smoothing=label_smoothing, per_class_sum=True, name="asymmetric")


def _soft_target_cross_entropy(weight: torch.Tensor | None, label_smoothing: float) -> nn.Module:
    return SoftTargetCrossEntropyLoss(label_smoothing)


@dataclass(frozen=True)
class _Spec:
    """How to build one loss: `build(weight, label_smoothing, **kwargs)`; `signature_of` lists the
    keyword arguments a user may set; which kinds of task it fits; whether it takes class weights."""

    build: Callable[..., nn.Module]
    multi_class: bool = True
    multi_label: bool = True
    weights: bool = True
    signature_of: Callable[..., Any] | None = None

    def accepted(self) -> list[str]:
        parameters = inspect.signature(self.signature_of or self.build).parameters.values()
        hidden = ("self", "weight", "label_smoothing", "smoothing", "reduction", "pos_weight")
        return [p.name for p in parameters if p.name not in hidden and p.kind is p.POSITIONAL_OR_KEYWORD]


_SPECS: dict[str, _Spec] = {
    "cross_entropy": _Spec(_cross_entropy, multi_label=False),
    "binary_cross_entropy": _Spec(_binary_cross_entropy),
    "focal": _Spec(_focal),
    "asymmetric": _Spec(_asymmetric, signature_of=timm.loss.AsymmetricLossMultiLabel.__init__),
    "soft_target_cross_entropy": _Spec(_soft_target_cross_entropy, multi_label=False, weights=False),
}


def list_losses() -> list[str]:
    """List the loss names that `create_loss` can build (aliases, `LOSS_ALIASES`, are not listed).

    Examples:
        >>> list_losses()
        ['asymmetric', 'binary_cross_entropy', 'cross_entropy', 'focal', 'soft_target_cross_entropy']
    """
    return sorted(_SPECS)


def resolve_loss(name: str) -> str:
    """Return the canonical loss name for `name` (any case, `-` or `_`, aliases allowed).

    Raises:
        TypeError: If `name` is not a string.
        ValueError: If `name` is unknown; the message lists the names and the closest one.

    Examples:
        >>> resolve_loss("Cross-Entropy"), resolve_loss("bce")
        ('cross_entropy', 'binary_cross_entropy')
    """
    if not isinstance(name, str):
        raise TypeError(
            f"Expected `loss_fn` to be a loss name or an nn.Module, but got {type(name).__name__} {name!r}."
        )
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = LOSS_ALIASES.get(key, key)
    if key not in _SPECS:
        raise unknown_choice("loss_fn", name, [*_SPECS, *LOSS_ALIASES])
    return key


def check_loss_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Check that every key of `kwargs` is an argument the loss `name` takes.

    Raises:
        TypeError: If `kwargs` is not a dict with string keys.
        ValueError: If the name or a key is unknown (the message lists the accepted keys).

    Examples:
        >>> check_loss_kwargs("focal", {"gamma": 3.0})  # passes silently
    """
    key = resolve_loss(name)
    kwargs = check_mapping("loss_kwargs", kwargs)
    accepted = _SPECS[key].accepted()
    for arg in kwargs:
        if arg not in accepted:
            raise unknown_choice(f"each key of `loss_kwargs` for the `{key}` loss", arg, accepted)


def balanced_class_weights(labels: Sequence[int] | torch.Tensor, num_classes: int) -> list[float]:
    """Inverse-frequency class weights: `n_samples / (num_classes * count[c])` for each class `c`.

    A class as frequent as the average gets 1; rarer classes get more.

    Raises:
        ValueError: If a label lies outside `[0, num_classes)` or a class has no sample (its
            weight would be infinite); the message names the classes.

    Examples:
        >>> balanced_class_weights([0, 0, 0, 1], num_classes=2)
        [0.6666666666666666, 2.0]
    """
    check_number("num_classes", num_classes, low=1, integer=True)
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        bad = torch.unique(labels[(labels < 0) | (labels >= num_classes)])[:10].tolist()
        raise ValueError(f"Expected labels in [0, {num_classes}) to balance the class weights, but got {bad}.")
    counts = torch.bincount(labels, minlength=num_classes)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        raise ValueError(
            f"`class_weights='balanced'` needs at least one training sample of each class, but classes {missing} "
            "have none. Pass the weights as a list instead."
        )
    return (labels.numel() / (num_classes * counts.double())).tolist()


def create_loss(
    name: str,
    *,
    multi_label: bool = False,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """Build the loss `name` as a module called with `(logits [B, C], targets)`.

    Targets are class indices `[B]` (made one-hot for the sigmoid losses), or dense `[B, C]`
    rows: probabilities (multi-class) or multi-hot labels (`multi_label=True`).

    Args:
        name: A name from `list_losses()` or an alias, in any case.
        multi_label: Whether the task has one sigmoid per class (multi-label or binary); the
            softmax losses (`cross_entropy`, `soft_target_cross_entropy`) refuse it.
        class_weights: One weight > 0 per class (for a binary classifier: negative, positive).
        label_smoothing: In [0, 1).
        **kwargs: Arguments of the loss (`alpha`, `gamma` for `focal`; `gamma_neg`,
            `gamma_pos`, `clip`, ... for `asymmetric`).

    Returns:
        The loss module.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the name or a keyword is unknown, the loss does not fit the task or
            take class weights, or a value is out of range.

    Examples:
        >>> loss = create_loss("focal", class_weights=[1.0, 3.0], gamma=2.0)
        >>> float(loss(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]))) > 0
        True
    """
    key = resolve_loss(name)
    spec = _SPECS[key]
    check_loss_kwargs(key, kwargs)
    check_number("label_smoothing", label_smoothing, low=0, high=1)
    if multi_label and not spec.multi_label:
        sigmoid = [n for n, s in _SPECS.items() if s.multi_label]
        raise ValueError(
            f"The `{key}` loss is a softmax loss for multi-class tasks; with `multi_label=True` use {sigmoid}."
        )
    if not multi_label and not spec.multi_class:
        raise ValueError(f"The `{key}` loss needs `multi_label=True`.")
    weight = None
    if class_weights is not None:
        if not spec.weights:
            takes = [n for n, s in _SPECS.items() if s.weights]
            raise ValueError(f"The `{key}` loss does not take `class_weights`; these losses do: {takes}.")
        weight = _check_weights(class_weights)
    return spec.build(weight, float(label_smoothing), **kwargs)


def _check_weights(class_weights: object) -> torch.Tensor:
    if isinstance(class_weights, torch.Tensor):
        class_weights = class_weights.tolist()
    if isinstance(class_weights, (str, bytes)) or not isinstance(class_weights, Sequence) or not class_weights:
        raise TypeError(f"Expected `class_weights` to be a non-empty list of numbers, but got {class_weights!r}.")
    for value in class_weights:
        check_number("class_weights", value, low=0, low_inclusive=False)
    return torch.tensor([float(v) for v in class_weights])
