"""Error analysis of a classifier: per-class table, confusion matrix, misclassified files, the highest losses."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from autotimm.analysis.base import Analysis, evaluating, write_csv
from autotimm.runs.plots import draw_confusion, new_figure, save_figure
from autotimm.tasks import ImageClassifier

__all__ = ["analyze_classifier", "classifier_confusion"]

_TABLE_FIELDS = ("class", "precision", "recall", "f1", "support")
_ERROR_FIELDS = ("path", "true", "predicted", "score", "loss")
_MAX_BARS = 50  # more classes: the per-class picture shows the 50 with the lowest F1


@dataclass
class _Outcome:
    """Per image, in loader order: true and predicted classes (multi-hot rows for a multi-label model), the
    predicted class's probability and the loss; the `keep` highest-loss images with their input tensors."""

    keep: int
    true: list[torch.Tensor] = field(default_factory=list)
    predicted: list[torch.Tensor] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)
    worst: list[tuple[float, int, torch.Tensor]] = field(default_factory=list)  # a min-heap by loss

    def add(self, x: torch.Tensor, true: torch.Tensor, predicted: torch.Tensor, score: torch.Tensor,
            loss: torch.Tensor) -> None:  # fmt: skip
        start = sum(len(t) for t in self.true)
        for tensor, into in ((true, self.true), (predicted, self.predicted), (score, self.scores), (loss, self.losses)):
            into.append(tensor.detach().cpu())
        for i, value in enumerate(loss.tolist() if self.keep else []):
            entry = (value, start + i, x[i].detach().float().cpu())
            if len(self.worst) < self.keep:
                heapq.heappush(self.worst, entry)
            elif value > self.worst[0][0]:
                heapq.heapreplace(self.worst, entry)


def _run(model: ImageClassifier, batches: Iterable[Any], keep: int) -> _Outcome:
    """The model's own forward pass over labelled batches `(x, y, ...)`, in eval mode without gradients."""
    outcome = _Outcome(keep)
    binary = model.multi_label and model.num_classes == 1
    dtype = next(model.parameters()).dtype
    with evaluating(model):
        for batch in batches:
            x, y = batch[0].to(model.device, dtype), batch[1].to(model.device)
            logits = model(x).float()
            if binary:
                true = y.reshape(-1).long()
                p = torch.sigmoid(logits[:, 0])
                predicted = (p > 0.5).long()
                score = torch.where(predicted == 1, p, 1 - p)
                loss = F.binary_cross_entropy_with_logits(logits[:, 0], true.float(), reduction="none")
            elif model.multi_label:
                true = (y if y.ndim == 2 else F.one_hot(y.long(), model.num_classes)).float()
                p = torch.sigmoid(logits)
                predicted = (p > 0.5).long()
                score = torch.where(predicted == 1, p, 1 - p).mean(dim=1)
                loss = F.binary_cross_entropy_with_logits(logits, true, reduction="none").mean(dim=1)
                true = true.round().long()
            else:
                true = (y.argmax(-1) if y.ndim == 2 else y).long()
                probabilities = logits.softmax(dim=-1)
                score, predicted = probabilities.max(dim=-1)
                loss = F.cross_entropy(logits, true, reduction="none")
            outcome.add(x, true, predicted, score, loss)
    if not outcome.true:
        raise ValueError("The data holds no batch to analyse.")
    return outcome


def classifier_confusion(model: ImageClassifier, batches: Iterable[Any]) -> list[list[int]] | None:
    """The confusion matrix counts of the model's predictions over labelled batches; `None` for a multi-label model.

    Examples:
        >>> classifier_confusion(model, data.val_dataloader())  # doctest: +SKIP
        [[4, 0, 0], [1, 3, 0], [0, 0, 4]]
    """
    if model.multi_label and model.num_classes != 1:
        return None
    outcome = _run(model, batches, keep=0)
    return _confusion(torch.cat(outcome.true), torch.cat(outcome.predicted), _num_outputs(model))


