"""Mixup / CutMix in ImageClassifier: what training sees while on and after `mixup_off_epoch`, the loss, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from autotimm import ImageClassifier, ImageDataModule, MetricConfig
from helpers import cpu_trainer


class ObserveTraining(pl.Callback):
    """Per training batch: whether the images the model saw differ from the loader's, and the targets each loss got."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.register_forward_pre_hook(self._model_input)
        if pl_module.mixup_loss_fn is not None:
            pl_module.mixup_loss_fn.register_forward_pre_hook(self._loss_input("mixed"))
        pl_module.loss_fn.register_forward_pre_hook(self._loss_input("plain"))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.batches.append({"epoch": trainer.current_epoch, "images": batch[0].clone(), "labels": batch[1].clone()})

    def _model_input(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            self.batches[-1]["changed"] = not torch.equal(args[0], self.batches[-1]["images"])

    def _loss_input(self, name: str):
        def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if torch.is_grad_enabled():  # training, not validation
                self.batches[-1][name] = args[1].detach().clone()

        return record


def _data(digits_root: Path, batch_size: int) -> ImageDataModule:
    return ImageDataModule(digits_root, image_size=32, batch_size=batch_size, num_workers=0, augmentation_preset="none")


def _epochs(trainer: pl.Trainer) -> list[dict[str, float]]:
    return json.loads((trainer.run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0, "mixup_mode": "elem"}])
def test_mixing_changes_training_batches_until_the_off_epoch(
    backbone, digits_root: Path, tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    torch.manual_seed(0)
    train_accuracy = MetricConfig("accuracy", metric_class="Accuracy", stages=["train", "val"])
    model = ImageClassifier(backbone, mixup_off_epoch=2, metrics=[train_accuracy], **kwargs)
    observe = ObserveTraining()
    trainer = cpu_trainer(tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[observe])
    trainer.fit(model, datamodule=_data(digits_root, batch_size=15))  # odd: the last image of each batch stays
    for batch in observe.batches:
        if batch["epoch"] < 2:  # mixed: new images, soft targets (rows of probabilities), the soft-target loss
            soft = batch["mixed"]
            assert batch["changed"] and "plain" not in batch
            assert soft.shape == (15, 10) and torch.allclose(soft.sum(1), torch.ones(15))
            assert (soft[:-1].max(1).values < 1).any()
            assert torch.equal(soft[-1], torch.nn.functional.one_hot(batch["labels"][-1], 10).float())
        else:  # switched off: the loader's images and class-index labels
            assert not batch["changed"] and "mixed" not in batch
            assert torch.equal(batch["plain"], batch["labels"])
    # Train accuracy is logged only for the epoch that was not mixed; validation every epoch.
    logged = _epochs(trainer)
    assert ["train/accuracy" in epoch for epoch in logged] == [False, False, True]
    assert all("val/accuracy" in epoch for epoch in logged)


@pytest.mark.slow
def test_loss_falls_with_mixup_and_cutmix_and_validation_is_not_mixed(backbone, digits_root: Path, tmp_path: Path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone, lr=3e-3, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
    data = _data(digits_root, batch_size=32)
    trainer = cpu_trainer(tmp_path, max_epochs=4, limit_train_batches=6, limit_val_batches=3, seed=0)
    trainer.fit(model, datamodule=data)
    losses = [epoch["train/loss_epoch"] for epoch in _epochs(trainer)]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    # Validation sees plain images and the plain loss: `validate` of the same weights repeats the logged figures.
    again = cpu_trainer(tmp_path / "validate", limit_val_batches=3).validate(model, datamodule=data, verbose=False)[0]
    assert again["val/loss"] == pytest.approx(float(trainer.callback_metrics["val/loss"]), rel=1e-5)
    assert again["val/accuracy"] == pytest.approx(float(trainer.callback_metrics["val/accuracy"]))
    assert again["val/accuracy"] > 0.3  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_multi_label_mixup_trains_on_mixed_multi_hot_targets(backbone, digits_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(backbone, multi_label=True, mixup_alpha=1.0, metrics=[])
    observe = ObserveTraining()
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[observe])
    trainer.fit(model, datamodule=_data(digits_root, batch_size=16))
    for batch in observe.batches:
        soft = batch["mixed"]
        assert soft.shape == (16, 10) and ((soft > 0) & (soft < 1)).any()
    assert math.isfinite(float(trainer.callback_metrics["train/loss_epoch"]))


def test_mixup_arguments_are_saved_as_hyperparameters(backbone, tmp_path: Path) -> None:
    model = ImageClassifier(backbone, num_classes=3, cutmix_alpha=1.0, mixup_prob=0.5, mixup_off_epoch=4)
    assert model.hparams["cutmix_alpha"] == 1.0 and model.hparams["mixup_off_epoch"] == 4
    assert model.mixing  # epoch 0
    plain = ImageClassifier(backbone, num_classes=3)
    assert not plain.mixing and plain.mixup_loss_fn is None


def _sums_indices(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.nll_loss(logits.log_softmax(-1), targets)  # class indices only


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mixup_alpha": -0.2}, ValueError, r"`mixup_alpha`.*>= 0.*-0\.2"),
        ({"cutmix_alpha": -1}, ValueError, r"`cutmix_alpha`.*-1"),
        ({"mixup_alpha": 1.0, "mixup_prob": 1.5}, ValueError, r"`mixup_prob`.*\[0, 1\].*1\.5"),
        ({"mixup_alpha": 1.0, "mixup_switch_prob": -0.1}, ValueError, r"`mixup_switch_prob`"),
        ({"mixup_alpha": 1.0, "mixup_mode": "batches"}, ValueError, r"`mixup_mode`.*'batches'.*Did you mean 'batch'"),
        ({"mixup_alpha": 1.0, "mixup_off_epoch": 1.5}, TypeError, r"`mixup_off_epoch`.*an int"),
        ({"mixup_off_epoch": 5}, ValueError, r"mixup_off_epoch=5 apply to Mixup / CutMix, which are off"),
        ({"mixup_alpha": 1.0, "loss_fn": _sums_indices}, ValueError, r"soft targets.*_sums_indices.*cannot take"),
    ],
)
def test_bad_mixup_arguments_are_refused_naming_the_value(backbone, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ImageClassifier(backbone, num_classes=3, **kwargs)


@pytest.mark.slow
def test_custom_loss_that_takes_soft_targets_trains_mixed_batches(backbone, digits_data, tmp_path: Path) -> None:
    soft_ce = torch.nn.CrossEntropyLoss()  # takes class indices and probability rows
    model = ImageClassifier(backbone, num_classes=10, mixup_alpha=1.0, loss_fn=soft_ce)
    observe = ObserveTraining()
    cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[observe]).fit(model, datamodule=digits_data)
    (batch,) = observe.batches
    assert batch["changed"] and batch["plain"].shape == (32, 10)  # the custom loss got the soft targets
