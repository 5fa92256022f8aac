"""AutoTrainer: checkpoints, resume, accumulation, loggers, test-after-fit."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping

from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, LoggerConfig, TunerConfig, read_run
from helpers import cpu_trainer


def test_best_checkpoint_has_a_fixed_name_and_its_value_in_the_record(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        checkpoint_monitor="val/loss",
        checkpoint_mode="min",
        limit_train_batches=4,
        limit_val_batches=2,
    )
    trainer.fit(model, datamodule=digits_data)
    callback = trainer.checkpoint_callback
    best = Path(callback.best_model_path)
    assert best == trainer.run_dir / "checkpoints" / "best.ckpt" and best.is_file()
    record = read_run(trainer.run_dir)
    assert record["checkpoints"]["best"] == str(best) and record["metrics"]["best"]["monitor"] == "val/loss"
    value = record["metrics"]["best"]["value"]
    assert value == pytest.approx(callback.best_model_score.item()) and value > 0
    states = torch.load(best, weights_only=True)["callbacks"]
    assert any(state.get("best_model_score") is not None for state in states.values())
    assert (best.parent / "last.ckpt").is_file()


def test_resume_continues_from_the_saved_step(digits_data, backbone, tmp_path):
    limit = 3
    first = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=limit, limit_val_batches=1)
    model = ImageClassifier(backbone, num_classes=10)
    first.fit(model, datamodule=digits_data)
    checkpoint = first.checkpoint_callback.best_model_path
    assert first.global_step == limit

    resumed = cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=limit, limit_val_batches=1)
    resumed.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path=checkpoint)
    assert resumed.current_epoch == 2 and resumed.global_step == 2 * limit


def test_accumulation_takes_fewer_optimizer_steps(digits_data, backbone, tmp_path):
    steps = {}
    for accumulate in (1, 4):
        trainer = cpu_trainer(
            tmp_path,
            max_epochs=1,
            accumulate_grad_batches=accumulate,
            limit_train_batches=8,
            limit_val_batches=0,
            enable_checkpointing=False,
        )
        trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
        steps[accumulate] = trainer.global_step
    assert steps == {1: 8, 4: 2}


def test_test_after_fit_uses_the_best_checkpoint(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, lr=3e-3)
    # Keep the epoch with the *highest* validation loss, so "best" is not the final weights.
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        checkpoint_monitor="val/loss",
        checkpoint_mode="max",
        limit_train_batches=10,
        limit_val_batches=3,
    )
    trainer.fit(model, datamodule=digits_data)
    best = trainer.checkpoint_callback.best_model_path
    (result,) = trainer.test(model, datamodule=digits_data, verbose=False)
    assert trainer.ckpt_path == best
    (explicit,) = cpu_trainer(tmp_path).test(
        ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path=best, verbose=False
    )
    assert result["test/loss"] == pytest.approx(explicit["test/loss"], rel=1e-5)


def test_tensorboard_events_contain_the_metrics(digits_data, backbone, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ImageClassifier(backbone, num_classes=10)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        logger=[LoggerConfig("tensorboard", {"save_dir": str(tmp_path / "logs")})],
        limit_train_batches=4,
        limit_val_batches=2,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=digits_data)
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/loss", "val/accuracy"} <= tags
    assert len(events.Scalars("val/accuracy")) == 2
    assert all(math.isfinite(e.value) for e in events.Scalars("train/loss"))


def test_wandb_logger_runs_offline(digits_data, backbone, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=[LoggerConfig("wandb", {"save_dir": str(tmp_path), "project": "autotimm-test"})],
    )
    trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    import wandb

    wandb.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_user_callbacks_work(digits_data, backbone, tmp_path):
    stopper = EarlyStopping(monitor="val/loss", patience=0, mode="min", min_delta=10.0)  # stops after one epoch
    trainer = cpu_trainer(tmp_path, max_epochs=5, callbacks=[stopper], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    assert trainer.current_epoch < 5 and stopper.stopped_epoch > 0


def test_fast_dev_run_skips_tuning(digits_data, backbone, tmp_path):
    trainer = cpu_trainer(tmp_path, fast_dev_run=True, tuner_config=TunerConfig(auto_lr=True, auto_batch_size=True))
    model = ImageClassifier(backbone, num_classes=10, lr=1e-3)
    trainer.fit(model, datamodule=digits_data)
    assert trainer.tuning_results == {} and model._lr == 1e-3 and trainer.global_step == 1


def test_second_run_keeps_the_first_runs_files(digits_data, backbone, tmp_path):
    for _ in range(2):
        trainer = cpu_trainer(
            tmp_path, max_epochs=1, checkpoint_monitor="val/accuracy", limit_train_batches=2, limit_val_batches=1
        )
        trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_missing_resume_checkpoint_is_named(digits_data, backbone, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        cpu_trainer(tmp_path).fit(
            ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path=tmp_path / "nothing.ckpt"
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_epoch": 3}, TypeError, "max_epochs"),
        ({"checkpoint_mode": "maximum"}, ValueError, "maximum"),
        ({"accumulate_grad_batches": 0}, ValueError, "accumulate_grad_batches"),
        ({"gradient_clip_val": -1.0}, ValueError, "-1.0"),
        ({"tuner_config": {"auto_lr": True}}, TypeError, "TunerConfig"),
        ({"checkpoint_monitor": "val/loss", "enable_checkpointing": False}, ValueError, "enable_checkpointing"),
        ({"logger": "tensorboard"}, TypeError, "logger"),
        ({"max_epochs": "10"}, TypeError, "max_epochs"),
        ({"max_epochs": 2.5}, TypeError, "max_epochs"),
        ({"callbacks": ["early_stopping"]}, TypeError, "early_stopping"),
        ({"val_check_interval": 0}, ValueError, "val_check_interval"),
        ({"fast_dev_run": "yes"}, TypeError, "fast_dev_run"),
        ({"default_root_dir": 5}, TypeError, "default_root_dir"),
        ({"enable_checkpointing": "no"}, TypeError, "enable_checkpointing"),
        ({"gradient_clip_val": "1"}, TypeError, "gradient_clip_val"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "7"}, TypeError, "seed"),
    ],
)
def test_bad_trainer_arguments_are_named(kwargs, error, match, tmp_path):
    with pytest.raises(error, match=match):
        cpu_trainer(tmp_path, **kwargs)


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_gradient_clipping_is_applied(digits_data, backbone, tmp_path, precision):
    model = ImageClassifier(backbone, num_classes=10, lr=1e-3)
    norms = []

    from pytorch_lightning import Callback

    class ClipCheck(Callback):
        def on_before_zero_grad(self, trainer, pl_module, optimizer):
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms.append(torch.nn.utils.get_total_norm(grads).item())

    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        gradient_clip_val=0.01,
        precision=precision,
        callbacks=[ClipCheck()],
        limit_train_batches=3,
        limit_val_batches=0,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=digits_data)
    assert norms and max(norms) <= 0.01 + 1e-6
    # Full precision clips the fused optimizer's gradients; mixed precision unscales inside a fused
    # step, after clipping, so it gets the per-tensor implementation.
    assert bool(trainer.optimizers[0].defaults["fused"]) is (precision == "32")


def test_last_checkpoint_follows_every_epoch(digits_data, backbone, tmp_path):
    # A frozen backbone (BatchNorm statistics too) and a negligible learning rate: val/accuracy
    # never improves after the first epoch, so only the first epoch is "best".
    model = ImageClassifier(backbone, num_classes=10, lr=1e-12, freeze_backbone=True)
    trainer = cpu_trainer(
        tmp_path, max_epochs=3, checkpoint_monitor="val/accuracy", limit_train_batches=2, limit_val_batches=2
    )
    trainer.fit(model, datamodule=digits_data)
    assert torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)["epoch"] == 0
    last = torch.load(trainer.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 6


def test_default_run_saves_last_checkpoint(digits_data, backbone, tmp_path):
    trainer = cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    assert torch.load(trainer.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_loss_monitored_for_its_maximum_warns(tmp_path):
    with pytest.warns(UserWarning, match="checkpoint_mode='min'"):
        cpu_trainer(tmp_path, checkpoint_monitor="val/loss")


def _seeded_run(root, backbone, digits_root, seed, noise):
    torch.manual_seed(0)  # the same initial weights for every run
    model = ImageClassifier(backbone, num_classes=10, head_dropout=0.3)
    torch.manual_seed(noise)  # then a different global RNG state in each run
    random.seed(noise)
    np.random.seed(noise)
    # Random augmentation in two worker processes: their seeds must repeat too.
    data = ImageDataModule(digits_root, image_size=32, batch_size=32, num_workers=2, augmentation_preset="default")
    trainer = cpu_trainer(root, max_epochs=1, seed=seed, limit_train_batches=4, limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    return model.state_dict(), trainer.callback_metrics["val/loss"].item()


def test_seed_makes_runs_repeat(digits_root, backbone, tmp_path):
    weights_a, loss_a = _seeded_run(tmp_path / "a", backbone, digits_root, seed=7, noise=1)
    weights_b, loss_b = _seeded_run(tmp_path / "b", backbone, digits_root, seed=7, noise=2)
    weights_c, _ = _seeded_run(tmp_path / "c", backbone, digits_root, seed=8, noise=1)
    assert loss_a == loss_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


class _BatchCounter(Callback):
    """Counts the training batches one `fit` runs."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args: object) -> None:
        self.batches += 1


