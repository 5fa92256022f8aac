"""Error analysis of a detector: AP per class, and the images with the most missed or false boxes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import draw_bounding_boxes

from autotimm.analysis.base import Analysis, evaluating, write_csv
from autotimm.geometry import boxes_to_original
from autotimm.inference import DetectionResult, ImageSource
from autotimm.runs.plots import new_figure, save_figure
from autotimm.tasks import ObjectDetector

__all__ = ["analyze_detector"]

_TABLE_FIELDS = ("class", "ap", "ap_50", "gt_boxes", "matched", "missed", "false")
_ERROR_FIELDS = ("path", "gt_boxes", "predicted", "matched", "missed", "false")
_MATCH_IOU = 0.5
_MAX_GALLERY = 8  # images in the gallery of a detector, at most


@dataclass
class _Image:
    """One image's ground truth and the detections kept at the score threshold, in original pixels."""

    index: int
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    matched: torch.Tensor  # per detection: it found a ground-truth box of its class
    found: torch.Tensor  # per ground-truth box: a detection found it

    @property
    def errors(self) -> int:
        return int((~self.found).sum() + (~self.matched).sum())


def _match(boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> tuple[
    torch.Tensor, torch.Tensor
]:  # fmt: skip
    """Greedy matching, highest score first (`boxes` are sorted so): a detection finds the unfound
    ground-truth box of its class it overlaps most, at IoU >= 0.5. Returns (matched, found)."""
    matched = torch.zeros(len(boxes), dtype=torch.bool)
    found = torch.zeros(len(gt_boxes), dtype=torch.bool)
    if len(boxes) and len(gt_boxes):
        iou = box_iou(boxes, gt_boxes)
        iou[labels[:, None] != gt_labels[None, :]] = 0
        for d in range(len(boxes)):
            overlaps = iou[d].masked_fill(found, 0)
            best = int(overlaps.argmax())
            if overlaps[best] >= _MATCH_IOU:
                matched[d], found[best] = True, True
    return matched, found


def _run(model: ObjectDetector, batches: Iterable[Any], score_thresh: float) -> tuple[list[_Image], dict, dict]:
    """Detect over `(images, targets)` batches with the model's own `predict_step`; score them with torchmetrics
    (AP@[.5:.95] and AP@.5 per class, crowd boxes ignored as COCO does) and match the confident detections."""
    metrics = {
        name: MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, iou_thresholds=thresholds)
        for name, thresholds in (("ap", None), ("ap_50", [0.5]))
    }
    images: list[_Image] = []
    dtype = next(model.parameters()).dtype
    with evaluating(model):
        for batch_idx, (x, targets) in enumerate(batches):
            x = x.to(model.device, dtype) if isinstance(x, torch.Tensor) else [i.to(model.device, dtype) for i in x]
            detections = [{k: v.cpu() for k, v in d.items() if isinstance(v, torch.Tensor)}
                          for d in model.predict_step((x, targets), batch_idx)]  # fmt: skip
            truth = []
            for target in targets:
                boxes = boxes_to_original(target["boxes"], target) if "scale" in target else target["boxes"]
                crowd = target.get("iscrowd", torch.zeros(len(boxes), dtype=torch.long))
                truth.append({"boxes": boxes.cpu().float(), "labels": target["labels"].cpu(), "iscrowd": crowd.cpu()})
            for metric in metrics.values():
                metric.update(detections, truth)
            for found, gt in zip(detections, truth, strict=True):
                keep = found["scores"] >= score_thresh
                order = found["scores"][keep].argsort(descending=True)
                boxes, scores, labels = (found[k][keep][order] for k in ("boxes", "scores", "labels"))
                plain = gt["iscrowd"] == 0
                gt_boxes, gt_labels = gt["boxes"][plain], gt["labels"][plain]
                matched, hit = _match(boxes, labels, gt_boxes, gt_labels)
                images.append(_Image(len(images), gt_boxes, gt_labels, boxes, scores, labels, matched, hit))
    if not images:
        raise ValueError("The data holds no batch to analyse.")
    return images, metrics["ap"].compute(), metrics["ap_50"].compute()


