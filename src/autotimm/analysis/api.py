"""`analyze`: the error analysis of a trained model over labelled data; `best_confusion` for the run's plots."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from autotimm._errors import check_number
from autotimm.analysis.base import Analysis, Split, checkpoint_weights, labelled_loader
from autotimm.analysis.classification import analyze_classifier, classifier_confusion
from autotimm.analysis.detection import analyze_detector
from autotimm.tasks import BaseTask, ImageClassifier, ObjectDetector, load
from autotimm.tasks.base import PRETRAINED_CONFIG
from autotimm.tasks.pretrained import run_checkpoint

__all__ = ["analyze", "batch_limit", "best_checkpoint", "best_confusion"]


def analyze(
    model: BaseTask | str | os.PathLike[str],
    data: pl.LightningDataModule | DataLoader,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    split: Split = "test",
    checkpoint: str | os.PathLike[str] | None = None,
    gallery_size: int = 16,
    score_thresh: float = 0.3,
    limit_batches: int | None = None,
) -> Analysis:
    """Analyse a trained model's errors on labelled data, with the model's own forward pass.

    A classifier gets a per-class table (precision, recall, F1 and support, from torchmetrics), the
    confusion matrix (counts and shares of each true class), the misclassified images (file, true and
    predicted class, the predicted class's probability and the loss, highest loss first) and a gallery
    of the images with the highest loss. The loss here is the cross-entropy of the true class
    (binary cross-entropy for one sigmoid output). A multi-label classifier gets the per-label table
    (at a 0.5 threshold) only.

    A detector gets AP@[.5:.95] and AP@.5 per class (torchmetrics' `MeanAveragePrecision`,
    `class_metrics=True`, over all its detections), and, counting detections that score at least
    `score_thresh`, the missed and false boxes per class and per image (a detection is right when it
    overlaps a true box of its class by IoU >= 0.5, each true box found once, crowd boxes left out),
    with a gallery of the images with the most errors (true boxes left, detections right).

    With `out_dir`, the files go there: `per_class.csv` and `.png` (both tasks);
    `confusion_matrix.csv`, `confusion_matrix_normalized.csv`, `confusion_matrix.png`,
    `misclassified.csv` and `top_losses.png` (classifiers); `errors.csv` and `worst_images.png`
    (detectors). Each picture names the weights it was made with.

    Args:
        model: An `ImageClassifier` or `ObjectDetector`, or what `autotimm.load` opens (a checkpoint, a
            run folder, whose best checkpoint is taken, or a `save_pretrained` folder).
        data: A data module (its `split` set is analysed) or a `DataLoader` of labelled batches as the
            model trains on (file names are known only for an unshuffled loader over an image folder or
            COCO set; other images are named `#<index>`).
        out_dir: Where to write the tables and pictures; `None` writes nothing.
        split: `"test"` or `"val"`, for a data module.
        checkpoint: A checkpoint whose weights to analyse, loaded into `model` for the analysis (its own
            weights are put back afterwards); `None` analyses the model's weights as they are.
        gallery_size: How many images the gallery shows (0: none).
        score_thresh: The score from which a detection counts as made (detectors only).
        limit_batches: Analyse only the first this many batches (as a trainer's `limit_test_batches`); `None`: all.

    Returns:
        An `Analysis` with the tables, the summary and the paths of the files written.

    Raises:
        TypeError: If `model` is not a task or `data` neither a data module nor a `DataLoader`.
        ValueError: If the data has no such split, or holds no batch.

    Examples:
        >>> analysis = autotimm.analyze("runs/2026-12-05_14-03-22", data, "analysis/")  # doctest: +SKIP
        >>> analysis.summary  # doctest: +SKIP
        {'num_images': 120, 'accuracy': 0.925, 'macro_f1': 0.924, 'num_misclassified': 9}
        >>> analysis.errors[0]  # doctest: +SKIP
        {'path': 'data/test/fox/03.jpg', 'true': 'fox', 'predicted': 'dog', 'score': 0.91, 'loss': 3.2}
    """
    gallery_size = int(check_number("gallery_size", gallery_size, low=0, integer=True))
    score_thresh = float(check_number("score_thresh", score_thresh, low=0, high=1, high_inclusive=True))
    if limit_batches is not None:
        check_number("limit_batches", limit_batches, low=1, integer=True)
    weights = "the model's weights"
    if isinstance(model, (str, os.PathLike)):
        source = Path(model)
        model = load(source)
        if checkpoint is None:  # its weights are the checkpoint's: named as such
            saved = source.is_dir() and (source / PRETRAINED_CONFIG).is_file()
            weights = f"the model in {source.name}" if saved else weights
            checkpoint = None if saved else source if source.is_file() else run_checkpoint(source)
    if not isinstance(model, (ImageClassifier, ObjectDetector)):
        raise TypeError(
            f"Expected `model` to be an ImageClassifier, an ObjectDetector or the path of one, but got "
            f"{type(model).__name__}."
        )
    batches, split_name, names = labelled_loader(data, split)
    if limit_batches is not None:
        batches = itertools.islice(batches, limit_batches)
    out = None if out_dir is None else Path(out_dir)
    held = contextlib.nullcontext(weights) if checkpoint is None else checkpoint_weights(model, checkpoint)
    with held as weights:
        if isinstance(model, ImageClassifier):
            analysis = analyze_classifier(model, batches, names, out, split_name, weights, gallery_size)
        else:
            analysis = analyze_detector(model, batches, names, out, split_name, weights, gallery_size, score_thresh)
    analysis.out_dir = out
    return analysis


def batch_limit(trainer: pl.Trainer, counts: list[int | float]) -> int | None:
    """How many batches of a split's unsharded loader a loop of `trainer` ran on (`counts`: its
    `num_val_batches` or `num_test_batches`, per process), or `None` for all of them.

    With `limit_*_batches` each process runs the first batches of its interleaved shard of the
    unshuffled set: together, the first `limit x world_size` batches of the whole set.

    Examples:
        >>> batch_limit(trainer, trainer.num_test_batches)  # doctest: +SKIP
        4
    """
    if not counts or not math.isfinite(counts[0]):
        return None
    return int(counts[0]) * trainer.world_size


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The path of the trainer's best checkpoint (by its monitored metric) when there is one on disk.

    Examples:
        >>> best_checkpoint(trainer)  # doctest: +SKIP
        '/runs/2026-12-05_14-03-22/checkpoints/best.ckpt'
    """
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and Path(callback.best_model_path).is_file():
            return callback.best_model_path
    return None


def best_confusion(trainer: pl.Trainer, model: pl.LightningModule) -> dict[str, Any] | None:
    """The validation confusion matrix of a finished `fit` made with the best checkpoint's weights, in the form
    `RunPlots` draws (`split`, `class_names`, `counts`, `weights`), over the validation batches the fit
    ran (`limit_val_batches`); `None` without a best checkpoint, a multi-class or binary classifier, or
    a validation set of the data module.

    Examples:
        >>> best_confusion(trainer, model)["weights"]  # doctest: +SKIP
        'checkpoint best.ckpt (epoch 2, step 12, val/accuracy 0.5)'
    """
    path = best_checkpoint(trainer)
    datamodule = getattr(trainer, "datamodule", None)
    if path is None or datamodule is None or not isinstance(model, ImageClassifier):
        return None
    if model.multi_label and model.num_classes != 1:
        return None
    loader = datamodule.val_dataloader()
    if not isinstance(loader, DataLoader):
        return None
    limit = batch_limit(trainer, trainer.num_val_batches)
    batches = loader if limit is None else itertools.islice(loader, limit)
    with checkpoint_weights(model, path) as weights:
        counts = classifier_confusion(model, batches)
    n = len(counts)
    return {
        "split": "val",
        "class_names": [model.class_name(i) for i in range(n)],
        "counts": counts,
        "weights": weights,
    }