def test_resume_from_last_with_a_logger_continues_the_newest_run(digits_data, backbone, tmp_path):
    # Issue 12, defect 9: each run logged to a new `version_N/checkpoints`, where Lightning looked for
    # `last.ckpt`, found none, warned and trained from scratch. Issue 14: the resumed run goes on in its folder.
    last_paths = []
    for epochs in (1, 2, 3):
        counter = _BatchCounter()
        trainer = cpu_trainer(
            tmp_path,
            max_epochs=epochs,
            limit_train_batches=2,
            limit_val_batches=1,
            logger=[LoggerConfig("csv")],
            callbacks=[counter],
        )
        trainer.fit(
            ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path=None if epochs == 1 else "last"
        )
        if epochs > 1:
            assert trainer.ckpt_path == last_paths[-1]  # the previous run's, the newest last.ckpt
        assert counter.batches == 2 and trainer.global_step == 2 * epochs  # one more epoch, not all again
        last_paths.append(trainer.checkpoint_callback.last_model_path)
    (run,) = (tmp_path / "runs").iterdir()  # one run, resumed twice in its own folder
    assert last_paths == [str(run / "checkpoints" / "last.ckpt")] * 3
    assert len(read_run(run)["resumed_from"]) == 2 and (run / "logs" / "csv" / "metrics.csv").is_file()


