"""The `RunPlots` callback: the pictures of real short fits, and the confusion matrix the model counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import autotimm
from autotimm import ImageClassifier, ImageDataModule, TunerConfig
from autotimm.callbacks import RunPlots
from autotimm.runs import plot_run
from helpers import PLOT_CLASSES, QUICK, assert_png, cpu_trainer, finished_fit, noise_data


def test_fit_leaves_loss_metric_and_confusion_plots(make_image_folder, backbone, tmp_path: Path) -> None:
    trainer, model, data = finished_fit(make_image_folder, backbone, tmp_path)
    plots = trainer.run_dir / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == ["confusion_matrix.png", "loss.png", "metrics.png"]
    for png in plots.glob("*.png"):
        assert_png(png)

    # The counts cover the whole validation set and match a prediction pass with the best checkpoint's
    # weights, whose accuracy is the best score in run.json (tests/analysis checks a run whose best is not its last).
    confusion = json.loads((plots / "confusion_matrix.json").read_text())
    assert confusion["class_names"] == sorted(PLOT_CLASSES)
    assert confusion["weights"].startswith("checkpoint best.ckpt (epoch ")
    counts = torch.tensor(confusion["counts"])
    assert counts.shape == (3, 3) and counts.sum().item() == len(data.val_dataset) == sum(PLOT_CLASSES.values())
    assert counts.sum(dim=1).tolist() == [PLOT_CLASSES[c] for c in sorted(PLOT_CLASSES)]
    labels = torch.cat([y for _, y in data.val_dataloader()])

    def confusion_of(weights: ImageClassifier) -> torch.Tensor:
        probabilities = torch.cat(trainer.predict(weights, dataloaders=data.val_dataloader()))
        return torch.bincount(labels * 3 + probabilities.argmax(-1), minlength=9).reshape(3, 3)

    best = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert torch.equal(counts, confusion_of(best))
    best_score = json.loads((trainer.run_dir / "run.json").read_text())["metrics"]["best"]["value"]
    assert counts.trace().item() / counts.sum().item() == pytest.approx(best_score)

    # plot_run redraws the same pictures from the folder alone.
    redrawn = plot_run(trainer.run_dir, out_dir=tmp_path / "redrawn")
    assert sorted(p.name for p in redrawn) == ["confusion_matrix.png", "loss.png", "metrics.png"]
    for png in redrawn:
        assert_png(png)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        plot_run(tmp_path / "nowhere")


def test_tuner_run_draws_the_lr_finder_curve(make_image_folder, backbone, tmp_path: Path) -> None:
    # One solid colour per class: the loss falls quickly, so the finder has a suggestion.
    for name, color in {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}.items():
        root = make_image_folder(classes={name: 8}, splits=("train", "val"), size=32, color=color)
    data = ImageDataModule(root, image_size=32, batch_size=2, num_workers=0, augmentation_preset="none")
    with torch.random.fork_rng():  # the same initial weights, and so the same curve, every time
        torch.manual_seed(0)
        model = ImageClassifier(backbone, num_classes=3, lr=0.5)
    config = TunerConfig(auto_lr=True)
    trainer = cpu_trainer(
        tmp_path, max_epochs=2, max_steps=1, limit_val_batches=1, tuner_config=config, seed=0, plots=True
    )
    trainer.fit(model, datamodule=data)
    plots = trainer.run_dir / "plots"
    assert_png(plots / "lr_finder.png")
    curve = json.loads((plots / "lr_finder.json").read_text())
    assert curve["suggestion"] == trainer.tuning_results["lr"] and len(curve["lr"]) >= 8


def test_plots_off_and_without_a_run_record(make_image_folder, backbone, tmp_path: Path) -> None:
    data = noise_data(make_image_folder)
    off = cpu_trainer(tmp_path / "off", plots=False, **QUICK)
    off.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert not list((tmp_path / "off").rglob("*.png"))

    # Without a run record the pictures still go to the run's folder (drawn from what the callback kept).
    no_record = cpu_trainer(tmp_path / "no_record", run_record=False, plots=True, **QUICK)
    no_record.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert not (no_record.run_dir / "run.json").exists()
    for name in ("loss.png", "metrics.png", "confusion_matrix.png"):
        assert_png(no_record.run_dir / "plots" / name)

    # In a plain Trainer (no run folder), into `<default_root_dir>/plots`, where an earlier fit's pictures go.
    stale = tmp_path / "plain" / "plots" / "lr_finder.png"  # from an earlier fit that tuned
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    plain = pl.Trainer(
        default_root_dir=tmp_path / "plain", callbacks=[RunPlots()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **QUICK,
    )  # fmt: skip
    plain.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert not stale.exists()
    for name in ("loss.png", "metrics.png", "confusion_matrix.png"):
        assert_png(tmp_path / "plain" / "plots" / name)

    with pytest.raises(TypeError, match="plots"):
        cpu_trainer(tmp_path, plots="yes")


class _FailAtEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("injected failure")


def test_failed_plots_never_fail_the_run_and_failed_runs_keep_their_curves(
    make_image_folder, backbone, tmp_path: Path
) -> None:
    data = noise_data(make_image_folder)
    blocked = cpu_trainer(tmp_path / "blocked", run_record=False, plots=True, **QUICK)
    (blocked.run_dir / "plots").write_text("a file where the plots folder should go")
    with pytest.warns(UserWarning, match="could not write the plots folder"):
        blocked.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert blocked.state.finished and blocked.current_epoch == 1

    failing = cpu_trainer(tmp_path / "failing", **{**QUICK, "max_epochs": 3}, callbacks=[_FailAtEpoch(1)], plots=True)
    with pytest.raises(RuntimeError, match="injected failure"):
        failing.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert autotimm.read_run(failing.run_dir)["status"] == "failed"
    plots = failing.run_dir / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == ["loss.png", "metrics.png"]  # no confusion matrix


@pytest.mark.slow
@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
def test_confusion_matrix_drawn_is_the_one_counted_by_hand_over_the_validation_set(
    make_image_folder, backbone, tmp_path: Path, binary: bool
) -> None:
    classes = {"cat": 6, "dog": 7} if binary else {"cat": 6, "dog": 5, "fox": 7}
    root = make_image_folder(classes=classes, splits=("train", "val"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(backbone, num_classes=1 if binary else 3, multi_label=binary)
    # Validation on 3 of its batches (12 images); the sanity check's 2 batches do not count.
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=3, plots=True)
    trainer.fit(model, datamodule=data)

    n = len(classes)
    by_hand = [[0] * n for _ in range(n)]
    model.eval()
    with torch.no_grad():
        for index, (x, y) in enumerate(data.val_dataloader()):
            if index == 3:
                break
            logits = model(x)
            predicted = (logits[:, 0] > 0).long() if binary else logits.argmax(-1)
            for true, guess in zip(y.tolist(), predicted.tolist(), strict=True):
                by_hand[true][guess] += 1
    model.train()
    assert sum(map(sum, by_hand)) == 12

    plots = trainer.run_dir / "plots"
    drawn = json.loads((plots / "confusion_matrix.json").read_text())
    # No best checkpoint (no `checkpoint_monitor`): the last validation epoch's counts.
    weights = "the last validation epoch's weights"
    assert drawn == {"split": "val", "class_names": sorted(classes), "counts": by_hand, "weights": weights}
    assert model.epoch_summaries() == {"confusion_matrix": {k: v for k, v in drawn.items() if k != "weights"}}
    assert_png(plots / "confusion_matrix.png")

    # A later fit without validation draws no confusion matrix (not the earlier fit's).
    again = cpu_trainer(tmp_path / "again", limit_val_batches=0, plots=True, **QUICK)
    again.fit(model, datamodule=data)
    assert model.epoch_summaries() == {}
    assert not {"confusion_matrix.png", "confusion_matrix.json"} & {p.name for p in (again.run_dir / "plots").iterdir()}
