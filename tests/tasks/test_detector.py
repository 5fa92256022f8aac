"""ObjectDetector: backbones of every shape, the inference contract, real training, two phases, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torchmetrics

from autotimm import BackboneConfig, DetectionDataModule, LoggerConfig, MetricConfig, ObjectDetector
from autotimm.data import coco_evaluate, make_coco_shapes, to_coco_results
from helpers import ann, cpu_trainer, write_coco

SIZE = 64


def _detector(name: str = "test_resnet", **kwargs) -> ObjectDetector:
    kwargs.setdefault("num_classes", 3)
    kwargs.setdefault("image_size", SIZE)
    kwargs.setdefault("fpn_channels", 64)
    return ObjectDetector(BackboneConfig(name, pretrained=False), **kwargs)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic COCO set: 64 px shapes of 3 classes, 48 train / 16 val images."""
    return make_coco_shapes(tmp_path_factory.mktemp("shapes") / "coco", image_size=SIZE, num_train=48, num_val=16)


def _data(root: Path, **kwargs) -> DetectionDataModule:
    kwargs.setdefault("augmentation_preset", "none")
    return DetectionDataModule(root, image_size=SIZE, batch_size=8, num_workers=0, **kwargs)


def _check_detections(detections: list[dict[str, torch.Tensor]], sizes: list[tuple[int, int]]) -> None:
    assert len(detections) == len(sizes)
    for det, (h, w) in zip(detections, sizes, strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        if n:
            boxes = det["boxes"]
            assert (boxes[:, 2:] >= boxes[:, :2]).all()  # xyxy
            assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= w
            assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= h
            assert det["labels"].min() >= 0 and det["labels"].max() < 3


# --------------------------------------------------------------------------- backbones


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("test_resnet", "CNN"),
        ("efficientnet_b0", "CNN"),
        ("convnext_atto", "four stages"),
        ("swin_tiny_patch4_window7_224", "channels-last, fixed input size"),
        ("vit_tiny_patch16_224", "single stride, fixed input size"),
    ],
)
def test_backbone_gives_pyramid_at_the_right_strides_and_trains(name: str, kind: str) -> None:
    torch.manual_seed(0)
    model = _detector(name, image_size=96)
    pyramid = model.detector.backbone
    assert pyramid.strides == [8, 16, 32, 64, 128]
    # Each level's map has the size its stride implies on the 96 px canvas: boxes are decoded at the right scale.
    maps = list(pyramid(torch.rand(2, 3, 96, 96)).values())
    assert [m.shape[-1] for m in maps] == [12, 6, 3, 2, 1]
    assert all(m.shape[1] == 64 for m in maps)
    model.train()
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # a negative image
    ]
    losses = model(torch.rand(2, 3, 96, 96), targets)
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    model.eval()
    _check_detections(model(torch.rand(2, 3, 96, 96)), [(96, 96)] * 2)


def test_backbone_without_a_usable_pyramid_is_refused() -> None:
    # crossvit's features all have one odd stride (17): no pyramid can be built from them.
    with pytest.raises(ValueError, match="stride 17"):
        _detector("crossvit_tiny_240")


# --------------------------------------------------------------------------- inference contract


def test_inference_returns_boxes_in_the_pixels_of_each_given_image() -> None:
    torch.manual_seed(0)
    model = _detector(score_thresh=0.0).eval()
    # A batch tensor, and a list of images of different sizes and aspect ratios (letterboxed inside).
    _check_detections(model(torch.rand(2, 3, SIZE, SIZE)), [(SIZE, SIZE)] * 2)
    images = [torch.rand(3, 40, 100), torch.rand(3, 130, 70)]
    detections = model(images)
    _check_detections(detections, [(40, 100), (130, 70)])
    # Some box reaches beyond the 64 px canvas: coordinates are those of the given image, not the model's input.
    assert detections[1]["boxes"][:, 3].max() > SIZE