def test_resume_from_best_finds_the_previous_runs_best_checkpoint(digits_data, backbone, tmp_path):
    first = cpu_trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, checkpoint_monitor="val/accuracy"
    )
    first.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data)
    second = cpu_trainer(
        tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=[LoggerConfig("csv")]
    )
    second.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path="best")
    assert second.ckpt_path == first.checkpoint_callback.best_model_path and second.run_dir == first.run_dir
    assert second.global_step == 4


@pytest.mark.parametrize("which", ["last", "best"])
def test_resume_with_no_checkpoint_fails_instead_of_starting_from_scratch(digits_data, backbone, tmp_path, which):
    trainer = cpu_trainer(tmp_path, max_epochs=1, logger=[LoggerConfig("csv")])
    # It names where it looked: the run records and, for "last", the logger's version folders.
    looked = re.escape(str(tmp_path / "runs" / "*" / "run.json"))
    if which == "last":
        looked += ".*" + re.escape(str(tmp_path / "lightning_logs" / "*" / "checkpoints"))
    with pytest.raises(FileNotFoundError, match=rf"`ckpt_path='{which}'` found no checkpoint.*{looked}"):
        trainer.fit(ImageClassifier(backbone, num_classes=10), datamodule=digits_data, ckpt_path=which)
    assert trainer.global_step == 0


def test_max_time_adds_a_time_budget_and_lifts_the_epoch_default(tmp_path):
    from autotimm.callbacks import TimeBudget

    timed = AutoTrainer(max_time={"minutes": 10}, default_root_dir=tmp_path, logger=False)
    assert sum(isinstance(cb, TimeBudget) for cb in timed.callbacks) == 1
    assert timed.max_epochs is None  # no cap: the budget plans the epochs
    capped = AutoTrainer(max_time="00:00:10:00", max_epochs=30, default_root_dir=tmp_path)
    assert capped.max_epochs == 30 and any(isinstance(cb, TimeBudget) for cb in capped.callbacks)
    untimed = AutoTrainer(default_root_dir=tmp_path)
    assert untimed.max_epochs == 10 and not any(isinstance(cb, TimeBudget) for cb in untimed.callbacks)
