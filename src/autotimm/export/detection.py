"""Export an object detector to ONNX or TorchScript with box decoding and NMS inside, checked box by box.

The exported graph is `ExportableDetector` (see `autotimm.models.exportable`): letterboxed images in
[0, 1] and their sizes in, the detector's own detections out. The check runs the written file on
images (yours, or generated ones of several sizes and shapes), maps its boxes back to each image's
pixels as `OnnxPredictor` does, and matches them with the PyTorch detector's boxes on the same images:
same class, boxes within `atol + rtol x` the image's longer side, scores within `score_atol`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from autotimm._atomic import atomic_path
from autotimm._errors import check_bool, check_number
from autotimm._version import __version__
from autotimm.export.exporters import (
    METADATA_FILE,
    ExportCheckError,
    check_export_path,
    export_mode,
    import_onnx_modules,
    resolve_class_names,
)
from autotimm.geometry import LETTERBOX_FILL
from autotimm.models.exportable import (
    DETECTION_INPUTS,
    DETECTION_OUTPUTS,
    ExportableDetector,
    letterbox_batch,
    to_image_pixels,
)

__all__ = [
    "DetectionCheck",
    "export_detector_onnx",
    "export_detector_torchscript",
    "letterbox_batch",
    "to_image_pixels",
]

log = logging.getLogger(__name__)

Detections = list[dict[str, torch.Tensor]]
_EXAMPLE_BATCH = 2  # torch.export specialises batch sizes 0 and 1


@dataclasses.dataclass(frozen=True)
class DetectionCheck:
    """What the check of an exported detector found: its boxes against the PyTorch detector's.

    Attributes:
        format: `"ONNX"` or `"TorchScript"`.
        images: How many images were compared.
        expected: Boxes the PyTorch detector found on them.
        exported: Boxes the exported file found.
        matched: Pairs of one box of each, same class, within the tolerances.
        max_box_diff: The largest coordinate difference of a matched pair, in image pixels.
        max_score_diff: The largest score difference of a matched pair.
        passed: Every box was matched, except boxes scoring within `score_atol` of the score
            threshold or of an image's last kept box (these may fall either side in float arithmetic).

    Examples:
        >>> check = DetectionCheck("ONNX", 4, 10, 10, 10, 2e-5, 1e-7, True)
        >>> check.passed, check.matched_fraction
        (True, 1.0)
    """

    format: str
    images: int
    expected: int
    exported: int
    matched: int
    max_box_diff: float
    max_score_diff: float
    passed: bool

    @property
    def matched_fraction(self) -> float:
        """Matched pairs over the larger of the two box counts (1.0 when both found none)."""
        most = max(self.expected, self.exported)
        return self.matched / most if most else 1.0

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain data, with `matched_fraction`."""
        return {**dataclasses.asdict(self), "matched_fraction": self.matched_fraction}

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.format} check {verdict}: {self.matched}/{max(self.expected, self.exported)} boxes matched "
            f"({self.matched_fraction:.1%}) on {self.images} images; max box difference {self.max_box_diff:.3g} px, "
            f"max score difference {self.max_score_diff:.3g}"
        )


