"""ImageClassifier trained for real on small data."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig, MetricConfig


def _csv_metrics(trainer) -> list[dict[str, str]]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def _column(rows, key):
    return [float(r[key]) for r in rows if r.get(key)]


def test_training_lowers_loss_and_beats_chance(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, lr=3e-3, scheduler="cosine")
    trainer = AutoTrainer(
        max_epochs=3, accelerator="cpu", logger=[LoggerConfig("csv")], default_root_dir=tmp_path, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=digits_data)
    epoch_losses = _column(_csv_metrics(trainer), "train/loss_epoch")
    assert len(epoch_losses) == 3 and epoch_losses[-1] < 0.7 * epoch_losses[0]
    (result,) = trainer.test(model, datamodule=digits_data, verbose=False)
    assert result["test/accuracy"] > 0.5  # chance is 0.1


def test_predict_returns_probabilities(digits_data, backbone):
    model = ImageClassifier(backbone, num_classes=10)
    trainer = AutoTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_predict_batches=2)
    batches = trainer.predict(model, datamodule=digits_data)
    probs = torch.cat(batches)
    assert probs.shape == (2 * digits_data.batch_size, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(probs)), atol=1e-5)


def test_freeze_backbone_trains_only_the_head(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, freeze_backbone=True, lr=1e-2)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head[1].weight.clone()
    trainer = AutoTrainer(
        max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, limit_train_batches=5, limit_val_batches=2
    )
    trainer.fit(model, datamodule=digits_data)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), f"backbone entry {key} changed"  # BN statistics included
    assert not torch.equal(model.head[1].weight, head_before)
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.head.parameters()}

    # Phase two, as the API document shows: unfreeze by hand and lower the learning rate.
    for param in model.backbone.parameters():
        param.requires_grad = True
    model._lr = 1e-4
    trainer2 = AutoTrainer(
        max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, limit_train_batches=3, limit_val_batches=1
    )
    trainer2.fit(model, datamodule=digits_data)
    assert trainer2.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)
    name, param = next(iter(model.backbone.named_parameters()))
    assert not torch.equal(param, backbone_before[name])
    stats = [k for k in backbone_before if k.endswith("running_mean")]
    assert any(not torch.equal(model.backbone.state_dict()[k], backbone_before[k]) for k in stats)  # BN trains again


def test_binary_multilabel_classifier_learns(make_image_folder, backbone, tmp_path):
    root = make_image_folder(classes={"fake": 24, "real": 24}, splits=("train", "val"), size=32, name="binary")
    # Make the classes separable: "fake" images dark, "real" images bright.
    from PIL import Image

    for path in root.rglob("*.png"):
        image = Image.open(path)
        scale = 0.3 if path.parent.name == "fake" else 1.0
        image.point(lambda v: int(v * scale)).save(path)
    data = ImageDataModule(root, image_size=32, batch_size=8, num_workers=0)
    metrics = [MetricConfig("auroc", metric_class="AUROC", stages=["val"]), MetricConfig("accuracy", metric_class="Accuracy", stages=["val"])]
    model = ImageClassifier(backbone, num_classes=1, multi_label=True, metrics=metrics, lr=3e-3)
    trainer = AutoTrainer(max_epochs=4, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["val/auroc"] > 0.9
    probs = torch.cat(trainer.predict(model, dataloaders=data.val_dataloader()))
    assert probs.shape[1] == 1 and ((probs >= 0) & (probs <= 1)).all()


def test_load_from_checkpoint_does_not_download(digits_data, backbone, tmp_path, monkeypatch):
    model = ImageClassifier(backbone, num_classes=10)
    trainer = AutoTrainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=digits_data)
    # As if the model had been built with downloaded weights:
    model.hparams["backbone"]["pretrained"] = True
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    restored = ImageClassifier.load_from_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # hyperparameters are plain data
    assert checkpoint["hyper_parameters"]["num_classes"] == 10
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(restored.eval()(x), model.eval()(x))


def test_class_count_mismatch_fails_before_training(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=7)
    trainer = AutoTrainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False)
    with pytest.raises(ValueError, match="num_classes=7"):
        trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "adamx"}, ValueError, "adam"),
        ({"scheduler": "cosin"}, ValueError, "cosine"),
        ({"lr": -1.0}, ValueError, "-1.0"),
        ({"label_smoothing": 1.5}, ValueError, "1.5"),
        ({"head_dropout": -0.2}, ValueError, "-0.2"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"num_classes": 1}, ValueError, "multi_label"),
        ({"backbone": 42}, TypeError, "42"),
        ({"optimizer_kwargs": {"betas2": (0.9, 0.99)}}, ValueError, "betas2"),
        ({"scheduler_kwargs": {"T_max": 5}}, ValueError, "scheduler"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match, backbone):
    arguments = {"backbone": backbone, "num_classes": 10, **kwargs}
    with pytest.raises(error, match=match):
        ImageClassifier(**arguments)


def test_default_construction_is_silent(backbone):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageClassifier(backbone, num_classes=3)
        AutoTrainer()
