"""A default run shows the progress bar, where the run is written and real problems; Lightning's routine
messages about its own machinery are held back at DEBUG, and nothing stays changed after the run."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, LoggerConfig, TunerConfig

# What a default run printed before (issue 12, defect 13): none of it may reach the console.
NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",  # Lightning's use of a deprecated torch API
    "log_every_n_steps",
    "Loading `train_dataloader` to estimate",
    "rank_zero_warn(",  # the source line under a warning attributed to the library's own line
    "weights_only",
    ".lr_find_",  # Lightning's internal checkpoints of the finders
    ".scale_batch_size_",
    "Please add the following callbacks",
    "FLOPs",
    "Total Flops",
    "Batch size 2 succeeded",  # the batch-size finder's trials
    "`Trainer.fit` stopped: `max_steps=",  # the finders' own fits
)
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric")


@pytest.fixture
def console(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also attached to Lightning's loggers (which do not propagate when Lightning set up its own handler)."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
    yield caplog
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).removeHandler(caplog.handler)


def _data(make_image_folder) -> ImageDataModule:
    # One solid colour per class: the loss falls at once, so the learning-rate finder has a suggestion.
    # 60 training images, so that the tuned batch holds more than one image (issue 12, defect 1, is not tested here).
    for name, color in {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}.items():
        make_image_folder(classes={name: 20}, splits=("train",), size=32, color=color)
        root = make_image_folder(classes={name: 4}, splits=("val", "test"), size=32, color=color)
    (root / "train" / "red" / "notes.txt").write_text("not an image")  # a real problem with the user's data
    return ImageDataModule(root, image_size=32, batch_size=4, num_workers=0, augmentation_preset="none")


@pytest.mark.slow
@pytest.mark.parametrize("tuning", [False, True], ids=["tuner-off", "tuner-on"])
def test_a_default_run_shows_progress_run_folder_and_real_problems_only(
    make_image_folder, backbone, tmp_path: Path, capsys, console, recwarn, tuning: bool
) -> None:
    console.set_level(logging.DEBUG, logger="autotimm.trainer.quiet")
    warning_filters = list(warnings.filters)
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    log_filters = list(rank_zero.filters)

    torch.manual_seed(0)
    data = _data(make_image_folder)
    model = ImageClassifier(backbone, num_classes=3, lr=0.5, scheduler="cosine")
    tuner = TunerConfig(auto_lr=True, auto_batch_size=True, batch_size_kwargs={"init_val": 2, "max_trials": 2})
    trainer = AutoTrainer(  # the defaults a user gets: progress bar, model summary, plots, run record
        max_epochs=2,
        accelerator="cpu",
        default_root_dir=tmp_path / "run",
        logger=[LoggerConfig("csv")],  # 15 batches per epoch: fewer than log_every_n_steps=50
        checkpoint_monitor="val/accuracy",
        tuner_config=tuner if tuning else None,
        seed=0,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data)
    # Resumed with another configuration: the checkpoint holds the state of autotimm's best-checkpoint callback.
    resumed = AutoTrainer(max_epochs=3, accelerator="cpu", default_root_dir=tmp_path / "run", logger=False)
    resumed.fit(model, datamodule=data, ckpt_path=trainer.checkpoint_callback.best_model_path)

    printed = capsys.readouterr()
    shown = [r for r in console.records if r.name != "autotimm.trainer.quiet"]
    held_back = [r.getMessage() for r in console.records if r.name == "autotimm.trainer.quiet"]
    console_text = "\n".join([printed.out, printed.err, *(r.getMessage() for r in shown)])
    warned = [(w.filename, str(w.message)) for w in recwarn]
    for noise in NOISE:
        assert noise not in console_text, noise
        assert not any(noise in message for _, message in warned), (noise, warned)

    # What the user needs: the progress bar, one line on where the run is written, the model summary's
    # parameter counts, and the warning about the data, attributed to the line of this test that led to it.
    assert "Epoch 1" in printed.out
    run_lines = [r.getMessage() for r in shown if r.getMessage().startswith("autotimm: run ")]
    assert run_lines[0] == (
        f"autotimm: run {trainer.run_dir.name}: record and plots in {trainer.run_dir}; "
        f"checkpoints in {Path(trainer.checkpoint_callback.dirpath)}"
    )
    assert "Trainable params" in console_text
    (data_warning,) = [(f, m) for f, m in warned if "without an image extension" in m]
    assert "notes.txt" in data_warning[1] and data_warning[0] == __file__
    if tuning:
        assert any(r.getMessage().startswith("autotimm: learning-rate finder chose") for r in shown)

    # Held back, not lost: at DEBUG on autotimm's logger.
    assert any(m.startswith("GPU available") for m in held_back)
    assert any("estimate number of stepping batches" in m for m in held_back)
    if tuning:  # the batch-size finder's internal checkpoint (the LR range test keeps its weights in memory)
        assert any(".scale_batch_size_" in m for m in held_back)

    # Nothing stays changed after the run.
    assert warnings.filters == warning_filters and rank_zero.filters == log_filters


def test_a_library_warning_names_the_users_line(tmp_path: Path, recwarn) -> None:
    AutoTrainer(checkpoint_monitor="val/loss", default_root_dir=tmp_path, accelerator="cpu")  # mode "max" on a loss
    (warning,) = [w for w in recwarn if "checkpoint_mode='min'" in str(w.message)]
    assert warning.filename == __file__