def analyze_detector(
    model: ObjectDetector,
    batches: Iterable[Any],
    names: list[str] | None,
    out_dir: Path | None,
    split: str,
    weights: str,
    gallery_size: int,
    score_thresh: float,
) -> Analysis:
    """The analysis of `model` over `(images, targets)` batches (see `autotimm.analyze`); files into `out_dir`."""
    images, ap, ap_50 = _run(model, batches, score_thresh)
    classes = [model.class_name(c) for c in range(int(model.num_classes))]
    names = (
        names[: len(images)]
        if names is not None and len(names) >= len(images)
        else [f"#{i}" for i in range(len(images))]
    )
    per_class = []
    for c, name in enumerate(classes):
        gt = [int((im.gt_labels == c).sum()) for im in images]
        per_class.append(
            {
                "class": name,
                "ap": _class_value(ap, c),
                "ap_50": _class_value(ap_50, c),
                "gt_boxes": sum(gt),
                "matched": sum(int(im.matched[im.labels == c].sum()) for im in images),
                "missed": sum(int((~im.found[im.gt_labels == c]).sum()) for im in images),
                "false": sum(int((~im.matched[im.labels == c]).sum()) for im in images),
            }
        )
    errors = [
        {
            "path": names[im.index],
            "gt_boxes": len(im.gt_boxes),
            "predicted": len(im.boxes),
            "matched": int(im.matched.sum()),
            "missed": int((~im.found).sum()),
            "false": int((~im.matched).sum()),
        }
        for im in sorted(images, key=lambda im: -im.errors)
        if im.errors
    ]
    summary = {
        "num_images": len(images),
        "map": float(ap["map"]),
        "map_50": float(ap["map_50"]),
        "score_thresh": score_thresh,
        "missed": sum(row["missed"] for row in per_class),
        "false": sum(row["false"] for row in per_class),
    }
    analysis = Analysis("detection", split, weights, summary, per_class, errors=errors)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = analysis.files
        files["per_class_csv"] = write_csv(out_dir / "per_class.csv", per_class, _TABLE_FIELDS)
        files["per_class_png"] = _draw_ap(analysis, out_dir / "per_class.png")
        files["errors_csv"] = write_csv(out_dir / "errors.csv", errors, _ERROR_FIELDS)
        worst = [im for im in sorted(images, key=lambda im: -im.errors) if im.errors][: min(gallery_size, _MAX_GALLERY)]
        if not worst:
            analysis.not_written.append("worst_images.png: no image has a missed or false box")
        elif not all(Path(names[im.index]).is_file() for im in worst):
            analysis.not_written.append("worst_images.png: the data does not name its image files")
        elif gallery_size:
            files["worst_images_png"] = _draw_worst(worst, names, classes, analysis, out_dir / "worst_images.png")
    return analysis


def _class_value(result: dict[str, torch.Tensor], c: int) -> float | None:
    """Class `c`'s AP from a `class_metrics=True` result; `None` for a class neither in the truth nor predicted."""
    classes = result["classes"].reshape(-1).tolist()
    if c not in classes:
        return None
    value = float(result["map_per_class"].reshape(-1)[classes.index(c)])
    return None if value < 0 else value


def _draw_ap(analysis: Analysis, path: Path) -> Path:
    rows = analysis.per_class
    figure = new_figure(7.5, min(max(2.5, 0.3 * len(rows) + 1.5), 20.0))
    ax = figure.add_subplot()
    for k, (key, label, color) in enumerate((("ap", "AP@[.5:.95]", "tab:blue"), ("ap_50", "AP@.5", "tab:orange"))):
        values = [row[key] if row[key] is not None else 0.0 for row in rows]
        ax.barh([i + (k - 0.5) * 0.4 for i in range(len(rows))], values, 0.4, label=label, color=color)
    ax.set_yticks(range(len(rows)), [f"{r['class']} ({r['gt_boxes']})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    s = analysis.summary
    ax.set_title(
        f"AP per class ({analysis.split}, {s['num_images']} images, mAP {s['map']:.3f}, AP@.5 {s['map_50']:.3f})"
        f"\n{analysis.weights}",
        fontsize="medium",
    )
    return save_figure(figure, path)


def _draw_worst(images: list[_Image], names: list[str], classes: list[str], analysis: Analysis, path: Path) -> Path:
    """Per image, the true boxes (left) and the detections at the score threshold (right, drawn by
    `DetectionResult.plot`); two images a row."""
    rows = math.ceil(len(images) / 2)
    figure = new_figure(10.0, 2.9 * rows + 0.5)
    for k, im in enumerate(images):
        source = ImageSource(names[im.index], path=Path(names[im.index]))
        picture = source.open()
        truth = pil_to_tensor(picture)
        if len(im.gt_boxes):
            labels = [classes[int(c)] for c in im.gt_labels]
            truth = draw_bounding_boxes(truth, im.gt_boxes, labels=labels, colors="lime", width=2)
        found = DetectionResult(
            path=names[im.index],
            boxes=im.boxes,
            scores=im.scores,
            labels=[classes[int(c)] for c in im.labels],
            label_ids=im.labels,
            image_size=(picture.height, picture.width),
            source=source,
        ).plot()
        missed, false = int((~im.found).sum()), int((~im.matched).sum())
        panels = (
            (truth.permute(1, 2, 0).numpy(), f"{Path(names[im.index]).name}: {len(im.gt_boxes)} true"),
            (found, f"{len(im.boxes)} detected: {missed} missed, {false} false"),
        )
        for j, (pixels, title) in enumerate(panels):
            ax = figure.add_subplot(rows, 4, 2 * k + j + 1)
            ax.imshow(pixels)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize="x-small")
    figure.suptitle(
        f"Most missed or false boxes (score >= {analysis.summary['score_thresh']:g}, IoU >= {_MATCH_IOU:g})\n"
        f"{analysis.weights}",
        fontsize="medium",
    )
    return save_figure(figure, path)
