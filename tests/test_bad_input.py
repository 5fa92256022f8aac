"""Bad input fails early and clearly: constructor arguments, labels outside `num_classes`, unreadable images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader, TensorDataset

from autotimm import (
    AutoTrainer,
    BackboneConfig,
    DetectionDataModule,
    ImageClassifier,
    ImageDataModule,
    LoggerConfig,
    LoggingConfig,
    MetricConfig,
    ObjectDetector,
    TunerConfig,
)
from autotimm.data import CorruptImageError
from helpers import ann, cpu_trainer, write_coco

TINY = "test_resnet"

# --------------------------------------------------------------------------- constructor sweep


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An image folder, a COCO folder and a run folder, written once for the sweep."""
    base = tmp_path_factory.mktemp("bad_input")
    for name in ("cat", "dog"):
        folder = base / "images" / "train" / name
        folder.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(folder / f"{i}.png")
    write_coco(
        base / "coco",
        images=[{"id": 1, "file_name": "a.png", "size": (16, 16)}],
        annotations=[ann(1, 1, 1, [2, 2, 8, 8])],
        categories=[{"id": 1, "name": "box"}],
    )
    return {"images": base / "images", "coco": base / "coco", "run": base / "run"}


def _valid_kwargs(target: str, roots: dict[str, Path]) -> dict[str, Any]:
    """Arguments with which each constructor succeeds; a case changes one (or two) of them."""
    backbone = BackboneConfig(TINY, pretrained=False)
    return {
        "ImageClassifier": {"backbone": backbone, "num_classes": 3},
        "ObjectDetector": {"backbone": backbone, "num_classes": 3, "image_size": 64, "fpn_channels": 64},
        "ImageDataModule": {"data_dir": roots["images"], "num_workers": 0},
        "DetectionDataModule": {"data_dir": roots["coco"], "num_workers": 0},
        "TunerConfig": {},
        "MetricConfig": {"name": "acc", "metric_class": "Accuracy"},
        "LoggerConfig": {"backend": "csv"},
        "LoggingConfig": {},
        "BackboneConfig": {"model_name": TINY, "pretrained": False},
        "AutoTrainer": {"accelerator": "cpu", "default_root_dir": roots["run"], "enable_progress_bar": False},
    }[target]


CONSTRUCTORS = {
    cls.__name__: cls
    for cls in (
        ImageClassifier,
        ObjectDetector,
        ImageDataModule,
        DetectionDataModule,
        TunerConfig,
        MetricConfig,
        LoggerConfig,
        LoggingConfig,
        BackboneConfig,
        AutoTrainer,
    )
}


def bad(target: str, kwargs: dict[str, Any], error: type[Exception], *shown: str, named: str = "") -> Any:
    """One case: `kwargs` (argument under test first) make `target(...)` raise `error`.

    The message must name the argument (as `named` says, by default its own name) and show
    each of `shown` (the bad value, a valid choice); a scalar bad value is shown by its repr
    unless `shown` says what to look for.
    """
    argument, value = next(iter(kwargs.items()))
    if not shown and isinstance(value, (str, int, float)):
        shown = (repr(value),)
    fragments = (named or argument, *shown)
    return pytest.param(target, kwargs, error, fragments, id=f"{target}-{argument}={value!r}")


