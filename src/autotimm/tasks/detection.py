"""Object detection over any timm backbone: feature pyramid plus a torchvision FCOS or RetinaNet head."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm.data
import torch
import torch.nn as nn
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.detection import MeanAveragePrecision
from torchvision.transforms.functional import to_tensor

from autotimm._errors import check_bool, check_choice, check_image_size, check_number
from autotimm._warnings import warn
from autotimm.backbones import BackboneConfig
from autotimm.export import export_detector_onnx, export_detector_torchscript
from autotimm.geometry import boxes_to_original
from autotimm.inference import (
    DetectionResult,
    ImageSource,
    OnBadFile,
    Predictions,
    collect_images,
    iter_batches,
    select_detections,
)
from autotimm.loggers import LoggingConfig
from autotimm.metrics import MetricConfig
from autotimm.models.detectors import (
    ARCHITECTURES,
    Architecture,
    CollapseMonitor,
    create_detector,
    letterbox_transform,
    losses_and_detections,
)
from autotimm.models.exportable import ExportableDetector
from autotimm.models.features import TimmFeaturePyramid, create_feature_pyramid, needs_fixed_input_size
from autotimm.tasks.base import BaseTask, labels_outside

__all__ = ["ObjectDetector"]

log = logging.getLogger(__name__)

_EVAL_STAGES = ("val", "test")
# The input size of a detector given no `image_size` and used without a data module (predict-only);
# `DetectionDataModule`'s default too.
DEFAULT_IMAGE_SIZE = 640


def _default_metrics() -> list[MetricConfig]:
    return [
        MetricConfig(
            "map",
            metric_class="MeanAveragePrecision",
            params={"box_format": "xyxy", "iou_type": "bbox"},
            stages=list(_EVAL_STAGES),
            prog_bar=True,
        )
    ]


def _map_backend() -> str:
    """`faster_coco_eval` when installed (several times faster on large sets), else `pycocotools`."""
    if importlib.util.find_spec("faster_coco_eval") is not None:
        return "faster_coco_eval"
    rank_zero_info("mAP is computed with pycocotools; `pip install faster-coco-eval` makes it faster on large sets.")
    return "pycocotools"


def _check_metrics(configs: list[MetricConfig]) -> None:
    """Refuse metrics that cannot score boxes, or that ask for the training stage."""
    for cfg in configs:
        cls = cfg.metric_cls
        if cfg.backend == "torchmetrics" and not cls.__module__.startswith("torchmetrics.detection"):
            raise ValueError(
                f"Metric {cfg.name!r} ({cls.__name__}) does not score boxes. ObjectDetector takes detection metrics "
                "such as 'MeanAveragePrecision' or 'IntersectionOverUnion' (torchmetrics.detection), or a custom "
                "metric updated with (predictions, targets) lists of box dicts."
            )
        if "train" in cfg.stages:
            raise ValueError(
                f"Metric {cfg.name!r} asks for stage 'train', but detection metrics are computed on "
                f"{list(_EVAL_STAGES)} only (training runs the model in loss mode). Use stages=['val', 'test']."
            )


def _with_map_backend(configs: list[MetricConfig]) -> list[MetricConfig]:
    """The configs, with the fastest installed backend for each mAP metric that sets none."""
    return [
        dataclasses.replace(cfg, params={**cfg.params, "backend": _map_backend()})
        if issubclass(cfg.metric_cls, MeanAveragePrecision) and "backend" not in cfg.params
        else cfg
        for cfg in configs
    ]


class ObjectDetector(BaseTask):
    """Object detector: a timm backbone, a feature pyramid and a torchvision FCOS or RetinaNet head.

    The backbone is any timm model that returns multi-scale features (`features_only`):
    CNNs such as `resnet50`, `efficientnet_b0`, `convnext_tiny`; Swin (channels-last maps
    are permuted); and plain ViTs, from whose single stride-16 map a simple pyramid at
    strides 8, 16, 32 is built. The last three backbone levels feed a feature pyramid with
    two extra levels (P6, P7); the head, its losses, box coding and NMS are torchvision's.

    Inference contract: `model.eval(); model(images)` with `images` a float tensor
    `[B, 3, H, W]` (or a list of `[3, H, W]` tensors) in `[0, 1]`, not normalised (the model
    normalises with the backbone's mean and std, and letterboxes each image to `image_size`
    as `DetectionDataModule` does), returns one dict per image: `boxes` (`[N, 4]`, `xyxy`,
    absolute pixels of the image as given), `scores` (`[N]`) and `labels` (`[N]`, 0-based
    class indices). `predict_step` on a `DetectionDataModule` batch returns the same, with
    boxes mapped back to the original image file's pixels, plus its `image_id`.

    In training mode `model(images, targets)` returns torchvision's loss dict. Logs
    `train/loss` (and each loss term), `val/loss`, and for `MeanAveragePrecision` its
    scalar results as `<stage>/map`, `<stage>/map_50`, `<stage>/map_75`, ... (so
    `checkpoint_monitor="val/map"` works). Validation compares predictions with the
    ground truth in original-image coordinates, ignores crowd boxes as COCO does, and keeps
    images without boxes.

    `num_classes` and `image_size` default to the data's: left out, they are taken from the
    data module when `fit` (or `validate`, `test`, `predict`) starts, and saved in the
    hyperparameters, so `load_from_checkpoint` rebuilds the model as trained. Given, they
    must match the data module's. Without `num_classes` the detector is built at that point;
    without `image_size` it works at 640 px until a data module gives its size (fixed-size
    backbones such as ViT and Swin are then rebuilt for that size).

    Args:
        backbone: A timm model name or a `BackboneConfig`.
        num_classes: Number of object classes (no background class); `None` takes the data
            module's `num_classes`.
        metrics: Detection metrics for val/test; `None` gives COCO mAP named `map`, `[]` none.
        logging_config: Learning-rate and gradient-norm logging.
        architecture: `"fcos"` (anchor-free, the default) or `"retinanet"`.
        image_size: Side of the square letterboxed input; `None` takes the data module's
            `image_size` (640 without a data module). Given, it must match the data's.
        fpn_channels: Channels of the feature pyramid and head (a multiple of 32).
        optimizer: A name from `list_optimizers()`.
        lr: Learning rate (also settable as `model._lr` before `fit`).
        weight_decay: Weight decay, not applied to biases and norm weights.
        optimizer_kwargs: Extra optimizer arguments.
        scheduler: A name from `list_schedulers()`, or `None` for a constant learning rate.
        scheduler_kwargs: Extra scheduler arguments.
        freeze_backbone: Train only the pyramid and head; the backbone's BatchNorm statistics stay frozen too.
        backbone_lr_scale: The backbone's learning rate over `lr`, which the pyramid and head keep
            (`0.1`: the backbone learns ten times slower).
        score_thresh: Detections scoring below this are dropped (low values suit mAP; filter for display).
        nms_thresh: IoU above which NMS suppresses the lower-scoring box of a class.
        detections_per_img: Most detections kept per image.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, names an unknown architecture, optimizer
            or scheduler, a metric cannot score boxes, or the backbone has no multi-scale
            features; when a run starts, if a given `num_classes` or `image_size` differs from
            the data module's, or `num_classes` is neither given nor known to the data; at each
            train/val/test batch, if a box label lies outside `[0, num_classes)`.

    Examples:
        >>> model = ObjectDetector(BackboneConfig("resnet18", pretrained=False), num_classes=3, image_size=64)
        >>> _ = model.eval()
        >>> detections = model(torch.rand(2, 3, 64, 64))
        >>> sorted(detections[0])
        ['boxes', 'labels', 'scores']
    """

    data_values = ("num_classes", "image_size")
    _data_module_example = "a `DetectionDataModule`"
    _class_word = "categories"

    def __init__(
        self,
        backbone: str | BackboneConfig | dict[str, Any],
        num_classes: int | None = None,
        metrics: Sequence[MetricConfig | dict[str, Any]] | None = None,
        logging_config: LoggingConfig | dict[str, Any] | None = None,
        architecture: Architecture = "fcos",
        image_size: int | None = None,
        fpn_channels: int = 256,
        optimizer: str = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        optimizer_kwargs: dict[str, Any] | None = None,
        scheduler: str | None = None,
        scheduler_kwargs: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            metrics=metrics,
            default_metrics=_default_metrics,
            freeze_backbone=freeze_backbone,
            backbone_lr_scale=backbone_lr_scale,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs,
            scheduler=scheduler,
            scheduler_kwargs=scheduler_kwargs,
            logging_config=logging_config,
        )
        check_choice("architecture", architecture, ARCHITECTURES)
        if image_size is not None:
            image_size = check_image_size(image_size, pair=False)
        fpn_channels = check_number("fpn_channels", fpn_channels, low=64, integer=True)
        if fpn_channels % 32:
            # The head's GroupNorm has 32 groups; with 64+ channels each has 2+ values even on a 1x1 level.
            raise ValueError(
                f"Expected `fpn_channels` to be a multiple of 32 (the head's GroupNorm has 32 groups), "
                f"but got {fpn_channels}."
            )
        score_thresh = float(check_number("score_thresh", score_thresh, low=0, high=1, high_inclusive=False))
        nms_thresh = float(check_number("nms_thresh", nms_thresh, low=0, high=1, low_inclusive=False))
        detections_per_img = check_number("detections_per_img", detections_per_img, low=1, integer=True)
        _check_metrics(self.metric_configs)
        self._save_hparams(
            {
                "architecture": architecture,
                "image_size": image_size,
                "fpn_channels": fpn_channels,
                "score_thresh": score_thresh,
                "nms_thresh": nms_thresh,
                "detections_per_img": detections_per_img,
            }
        )
        self.image_size = image_size  # None: the data module's, DEFAULT_IMAGE_SIZE until one gives it

        # The mAP backend is chosen here, not saved: a checkpoint loads where faster_coco_eval is missing.
        self._create_stage_metrics(_with_map_backend(self.metric_configs))
        self._collapse = CollapseMonitor()
        self.detector: nn.Module | None = None
        if self.num_classes is not None:
            self._build_detector(self.num_classes)

    def _build_detector(self, num_classes: int) -> None:
        """Build the backbone, pyramid and head, at `image_size` (or the default size)."""
        hparams = self.hparams
        image_size = self.image_size or DEFAULT_IMAGE_SIZE
        features = create_feature_pyramid(
            self._backbone_config, image_size=image_size, out_channels=hparams["fpn_channels"]
        )
        data_config = timm.data.resolve_model_data_config(features.body)
        self.detector = create_detector(
            hparams["architecture"],
            features,
            num_classes=num_classes,
            image_size=image_size,
            image_mean=data_config["mean"],
            image_std=data_config["std"],
            score_thresh=hparams["score_thresh"],
            nms_thresh=hparams["nms_thresh"],
            detections_per_img=hparams["detections_per_img"],
        )
        self._freeze_if_asked()

    def _resize(self, image_size: int) -> None:
        """Take `image_size` px inputs: a new letterbox, and a fixed-size backbone (ViT, Swin) rebuilt for them."""
        detector = self._built()
        if needs_fixed_input_size(self._backbone_config.model_name):
            frozen = self.backbone_frozen
            detector.backbone = create_feature_pyramid(
                self._backbone_config, image_size=image_size, out_channels=self.hparams["fpn_channels"]
            )
            if frozen:
                self.freeze_backbone()
        old = detector.transform
        detector.transform = letterbox_transform(detector.backbone, image_size, old.image_mean, old.image_std)

    def _built(self) -> nn.Module:
        if self.detector is None:
            raise RuntimeError(
                "The detector is not built yet: it was created without `num_classes`, which it takes from the data "
                "module when a run starts. Give `num_classes=...` to use it before `fit` (or `predict`)."
            )
        return self.detector

    @property
    def backbone(self) -> nn.Module:  # type: ignore[override]
        """The timm feature extractor (`features_only`); freezing and unfreezing act on it."""
        features: TimmFeaturePyramid = self._built().backbone
        return features.body

    def forward(self, images: torch.Tensor | list[torch.Tensor], targets: list[dict[str, Any]] | None = None) -> Any:
        """Detections per image in eval mode; the loss dict in training mode (needs `targets`).

        See the class docstring for the input and output formats.
        """
        _check_images(images)
        return self._built()(images, targets)

    def _data_mismatch(self, name: str, data: int) -> str | None:
        if name != "image_size" or self.image_size in (None, data):
            return super()._data_mismatch(name, data)
        return (
            f"The model is built for `image_size={self.image_size}` but the data module letterboxes images to "
            f"{data} pixels. Leave the model's `image_size` out (it then takes the data's), or give both "
            "the same `image_size`."
        )

    def _adopt_data_values(self, values: Mapping[str, int]) -> None:
        """Take the data's `image_size` (a built detector gets a new letterbox) and `num_classes` (build it)."""
        super()._adopt_data_values(values)
        if "image_size" in values and self.detector is not None:
            self._resize(values["image_size"])
        if "num_classes" in values:
            self._build_detector(values["num_classes"])

    def _label_problem(self, batch: Any) -> str | None:
        """Box labels must lie in `[0, num_classes)`; the message names the image."""
        if not _is_detection_batch(batch):
            return None
        for target in batch[1]:
            labels = target.get("labels")
            if not isinstance(labels, torch.Tensor) or labels.device.type != "cpu" or labels.is_floating_point():
                continue
            bad = labels_outside(labels, self.num_classes)
            if bad:
                image = f" (image_id {target['image_id']!r})" if "image_id" in target else ""
                return (
                    f"box labels must be in [0, {self.num_classes}) for `num_classes={self.num_classes}`, "
                    f"but a target{image} has label(s) {bad}"
                )
        return None

    # ---- steps ---------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.detector(images, targets)
        self._collapse.update_train(losses, giou=self.hparams["architecture"] == "fcos")
        loss = sum(losses.values())
        batch_size = len(images)
        self._log_loss("train", loss, batch_size)
        for name, value in losses.items():
            self.log(f"train/loss_{name}", value, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        images, targets = batch
        # The loss leaves crowd boxes out (they are no training targets); the metrics ignore
        # detections that match them, as COCO evaluation does.
        loss_targets = [_without_crowd(t) for t in targets]
        losses, detections = losses_and_detections(self.detector, images, loss_targets)
        if stage == "val":
            self._collapse.update_eval(detections, loss_targets)
        self._log_loss(stage, sum(losses.values()), len(images))
        metrics: nn.ModuleDict = getattr(self, f"{stage}_metrics")
        if len(metrics):
            preds = [_to_original(d, t) for d, t in zip(detections, targets, strict=True)]
            truth = [_metric_target(t) for t in targets]
            for metric in metrics.values():
                metric.update(preds, truth)

    def _log_metrics(self, stage: str) -> None:
        metrics: nn.ModuleDict = getattr(self, f"{stage}_metrics")
        several = sum(isinstance(m, MeanAveragePrecision) for m in metrics.values()) > 1
        for name, metric in metrics.items():
            result = metric.compute()
            metric.reset()
            if not isinstance(result, dict):
                self.log(f"{stage}/{name}", result, prog_bar=self._metric_on_bar(name))
                continue
            for key, value in result.items():
                # Per-class results (`*_per_class`, `classes`) are left out: not one number each.
                if isinstance(value, torch.Tensor) and value.numel() == 1 and "class" not in key:
                    logged = f"{name}_{key}" if several else key
                    bar = self._metric_on_bar(name) and key in ("map", "map_50")
                    self.log(f"{stage}/{logged}", value.float(), prog_bar=bar)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        self._warn(self._collapse.eval_epoch_message(self.current_epoch, self.hparams["score_thresh"]))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._collapse.reset()

    def on_train_epoch_end(self) -> None:
        self._warn(self._collapse.train_epoch_message(self.current_epoch))

    @staticmethod
    def _warn(message: str | None) -> None:
        if message is not None:
            warn(message)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Detections per image: for `(images, targets)` batches of `DetectionDataModule`, in the
        original image's pixels and with the `image_id`; for a bare image batch, in its pixels."""
        if _is_detection_batch(batch):
            images, targets = batch
            detections = self.detector(images)
            return [
                _to_original(d, t) | {"image_id": t.get("image_id")} for d, t in zip(detections, targets, strict=True)
            ]
        return self.detector(batch)

    # ---- prediction on new images ------------------------------------------------------------
    def predict(
        self,
        source: Any,
        batch_size: int = 8,
        tta: bool = False,
        score_thresh: float | None = None,
        class_agnostic_nms: bool = False,
        on_bad_file: OnBadFile = "skip",
        progress: bool = False,
    ) -> Predictions:
        """Detect objects in new images: files, a folder, a glob, PIL images, arrays or a tensor batch.

        Each image is converted to 8-bit RGB and run through the model in eval mode on its device,
        `batch_size` images at a time; the model letterboxes it to `image_size` as in training,
        and the boxes come back in the pixels of the image as read.

        Args:
            source: A file, a folder (its images, recursively), a glob pattern, a PIL image, a numpy
                array, a `[B, 3, H, W]` tensor in [0, 1], or a list of these; see `collect_images`.
            batch_size: Images per forward pass.
            tta: Test-time augmentation: detect on each image and its mirror image, and merge the two
                sets of boxes with NMS (`nms_thresh`).
            score_thresh: Leave out boxes scoring below this; `None` keeps the model's own
                `score_thresh` (0.05 by default: suited to mAP; 0.3 or so suits a picture).
            class_agnostic_nms: Run NMS across classes too, so that one object gets one box (the
                most likely class) rather than one box per class it might be.
            on_bad_file: What to do with files that are not readable images (see `ImageClassifier.predict`).
            progress: Show a progress bar.

        Returns:
            One `DetectionResult` per image, in order, with `.to_csv()` / `.to_json()`.

        Examples:
            >>> model = ObjectDetector(BackboneConfig("resnet18", pretrained=False), num_classes=3, image_size=64)
            >>> result = model.predict(Image.new("RGB", (120, 90)), score_thresh=0.0)[0]
            >>> result.boxes.shape[1], result.image_size
            (4, (90, 120))
        """
        check_bool("tta", tta)
        check_bool("class_agnostic_nms", class_agnostic_nms)
        hparams = self.hparams
        if score_thresh is None:
            score_thresh = hparams["score_thresh"]
        score_thresh = float(check_number("score_thresh", score_thresh, low=0, high=1, high_inclusive=True))
        self._built()

        def run(entries: list[ImageSource], images: list[Image.Image]) -> list[DetectionResult]:
            dtype = next(self.parameters()).dtype
            tensors = [to_tensor(image).to(self.device, dtype) for image in images]
            detections = self(tensors)
            if tta:
                mirrored = self([t.flip(-1) for t in tensors])
                detections = [
                    {k: torch.cat([d[k], m[k]]) for k in d} | {"boxes": torch.cat([d["boxes"], _mirror(m, t)])}
                    for d, m, t in zip(detections, mirrored, tensors, strict=True)
                ]
            results = []
            for entry, image, found in zip(entries, images, detections, strict=True):
                found = select_detections(
                    found,
                    score_thresh,
                    hparams["nms_thresh"] if tta or class_agnostic_nms else None,
                    class_agnostic_nms,
                    hparams["detections_per_img"],
                )
                label_ids = found["labels"].cpu()
                results.append(
                    DetectionResult(
                        path=entry.name,
                        boxes=found["boxes"].float().cpu(),
                        scores=found["scores"].float().cpu(),
                        labels=[self.class_name(int(i)) for i in label_ids],
                        label_ids=label_ids,
                        image_size=(image.height, image.width),
                        source=entry,
                    )
                )
            return results

        return self._predict_images(source, batch_size, on_bad_file, progress, run)

    # ---- export --------------------------------------------------------------------------
    def inference_module(self) -> nn.Module:
        """The detector as one exportable graph: letterboxed images in, boxes after NMS out.

        See `autotimm.models.ExportableDetector`; the exporters trace it. Call it in eval mode.
        """
        return ExportableDetector(self._built().eval())

    def to_onnx(  # type: ignore[override]
        self, file_path: str | os.PathLike[str], check_images: Any = None, **kwargs: Any
    ) -> Path:
        """Export to one ONNX file with box decoding and NMS inside, checked box by box with ONNX Runtime.

        The graph takes letterboxed images and their sizes, and returns the detections of the batch;
        `autotimm.load(path)` opens the file as an `OnnxPredictor` that does the letterboxing. See
        `autotimm.export.export_detector_onnx` for the inputs, outputs and metadata.

        Args:
            file_path: The `.onnx` file to write.
            check_images: Images to check the export on (any `predict` source: files, a folder, PIL
                images, ...); new images the model has not seen are best. `None` generates four.
            **kwargs: Options of `export_detector_onnx`: `class_names`, `dynamic_batch`,
                `opset_version`, `check`, `atol`, `rtol`, `score_atol`.

        Returns:
            The path written.

        Examples:
            >>> detector = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), num_classes=3, image_size=64)
            >>> detector.to_onnx("detector.onnx", check_images="new_images/")  # doctest: +SKIP
            PosixPath('detector.onnx')
        """
        return export_detector_onnx(self, file_path, check_images=_check_tensors(check_images), **kwargs)

    def to_torchscript(  # type: ignore[override]
        self, file_path: str | os.PathLike[str], check_images: Any = None, **kwargs: Any
    ) -> torch.jit.ScriptModule:
        """Export to a traced TorchScript archive with the graph of `to_onnx`, checked box by box.

        Args:
            file_path: The file to write (with the metadata as `metadata.json` inside).
            check_images: Images to check the export on, as for `to_onnx`.
            **kwargs: Options of `export_detector_torchscript`: `class_names`, `check`, `atol`,
                `rtol`, `score_atol`.

        Returns:
            The exported module, as loaded from the file.

        Examples:
            >>> detector = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), num_classes=3, image_size=64)
            >>> traced = detector.to_torchscript("detector.pt")  # doctest: +SKIP
        """
        path = export_detector_torchscript(self, file_path, check_images=_check_tensors(check_images), **kwargs)
        return torch.jit.load(path, map_location="cpu")


def _check_tensors(source: Any) -> list[torch.Tensor] | None:
    """The images of a `predict` source as `[3, H, W]` float tensors in [0, 1]; `None` stays `None`."""
    if source is None:
        return None
    return [to_tensor(image) for _, images in iter_batches(collect_images(source), 32) for image in images]


def _is_detection_batch(batch: Any) -> bool:
    """Whether `batch` is `(images, targets)` with one target dict per image."""
    return (
        isinstance(batch, (list, tuple))
        and len(batch) == 2
        and isinstance(batch[1], (list, tuple))
        and all(isinstance(t, dict) for t in batch[1])
    )


def _check_images(images: Any) -> None:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"Expected images as a [B, 3, H, W] tensor or a list of [3, H, W] tensors, but got shape "
                f"{tuple(images.shape)}."
            )
        items: Sequence[torch.Tensor] = [images]
    elif isinstance(images, (list, tuple)) and all(isinstance(i, torch.Tensor) for i in images):
        items = images
    else:
        raise TypeError(f"Expected images as a tensor or a list of tensors, but got {type(images).__name__}.")
    for item in items:
        if not item.is_floating_point():
            raise TypeError(
                f"Expected float images with values in [0, 1], but got dtype {item.dtype}. "
                "Convert with `images.float() / 255`."
            )


def _mirror(detections: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """The boxes found on the mirror image of `image`, mapped back onto `image`."""
    width = image.shape[-1]
    boxes = detections["boxes"]
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def _without_crowd(target: dict[str, Any]) -> dict[str, Any]:
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    return {**target, "boxes": target["boxes"][keep], "labels": target["labels"][keep]}


def _to_original(detection: dict[str, torch.Tensor], target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Detections in the original image's pixels when the target says how the image was letterboxed.

    Boxes that lay wholly in the letterbox padding have no area left once clipped to the
    original image; they are dropped.
    """
    if "scale" not in target:
        return detection
    boxes = boxes_to_original(detection["boxes"], target)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {**{k: v[keep] for k, v in detection.items()}, "boxes": boxes[keep]}


def _metric_target(target: dict[str, Any]) -> dict[str, torch.Tensor]:
    boxes = boxes_to_original(target["boxes"], target) if "scale" in target else target["boxes"]
    out = {"boxes": boxes, "labels": target["labels"]}
    if "iscrowd" in target:
        out["iscrowd"] = target["iscrowd"]
    return out
