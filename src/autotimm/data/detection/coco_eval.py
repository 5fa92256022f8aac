"""COCO evaluation of detector predictions with pycocotools: results in COCO form, and their mAP."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["coco_evaluate", "to_coco_results"]

# The order of pycocotools' `COCOeval.stats`.
_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def to_coco_results(
    predictions: Iterable[dict[str, Any] | Sequence[dict[str, Any]]], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """Turn `ObjectDetector` predictions into COCO result entries.

    Args:
        predictions: What `trainer.predict(model, datamodule=data)` returns (a list of
            batches, each a list of per-image dicts with `image_id`, `boxes` in xyxy
            original-image pixels, `scores`, `labels`), or a flat list of such dicts.
        category_ids: The COCO category id of each label, `data.category_ids`.

    Returns:
        One `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` dict per box.

    Examples:
        >>> import torch
        >>> det = {"image_id": 7, "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
        ...        "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
        >>> to_coco_results([det], category_ids=[5, 9])
        [{'image_id': 7, 'category_id': 9, 'bbox': [10.0, 20.0, 20.0, 40.0], 'score': 0.5}]
    """
    results = []
    for item in predictions:
        for det in [item] if isinstance(item, dict) else item:
            if det.get("image_id") is None:
                raise ValueError(
                    "A prediction has no `image_id`: predict on a DetectionDataModule, whose batches carry the ids."
                )
            boxes = det["boxes"].tolist()
            for (x1, y1, x2, y2), label, score in zip(
                boxes, det["labels"].tolist(), det["scores"].tolist(), strict=True
            ):
                results.append(
                    {
                        "image_id": int(det["image_id"]),
                        "category_id": int(category_ids[label]),
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
                )
    return results


def coco_evaluate(annotation_file: str | os.PathLike[str], results: list[dict[str, Any]]) -> dict[str, float]:
    """Score COCO results against an annotation file with pycocotools' `COCOeval` (bbox).

    Returns the twelve standard figures under torchmetrics' names: `map` (mAP@[.5:.95]),
    `map_50`, `map_75`, `map_small`, `map_medium`, `map_large`, `mar_1`, `mar_10`, `mar_100`,
    `mar_small`, `mar_medium`, `mar_large` (`-1` where a size range has no objects). With
    no results every figure is 0.

    Examples:
        >>> results = to_coco_results(trainer.predict(model, datamodule=data), data.category_ids)  # doctest: +SKIP
        >>> coco_evaluate("coco/annotations/instances_val2017.json", results)["map_50"]  # doctest: +SKIP
        0.883
    """
    if not results:
        return dict.fromkeys(_STATS, 0.0)
    dataset = json.loads(Path(annotation_file).read_text(encoding="utf-8"))
    for ann in dataset.get("annotations", []):  # COCOeval needs both; hand-made files often lack them
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(io.StringIO()), tempfile.TemporaryDirectory() as tmp:
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps(results))
        evaluation = COCOeval(truth, truth.loadRes(str(path)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(_STATS, evaluation.stats, strict=True)}
