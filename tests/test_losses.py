"""Tests of `autotimm.losses` and of `ImageClassifier(loss_fn=..., class_weights=...)` on real, imbalanced data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from PIL import Image

from autotimm import BackboneConfig, ImageClassifier, ImageDataModule, list_losses
from autotimm.losses import balanced_class_weights, create_loss
from helpers import cpu_trainer

TINY = BackboneConfig("test_resnet", pretrained=False)
# Two thirds of the images in one class, like the skin-lesion set of the specification documents.
COUNTS = {"common": 24, "rare_a": 6, "rare_b": 6}
COLOURS = {"common": (200, 40, 40), "rare_a": (40, 200, 40), "rare_b": (40, 40, 200)}


@pytest.fixture(scope="module")
def imbalanced_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`train/<class>/` of 32 px noisy images whose colour gives the class, 24/6/6 images."""
    root = tmp_path_factory.mktemp("imbalanced")
    rng = np.random.default_rng(0)
    for name, count in COUNTS.items():
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(count):
            noise = rng.normal(0, 30, size=(32, 32, 3))
            pixels = np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return root


class _EpochLosses(pl.Callback):
    """The mean training loss of each epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


def _data(root: Path) -> ImageDataModule:
    return ImageDataModule(root, image_size=32, batch_size=12, num_workers=0, val_split=0, augmentation_preset="none")


def _fit(model: ImageClassifier, root: Path, tmp_path: Path, epochs: int = 6) -> list[float]:
    losses = _EpochLosses()
    trainer = cpu_trainer(tmp_path, max_epochs=epochs, logger=False, enable_checkpointing=False, callbacks=[losses])
    trainer.fit(model, datamodule=_data(root))
    return losses.losses


# --------------------------------------------------------------------------- the registry


def test_list_losses_names_the_documented_losses() -> None:
    assert list_losses() == [
        "asymmetric",
        "binary_cross_entropy",
        "cross_entropy",
        "focal",
        "soft_target_cross_entropy",
    ]


def test_unknown_name_lists_the_closest_matches() -> None:
    with pytest.raises(ValueError, match=r"Expected `loss_fn` to be one of \[.*'focal'.*\], but got 'focall'.*'focal'"):
        ImageClassifier(TINY, num_classes=3, loss_fn="focall")
    with pytest.raises(ValueError, match=r"but got 'cross_entropi'\. Did you mean 'cross_entropy'\?"):
        create_loss("cross_entropi")


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_gives_a_gradient_for_its_tasks(name: str) -> None:
    logits = torch.randn(6, 3, requires_grad=True)
    for multi_label, targets in ((False, torch.tensor([0, 1, 2, 0, 1, 2])), (True, torch.eye(3)[[0, 1, 2, 0, 1, 2]])):
        try:
            loss = create_loss(name, multi_label=multi_label)
        except ValueError as e:  # a softmax loss refuses multi-label tasks, saying which losses fit
            assert multi_label and "multi_label=True" in str(e)
            continue
        value = loss(logits, targets)
        (grad,) = torch.autograd.grad(value, logits)
        assert value.ndim == 0 and torch.isfinite(value) and grad.abs().sum() > 0


def test_class_weights_weigh_each_sample_by_its_class() -> None:
    logits, targets = torch.randn(5, 2), torch.tensor([0, 0, 0, 1, 1])
    for name in ("cross_entropy", "binary_cross_entropy", "focal"):
        # weights (1, 3) equal counting each class-1 sample three times
        repeated_logits = torch.cat([logits, logits[3:], logits[3:]])
        repeated = create_loss(name)(repeated_logits, torch.cat([targets, targets[3:], targets[3:]]))
        weighted = create_loss(name, class_weights=[1.0, 3.0])(logits, targets)
        torch.testing.assert_close(weighted, repeated)


# --------------------------------------------------------------------------- balanced weights


def test_balanced_weights_are_the_inverse_frequencies(imbalanced_root: Path, tmp_path: Path) -> None:
    n, k = sum(COUNTS.values()), len(COUNTS)
    expected = [n / (k * COUNTS[name]) for name in sorted(COUNTS)]  # label order: class names sorted
    assert balanced_class_weights([0] * 24 + [1] * 6 + [2] * 6, 3) == pytest.approx(expected)

    model = ImageClassifier(TINY, num_classes=3, class_weights="balanced")
    _fit(model, imbalanced_root, tmp_path, epochs=1)
    assert model.loss_fn.weight.tolist() == pytest.approx(expected)  # common: 0.5, each rare class: 2.0


def test_balanced_weights_need_every_class() -> None:
    with pytest.raises(ValueError, match=r"classes \[1\] have none"):
        balanced_class_weights([0, 0, 2], 3)


# --------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [{"loss_fn": "focal"}, {"class_weights": "balanced"}, {"loss_fn": "focal", "class_weights": "balanced"}],
    ids=["focal", "balanced", "focal-balanced"],
)
def test_training_on_imbalanced_data_lowers_the_loss(imbalanced_root: Path, tmp_path: Path, kwargs: dict) -> None:
    model = ImageClassifier(TINY, num_classes=3, lr=3e-3, **kwargs)
    losses = _fit(model, imbalanced_root, tmp_path)
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_custom_module_is_the_loss(imbalanced_root: Path, tmp_path: Path) -> None:
    class CountingLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return nn.functional.cross_entropy(logits, targets)

    loss = CountingLoss()
    model = ImageClassifier(TINY, num_classes=3, lr=3e-3, loss_fn=loss)
    losses = _fit(model, imbalanced_root, tmp_path)
    assert losses[-1] < 0.7 * losses[0], losses
    assert loss.calls == 6 * 3  # 6 epochs of 3 batches, no validation
    assert model.hparams["loss_fn"] is None  # not storable: loaded models take `loss_fn=...` again


def test_loss_survives_the_checkpoint(imbalanced_root: Path, tmp_path: Path) -> None:
    model = ImageClassifier(TINY, num_classes=3, loss_fn="focal", loss_kwargs={"gamma": 1.0}, class_weights="balanced")
    trainer = cpu_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=_data(imbalanced_root))
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    loaded = ImageClassifier.load_from_checkpoint(tmp_path / "model.ckpt")
    assert loaded.hparams["loss_fn"] == "focal" and loaded.hparams["class_weights"] == "balanced"
    assert "gamma=1.0" in repr(loaded.loss_fn)
    assert loaded.loss_fn.weight.tolist() == pytest.approx(model.loss_fn.weight.tolist())  # without the data

    custom = ImageClassifier(TINY, num_classes=3, loss_fn=nn.CrossEntropyLoss(weight=torch.ones(3)))
    trainer = cpu_trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
    trainer.fit(custom, datamodule=_data(imbalanced_root))
    trainer.save_checkpoint(tmp_path / "custom.ckpt")
    checkpoint = torch.load(tmp_path / "custom.ckpt", weights_only=True)
    assert checkpoint["autotimm"]["custom_loss"] == "torch.nn.modules.loss.CrossEntropyLoss"
    assert not any(key.startswith("loss_fn.") for key in checkpoint["state_dict"])
    reloaded = ImageClassifier.load_from_checkpoint(tmp_path / "custom.ckpt", loss_fn=nn.CrossEntropyLoss())
    assert isinstance(reloaded.loss_fn, nn.CrossEntropyLoss)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"loss_fn": 3}, TypeError, "int 3"),
        ({"loss_fn": "cross_entropy", "multi_label": True}, ValueError, "'binary_cross_entropy'"),
        ({"loss_fn": "soft_target_cross_entropy", "class_weights": [1, 1, 1]}, ValueError, "class_weights"),
        ({"class_weights": [1.0, 2.0]}, ValueError, "3 weights"),
        ({"class_weights": [1.0, 0.0, 1.0]}, ValueError, "> 0"),
        ({"class_weights": "inverse"}, TypeError, "'balanced'"),
        ({"loss_fn": "focal", "loss_kwargs": {"gama": 1.0}}, ValueError, "'gamma'"),
        ({"loss_fn": nn.MSELoss(), "class_weights": [1, 1, 1]}, ValueError, "your own `loss_fn`"),
    ],
)
def test_bad_loss_arguments_fail_at_construction(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ImageClassifier(TINY, num_classes=3, **kwargs)