def test_inference_rejects_unnormalised_integer_images() -> None:
    model = _detector().eval()
    with pytest.raises(TypeError, match=r"uint8.*images.float\(\) / 255"):
        model(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(3, SIZE, SIZE))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"architecture": "fcoss"}, ValueError, "fcos"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"fpn_channels": 100}, ValueError, "multiple of 32"),
        ({"fpn_channels": 32}, ValueError, "fpn_channels"),
        ({"score_thresh": 1.5}, ValueError, "score_thresh"),
        ({"freeze_backbone": "yes"}, TypeError, "freeze_backbone"),
        ({"metrics": [MetricConfig("acc", metric_class="Accuracy")]}, ValueError, "does not score boxes"),
        (
            {"metrics": [MetricConfig("map", metric_class="MeanAveragePrecision", stages=["train", "val"])]},
            ValueError,
            "stage 'train'",
        ),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _detector(**kwargs)


def test_data_that_does_not_fit_the_model_is_refused_before_training(shapes: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"num_classes=5.*3 categories"):
        cpu_trainer(tmp_path).fit(_detector(num_classes=5), datamodule=_data(shapes))
    with pytest.raises(ValueError, match=r"image_size=96.*64"):
        cpu_trainer(tmp_path).fit(_detector(image_size=96), datamodule=_data(shapes))


def test_image_size_and_classes_left_out_come_from_the_data_and_reload(shapes: Path, tmp_path: Path) -> None:
    # The API document sets `image_size` on the data module only; 96 is neither the model's default nor SIZE.
    torch.manual_seed(0)
    model = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), fpn_channels=64)
    with pytest.raises(RuntimeError, match="without `num_classes`"):
        model(torch.rand(1, 3, 96, 96))
    data = DetectionDataModule(shapes, image_size=96, batch_size=4, num_workers=0)
    # A CSV logger: Lightning refuses to log model and data hyperparameters that disagree (`image_size`).
    logger = [LoggerConfig("csv")]
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=logger)
    trainer.fit(model, datamodule=data)
    assert model.num_classes == 3 and model.image_size == 96 and model.detector.transform.image_size == 96
    assert trainer.global_step == 2 and "val/map" in trainer.callback_metrics
    restored = ObjectDetector.load_from_checkpoint(trainer.checkpoint_callback.last_model_path).eval()
    assert restored.hparams["image_size"] == 96 and restored.hparams["num_classes"] == 3
    assert restored.detector.transform.image_size == 96
    images = torch.rand(2, 3, 80, 120)
    for got, expected in zip(restored(images), model.eval()(images), strict=True):
        assert torch.allclose(got["boxes"], expected["boxes"], atol=1e-4)


def test_fixed_size_backbone_is_rebuilt_for_the_data_size(shapes: Path, tmp_path: Path) -> None:
    model = ObjectDetector(BackboneConfig("vit_tiny_patch16_224", pretrained=False), num_classes=3, fpn_channels=64)
    assert model.image_size is None and model.detector.transform.image_size == 640  # predict-only: the default
    cpu_trainer(tmp_path, logger=False, limit_val_batches=1).validate(model, datamodule=_data(shapes))  # 64 px
    assert model.image_size == 64 and model.hparams["image_size"] == 64
    maps = list(model.detector.backbone(torch.rand(1, 3, 64, 64)).values())  # a ViT built for 224 px fails here
    assert [m.shape[-1] for m in maps] == [8, 4, 2, 1, 1]
    _check_detections(model.eval()(torch.rand(2, 3, 64, 64)), [(64, 64)] * 2)


