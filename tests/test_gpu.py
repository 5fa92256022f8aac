"""What only a CUDA GPU can check: bf16 training, channels-last, out-of-memory back-off on a real OOM.

Marked `gpu`: skipped, with the reason, where torch sees no CUDA device (see conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, ObjectDetector
from autotimm.data import make_coco_shapes

pytestmark = pytest.mark.gpu


def _trainer(tmp_path: Path, **kwargs) -> AutoTrainer:
    options = dict(
        accelerator="gpu", devices=1, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, tuner_config=False, plots=False,
    )  # fmt: skip
    options.update(kwargs)
    return AutoTrainer(**options)


def test_bf16_training_on_the_gpu_lowers_the_loss(digits_root: Path, backbone, tmp_path: Path) -> None:
    model = ImageClassifier(backbone, lr=3e-3)
    data = ImageDataModule(digits_root, image_size=32, batch_size=64, num_workers=2, augmentation_preset="none")
    trainer = _trainer(tmp_path, precision="bf16-mixed", max_epochs=4, channels_last=True)
    trainer.fit(model, datamodule=data)
    losses = trainer.callback_metrics
    assert torch.isfinite(losses["train/loss_epoch"])
    assert float(losses["val/accuracy"]) > 0.5
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_detector_heads_stay_float32_under_bf16(tmp_path: Path, backbone) -> None:
    from autotimm import DetectionDataModule

    root = make_coco_shapes(tmp_path / "shapes", num_train=64, num_val=16, image_size=128, seed=0)
    data = DetectionDataModule(root, image_size=128, batch_size=8, num_workers=2)
    model = ObjectDetector(backbone, lr=1e-3)
    trainer = _trainer(tmp_path, precision="bf16-mixed", max_epochs=2)
    trainer.fit(model, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_oom_backoff_halves_the_batch_size_on_a_real_out_of_memory(tmp_path: Path) -> None:
    # resnet50 at 2048 px needs several GB of activations per image in a training step: 32 images do not
    # fit on any current GPU, a few do.
    root = tmp_path / "big"
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(16):
                Image.new("RGB", (64, 64), (i * 15, 0, 0)).save(folder / f"{i}.png")
    data = ImageDataModule(root, image_size=2048, batch_size=32, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(BackboneConfig("resnet50", pretrained=False))
    trainer = _trainer(tmp_path, max_steps=1, oom_backoff=True, limit_val_batches=1)
    with pytest.warns(UserWarning, match="out of memory with batch_size=32"):
        trainer.fit(model, datamodule=data)
    assert 1 <= data.batch_size < 32
    assert trainer.global_step == 1  # the run itself trained at the size that fitted