def _num_outputs(model: ImageClassifier) -> int:
    """The classes predictions range over: 2 for a binary classifier (one sigmoid output)."""
    return 2 if model.multi_label and model.num_classes == 1 else int(model.num_classes)


def _confusion(true: torch.Tensor, predicted: torch.Tensor, n: int) -> list[list[int]]:
    return multiclass_confusion_matrix(predicted, true, num_classes=n, validate_args=False).tolist()


def analyze_classifier(
    model: ImageClassifier,
    batches: Iterable[Any],
    names: list[str] | None,
    out_dir: Path | None,
    split: str,
    weights: str,
    gallery_size: int,
) -> Analysis:
    """The analysis of `model` over labelled `batches` (see `autotimm.analyze`); files into `out_dir` when given."""
    outcome = _run(model, batches, keep=gallery_size)
    true, predicted = torch.cat(outcome.true), torch.cat(outcome.predicted)
    scores, losses = torch.cat(outcome.scores).tolist(), torch.cat(outcome.losses).tolist()
    n = _num_outputs(model)
    classes = [model.class_name(i) for i in range(n)]
    names = names[: len(true)] if names is not None and len(names) >= len(true) else [f"#{i}" for i in range(len(true))]
    multi_label = model.multi_label and model.num_classes != 1
    per_class = _per_class_table(true, predicted, classes, multi_label)
    summary: dict[str, Any] = {"num_images": len(true)}
    analysis = Analysis("classification", split, weights, summary, per_class)
    if multi_label:
        summary["exact_match"] = float((true == predicted).all(dim=1).float().mean())
        summary["macro_f1"] = _mean(row["f1"] for row in per_class)
        analysis.not_written += [
            "confusion matrix, misclassified files and gallery: a multi-label classifier has no single class per image"
        ]
    else:
        wrong = (true != predicted).nonzero().flatten().tolist()
        analysis.confusion = _confusion(true, predicted, n)
        analysis.errors = sorted(
            (
                {
                    "path": names[i],
                    "true": classes[int(true[i])],
                    "predicted": classes[int(predicted[i])],
                    "score": scores[i],
                    "loss": losses[i],
                }
                for i in wrong
            ),
            key=lambda row: -row["loss"],
        )
        summary.update(
            accuracy=1 - len(wrong) / len(true),
            macro_f1=_mean(row["f1"] for row in per_class),
            num_misclassified=len(wrong),
        )
    if out_dir is not None:
        _write(analysis, out_dir, model, outcome, classes, names, scores, true, predicted)
    return analysis


