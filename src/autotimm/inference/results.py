"""What `predict` returns: one result per image, which draws itself, and a list of them that writes CSV and JSON."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torchvision.ops import batched_nms, nms
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import draw_bounding_boxes
from tqdm import tqdm

from autotimm._atomic import atomic_path
from autotimm._errors import check_bool, check_number
from autotimm.inference.sources import ImageSource, OnBadFile, collect_images, iter_batches

__all__ = [
    "ClassificationResult",
    "DetectionResult",
    "Explanation",
    "Predictions",
    "predict_images",
    "select_detections",
]

_LINE_WIDTH = 2


class _Drawable:
    """The image a result was predicted on, and `plot()` / `save(path)` onto it."""

    source: ImageSource

    def _image(self) -> Image.Image:
        return self.source.open()

    def plot(self) -> Image.Image:
        """The image with the prediction drawn on it (a new RGB PIL image)."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write `plot()` to `path` (the format from its extension); return the path.

        Examples:
            >>> result.save("out/cat.jpg")  # doctest: +SKIP
            PosixPath('out/cat.jpg')
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            self.plot().save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        return path


@dataclass
class ClassificationResult(_Drawable):
    """A classifier's prediction for one image.

    Attributes:
        path: The image file, or a name such as `"image_0"` for an in-memory image.
        label: The top class's name (its index as text when the model has no class names).
        label_id: The top class's index.
        score: The top class's probability.
        top_k: The `k` most likely classes as `(name, probability)` pairs, most likely first.
        probs: The probability of every class, `[num_classes]` (softmax, or sigmoid per class for
            a multi-label classifier).

    Examples:
        >>> result = model.predict("cat.jpg")[0]  # doctest: +SKIP
        >>> result.label, round(result.score, 2)  # doctest: +SKIP
        ('cat', 0.97)
    """

    path: str
    label: str
    label_id: int
    score: float
    top_k: list[tuple[str, float]]
    probs: torch.Tensor
    source: ImageSource = field(repr=False)

    @classmethod
    def from_probs(
        cls, entry: ImageSource, probs: torch.Tensor, top_k: int, class_name: Callable[[int], str]
    ) -> ClassificationResult:
        """The result for `probs` (`[num_classes]`), classes named by `class_name(index)`.

        Examples:
            >>> source = ImageSource("a.png")
            >>> ClassificationResult.from_probs(source, torch.tensor([0.2, 0.8]), 1, str).top_k
            [('1', 0.800000011920929)]
        """
        scores, indices = probs.topk(min(top_k, probs.numel()))
        best = int(indices[0])
        return cls(
            path=entry.name,
            label=class_name(best),
            label_id=best,
            score=float(scores[0]),
            top_k=[(class_name(int(i)), float(s)) for s, i in zip(scores, indices, strict=True)],
            probs=probs,
            source=entry,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data: `path`, `label`, `label_id`, `score`, `top_k` (a list of `{label, score}`)."""
        return {**_label_fields(self), "top_k": [{"label": name, "score": score} for name, score in self.top_k]}

    def plot(self) -> Image.Image:
        """The image with its `top_k` labels and scores written at the top left."""
        return _write_lines(self._image().copy(), [f"{name} {score:.2f}" for name, score in self.top_k[:3]])


def _label_fields(result: ClassificationResult | Explanation) -> dict[str, Any]:
    return {"path": result.path, "label": result.label, "label_id": result.label_id, "score": result.score}


def _write_lines(image: Image.Image, lines: list[str]) -> Image.Image:
    """`image` with `lines` written at its top left, white on black; drawn in place and returned."""
    draw = ImageDraw.Draw(image)
    size = max(10, image.height // 16)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((4, 4), text, font_size=size)
    draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
    draw.multiline_text((4, 4), text, fill=(255, 255, 255), font_size=size)
    return image


@dataclass
class Explanation(_Drawable):
    """A class-activation map of one image: where the evidence for one class lies, at the image's size.

    Attributes:
        path: The image file, or a name such as `"image_0"` for an in-memory image.
        label: The name of the class explained (the predicted one unless another was asked for).
        label_id: Its index.
        score: Its probability for this image.
        heatmap: `[height, width]` of the image as read, values in [0, 1] (1: the strongest evidence;
            0 also where the model's centre crop left the image out).
        method: How the map was made (`"gradcam"`).

    Examples:
        >>> explanation = model.explain("cat.jpg")[0]  # doctest: +SKIP
        >>> explanation.label, explanation.heatmap.shape  # doctest: +SKIP
        ('cat', torch.Size([480, 640]))
    """

    path: str
    label: str
    label_id: int
    score: float
    heatmap: torch.Tensor = field(repr=False)
    method: str
    source: ImageSource = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: `path`, `label`, `label_id`, `score`, `method` (the map itself is left out)."""
        return {**_label_fields(self), "method": self.method}

    def plot(self, alpha: float = 0.5) -> Image.Image:
        """The image with the heatmap laid over it (matplotlib's `jet` colours, `alpha` of the map) and the
        class and score written at the top left."""
        from matplotlib import colormaps

        colours = colormaps["jet"](self.heatmap.float().cpu().numpy())[..., :3]
        overlay = Image.fromarray((colours * 255 + 0.5).astype("uint8"))
        blended = Image.blend(self._image(), overlay, alpha)
        return _write_lines(blended, [f"{self.label} {self.score:.2f}"])


@dataclass
class DetectionResult(_Drawable):
    """A detector's boxes for one image, in the original image's pixels.

    Attributes:
        path: The image file, or a name such as `"image_0"` for an in-memory image.
        boxes: `[N, 4]` boxes, `xyxy`, in the pixels of the image as read (before any resize).
        scores: `[N]` scores, highest first.
        labels: The `N` class names (indices as text when the model has no class names).
        label_ids: `[N]` class indices.
        image_size: The image's `(height, width)`.

    Examples:
        >>> result = detector.predict("street.jpg")[0]  # doctest: +SKIP
        >>> result.labels[:2], result.boxes[0]  # doctest: +SKIP
        (['car', 'person'], tensor([ 12.,  40., 210., 170.]))
    """

    path: str
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    label_ids: torch.Tensor
    image_size: tuple[int, int]
    source: ImageSource = field(repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: `path`, `image_size`, and `detections`: one `{label, label_id, score, box}` per box."""
        return {
            "path": self.path,
            "image_size": list(self.image_size),
            "detections": [
                {"label": name, "label_id": int(i), "score": float(s), "box": [float(v) for v in box]}
                for name, i, s, box in zip(self.labels, self.label_ids, self.scores, self.boxes, strict=True)
            ],
        }

    def plot(self) -> Image.Image:
        """The image with each box and its label and score drawn (torchvision's `draw_bounding_boxes`)."""
        image = self._image()
        if not len(self):
            return image.copy()
        names = [f"{name} {score:.2f}" for name, score in zip(self.labels, self.scores.tolist(), strict=True)]
        palette = ["red", "lime", "blue", "orange", "magenta", "cyan", "yellow", "white"]
        colors = [palette[int(i) % len(palette)] for i in self.label_ids]
        drawn = draw_bounding_boxes(
            pil_to_tensor(image),
            self.boxes.float(),
            labels=names,
            colors=colors,
            width=_LINE_WIDTH,
        )
        return to_pil_image(drawn)


class Predictions(list):  # type: ignore[type-arg]
    """The results of `predict` (or `explain`), one per image in order, plus the files it skipped; writes CSV and
    JSON.

    Attributes:
        skipped: The files that were left out because they could not be read as images.

    Examples:
        >>> predictions = model.predict("new_images/")  # doctest: +SKIP
        >>> predictions.to_csv("results.csv")  # doctest: +SKIP
        PosixPath('results.csv')
    """

    def __init__(
        self,
        results: Iterable[ClassificationResult | DetectionResult | Explanation] = (),
        skipped: Sequence[str] = (),
    ):
        super().__init__(results)
        self.skipped = list(skipped)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Each result's `to_dict()`."""
        return [result.to_dict() for result in self]

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write `{"predictions": [...], "skipped": [...]}` as JSON to `path`; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"predictions": self.to_dicts(), "skipped": self.skipped}, indent=2))
        return path

    def rows(self) -> list[dict[str, Any]]:
        """The CSV rows: one per image for a classifier (`path, label, label_id, score, top_k`), one per
        box for a detector (`path, label, label_id, score, x1, y1, x2, y2`; an image without boxes
        gets one row with empty fields), one per image for `explain` (`path, label, label_id, score, method`)."""
        rows: list[dict[str, Any]] = []
        for result in self:
            if isinstance(result, Explanation):
                rows.append({**result.to_dict(), "score": f"{result.score:.6f}"})
                continue
            if isinstance(result, ClassificationResult):
                top = "; ".join(f"{name}:{score:.4f}" for name, score in result.top_k)
                rows.append(
                    {
                        "path": result.path,
                        "label": result.label,
                        "label_id": result.label_id,
                        "score": f"{result.score:.6f}",
                        "top_k": top,
                    }
                )
                continue
            empty = dict.fromkeys(("label", "label_id", "score", "x1", "y1", "x2", "y2"), "")
            boxes = result.to_dict()["detections"] or [None]
            for det in boxes:
                if det is None:
                    rows.append({"path": result.path, **empty})
                    continue
                x1, y1, x2, y2 = (f"{v:.2f}" for v in det["box"])
                rows.append(
                    {
                        "path": result.path,
                        "label": det["label"],
                        "label_id": det["label_id"],
                        "score": f"{det['score']:.6f}",
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                    }
                )
        return rows

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write `rows()` as CSV to `path`; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        fields = list(rows[0]) if rows else ["path"]
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def save_images(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Save each result's drawing into `folder`, named after its image (`.png` for in-memory images)."""
        folder = Path(folder)
        written, used = [], set()
        for result in self:
            stem = Path(result.path).stem if result.source.path is not None else result.path
            suffix = result.source.path.suffix if result.source.path is not None else ".png"
            name = f"{stem}{suffix}"
            if name in used:  # two files of one name in different sub-folders
                name = f"{stem}_{len(written)}{suffix}"
            used.add(name)
            written.append(result.save(folder / name))
        return written


def predict_images(
    source: Any,
    batch_size: int,
    on_bad_file: OnBadFile,
    progress: bool,
    run_batch: Callable[[list[ImageSource], list[Image.Image]], Sequence[ClassificationResult | DetectionResult]],
) -> Predictions:
    """Run `run_batch` over the images of `source`, `batch_size` opened images at a time, with a progress bar.

    Files that cannot be read are skipped (named in a warning and in `Predictions.skipped`) or
    raise, as `on_bad_file` says.

    Raises:
        ValueError: If none of the files could be read.

    Examples:
        >>> run = lambda entries, images: [len(images)] * len(images)
        >>> list(predict_images([Image.new("RGB", (8, 8))] * 3, 2, "skip", False, run))
        [2, 2, 1]
    """
    check_number("batch_size", batch_size, low=1, integer=True)
    check_bool("progress", progress)
    sources = collect_images(source, on_bad_file)
    results, skipped = Predictions(), []
    with tqdm(total=len(sources), unit="image", disable=not progress) as bar:
        for entries, images in iter_batches(sources, batch_size, on_bad_file, skipped):
            results.extend(run_batch(entries, images))
            bar.update(len(entries))
    results.skipped = skipped
    if not results:
        raise ValueError(f"None of the {len(sources)} files could be read as an image: {skipped[:5]}.")
    return results


def select_detections(
    detections: dict[str, torch.Tensor],
    score_thresh: float,
    nms_thresh: float | None,
    class_agnostic: bool,
    limit: int,
) -> dict[str, torch.Tensor]:
    """The detections scoring at least `score_thresh`, after NMS when `nms_thresh` is given (across classes
    with `class_agnostic`), highest score first, at most `limit`.

    Examples:
        >>> found = {"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]), "scores": torch.tensor([0.9, 0.8]),
        ...     "labels": torch.tensor([0, 1])}
        >>> select_detections(found, 0.5, 0.5, True, 100)["labels"]
        tensor([0])
    """
    keep = detections["scores"] >= score_thresh
    found = {k: v[keep] for k, v in detections.items()}
    if nms_thresh is not None:
        boxes, scores = found["boxes"].float(), found["scores"].float()
        if class_agnostic:
            order = nms(boxes, scores, nms_thresh)
        else:
            order = batched_nms(boxes, scores, found["labels"], nms_thresh)
    else:
        order = found["scores"].argsort(descending=True)
    order = order[:limit]
    return {k: v[order] for k, v in found.items()}
