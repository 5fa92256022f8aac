"""Run an exported autotimm model (ONNX) with ONNX Runtime: the same `predict` and results, without the PyTorch model.

`OnnxPredictor` reads what the exporters wrote into the file (task, class names, preprocessing,
letterbox) and does the preprocessing itself: a classifier's eval transform (resize, centre crop,
normalise), a detector's letterbox (the graph normalises, decodes and suppresses boxes). Boxes come
back in each image's own pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from autotimm._errors import check_number
from autotimm.data import create_eval_transform, resolve_data_config
from autotimm.inference.results import (
    ClassificationResult,
    DetectionResult,
    Predictions,
    predict_images,
    select_detections,
)
from autotimm.inference.sources import ImageSource, OnBadFile
from autotimm.models import letterbox_batch, to_image_pixels

__all__ = ["OnnxPredictor"]


class OnnxPredictor:
    """An ONNX file written by `to_onnx` (classifier or detector), run with ONNX Runtime.

    `autotimm.load("model.onnx")` returns one. `predict` takes what the tasks' `predict` takes
    and returns the same `ClassificationResult` / `DetectionResult` objects (`.to_csv()`,
    `.save_images()`, ...), computed by ONNX Runtime alone.

    Args:
        path: The `.onnx` file.
        providers: ONNX Runtime execution providers; `None` uses the CPU.

    Attributes:
        task: `"classification"` or `"detection"`.
        metadata: Everything the exporter stored (class names, `mean`, `std`, `input_size`, ...).
        class_names: The class names, or `None` when the file has none.
        export_check: The figures of the check run at export (a dict), or `None` for older files.

    Raises:
        ModuleNotFoundError: If `onnxruntime` is missing.
        FileNotFoundError: If `path` does not exist.
        ValueError: If the file is not a valid ONNX model, or not one exported by autotimm (the
            message names the file).

    Examples:
        >>> predictor = OnnxPredictor("detector.onnx")  # doctest: +SKIP
        >>> predictor.predict("new_images/", score_thresh=0.3).to_csv("boxes.csv")  # doctest: +SKIP
        PosixPath('boxes.csv')
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as e:
            raise ModuleNotFoundError(
                f"Running an ONNX file needs onnxruntime ({e}). Install it with `pip install onnxruntime`.",
                name="onnxruntime",
            ) from e
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"No such ONNX file: {str(self.path)!r}.")
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as e:  # noqa: BLE001 (ONNX Runtime raises its own types for every kind of bad file)
            raise ValueError(f"Could not open {str(self.path)!r} as an ONNX model ({type(e).__name__}: {e}).") from e
        self.metadata = _read_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.task: str = self.metadata["task"]
        names = self.metadata.get("class_names")
        self.class_names: list[str] | None = list(names) if isinstance(names, list) else None
        self.export_check: dict[str, Any] | None = self.metadata.get("export_check")
        self._input_names = [i.name for i in self.session.get_inputs()]
        if self.task == "classification":
            self._transform = create_eval_transform(resolve_data_config(self.metadata))

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, task={self.task!r}, classes={self.class_names})"

    def class_name(self, index: int) -> str:
        """The name of class `index`, or the index as text when the file has no class names."""
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    def predict(
        self,
        source: Any,
        batch_size: int = 16,
        top_k: int = 5,
        score_thresh: float | None = None,
        class_agnostic_nms: bool = False,
        on_bad_file: OnBadFile = "skip",
        progress: bool = False,
    ) -> Predictions:
        """Predict on new images: files, a folder, a glob, PIL images, arrays or a tensor batch.

        Args:
            source: What `ImageClassifier.predict` / `ObjectDetector.predict` take.
            batch_size: Images per run (a file exported with `dynamic_batch=False` runs one at a time).
            top_k: Classifiers: how many classes each result lists.
            score_thresh: Detectors: leave out boxes scoring below this; `None` keeps the exported
                model's own threshold.
            class_agnostic_nms: Detectors: one box per object, across classes.
            on_bad_file: `"skip"` files that are not readable images, or `"raise"`.
            progress: Show a progress bar.

        Returns:
            One result per image, in order.

        Examples:
            >>> autotimm.load("model.onnx").predict("cat.jpg")[0].label  # doctest: +SKIP
            'cat'
        """
        if self._fixed_batch() is not None:
            batch_size = self._fixed_batch()
        if self.task == "classification":
            top_k = int(check_number("top_k", top_k, low=1, integer=True))
            return predict_images(source, batch_size, on_bad_file, progress, lambda e, i: self._classify(e, i, top_k))
        meta = self.metadata
        thresh = meta["score_thresh"] if score_thresh is None else score_thresh
        thresh = float(check_number("score_thresh", thresh, low=0, high=1, high_inclusive=True))
        nms_thresh = meta["nms_thresh"] if class_agnostic_nms else None

        def detect(entries: list[ImageSource], images: list[Image.Image]) -> list[DetectionResult]:
            batch, sizes = letterbox_batch([to_tensor(image) for image in images], meta)
            outputs = self.session.run(None, dict(zip(self._input_names, (batch.numpy(), sizes.numpy()), strict=True)))
            found = to_image_pixels(outputs, sizes, [(image.height, image.width) for image in images])
            results = []
            for entry, image, detections in zip(entries, images, found, strict=True):
                detections = select_detections(
                    detections, thresh, nms_thresh, class_agnostic_nms, meta["detections_per_img"]
                )
                results.append(
                    DetectionResult(
                        path=entry.name,
                        boxes=detections["boxes"],
                        scores=detections["scores"],
                        labels=[self.class_name(int(i)) for i in detections["labels"]],
                        label_ids=detections["labels"],
                        image_size=(image.height, image.width),
                        source=entry,
                    )
                )
            return results

        return predict_images(source, batch_size, on_bad_file, progress, detect)

    def _classify(
        self, entries: list[ImageSource], images: list[Image.Image], top_k: int
    ) -> list[ClassificationResult]:
        batch = torch.stack([self._transform(image) for image in images])
        logits = torch.from_numpy(self.session.run(None, {self._input_names[0]: batch.numpy()})[0])
        if self.metadata.get("activation") == "sigmoid":
            probs = logits.sigmoid()
            if probs.shape[1] == 1:  # a binary classifier's one output, as `[1 - p, p]`
                probs = torch.cat([1 - probs, probs], dim=1)
        else:
            probs = logits.softmax(dim=1)
        return [
            ClassificationResult.from_probs(entry, p, top_k, self.class_name)
            for entry, p in zip(entries, probs, strict=True)
        ]

    def _fixed_batch(self) -> int | None:
        first = self.session.get_inputs()[0].shape[0]
        return first if isinstance(first, int) else None


def _read_metadata(props: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The exporter's metadata (JSON strings) as values; `task` filled in for classifiers of older files."""
    try:
        metadata = {key: json.loads(value) for key, value in props.items()}
    except ValueError as e:
        raise ValueError(f"{str(path)!r} has metadata that autotimm did not write ({e}).") from e
    if "task" not in metadata and metadata.get("output") == "logits":
        metadata["task"] = "classification"
    task = metadata.get("task")
    needed = {"classification": ("input_size", "mean", "std"), "detection": ("letterbox", "score_thresh")}
    missing = [key for key in needed.get(task, ()) if key not in metadata]
    if task not in needed or missing:
        raise ValueError(
            f"{str(path)!r} is not an ONNX file exported by autotimm (`to_onnx`): its metadata has "
            f"{sorted(metadata) or 'no entries'}, but an autotimm export names its task ({' or '.join(needed)}) "
            f"and its preprocessing{f' (missing: {missing})' if missing else ''}."
        )
    return metadata