def _per_class_table(
    true: torch.Tensor, predicted: torch.Tensor, classes: list[str], multi_label: bool
) -> list[dict[str, Any]]:
    """Precision, recall and F1 per class (torchmetrics, 0 where undefined) and the true images of each class."""
    n = len(classes)
    if multi_label:
        options: dict[str, Any] = {"num_labels": n, "average": None, "validate_args": False}
        values = [f(predicted, true, **options) for f in (multilabel_precision, multilabel_recall, multilabel_f1_score)]
        support = true.sum(dim=0)
    else:
        options = {"num_classes": n, "average": None, "validate_args": False}
        values = [f(predicted, true, **options) for f in (multiclass_precision, multiclass_recall, multiclass_f1_score)]
        support = torch.bincount(true, minlength=n)
    precision, recall, f1 = (v.tolist() for v in values)
    return [
        {"class": classes[c], "precision": precision[c], "recall": recall[c], "f1": f1[c], "support": int(support[c])}
        for c in range(n)
    ]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _write(
    analysis: Analysis,
    out: Path,
    model: ImageClassifier,
    outcome: _Outcome,
    classes: list[str],
    names: list[str],
    scores: list[float],
    true: torch.Tensor,
    predicted: torch.Tensor,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = analysis.files
    files["per_class_csv"] = write_csv(out / "per_class.csv", analysis.per_class, _TABLE_FIELDS)
    files["per_class_png"] = _draw_table(analysis, out / "per_class.png")
    if analysis.confusion is None:
        return
    counts = analysis.confusion
    shares = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    for kind, matrix in (("confusion_matrix_csv", counts), ("confusion_matrix_normalized_csv", shares)):
        rows = [
            {"true": name, **dict(zip(classes, row, strict=True))} for name, row in zip(classes, matrix, strict=True)
        ]
        files[kind] = write_csv(out / f"{kind.removesuffix('_csv')}.csv", rows, ["true", *classes])
    data = {"split": analysis.split, "class_names": classes, "counts": counts, "weights": analysis.weights}
    files["confusion_matrix_png"] = draw_confusion(data, out / "confusion_matrix.png")
    files["misclassified_csv"] = write_csv(out / "misclassified.csv", analysis.errors, _ERROR_FIELDS)
    worst = sorted(outcome.worst, reverse=True)
    if worst:
        files["top_losses_png"] = _draw_gallery(
            worst, model, classes, names, scores, true, predicted, analysis.weights, out / "top_losses.png"
        )


def _draw_table(analysis: Analysis, path: Path) -> Path:
    """Precision, recall and F1 per class as bars, the support in the class labels."""
    rows = analysis.per_class
    shown = rows if len(rows) <= _MAX_BARS else sorted(rows, key=lambda r: r["f1"])[:_MAX_BARS]
    figure = new_figure(7.5, min(max(2.5, 0.32 * len(shown) + 1.5), 20.0))
    ax = figure.add_subplot()
    height = 0.27
    for k, (metric, color) in enumerate((("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))):
        ax.barh([i + (k - 1) * height for i in range(len(shown))], [r[metric] for r in shown], height,
                label=metric, color=color)  # fmt: skip
    ax.set_yticks(range(len(shown)), [f"{r['class']} ({r['support']})" for r in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    summary = analysis.summary
    headline = (
        f"accuracy {summary['accuracy']:.1%}, macro F1 {summary['macro_f1']:.3f}"
        if "accuracy" in summary
        else f"exact match {summary['exact_match']:.1%}, macro F1 {summary['macro_f1']:.3f}"
    )
    subset = f", the {_MAX_BARS} lowest F1 of {len(rows)} classes" if len(shown) < len(rows) else ""
    ax.set_title(
        f"Per class ({analysis.split}, {summary['num_images']} images, {headline}{subset})\n{analysis.weights}",
        fontsize="medium",
    )
    return save_figure(figure, path)


def _draw_gallery(
    worst: list[tuple[float, int, torch.Tensor]],
    model: ImageClassifier,
    classes: list[str],
    names: list[str],
    scores: list[float],
    true: torch.Tensor,
    predicted: torch.Tensor,
    weights: str,
    path: Path,
) -> Path:
    """The highest-loss images as the model saw them (un-normalised with its mean and std), with their labels."""
    config = model.eval_data_config
    mean = torch.tensor(config["mean"]).view(-1, 1, 1)
    std = torch.tensor(config["std"]).view(-1, 1, 1)
    cols = min(4, len(worst))
    rows = math.ceil(len(worst) / cols)
    figure = new_figure(3.0 * cols, 3.3 * rows + 0.4)
    for k, (loss, i, x) in enumerate(worst):
        ax = figure.add_subplot(rows, cols, k + 1)
        image = (x * std + mean).clamp(0, 1)
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_xticks([])
        ax.set_yticks([])
        right = int(true[i]) == int(predicted[i])
        ax.set_title(
            f"{'/'.join(Path(names[i]).parts[-2:])}\ntrue {classes[int(true[i])]}\n"
            f"predicted {classes[int(predicted[i])]} {scores[i]:.2f}\nloss {max(loss, 0.0):.2f}",
            fontsize="small",
            color="black" if right else "tab:red",
        )
    figure.suptitle(f"The {len(worst)} highest losses ({weights})", fontsize="medium")
    return save_figure(figure, path)