CASES = [
    # ImageClassifier (and BaseTask's arguments)
    bad("ImageClassifier", {"backbone": "resnet181"}, ValueError, "'resnet181'", "'resnet18'"),
    bad("ImageClassifier", {"backbone": 5}, TypeError, "int 5"),
    bad("ImageClassifier", {"num_classes": 0}, ValueError),
    bad("ImageClassifier", {"num_classes": 2.5}, TypeError),
    bad("ImageClassifier", {"num_classes": 1}, ValueError, "multi_label=True"),
    bad("ImageClassifier", {"metrics": "accuracy"}, TypeError),
    bad("ImageClassifier", {"metrics": [{"name": "acc", "stage": ["val"]}]}, ValueError, "'stage'", "'stages'"),
    bad("ImageClassifier", {"logging_config": "yes"}, TypeError),
    bad("ImageClassifier", {"logging_config": {"log_lr": True}}, ValueError, "'log_lr'", "'log_learning_rate'"),
    bad("ImageClassifier", {"optimizer": "adamm"}, ValueError, "'adamm'", "'adam'"),
    bad("ImageClassifier", {"optimizer": 3}, TypeError),
    bad("ImageClassifier", {"lr": 0}, ValueError),
    bad("ImageClassifier", {"lr": "1e-3"}, TypeError),
    bad("ImageClassifier", {"weight_decay": -0.1}, ValueError),
    bad("ImageClassifier", {"weight_decay": "0"}, TypeError),
    bad(
        "ImageClassifier",
        {"optimizer_kwargs": {"betaz": (0.9, 0.99)}},
        ValueError,
        "'betaz'",
        "'betas'",
        named="each key of `optimizer_kwargs` for the `adamw` optimizer",
    ),
    bad("ImageClassifier", {"optimizer_kwargs": "fused"}, TypeError),
    bad("ImageClassifier", {"scheduler": "cosinee"}, ValueError, "'cosine'"),
    bad("ImageClassifier", {"scheduler": 5}, TypeError),
    bad("ImageClassifier", {"scheduler": None, "scheduler_kwargs": {"T_max": 3}}, ValueError, "`scheduler`"),
    bad("ImageClassifier", {"scheduler_kwargs": {"T_max": 3}}, ValueError, "'T_max'", "cosine_warmup", "warmup_steps"),
    bad("ImageClassifier", {"scheduler_kwargs": "warmup", "scheduler": "cosine"}, TypeError),
    bad("ImageClassifier", {"freeze_backbone": "no"}, TypeError),
    bad("ImageClassifier", {"label_smoothing": 1.0}, ValueError, "[0, 1)"),
    bad("ImageClassifier", {"label_smoothing": "0.1"}, TypeError),
    bad("ImageClassifier", {"head_dropout": -0.5}, ValueError, "[0, 1)"),
    bad("ImageClassifier", {"head_dropout": "0.1"}, TypeError),
    bad("ImageClassifier", {"multi_label": 1}, TypeError),
    # ObjectDetector
    bad("ObjectDetector", {"backbone": "resnet181"}, ValueError, "'resnet18'"),
    bad("ObjectDetector", {"num_classes": 0}, ValueError),
    bad("ObjectDetector", {"num_classes": "3"}, TypeError),
    bad("ObjectDetector", {"metrics": [MetricConfig("acc", metric_class="Accuracy")]}, ValueError, "'acc'"),
    bad("ObjectDetector", {"architecture": "yolo"}, ValueError, "'yolo'", "'fcos'", "'retinanet'"),
    bad("ObjectDetector", {"architecture": 1}, TypeError, "int 1", "'fcos'"),
    bad("ObjectDetector", {"image_size": 16}, ValueError, ">= 32"),
    bad("ObjectDetector", {"image_size": 64.0}, TypeError),
    bad("ObjectDetector", {"fpn_channels": 32}, ValueError, ">= 64"),
    bad("ObjectDetector", {"fpn_channels": 100}, ValueError, "multiple of 32"),
    bad("ObjectDetector", {"fpn_channels": "64"}, TypeError),
    bad("ObjectDetector", {"freeze_backbone": "yes"}, TypeError),
    bad("ObjectDetector", {"score_thresh": 1.0}, ValueError, "[0, 1)"),
    bad("ObjectDetector", {"score_thresh": "0.05"}, TypeError),
    bad("ObjectDetector", {"nms_thresh": 0.0}, ValueError, "(0, 1)"),
    bad("ObjectDetector", {"nms_thresh": None}, TypeError),
    bad("ObjectDetector", {"detections_per_img": 0}, ValueError),
    bad("ObjectDetector", {"detections_per_img": 1.5}, TypeError),
    bad("ObjectDetector", {"lr": -1.0}, ValueError),
    bad("ObjectDetector", {"optimizer": "sgdd"}, ValueError, "'sgd'"),
    # ImageDataModule
    bad("ImageDataModule", {"data_dir": 5}, TypeError),
    bad("ImageDataModule", {"dataset_name": "cifar11"}, ValueError, "'cifar11'", "'cifar10'"),
    bad("ImageDataModule", {"dataset_name": 10}, TypeError),
    bad("ImageDataModule", {"image_size": 0}, ValueError),
    bad("ImageDataModule", {"image_size": (32, 0)}, ValueError, "(32, 0)"),
    bad("ImageDataModule", {"image_size": "big"}, TypeError),
    bad("ImageDataModule", {"batch_size": 0}, ValueError),
    bad("ImageDataModule", {"batch_size": 2.5}, TypeError),
    bad("ImageDataModule", {"num_workers": -1}, ValueError),
    bad("ImageDataModule", {"num_workers": "2"}, TypeError),
    bad("ImageDataModule", {"val_split": 1.0}, ValueError, "[0, 1)"),
    bad("ImageDataModule", {"val_split": "0.1"}, TypeError),
    bad("ImageDataModule", {"seed": 2**64}, ValueError),
    bad("ImageDataModule", {"seed": "42"}, TypeError),
    bad("ImageDataModule", {"augmentation_preset": "heavy"}, ValueError, "'default'", "'strong'"),
    bad("ImageDataModule", {"augmentation_preset": 3}, TypeError, "int 3", "'default'"),
    bad("ImageDataModule", {"image_size": 31}, ValueError, ">= 32"),
    bad("ImageDataModule", {"seed": -1}, ValueError, "[0, 4294967296)"),
    bad("ImageDataModule", {"train_transforms": "flip"}, TypeError),
    bad("ImageDataModule", {"eval_transforms": 5}, TypeError),
    bad("ImageDataModule", {"pin_memory": "yes"}, TypeError),
    bad("ImageDataModule", {"persistent_workers": 1}, TypeError),
    bad("ImageDataModule", {"persistent_workers": True, "num_workers": 0}, ValueError, "num_workers"),
    # DetectionDataModule
    bad("DetectionDataModule", {"data_dir": None}, TypeError),
    bad("DetectionDataModule", {"image_size": 31}, ValueError, ">= 32"),
    bad("DetectionDataModule", {"image_size": "640"}, TypeError),
    bad("DetectionDataModule", {"batch_size": 0}, ValueError),
    bad("DetectionDataModule", {"batch_size": "16"}, TypeError),
    bad("DetectionDataModule", {"num_workers": -2}, ValueError),
    bad("DetectionDataModule", {"num_workers": 1.0}, TypeError),
    bad("DetectionDataModule", {"augmentation_preset": "heavy"}, ValueError, "'default'"),
    bad(
        "DetectionDataModule",
        {"augmentation_preset": 1},
        TypeError,
        "'default'",
    ),
    bad("DetectionDataModule", {"min_box_size": 0.5}, ValueError, ">= 1"),
    bad("DetectionDataModule", {"min_box_size": "1"}, TypeError),
    bad("DetectionDataModule", {"train_images": 5}, TypeError),
    bad("DetectionDataModule", {"val_annotations": 5}, TypeError),
    bad("DetectionDataModule", {"format": "yolov5"}, ValueError, "'yolo'"),
    bad("DetectionDataModule", {"bbox_columns": ["x_min"]}, ValueError, "4 column names"),
    bad("DetectionDataModule", {"class_names": "cat"}, TypeError, "list of strings"),
    bad("DetectionDataModule", {"class_names": ["cat", "cat"]}, ValueError, "distinct"),
    bad("DetectionDataModule", {"train_csv": 5}, TypeError),
    bad("DetectionDataModule", {"val_csv": "val.csv"}, ValueError, "train_csv"),
    bad("DetectionDataModule", {"pin_memory": "no"}, TypeError),
    bad("DetectionDataModule", {"persistent_workers": True, "num_workers": 0}, ValueError, "num_workers"),
    # TunerConfig
    bad("TunerConfig", {"auto_lr": "yes"}, TypeError),
    bad("TunerConfig", {"auto_batch_size": 1}, TypeError),
    bad("TunerConfig", {"lr_find_kwargs": "min_lr=1e-5"}, TypeError),
    bad("TunerConfig", {"lr_find_kwargs": {"min_lrr": 1e-5}}, ValueError, "'min_lrr'", "'min_lr'"),
    bad("TunerConfig", {"lr_find_kwargs": {"mode": "cubic"}}, ValueError, "mode", "'cubic'", "'linear'"),
    bad("TunerConfig", {"lr_find_kwargs": {"mode": 2}}, TypeError, "mode", "int 2", "'exponential'"),
    bad("TunerConfig", {"lr_find_kwargs": {"min_lr": 0}}, ValueError, "min_lr", "> 0"),
    bad("TunerConfig", {"lr_find_kwargs": {"min_lr": "1e-6"}}, TypeError, "min_lr", "'1e-6'"),
    bad("TunerConfig", {"lr_find_kwargs": {"max_lr": -1.0}}, ValueError, "max_lr", "-1.0"),
    bad("TunerConfig", {"lr_find_kwargs": {"min_lr": 1.0, "max_lr": 0.1}}, ValueError, "min_lr < max_lr"),
    bad("TunerConfig", {"lr_find_kwargs": {"num_training": 2}}, ValueError, "num_training", ">= 8"),
    bad("TunerConfig", {"lr_find_kwargs": {"num_training": 10.5}}, TypeError, "num_training", "10.5"),
    bad("TunerConfig", {"lr_find_kwargs": {"early_stop_threshold": 1}}, ValueError, "early_stop_threshold", "> 1"),
    bad("TunerConfig", {"lr_find_kwargs": {"early_stop_threshold": "4"}}, TypeError, "early_stop_threshold"),
    bad("TunerConfig", {"batch_size_kwargs": ["power"]}, TypeError),
    bad("TunerConfig", {"batch_size_kwargs": {"max_trial": 3}}, ValueError, "'max_trial'", "'max_trials'"),
    bad("TunerConfig", {"batch_size_kwargs": {"mode": "linear"}}, ValueError, "mode", "'binsearch'"),
    bad("TunerConfig", {"batch_size_kwargs": {"mode": None}}, TypeError, "mode", "None", "'power'"),
    bad("TunerConfig", {"batch_size_kwargs": {"steps_per_trial": 0}}, ValueError, "steps_per_trial", ">= 1"),
    bad("TunerConfig", {"batch_size_kwargs": {"init_val": 2.0}}, TypeError, "init_val", "2.0"),
    bad("TunerConfig", {"batch_size_kwargs": {"max_trials": -1}}, ValueError, "max_trials", "-1"),
    bad("TunerConfig", {"batch_size_kwargs": {"max_val": "64"}}, TypeError, "max_val", "'64'"),
    bad("TunerConfig", {"batch_size_kwargs": {"margin": 1.0}}, ValueError, "margin", "[0, 1)"),
    bad("TunerConfig", {"batch_size_kwargs": {"margin": "0.1"}}, TypeError, "margin", "'0.1'"),
    # MetricConfig
    bad("MetricConfig", {"name": "val/acc"}, ValueError),
    bad("MetricConfig", {"name": 5}, TypeError),
    bad("MetricConfig", {"backend": "sklearn"}, ValueError, "'torchmetrics'", "'custom'"),
    bad("MetricConfig", {"backend": 0}, TypeError, "int 0", "'torchmetrics'"),
    bad("MetricConfig", {"metric_class": "Acuracy"}, ValueError, "'Accuracy'"),
    bad("MetricConfig", {"metric_class": 5}, TypeError),
    bad("MetricConfig", {"metric_class": "os.getcwd", "backend": "custom"}, TypeError, "torchmetrics.Metric"),
    bad("MetricConfig", {"metric_class": 5, "backend": "custom"}, TypeError, "int 5"),
    bad("MetricConfig", {"metric_class": "Accuracy", "backend": "custom"}, ValueError, "'package.module.Class'"),
    bad("MetricConfig", {"params": "top_k=2"}, TypeError),
    bad("MetricConfig", {"stages": ["training"]}, ValueError, "'training'", "'train'"),
    bad("MetricConfig", {"stages": [1]}, TypeError, "int 1", "'val'"),
    bad("MetricConfig", {"stages": 5}, TypeError),
    bad("MetricConfig", {"prog_bar": "no"}, TypeError),
    # LoggerConfig and LoggingConfig
    bad("LoggerConfig", {"backend": "tensorbord"}, ValueError, "'tensorboard'"),
    bad("LoggerConfig", {"backend": 5}, TypeError, "int 5", "'csv'"),
    bad("LoggerConfig", {"params": "save_dir=logs"}, TypeError),
    bad("LoggerConfig", {"params": {"flush_every": 5}}, ValueError, "'flush_every'", "'flush_logs_every_n_steps'"),
    bad("LoggingConfig", {"log_learning_rate": "no"}, TypeError),
    bad("LoggingConfig", {"log_gradient_norm": 1}, TypeError),
    # BackboneConfig
    bad("BackboneConfig", {"model_name": "resnet181"}, ValueError, "'resnet18'", named="`backbone`"),
    bad("BackboneConfig", {"model_name": None}, TypeError),
    bad("BackboneConfig", {"pretrained": 3}, TypeError),
    bad("BackboneConfig", {"drop_rate": 1.5}, ValueError, "[0, 1)"),
    bad("BackboneConfig", {"drop_rate": "0.1"}, TypeError),
    bad("BackboneConfig", {"drop_path_rate": -0.1}, ValueError),
    bad("BackboneConfig", {"drop_path_rate": "0.1"}, TypeError),
    bad("BackboneConfig", {"kwargs": "in_chans=1"}, TypeError),
    bad("BackboneConfig", {"kwargs": {"pretrained": True}}, ValueError, "`pretrained`"),
    # AutoTrainer
    bad("AutoTrainer", {"max_epochs": -2}, ValueError),
    bad("AutoTrainer", {"max_epochs": 1.5}, TypeError),
    bad("AutoTrainer", {"accelerator": "gpux"}, ValueError, "cpu"),
    bad("AutoTrainer", {"accelerator": 3}, TypeError),
    bad("AutoTrainer", {"devices": 0}, ValueError),
    bad("AutoTrainer", {"devices": 1.5}, TypeError),
    bad("AutoTrainer", {"precision": 17}, ValueError, "'bf16-mixed'"),
    bad("AutoTrainer", {"precision": 1.5}, TypeError),
    bad("AutoTrainer", {"logger": "tensorboard"}, TypeError),
    bad("AutoTrainer", {"tuner_config": {"auto_lr": True}}, TypeError, "'auto_lr'"),
    bad("AutoTrainer", {"checkpoint_monitor": ""}, ValueError),
    bad("AutoTrainer", {"checkpoint_monitor": 5}, TypeError),
    bad("AutoTrainer", {"checkpoint_mode": "maximum"}, ValueError, "'max'", "'min'"),
    bad("AutoTrainer", {"checkpoint_mode": 1}, TypeError, "'max'"),
    bad("AutoTrainer", {"callbacks": [5]}, TypeError, "int 5"),
    bad("AutoTrainer", {"default_root_dir": 5}, TypeError),
    bad("AutoTrainer", {"gradient_clip_val": 0}, ValueError),
    bad("AutoTrainer", {"gradient_clip_val": "1"}, TypeError),
    bad("AutoTrainer", {"accumulate_grad_batches": 0}, ValueError),
    bad("AutoTrainer", {"accumulate_grad_batches": 1.5}, TypeError),
    bad("AutoTrainer", {"val_check_interval": 0}, ValueError),
    bad("AutoTrainer", {"val_check_interval": 1.5}, ValueError),
    bad("AutoTrainer", {"val_check_interval": "1"}, TypeError),
    bad("AutoTrainer", {"enable_checkpointing": "yes"}, TypeError),
    bad("AutoTrainer", {"fast_dev_run": -1}, ValueError),
    bad("AutoTrainer", {"fast_dev_run": "yes"}, TypeError),
    bad("AutoTrainer", {"seed": -1}, ValueError),
    bad("AutoTrainer", {"seed": 1.5}, TypeError),
    bad("AutoTrainer", {"max_step": 3}, TypeError, "'max_steps'"),
    bad("AutoTrainer", {"max_steps": -5}, ValueError),
    bad("AutoTrainer", {"max_steps": "3"}, TypeError),
    bad("AutoTrainer", {"limit_train_batches": -1}, ValueError),
    bad("AutoTrainer", {"log_every_n_steps": -1}, ValueError),
    bad("AutoTrainer", {"num_sanity_val_steps": -2}, ValueError),
    bad("AutoTrainer", {"check_val_every_n_epoch": 0}, ValueError),
    bad("AutoTrainer", {"min_epochs": -3}, ValueError),
    bad("AutoTrainer", {"deterministic": "yes"}, TypeError),
    bad("AutoTrainer", {"gradient_clip_algorithm": "clip"}, ValueError, "'norm'"),
]


