"""Model EMA (`AutoTrainer(ema=...)`, `ModelEMA`): validated, saved, resumed, in DDP, for both tasks; bad values."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging

from autotimm import AutoTrainer, DetectionDataModule, ImageClassifier, ModelEMA, ObjectDetector
from autotimm.data import make_coco_shapes
from helpers import cpu_trainer, run_ddp_script


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class RecordValidatedWeights(pl.Callback):
    """The weights the model holds in its first and last validation batch, and when training starts."""

    def __init__(self) -> None:
        self.first_validated: dict[str, torch.Tensor] = {}
        self.validated: dict[str, torch.Tensor] = {}
        self.at_train_start: dict[str, torch.Tensor] = {}

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.validated = _weights(pl_module)
        self.first_validated = self.first_validated or self.validated

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_train_start = _weights(pl_module)


def _fit(
    model: pl.LightningModule, data: Any, root: Path, ckpt_path: str | None = None, **kwargs: Any
) -> tuple[AutoTrainer, RecordValidatedWeights]:
    record = RecordValidatedWeights()
    kwargs = {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 1, "ema": 0.9, **kwargs}
    trainer = cpu_trainer(root, callbacks=[record], **kwargs)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, record


@pytest.mark.slow
def test_validation_and_checkpoints_use_the_averaged_weights(backbone, digits_data, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageClassifier(backbone, lr=3e-3)
    trainer, record = _fit(model, digits_data, tmp_path)
    last = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=False)
    averaged, raw = last["state_dict"], last["current_model_state"]
    # The average lags the raw weights, and it is what the last validation ran on and what the checkpoint holds.
    assert not torch.equal(averaged["head.1.weight"], raw["head.1.weight"])
    assert _equal(record.validated, averaged)
    # The model keeps the averaged weights after training; `load_from_checkpoint` gives them too.
    assert _equal(_weights(model), averaged)
    restored = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)
    assert _equal(_weights(restored), averaged)
    logged = trainer.callback_metrics["val/loss"]
    again = cpu_trainer(tmp_path / "validate", limit_val_batches=1).validate(
        restored, datamodule=digits_data, verbose=False
    )
    assert again[0]["val/loss"] == pytest.approx(float(logged), rel=1e-5)


@pytest.mark.slow
def test_resuming_goes_on_averaging_from_the_saved_average(backbone, digits_data, tmp_path: Path) -> None:
    torch.manual_seed(0)
    first, _ = _fit(ImageClassifier(backbone, lr=3e-3), digits_data, tmp_path, max_epochs=1)
    saved = torch.load(first.checkpoint_callback.last_model_path, weights_only=False)
    assert int(saved["averaging_state"]["n_averaged"]) == 3  # one update per optimizer step

    resumed, record = _fit(ImageClassifier(backbone, lr=3e-3), digits_data, tmp_path, ckpt_path="last")
    # The sanity check, before any new step, validates exactly the saved average; training goes on from the
    # raw weights; the average moves on from the saved one, and its update count (which sets the warm-up
    # decay) continues.
    assert _equal(record.first_validated, saved["state_dict"])
    assert _equal(record.at_train_start, saved["current_model_state"])
    final = torch.load(resumed.checkpoint_callback.last_model_path, weights_only=False)
    assert int(final["averaging_state"]["n_averaged"]) == 6
    assert _equal(record.validated, final["state_dict"])
    assert not _equal(final["state_dict"], saved["state_dict"])


@pytest.mark.slow
def test_detector_validates_and_saves_the_averaged_weights(backbone, tmp_path: Path) -> None:
    root = make_coco_shapes(tmp_path / "coco", image_size=64, num_train=16, num_val=8)
    data = DetectionDataModule(root, image_size=64, batch_size=8, num_workers=0, augmentation_preset="none")
    torch.manual_seed(0)
    model = ObjectDetector(backbone, num_classes=3, image_size=64, fpn_channels=64)
    trainer, record = _fit(model, data, tmp_path, max_epochs=1, limit_train_batches=2)
    last = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=False)
    assert _equal(record.validated, last["state_dict"])
    assert not _equal(last["state_dict"], last["current_model_state"])
    restored = ObjectDetector.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)
    assert _equal(_weights(restored), last["state_dict"])


def test_default_is_off_and_true_gives_the_default_decay(tmp_path: Path) -> None:
    assert not any(isinstance(cb, ModelEMA) for cb in cpu_trainer(tmp_path).callbacks)
    (ema,) = [cb for cb in cpu_trainer(tmp_path, ema=True).callbacks if isinstance(cb, ModelEMA)]
    assert ema.decay == 0.9998 and ema.warmup
    (ema,) = [cb for cb in cpu_trainer(tmp_path, ema=0.99).callbacks if isinstance(cb, ModelEMA)]
    assert ema.decay == 0.99


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (1.5, ValueError, r"`ema`.*\(0, 1\).*1\.5"),
        (0, ValueError, r"`ema`.*\(0, 1\).*got 0"),
        (1.0, ValueError, r"`ema`.*got 1\.0"),
        ("yes", TypeError, r"`ema`.*True, False or a decay.*'yes'"),
    ],
)
def test_bad_ema_values_are_refused_naming_the_value_and_range(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        AutoTrainer(ema=value)


def test_bad_model_ema_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"`decay`.*\(0, 1\).*-0\.5"):
        ModelEMA(decay=-0.5)
    with pytest.raises(TypeError, match="`warmup`"):
        ModelEMA(warmup="no")  # type: ignore[arg-type]


def test_ema_with_another_weight_averaging_callback_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EMAWeightAveraging"):
        cpu_trainer(tmp_path, ema=True, callbacks=[EMAWeightAveraging()])


# Lightning's DDP launcher starts the other rank by running this script again.
DDP_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch

    from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule

    root, digits = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    data = ImageDataModule(digits, image_size=32, batch_size=16, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=10, lr=3e-3)
    trainer = AutoTrainer(
        max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", default_root_dir=root, ema=0.9,
        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=3, limit_val_batches=1,
        plots=False,
    )
    trainer.fit(model, datamodule=data)
    head = model.head[1].weight.detach()
    (root / f"rank{trainer.global_rank}.json").write_text(json.dumps({"head": head.flatten().tolist()}))
    """
)


@pytest.mark.slow
def test_ddp_ranks_keep_the_same_average_and_save_it(digits_root: Path, tmp_path: Path) -> None:
    root = run_ddp_script(DDP_SCRIPT, tmp_path, digits_root)
    heads = [json.loads((root / f"rank{r}.json").read_text())["head"] for r in (0, 1)]
    assert heads[0] == heads[1]
    (last_file,) = root.glob("runs/*/checkpoints/last.ckpt")  # the one run folder of both processes
    last = torch.load(last_file, weights_only=False)
    assert last["state_dict"]["head.1.weight"].flatten().tolist() == pytest.approx(heads[0])
    assert int(last["averaging_state"]["n_averaged"]) == 3
    assert not torch.equal(last["state_dict"]["head.1.weight"], last["current_model_state"]["head.1.weight"])
