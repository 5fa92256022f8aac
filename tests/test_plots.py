"""Pictures of each run (`RunPlots`, `plot_run`) and `summarize`, against real short fits."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from matplotlib.image import imread

import autotimm
from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, TunerConfig
from autotimm.trainer import plot_run
from autotimm.trainer import plots as plots_module
from helpers import cpu_trainer

CLASSES = {"cat": 6, "dog": 6, "fox": 6}
# Short fits: one epoch of one batch, no sanity check, unless a test needs more.
QUICK = {"max_epochs": 1, "limit_train_batches": 1, "num_sanity_val_steps": 0}


def _data(make_image_folder) -> ImageDataModule:
    root = make_image_folder(classes=CLASSES, splits=("train", "val"), size=32)
    return ImageDataModule(root, image_size=32, batch_size=4, num_workers=0, augmentation_preset="none")


@pytest.fixture
def finished(make_image_folder, backbone, tmp_path: Path) -> tuple[AutoTrainer, ImageClassifier, ImageDataModule]:
    """A completed two-epoch fit of a 3-class classifier under `tmp_path`, plots on."""
    data = _data(make_image_folder)
    model = ImageClassifier(backbone, num_classes=3)
    trainer = cpu_trainer(tmp_path, max_epochs=2, checkpoint_monitor="val/accuracy", num_sanity_val_steps=0, plots=True)
    trainer.fit(model, datamodule=data)
    return trainer, model, data


def _assert_png(path: Path, min_height: int = 200, min_width: int = 300) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= min_height and pixels.shape[1] >= min_width, pixels.shape
    assert pixels.shape[0] <= 2000 and pixels.shape[1] <= 2000, pixels.shape
    assert pixels[..., :3].std() > 0  # something is drawn


def test_fit_leaves_loss_metric_and_confusion_plots(finished, tmp_path: Path) -> None:
    trainer, model, data = finished
    plots = trainer.run_dir / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == ["confusion_matrix.png", "loss.png", "metrics.png"]
    for png in plots.glob("*.png"):
        _assert_png(png)

    # The counts cover the whole validation set and match a prediction pass with the final weights.
    confusion = json.loads((plots / "confusion_matrix.json").read_text())
    assert confusion["class_names"] == sorted(CLASSES)
    counts = torch.tensor(confusion["counts"])
    assert counts.shape == (3, 3) and counts.sum().item() == len(data.val_dataset) == sum(CLASSES.values())
    assert counts.sum(dim=1).tolist() == [CLASSES[c] for c in sorted(CLASSES)]
    probabilities = torch.cat(trainer.predict(model, dataloaders=data.val_dataloader()))
    labels = torch.cat([y for _, y in data.val_dataloader()])
    expected = torch.bincount(labels * 3 + probabilities.argmax(-1), minlength=9).reshape(3, 3)
    assert torch.equal(counts, expected)

    # plot_run redraws the same pictures from the folder alone.
    redrawn = plot_run(trainer.run_dir, out_dir=tmp_path / "redrawn")
    assert sorted(p.name for p in redrawn) == ["confusion_matrix.png", "loss.png", "metrics.png"]
    for png in redrawn:
        _assert_png(png)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        plot_run(tmp_path / "nowhere")


def test_summarize_one_run_and_a_folder_of_runs(finished, backbone, tmp_path: Path, capsys) -> None:
    first, _, data = finished
    rows = autotimm.summarize(first.run_dir)
    epochs = json.loads((first.run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [0, 1]
    for row, entry in zip(rows, epochs, strict=True):
        assert {key: value for key, value in entry.items() if key != "time"} == row
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == list(rows[0]) and len(printed) == 2 + len(rows)
    assert {"val/loss", "val/accuracy", "train/loss_epoch"} <= set(rows[0])

    second = cpu_trainer(tmp_path, plots=False, **QUICK)
    second.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    runs = autotimm.summarize(tmp_path, print_table=False)
    assert [run["run_id"] for run in runs] == [first.run_dir.name, second.run_dir.name]
    assert [run["status"] for run in runs] == ["completed", "completed"] and [run["epochs"] for run in runs] == [2, 1]
    assert runs[0]["monitor"] == "val/accuracy" and runs[0]["best"] == max(e["val/accuracy"] for e in epochs)
    assert runs[1]["monitor"] is None and runs[1]["best"] is None
    assert runs[0]["val/loss"] == epochs[-1]["val/loss"]
    assert autotimm.summarize(tmp_path / "runs", print_table=False) == runs

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        autotimm.summarize(tmp_path / "empty")
    with pytest.raises(TypeError, match="print_table"):
        autotimm.summarize(tmp_path, print_table="no")


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
    _assert_png(plots / "lr_finder.png")
    curve = json.loads((plots / "lr_finder.json").read_text())
    assert curve["suggestion"] == trainer.tuning_results["lr"] and len(curve["lr"]) >= 8


def test_plots_off_and_without_a_run_record(make_image_folder, backbone, tmp_path: Path) -> None:
    data = _data(make_image_folder)
    off = cpu_trainer(tmp_path / "off", plots=False, **QUICK)
    off.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert not list((tmp_path / "off").rglob("*.png"))

    stale = tmp_path / "no_record" / "plots" / "lr_finder.png"  # from an earlier fit that tuned
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    no_record = cpu_trainer(tmp_path / "no_record", run_record=False, plots=True, **QUICK)
    no_record.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert no_record.run_dir is None and not stale.exists()
    for name in ("loss.png", "metrics.png", "confusion_matrix.png"):
        _assert_png(tmp_path / "no_record" / "plots" / name)

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
    data = _data(make_image_folder)
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "plots").write_text("a file where the plots folder should go")
    blocked = cpu_trainer(tmp_path / "blocked", run_record=False, plots=True, **QUICK)
    with pytest.warns(UserWarning, match="could not write the plots folder"):
        blocked.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert blocked.state.finished and blocked.current_epoch == 1

    failing = cpu_trainer(tmp_path / "failing", **{**QUICK, "max_epochs": 3}, callbacks=[_FailAtEpoch(1)], plots=True)
    with pytest.raises(RuntimeError, match="injected failure"):
        failing.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert autotimm.read_run(failing.run_dir)["status"] == "failed"
    plots = failing.run_dir / "plots"
    assert sorted(p.name for p in plots.glob("*.png")) == ["loss.png", "metrics.png"]  # no confusion matrix


def test_related_metrics_share_a_panel_and_absent_size_buckets_are_left_out(tmp_path: Path) -> None:
    # A detector's record: COCO's mAP family, with -1 where the data had no boxes of a size.
    epochs = [
        {"epoch": e, "step": 10 * (e + 1), "train/loss_epoch": 2.0 - e, "val/loss": 2.1 - e, "val/map": 0.1 * e}
        | {"val/map_50": 0.2 * e, "val/map_large": -1.0, "val/mar_100": 0.3 * e, "train/loss_classification": 1.0}
        for e in range(3)
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(epochs))
    series = plots_module._series(epochs)
    families = plots_module._families(series)
    assert {prefix: sorted(names) for prefix, names in families.items()} == {
        "loss": ["loss_classification"],
        "map": ["map", "map_50"],
        "mar": ["mar_100"],
    }
    assert sorted(p.name for p in plot_run(run)) == ["loss.png", "metrics.png"]
    # Three panels side by side, one row: 3 x 4.2 in wide, 3.2 in high at 100 dpi.
    assert imread(run / "plots" / "metrics.png").shape[:2] == (320, 1260)


def test_learning_rate_is_recorded_every_epoch_on_small_data(make_image_folder, backbone, tmp_path: Path) -> None:
    # 2 steps per epoch, far fewer than Lightning's log_every_n_steps=50: the run record, summarize
    # (and so metrics.png) and the loggers still get each epoch's learning rate, not one repeated value.
    from pytorch_lightning.loggers import CSVLogger

    model = ImageClassifier(backbone, num_classes=3, lr=0.1, scheduler="cosine")
    logger = CSVLogger(tmp_path / "logs")
    trainer = cpu_trainer(
        tmp_path, max_epochs=5, limit_train_batches=2, limit_val_batches=0, enable_checkpointing=False, logger=logger
    )
    trainer.fit(model, datamodule=_data(make_image_folder))
    assert trainer.log_every_n_steps == 50 and trainer.global_step == 10
    expected = [0.1 * (1 + math.cos(math.pi * epoch / 5)) / 2 for epoch in range(5)]  # CosineAnnealingLR per epoch

    epochs = json.loads((trainer.run_dir / "metrics.json").read_text())
    assert [e["train/lr"] for e in epochs] == pytest.approx(expected, rel=1e-6)
    assert all(isinstance(e["train/loss"], float) for e in epochs)
    assert len({e["train/loss"] for e in epochs}) == 5 and len({e["train/loss_epoch"] for e in epochs}) == 5
    rows = autotimm.summarize(trainer.run_dir, print_table=False)
    assert [row["train/lr"] for row in rows] == [e["train/lr"] for e in epochs]

    with open(Path(logger.log_dir) / "metrics.csv", newline="") as file:
        logged = [(int(row["epoch"]), float(row["train/lr"])) for row in csv.DictReader(file) if row["train/lr"]]
    assert [lr for _, lr in logged] == pytest.approx(expected, rel=1e-6)
    assert [epoch for epoch, _ in logged] == [0, 1, 2, 3, 4]