@pytest.mark.parametrize("target, kwargs, error, shown", CASES)
def test_bad_constructor_argument_is_named(
    roots: dict[str, Path], target: str, kwargs: dict[str, Any], error: type[Exception], shown: tuple[str, ...]
) -> None:
    with pytest.raises(error) as info:
        CONSTRUCTORS[target](**{**_valid_kwargs(target, roots), **kwargs})
    message = str(info.value)
    for fragment in shown:
        assert fragment in message, f"{fragment!r} is not in the message: {message}"


@pytest.mark.parametrize("target", sorted(CONSTRUCTORS))
def test_the_sweep_baseline_arguments_construct(roots: dict[str, Path], target: str) -> None:
    """Each case above fails because of its bad argument, not because the others are wrong."""
    assert isinstance(CONSTRUCTORS[target](**_valid_kwargs(target, roots)), CONSTRUCTORS[target])


# --------------------------------------------------------------------------- one wording for unknown choices

UNKNOWN_CHOICES = [
    ("ImageClassifier", {"optimizer": "adamx"}),
    ("ImageClassifier", {"scheduler": "cosinee"}),
    ("ImageClassifier", {"optimizer_kwargs": {"betaz": (0.9, 0.99)}}),
    ("ImageClassifier", {"logging_config": {"log_lr": True}}),
    ("ObjectDetector", {"architecture": "yolo"}),
    ("ImageDataModule", {"augmentation_preset": "heavy"}),
    ("ImageDataModule", {"dataset_name": "cifar11"}),
    ("DetectionDataModule", {"augmentation_preset": "heavy"}),
    ("MetricConfig", {"metric_class": "Acuracy"}),
    ("MetricConfig", {"stages": ["training"]}),
    ("LoggerConfig", {"backend": "tensorbord"}),
    ("BackboneConfig", {"model_name": "resnet181"}),
    ("TunerConfig", {"batch_size_kwargs": {"mode": "linear"}}),
    ("AutoTrainer", {"compile": {"mdoe": "default"}}),
    ("AutoTrainer", {"checkpoint_mode": "maximum"}),
]