def export_detector_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    opset_version: int | None = None,
    check: bool = True,
    check_images: Sequence[torch.Tensor] | None = None,
    atol: float = 1e-2,
    rtol: float = 1e-4,
    score_atol: float = 1e-4,
) -> Path:
    """Export an `ObjectDetector` to one ONNX file that decodes boxes and runs NMS itself.

    The graph takes `images` (float `[B, 3, S, S]`, values in [0, 1], letterboxed: resized so
    that the longer side is `image_size`, at the top left of an `S`-pixel square of grey 114/255)
    and `image_sizes` (int64 `[B, 2]`, each resized image's height and width), and returns
    `boxes` (`[N, 4]`, `xyxy`, letterboxed pixels), `scores`, `labels` and `batch_index` (`[N]`
    each), one row per detection of the batch. The metadata (`metadata_props`, JSON strings)
    holds `task`, `class_names`, `image_size`, `letterbox`, `mean`, `std` (applied inside the
    graph), the thresholds and the check's figures (`export_check`).

    Args:
        model: An `ObjectDetector` (its `inference_module()` is exported, its `forward` is the reference).
        path: The file to write; an existing file is replaced only once the export and check succeeded.
        class_names: Class names in label order; `None` takes the model's.
        dynamic_batch: Make the batch axis symbolic; `False` fixes it at 1.
        opset_version: ONNX opset to target; `None` takes torch's default.
        check: Run the written file with ONNX Runtime and match its boxes with the PyTorch model's.
        check_images: `[3, H, W]` float images in [0, 1] for the check (new images the model has not
            seen make the best check); `None` generates four of different sizes and shapes.
        atol: Absolute box tolerance of the check, in image pixels.
        rtol: Box tolerance relative to the image's longer side.
        score_atol: Score tolerance of the check.

    Returns:
        The path written.

    Raises:
        ModuleNotFoundError: If `onnx`, `onnxscript` or `onnxruntime` is missing.
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or `class_names` does not match the classes.
        ExportCheckError: If the exported file's boxes do not match the PyTorch model's (the file is
            not written; the error's `check` holds the figures).

    Examples:
        >>> from autotimm import BackboneConfig, ObjectDetector
        >>> detector = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), num_classes=3, image_size=64)
        >>> export_detector_onnx(detector, "detector.onnx")  # doctest: +SKIP
        PosixPath('detector.onnx')
    """
    onnx, _, onnxruntime = import_onnx_modules()
    path = check_export_path(path)
    check_bool("dynamic_batch", dynamic_batch)
    if opset_version is not None:
        check_number("opset_version", opset_version, low=18, high=onnx.defs.onnx_opset_version(), high_inclusive=True)
    options = _check_options(check, atol, rtol, score_atol)

    with export_mode(model):
        graph = _graph(model)
        metadata = _metadata(model, graph, class_names)
        example = _example(graph, _EXAMPLE_BATCH if dynamic_batch else 1)
        batch = torch.export.Dim("batch")
        with warnings.catch_warnings():  # torch's notes on its own internals (axis names, unbacked sizes)
            warnings.filterwarnings("ignore", message=r".*(axis name|create_unbacked_symint)")
            program = torch.onnx.export(
                graph,
                example,
                input_names=list(DETECTION_INPUTS),
                output_names=list(DETECTION_OUTPUTS),
                opset_version=opset_version,
                dynamic_shapes=({0: batch}, {0: batch}) if dynamic_batch else None,
                verbose=False,
            )
        proto = program.model_proto
        with atomic_path(path, durable=True) as tmp:
            onnx.save_model(proto, str(tmp))
            if check:
                session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])

                def run(images: torch.Tensor, sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
                    feeds = dict(zip(DETECTION_INPUTS, (images.numpy(), sizes.numpy()), strict=True))
                    return tuple(torch.from_numpy(a) for a in session.run(None, feeds))

                metadata["export_check"] = _check(
                    "ONNX", run, model, graph, check_images, dynamic_batch, **options
                ).to_dict()
            onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})
            onnx.save_model(proto, str(tmp))
    log.info("Exported %s to ONNX: %s", type(model).__name__, path)
    return path


