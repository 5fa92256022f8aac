"""What the analyses share: the result, the labelled data, sample names, CSV files and checkpoint weights."""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, SequentialSampler

from autotimm._atomic import atomic_path
from autotimm._errors import check_choice

__all__ = ["Analysis", "Split", "checkpoint_weights", "labelled_loader", "sample_names", "write_csv"]

Split = Literal["val", "test"]
_SPLITS = ("val", "test")


@dataclass
class Analysis:
    """What `autotimm.analyze` found: tables as plain lists and dicts, and the files it wrote.

    Attributes:
        task: `"classification"` or `"detection"`.
        split: The split analysed (`"val"`, `"test"`), or `"data"` for a data loader.
        weights: Which weights were analysed (`"checkpoint best.ckpt (epoch 2, step 30, val/accuracy 0.5)"`,
            or `"the model's weights"`).
        summary: One number each: `num_images`, and `accuracy`, `macro_f1`, `num_misclassified`
            (classification) or `map`, `map_50`, `missed`, `false` (detection).
        per_class: One row per class: `class`, `precision`, `recall`, `f1`, `support` (classification);
            `class`, `ap`, `ap_50`, `gt_boxes`, `matched`, `missed`, `false` (detection).
        confusion: The confusion matrix counts (rows: true class, columns: predicted class) of a
            multi-class or binary classifier, else `None`.
        errors: The misclassified images (classification: `path`, `true`, `predicted`, `score`, `loss`,
            highest loss first), or every image with a missed or false box (detection: `path`,
            `gt_boxes`, `predicted`, `matched`, `missed`, `false`, most errors first).
        files: The files written, by kind (`"per_class_csv"`, `"confusion_matrix_png"`, ...).
        out_dir: The folder they were written to (`None`: none written).
        not_written: The files left out, each with the reason (a multi-label classifier has no
            confusion matrix, a loader without file names gives no gallery of originals, ...).

    Examples:
        >>> analysis = autotimm.analyze(model, data, "analysis/")  # doctest: +SKIP
        >>> analysis.summary["accuracy"], analysis.errors[0]["path"]  # doctest: +SKIP
        (0.92, 'data/test/cat/017.jpg')
    """

    task: str
    split: str
    weights: str
    summary: dict[str, Any]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    out_dir: Path | None = None
    not_written: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (what the run record keeps): task, split, weights, summary, files, not_written."""
        return {
            "task": self.task,
            "split": self.split,
            "weights": self.weights,
            "summary": self.summary,
            "dir": None if self.out_dir is None else str(self.out_dir),
            "files": {kind: str(path) for kind, path in self.files.items()},
            "not_written": list(self.not_written),
        }


def labelled_loader(data: Any, split: str) -> tuple[Iterable[Any], str, list[str] | None]:
    """The batches to analyse, the split's name, and each sample's file (`None` when unknown).

    Args:
        data: A Lightning data module (its `split` loader is built, with `setup` when needed), or a
            `DataLoader` of labelled batches.
        split: `"val"` or `"test"` for a data module.

    Raises:
        TypeError: If `data` is neither a data module nor a `DataLoader`.
        ValueError: If the data module has no such split.
    """
    if isinstance(data, DataLoader):
        ordered = isinstance(data.sampler, SequentialSampler)
        return data, "data", sample_names(data.dataset) if ordered else None
    if not isinstance(data, pl.LightningDataModule):
        raise TypeError(
            f"Expected `data` to be a data module (ImageDataModule, DetectionDataModule) or a DataLoader of labelled "
            f"batches, but got {type(data).__name__}."
        )
    check_choice("split", split, _SPLITS)
    if getattr(data, f"{split}_dataset", None) is None:
        data.setup("validate" if split == "val" else "test")
    loader = getattr(data, f"{split}_dataloader")()
    if not isinstance(loader, DataLoader):
        raise ValueError(f"The data module has no {split} set to analyse; pass `split='test'` or `split='val'`.")
    return loader, split, sample_names(loader.dataset)


def sample_names(dataset: Any) -> list[str] | None:
    """The file of each sample of `dataset` in order, when it says (`ImageFolder` samples, COCO records,
    subsets of them); else `None`.

    Examples:
        >>> sample_names(torchvision.datasets.ImageFolder("data/test"))[:1]  # doctest: +SKIP
        ['data/test/cat/001.jpg']
    """
    indices = getattr(dataset, "indices", None)
    inner = getattr(dataset, "dataset", None)
    if indices is not None and inner is not None:  # a subset
        names = sample_names(inner)
        return None if names is None else [names[int(i)] for i in indices]
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, Sequence) and all(isinstance(s, tuple) and s for s in samples[:1]):
        return [str(s[0]) for s in samples]
    records = getattr(dataset, "records", None)
    if isinstance(records, Sequence) and all(hasattr(r, "path") for r in records[:1]):
        return [str(r.path) for r in records]
    return None


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    """Write `rows` (dicts keyed by `fields`) to `path` as CSV, atomically; floats with 6 decimals."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def describe_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> str:
    """`"checkpoint best.ckpt (epoch 2, step 30, val/accuracy 0.5)"`: the file, when it was saved and its
    monitored score when its `ModelCheckpoint` kept one."""
    parts = [f"epoch {checkpoint.get('epoch')}", f"step {checkpoint.get('global_step')}"]
    states = [s for s in (checkpoint.get("callbacks") or {}).values() if isinstance(s, dict)]
    for state in states:  # the ModelCheckpoint that saved this file as its best
        monitor, score, best = state.get("monitor"), state.get("best_model_score"), state.get("best_model_path")
        if monitor and score is not None and best and Path(best).name == Path(path).name:
            parts.append(f"{monitor} {float(score):.4g}")
            break
    return f"checkpoint {Path(path).name} ({', '.join(parts)})"


@contextlib.contextmanager
def checkpoint_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> Iterator[str]:
    """Hold the weights of the checkpoint `path` in `model` for the block; its own come back afterwards.

    Yields:
        A description of the weights (`describe_checkpoint`).

    Raises:
        ValueError: If the checkpoint's weights do not fit `model` (the missing and unexpected keys named).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    own = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}  # no second copy on a GPU
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith("loss_fn.")]  # checkpoints leave the loss out
    try:
        if missing or unexpected:
            raise ValueError(
                f"The weights in {str(path)!r} do not fit the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}."
            )
        yield describe_checkpoint(path, checkpoint)
    finally:
        model.load_state_dict(own)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode without gradients for the block; the model's training mode comes back afterwards."""
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(training)