@pytest.mark.parametrize("target, kwargs", UNKNOWN_CHOICES, ids=lambda v: str(v))
def test_unknown_choices_share_one_wording(roots: dict[str, Path], target: str, kwargs: dict[str, Any]) -> None:
    """ "Expected `argument` to be one of [...], but got 'x'.", plus the closest match when one is close."""
    with pytest.raises(ValueError) as info:
        CONSTRUCTORS[target](**{**_valid_kwargs(target, roots), **kwargs})
    message = str(info.value)
    assert re.match(r"Expected (each key of )?`[\w\[\]']+`.* to be one of .+, but got '\w+'\.", message), message
    assert "Unknown" not in message


# --------------------------------------------------------------------------- labels outside num_classes


def _quiet_trainer(root: Path, **kwargs: Any) -> AutoTrainer:
    return cpu_trainer(root, max_epochs=1, logger=False, enable_checkpointing=False, **kwargs)


def _image_loader(targets: torch.Tensor, batch_size: int = 4) -> DataLoader:
    images = torch.rand(len(targets), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size)


@pytest.mark.parametrize(
    "model_kwargs, targets, expected",
    [
        (
            {"num_classes": 10},
            torch.tensor([0, 1, 2, 3, 4, 12, 5, 6]),  # 12 in the second batch
            "Bad labels in the training batch 1 (epoch 0): labels must be in [0, 10) for `num_classes=10`, "
            "but got label(s) [12]. Leave `num_classes` out (the model then takes the data module's)",
        ),
        (
            {"num_classes": 1, "multi_label": True},
            torch.tensor([0, 1, 1, 0, 2, 0, 1, 0]),
            "training batch 1 (epoch 0): a binary classifier (`num_classes=1, multi_label=True`) takes labels 0 "
            "and 1, but got label(s) [2]",
        ),
        (
            {"num_classes": 5, "multi_label": True},
            torch.tensor([[1.0, 0.0, 1.0]] * 8),  # multi-hot over 3 classes
            "training batch 0 (epoch 0): targets of shape (4, 3) need 5 columns, one per class (`num_classes=5`)",
        ),
    ],
    ids=["multiclass", "binary", "multi-hot-width"],
)
def test_classifier_label_outside_num_classes_is_named(
    backbone: BackboneConfig, tmp_path: Path, model_kwargs: dict, targets: torch.Tensor, expected: str
) -> None:
    trainer = _quiet_trainer(tmp_path)
    model = ImageClassifier(backbone, **model_kwargs)
    with pytest.raises(ValueError, match=re.escape(expected)):
        trainer.fit(model, train_dataloaders=_image_loader(targets))
    bad_batch = int(expected.split("batch ")[1].split(" ")[0])
    assert trainer.global_step == bad_batch  # the batches before it trained; the bad one never reached the loss