def test_bad_box_warning_is_not_hidden_by_a_size_error(tmp_path: Path) -> None:
    # A model built without `image_size` once refused a 64 px data module before the user saw the box warning.
    root = write_coco(
        tmp_path / "coco",
        [{"id": 1, "file_name": "a.png", "size": (64, 64)}, {"id": 2, "file_name": "b.png", "size": (64, 64)}],
        [ann(1, 1, 1, [8, 8, 20, 20]), ann(2, 2, 1, [40, 10, -6, 12])],
        [{"id": 1, "name": "box"}],
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, logger=False)
    with pytest.warns(UserWarning, match=r"non-positive width or height \(annotation ids 2\)"):
        trainer.fit(_detector(num_classes=1, image_size=None), datamodule=_data(root))
    assert trainer.global_step == 1


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def small_train_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 training images of 64 px with up to 3 shapes, and no val split of their own."""
    root = tmp_path_factory.mktemp("small") / "coco"
    return make_coco_shapes(root, image_size=SIZE, num_train=32, num_val=0, max_objects=3)


def test_training_lowers_loss_and_raises_map(small_train_set: Path, tmp_path: Path) -> None:
    # A CPU-sized check that the detector learns: it is scored on its own 32 training images
    # (the benchmark, benchmarks/detection_shapes.py, measures held-out quality at 128 px).
    torch.manual_seed(0)
    data = _data(small_train_set, val_images="train2017", val_annotations="annotations/instances_train2017.json")
    model = ObjectDetector(
        BackboneConfig("resnet18", pretrained=False), num_classes=3, image_size=SIZE, fpn_channels=64, lr=2e-3
    )
    history = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            history.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = cpu_trainer(tmp_path, max_epochs=16, callbacks=[Record()], checkpoint_monitor="val/map")
    trainer.fit(model, datamodule=data)
    first, last = history[0], history[-1]
    assert last["train/loss_epoch"] < 0.7 * first["train/loss_epoch"]
    assert last["val/map_50"] > max(0.15, first["val/map_50"] + 0.1)
    # The best checkpoint (`checkpoints/best.ckpt` of the run) was chosen by val/map: the highest epoch's value.
    assert Path(trainer.checkpoint_callback.best_model_path).name == "best.ckpt"
    assert float(trainer.checkpoint_callback.best_model_score) == pytest.approx(max(h["val/map"] for h in history))
    # pycocotools, on `predict`'s boxes in original-image pixels, agrees with the logged metric.
    results = to_coco_results(trainer.predict(model, datamodule=data), data.category_ids)
    coco_map50 = coco_evaluate(small_train_set / "annotations" / "instances_train2017.json", results)["map_50"]
    assert coco_map50 == pytest.approx(last["val/map_50"], abs=0.02)


def test_retinanet_architecture_trains(shapes: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _detector(architecture="retinanet", lr=3e-3)
    losses = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            losses.append(float(trainer.callback_metrics["train/loss_epoch"]))

    cpu_trainer(tmp_path, max_epochs=3, callbacks=[Record()], limit_val_batches=0).fit(model, datamodule=_data(shapes))
    assert type(model.detector).__name__ == "RetinaNet"
    assert losses[-1] < losses[0]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_two_phase_training_freezes_then_trains_the_backbone(shapes: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = _data(shapes)
    model = _detector(freeze_backbone=True, lr=1e-3)
    backbone_before, fpn_before = _state(model.backbone), _state(model.detector.backbone.fpn)
    cpu_trainer(tmp_path / "phase1", max_epochs=1, limit_val_batches=0).fit(model, datamodule=data)
    backbone_after = _state(model.backbone)
    # Weights and BatchNorm statistics untouched; the pyramid and head trained.
    assert all(torch.equal(backbone_before[k], backbone_after[k]) for k in backbone_before)
    assert any(not torch.equal(v, model.detector.backbone.fpn.state_dict()[k]) for k, v in fpn_before.items())

    # Phase 2, as the API document writes it.
    for param in model.backbone.parameters():
        param.requires_grad = True
    model._lr = 1e-4
    trainer = cpu_trainer(tmp_path / "phase2", max_epochs=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert trainer.optimizers[0].param_groups[0]["lr"] == 1e-4
    assert any(not torch.equal(v, model.backbone.state_dict()[k]) for k, v in backbone_after.items())
    hparams = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=True)["hyper_parameters"]
    assert hparams["freeze_backbone"] is False and hparams["lr"] == 1e-4


@pytest.fixture(scope="module")
def shapes96(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shapes at 96 px, so that a 64 px data module scales every image by 2/3."""
    return make_coco_shapes(tmp_path_factory.mktemp("shapes96") / "coco", image_size=96, num_train=4, num_val=6)