def export_detector_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    check: bool = True,
    check_images: Sequence[torch.Tensor] | None = None,
    atol: float = 1e-2,
    rtol: float = 1e-4,
    score_atol: float = 1e-4,
) -> Path:
    """Export an `ObjectDetector` to a traced TorchScript archive with the graph of `export_detector_onnx`.

    The module takes and returns what the ONNX graph does (any batch size); the metadata is the
    archive's extra file `metadata.json`. TorchScript is deprecated in PyTorch; prefer ONNX.

    Args:
        model: An `ObjectDetector`.
        path: The file to write; an existing file is replaced only once the export and check succeeded.
        class_names: Class names in label order; `None` takes the model's.
        check: Load the written file and match its boxes with the PyTorch model's.
        check_images: Images for the check, as for `export_detector_onnx`.
        atol: Absolute box tolerance of the check, in image pixels.
        rtol: Box tolerance relative to the image's longer side.
        score_atol: Score tolerance of the check.

    Returns:
        The path written.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or `class_names` does not match the classes.
        ExportCheckError: If the exported file's boxes do not match the PyTorch model's.

    Examples:
        >>> export_detector_torchscript(detector, "detector.pt")  # doctest: +SKIP
        PosixPath('detector.pt')
    """
    path = check_export_path(path)
    options = _check_options(check, atol, rtol, score_atol)
    with export_mode(model):
        graph = _graph(model)
        metadata = _metadata(model, graph, class_names)
        with torch.no_grad(), warnings.catch_warnings():
            # The check below runs the saved file on other images and batch sizes, which says more
            # than torch's own re-trace check, and more than its warnings about Python values.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(graph, _example(graph, _EXAMPLE_BATCH), check_trace=False)
        with atomic_path(path, durable=True) as tmp:
            if check:
                torch.jit.save(traced, str(tmp))
                loaded = torch.jit.load(str(tmp), map_location="cpu")
                result = _check("TorchScript", loaded, model, graph, check_images, True, **options)
                metadata["export_check"] = result.to_dict()
            torch.jit.save(traced, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
    log.info("Exported %s to TorchScript: %s", type(model).__name__, path)
    return path


def _graph(model: nn.Module) -> ExportableDetector:
    graph = model.inference_module() if callable(getattr(model, "inference_module", None)) else model
    if not isinstance(graph, ExportableDetector):
        raise TypeError(
            f"Expected an ObjectDetector (whose `inference_module()` is an ExportableDetector), but got "
            f"{type(model).__name__}."
        )
    return graph.eval()


def _example(graph: ExportableDetector, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, graph.canvas_size, graph.canvas_size, generator=generator)
    return images, torch.full((batch, 2), graph.image_size, dtype=torch.int64)


def _metadata(model: nn.Module, graph: ExportableDetector, class_names: Sequence[str] | None) -> dict[str, Any]:
    """What a deployer needs to feed the graph and read its output."""
    metadata: dict[str, Any] = {
        "task": "detection",
        "input_size": [3, graph.canvas_size, graph.canvas_size],
        "image_size": graph.image_size,
        "letterbox": {
            "image_size": graph.image_size,
            "canvas_size": graph.canvas_size,
            "fill": LETTERBOX_FILL,
            "align": "top-left",
        },
        "input_range": [0, 1],
        "mean": graph.mean.flatten().tolist(),
        "std": graph.std.flatten().tolist(),
        "normalized_in_graph": True,
        "inputs": list(DETECTION_INPUTS),
        "outputs": list(DETECTION_OUTPUTS),
        "box_format": "xyxy",
        "num_classes": graph.num_classes,
        "score_thresh": graph.score_thresh,
        "nms_thresh": graph.nms_thresh,
        "detections_per_img": graph.detections_per_img,
        "autotimm_version": __version__,
    }
    names = resolve_class_names(model, class_names, graph.num_classes)
    if names is not None:
        metadata["class_names"] = names
    hparams = getattr(model, "hparams", None)
    if isinstance(hparams, Mapping):
        backbone = hparams.get("backbone")
        if isinstance(backbone, Mapping) and isinstance(backbone.get("model_name"), str):
            metadata["backbone"] = backbone["model_name"]
        if isinstance(hparams.get("architecture"), str):
            metadata["architecture"] = hparams["architecture"]
    return metadata


# ---- the check ---------------------------------------------------------------------------------
def _check_options(check: object, atol: object, rtol: object, score_atol: object) -> dict[str, float]:
    check_bool("check", check)
    return {
        "atol": float(check_number("atol", atol, low=0)),
        "rtol": float(check_number("rtol", rtol, low=0)),
        "score_atol": float(check_number("score_atol", score_atol, low=0)),
    }


def _check_images(graph: ExportableDetector, images: Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """The check's images: the given ones, else four generated ones of different sizes and shapes."""
    if images is not None:
        images = list(images)
        if not images or not all(isinstance(i, torch.Tensor) and i.ndim == 3 and i.shape[0] == 3 for i in images):
            raise ValueError("Expected `check_images` to be a non-empty list of [3, H, W] float tensors in [0, 1].")
        return [i.float() for i in images]
    generator = torch.Generator().manual_seed(1)
    side = graph.image_size
    shapes = [(side, side), (side * 3 // 4, side), (side, max(1, side // 2)), (side * 2, side * 3 // 2)]
    return [torch.rand(3, h, w, generator=generator) for h, w in shapes]


def _check(
    kind: str,
    exported: Callable[[torch.Tensor, torch.Tensor], Sequence[torch.Tensor]],
    model: nn.Module,
    graph: ExportableDetector,
    images: Sequence[torch.Tensor] | None,
    batched: bool,
    *,
    atol: float,
    rtol: float,
    score_atol: float,
) -> DetectionCheck:
    """Match the exported file's detections with the PyTorch model's; raise `ExportCheckError` unless they agree."""
    images = _check_images(graph, images)
    meta = {"letterbox": {"image_size": graph.image_size, "canvas_size": graph.canvas_size}}
    with torch.no_grad():
        expected = [{k: v.float() if k != "labels" else v for k, v in d.items()} for d in model(images)]
    got: Detections = []
    for chunk in [images] if batched else [[image] for image in images]:
        batch, sizes = letterbox_batch(chunk, meta)
        with torch.no_grad():
            outputs = exported(batch, sizes)
        got.extend(to_image_pixels(outputs, sizes, [tuple(i.shape[-2:]) for i in chunk]))
    result = _match(kind, expected, got, [max(i.shape[-2:]) for i in images], graph, atol, rtol, score_atol)
    if not result.passed:
        error = ExportCheckError(
            f"{result}. Allowed: boxes within atol={atol} px + rtol={rtol} x the image's longer side, scores within "
            f"score_atol={score_atol}. The file was not written."
        )
        error.check = result
        raise error
    if not result.expected:
        log.warning(
            "The %s check compared no boxes: the PyTorch detector found none on the %d check images. Pass "
            "`check_images=` images with objects the model detects for a check that compares boxes.",
            kind,
            result.images,
        )
    log.info("%s", result)
    return result


def _match(
    kind: str,
    expected: Detections,
    got: Detections,
    sides: Sequence[int],
    graph: ExportableDetector,
    atol: float,
    rtol: float,
    score_atol: float,
) -> DetectionCheck:
    """Pair each PyTorch box with an unused exported box of its class within the tolerances, best first."""
    matched, box_diff, score_diff, passed = 0, 0.0, 0.0, True
    for want, have, side in zip(expected, got, sides, strict=True):
        tolerance = atol + rtol * side
        free = torch.ones(len(have["scores"]), dtype=torch.bool)
        unmatched = []
        for box, score, label in zip(want["boxes"], want["scores"], want["labels"], strict=True):
            diff = (have["boxes"] - box).abs().amax(dim=1) if len(have["boxes"]) else torch.zeros(0)
            close = (diff <= tolerance) & ((have["scores"] - score).abs() <= score_atol)
            fits = free & (have["labels"] == label) & close
            if not bool(fits.any()):
                unmatched.append(float(score))
                continue
            j = int(torch.where(fits, diff, torch.inf).argmin())
            free[j] = False
            matched += 1
            box_diff = max(box_diff, float(diff[j]))
            score_diff = max(score_diff, abs(float(have["scores"][j]) - float(score)))
        unmatched += have["scores"][free].tolist()
        # Boxes at the edge may fall either side: near the score threshold, or near the last kept
        # score of an image that reached `detections_per_img`.
        edges = [graph.score_thresh]
        for found in (want, have):
            if len(found["scores"]) >= graph.detections_per_img:
                edges.append(float(found["scores"].min()))
        passed &= all(min(abs(s - e) for e in edges) <= score_atol for s in unmatched)
    return DetectionCheck(
        format=kind,
        images=len(expected),
        expected=sum(len(d["scores"]) for d in expected),
        exported=sum(len(d["scores"]) for d in got),
        matched=matched,
        max_box_diff=box_diff,
        max_score_diff=score_diff,
        passed=passed,
    )