def test_bad_validation_label_fails_in_the_sanity_check(backbone: BackboneConfig, tmp_path: Path) -> None:
    trainer = _quiet_trainer(tmp_path)
    train = _image_loader(torch.tensor([0, 1, 2, 0]))
    val = _image_loader(torch.tensor([0, -1, 2, 3]))
    with pytest.raises(
        ValueError, match=re.escape("sanity-check validation batch 0 (epoch 0)") + ".*label\\(s\\) \\[-1, 3\\]"
    ):
        trainer.fit(ImageClassifier(backbone, num_classes=3), train_dataloaders=train, val_dataloaders=val)
    assert trainer.global_step == 0


def test_bad_test_label_names_the_test_batch(backbone: BackboneConfig, tmp_path: Path) -> None:
    loader = _image_loader(torch.tensor([0, 1, 2, 3, 4, 12, 1, 6]))
    with pytest.raises(ValueError, match=re.escape("Bad labels in the test batch 1: ") + ".*\\[12\\]"):
        _quiet_trainer(tmp_path).test(ImageClassifier(backbone, num_classes=10), loader)


def test_bad_label_is_not_hidden_by_tuning(backbone: BackboneConfig, tmp_path: Path) -> None:
    trainer = _quiet_trainer(tmp_path, tuner_config=TunerConfig(auto_lr=True))
    with pytest.raises(ValueError, match=re.escape("label(s) [12]")):
        trainer.fit(ImageClassifier(backbone, num_classes=10), train_dataloaders=_image_loader(torch.tensor([12] * 8)))