def test_predict_returns_boxes_in_original_image_pixels(shapes96: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = _data(shapes96)
    model = _detector(score_thresh=0.0)
    trainer = cpu_trainer(tmp_path, logger=False)
    predictions = [det for batch in trainer.predict(model, datamodule=data) for det in batch]
    val_ids = [
        img["id"] for img in json.loads((shapes96 / "annotations" / "instances_val2017.json").read_text())["images"]
    ]
    assert sorted(p["image_id"] for p in predictions) == sorted(val_ids)
    _check_detections([{k: p[k] for k in ("boxes", "scores", "labels")} for p in predictions], [(96, 96)] * 6)
    # The same detections as the model gives on the 64 px letterboxed images, scaled by 96 / 64.
    images, targets = next(iter(data.predict_dataloader()))
    model.eval()
    direct = model(images)
    for det, target, pred in zip(direct, targets, predictions, strict=False):
        assert pred["image_id"] == target["image_id"]
        expected = (det["boxes"] * 1.5).clamp(0, 96)
        # Boxes of an untrained model that were clipped to nothing at the border are left out.
        keep = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
        assert keep.sum() > 0
        assert torch.allclose(pred["boxes"], expected[keep], atol=1e-4)
        assert torch.equal(pred["scores"], det["scores"][keep]) and torch.equal(pred["labels"], det["labels"][keep])


class RecordTargets(torchmetrics.Metric):
    """A custom detection metric that keeps what it is given (boxes and crowd flags)."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("seen", default=[], dist_reduce_fx="cat")
        self.targets: list[dict[str, torch.Tensor]] = []

    def update(self, preds: list[dict[str, torch.Tensor]], target: list[dict[str, torch.Tensor]]) -> None:
        self.targets.extend(target)
        self.seen.append(torch.tensor([len(target)]))

    def compute(self) -> torch.Tensor:
        return torch.cat(self.seen).sum().float()


def test_evaluation_sees_original_boxes_crowds_and_negatives(tmp_path: Path) -> None:
    root = write_coco(
        tmp_path / "coco",
        images=[
            {"id": 1, "file_name": "wide.png", "size": (40, 80)},
            {"id": 2, "file_name": "neg.png", "size": (64, 64)},
        ],
        annotations=[ann(1, 1, 1, [10, 5, 30, 20]), ann(2, 1, 2, [0, 0, 80, 40], iscrowd=1)],
        categories=[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    )
    data = DetectionDataModule(root, image_size=SIZE, batch_size=2, num_workers=0)
    metric = MetricConfig("seen", backend="custom", metric_class=RecordTargets, stages=["val"])
    model = _detector(num_classes=2, metrics=[metric])
    trainer = cpu_trainer(tmp_path, logger=False)
    trainer.validate(model, datamodule=data)
    assert float(trainer.callback_metrics["val/seen"]) == 2  # the negative image is evaluated too
    recorded = {len(t["boxes"]): t for t in model.val_metrics["seen"].targets}
    wide = recorded[2]
    # Boxes in the file's pixels (xyxy), not the 64 px letterbox; the crowd box flagged, not dropped.
    assert torch.allclose(wide["boxes"], torch.tensor([[10.0, 5.0, 40.0, 25.0], [0.0, 0.0, 80.0, 40.0]]))
    assert wide["iscrowd"].tolist() == [0, 1]
    assert recorded[0]["boxes"].shape == (0, 4)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_checkpoint_round_trip_gives_the_same_detections(shapes: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _detector()
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=_data(shapes))
    restored = ObjectDetector.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)
    # The mAP backend is chosen where the model is loaded, not pinned by the machine that saved it.
    assert "backend" not in restored.hparams["metrics"][0]["params"]
    images = torch.rand(2, 3, SIZE, SIZE)
    model.eval()
    expected, got = model(images), restored.eval()(images)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])


def test_mixed_precision_keeps_boxes_and_scores_in_float32(shapes: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _detector(score_thresh=0.0).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        detections = model(images)
    assert all(d["boxes"].dtype == torch.float32 and d["scores"].dtype == torch.float32 for d in detections)
    anchors = model.detector.anchor_generator(model.detector.transform(images)[0], [torch.zeros(1, 1, 8, 8)] * 5)
    assert anchors[0].dtype == torch.float32
    # A validation epoch under bf16-mixed gives a finite loss and a mAP.
    trainer = cpu_trainer(tmp_path, precision="bf16-mixed", logger=False, limit_val_batches=1)
    trainer.validate(model, datamodule=_data(shapes))
    assert torch.isfinite(trainer.callback_metrics["val/loss"]) and "val/map" in trainer.callback_metrics