def test_prediction_batches_are_not_checked(backbone: BackboneConfig, tmp_path: Path) -> None:
    trainer = _quiet_trainer(tmp_path)
    predictions = trainer.predict(ImageClassifier(backbone, num_classes=10), _image_loader(torch.tensor([12] * 4)))
    assert predictions[0].shape == (4, 10)


def _detection_collate(samples: list) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    return torch.stack([image for image, _ in samples]), [target for _, target in samples]


def test_detector_label_outside_num_classes_is_named(backbone: BackboneConfig, tmp_path: Path) -> None:
    samples = [
        (
            torch.rand(3, 64, 64),
            {"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([label]), "image_id": i},
        )
        for i, label in enumerate([0, 2, 5, 1])
    ]
    loader = DataLoader(samples, batch_size=4, collate_fn=_detection_collate)
    model = ObjectDetector(backbone, num_classes=3, image_size=64, fpn_channels=64)
    trainer = _quiet_trainer(tmp_path)
    with pytest.raises(ValueError) as info:
        trainer.fit(model, train_dataloaders=loader)
    assert str(info.value) == (
        "Bad labels in the training batch 0 (epoch 0): box labels must be in [0, 3) for `num_classes=3`, but a "
        "target (image_id 2) has label(s) [5]. Leave `num_classes` out (the model then takes the data module's), "
        "or fix the labels of the data."
    )
    assert trainer.global_step == 0


# --------------------------------------------------------------------------- truncated images


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_truncated_images_fail_naming_the_file(
    make_image_folder, backbone: BackboneConfig, tmp_path: Path, num_workers: int
) -> None:
    root = make_image_folder(classes={"cat": 3, "dog": 3}, size=32)
    png = root / "train" / "cat" / "000.png"
    jpeg = root / "train" / "dog" / "000.jpg"
    with Image.open(root / "train" / "dog" / "000.png") as image:
        image.save(jpeg, quality=95)
    (root / "train" / "dog" / "000.png").unlink()
    _truncate(png)
    _truncate(jpeg)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # importing autotimm must not turn silent padding on

    data = ImageDataModule(root, image_size=32, batch_size=16, num_workers=num_workers, val_split=0)
    data.setup("fit")  # setup lists files only: the images are read by the loader
    samples = data.train_dataset.dataset.samples
    for path in (png, jpeg):
        with pytest.raises(CorruptImageError, match=re.escape(str(path)) + r".*(?i:truncated)"):
            data.train_dataset[[p for p, _ in samples].index(str(path))]

    trainer = _quiet_trainer(tmp_path / "run")
    with pytest.raises(CorruptImageError, match="|".join(re.escape(str(p)) for p in (png, jpeg))):
        trainer.fit(ImageClassifier(backbone, num_classes=2), datamodule=data)  # one batch holds every image
    assert trainer.global_step == 0
