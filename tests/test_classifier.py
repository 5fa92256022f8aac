"""ImageClassifier trained for real on small data."""

from __future__ import annotations

import csv
import warnings

import pytest
import pytorch_lightning as pl
import torch

from autotimm import (
    AutoTrainer,
    BackboneConfig,
    ImageClassifier,
    ImageDataModule,
    LoggerConfig,
    MetricConfig,
    read_run,
)
from helpers import cpu_trainer


def _csv_metrics(trainer) -> list[dict[str, str]]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return list(csv.DictReader(f))


def _column(rows, key):
    return [float(r[key]) for r in rows if r.get(key)]


def test_training_lowers_loss_and_beats_chance(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, lr=3e-3, scheduler="cosine")
    trainer = cpu_trainer(tmp_path, max_epochs=3, logger=[LoggerConfig("csv")])
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
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=5, limit_val_batches=2)
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
    trainer2 = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1)
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
        image.point(lambda v, scale=scale: int(v * scale)).save(path)
    data = ImageDataModule(root, image_size=32, batch_size=8, num_workers=0)
    metrics = [
        MetricConfig("auroc", metric_class="AUROC", stages=["val"]),
        MetricConfig("accuracy", metric_class="Accuracy", stages=["val"]),
    ]
    model = ImageClassifier(backbone, num_classes=1, multi_label=True, metrics=metrics, lr=3e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=4, enable_checkpointing=False)
    trainer.fit(model, datamodule=data)
    assert trainer.callback_metrics["val/auroc"] > 0.9
    probs = torch.cat(trainer.predict(model, dataloaders=data.val_dataloader()))
    assert probs.shape[1] == 1 and ((probs >= 0) & (probs <= 1)).all()


def test_load_from_checkpoint_does_not_download(digits_data, backbone, tmp_path, monkeypatch):
    model = ImageClassifier(backbone, num_classes=10)
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
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
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match="num_classes=7"):
        trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 0


def test_num_classes_left_out_is_taken_from_the_data_and_saved(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone)
    with pytest.raises(RuntimeError, match="without `num_classes`"):
        model(torch.randn(1, 3, 32, 32))  # no head before a data module says how many classes
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, logger=[LoggerConfig("csv")])
    trainer.fit(model, datamodule=digits_data)
    assert model.num_classes == digits_data.num_classes == 10 and trainer.global_step == 2
    assert "val/accuracy" in trainer.callback_metrics
    restored = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path)
    assert restored.hparams["num_classes"] == 10
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(restored.eval()(x), model.eval()(x))
    # With no data module to ask, the error says what to give.
    with pytest.raises(ValueError, match="without `num_classes`.*Give `num_classes=...`"):
        cpu_trainer(tmp_path).predict(ImageClassifier(backbone), dataloaders=digits_data.val_dataloader())


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
        # wrong types are refused, not read by their truth value or compared raw
        ({"freeze_backbone": "no"}, TypeError, "Expected `freeze_backbone` to be True or False, but got str 'no'"),
        ({"multi_label": "no"}, TypeError, "Expected `multi_label` to be True or False, but got str 'no'"),
        ({"multi_label": 1}, TypeError, "`multi_label`"),
        (
            {"label_smoothing": "0.1"},
            TypeError,
            "Expected `label_smoothing` to be a finite number in \\[0, 1\\), but got str '0.1'",
        ),
        (
            {"head_dropout": None},
            TypeError,
            "Expected `head_dropout` to be a finite number in \\[0, 1\\), but got NoneType None",
        ),
        ({"num_classes": "10"}, TypeError, "`num_classes`.*'10'"),
        ({"num_classes": 2.0}, TypeError, "`num_classes`.*2.0"),
        ({"lr": float("inf")}, ValueError, "Expected `lr` to be a finite number > 0, but got inf"),
        ({"lr": float("nan")}, ValueError, "`lr`.*nan"),
        ({"lr": "1e-3"}, TypeError, "`lr`.*'1e-3'"),
        ({"lr": True}, TypeError, "`lr`.*True"),
        ({"weight_decay": float("inf")}, ValueError, "Expected `weight_decay` to be a finite number >= 0, but got inf"),
        ({"optimizer_kwargs": "x"}, TypeError, "Expected `optimizer_kwargs` to be a dict or None, but got str 'x'"),
        (
            {"scheduler": "cosine", "scheduler_kwargs": "x"},
            TypeError,
            "Expected `scheduler_kwargs` to be a dict or None, but got str 'x'",
        ),
        ({"metrics": "accuracy"}, TypeError, "Expected `metrics` to be a list of MetricConfig.*but got str 'accuracy'"),
        ({"metrics": [5]}, TypeError, "`metrics`.*MetricConfig.*5"),
        ({"metrics": [{"nme": "acc"}]}, ValueError, "'nme'.*'name'"),
        ({"logging_config": {"log_learning_rate": "no"}}, TypeError, "`log_learning_rate`.*'no'"),
        ({"logging_config": {"log_lr": True}}, ValueError, "'log_lr'.*'log_learning_rate'"),
        (
            {"backbone": {"model_name": "test_resnet", "pretrained": False, "dropout": 0.1}},
            ValueError,
            "'dropout'.*'drop_rate'",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match, backbone):
    arguments = {"backbone": backbone, "num_classes": 10, **kwargs}
    with pytest.raises(error, match=match):
        ImageClassifier(**arguments)


def test_lr_setter_validates(backbone):
    model = ImageClassifier(backbone, num_classes=3)
    model.lr = 0.5
    assert model.lr == 0.5
    with pytest.raises(ValueError, match="`lr`"):
        model.lr = 0.0
    with pytest.raises(TypeError, match="`lr`"):
        model.lr = "fast"


def test_default_construction_is_silent(backbone):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageClassifier(backbone, num_classes=3)
        AutoTrainer()


def test_binary_model_on_ten_class_data_fails_before_training(digits_data, backbone, tmp_path):
    # Without the check it would train (no metric to trip over) on a negative BCE loss.
    model = ImageClassifier(backbone, num_classes=1, multi_label=True, metrics=[])
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match=r"binary classifier.*2 classes.*10 classes"):
        trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 0


def test_multilabel_class_count_is_checked(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=4, multi_label=True)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    with pytest.raises(ValueError, match="num_classes=4"):
        trainer.fit(model, datamodule=digits_data)


def test_checkpoint_of_local_weights_stores_no_path_and_loads_without_the_file(digits_data, tmp_path):
    from safetensors.torch import save_file

    from autotimm.backbones import create_backbone

    weights = tmp_path / "user_name" / "weights.safetensors"
    weights.parent.mkdir()
    save_file(create_backbone(BackboneConfig("test_resnet", pretrained=False)).state_dict(), str(weights))
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=str(weights)), num_classes=10)
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=digits_data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    weights.unlink()  # the weights now live in the checkpoint only

    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hparams["backbone"]["pretrained"] == "weights.safetensors"
    assert str(tmp_path) not in repr(hparams) and "user_name" not in repr(hparams)
    restored = ImageClassifier.load_from_checkpoint(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(restored.eval()(x), model.eval()(x))
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):  # outside a checkpoint load, still checked
        ImageClassifier(hparams["backbone"], num_classes=10)


class _LrRecorder(pl.Callback):
    """The lr of every optimizer step, and the lr left when training ends."""

    def __init__(self) -> None:
        self.step_lrs: list[float] = []
        self.final_lr: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.step_lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module) -> None:
        self.final_lr = trainer.optimizers[0].param_groups[0]["lr"]


@pytest.mark.parametrize("limit_train_batches, accumulate", [(3, 1), (5, 2)])  # 3 optimizer steps per epoch
@pytest.mark.parametrize("scheduler", ["onecycle", "cosine_warmup"])
def test_step_schedulers_span_the_run_that_max_steps_cuts(
    digits_data, backbone, tmp_path, scheduler, limit_train_batches, accumulate
):
    lr = 1e-3
    kwargs = {"warmup_steps": 2} if scheduler == "cosine_warmup" else {}
    model = ImageClassifier(backbone, num_classes=10, lr=lr, scheduler=scheduler, scheduler_kwargs=kwargs)
    recorder = _LrRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=10,
        max_steps=7,
        limit_train_batches=limit_train_batches,
        accumulate_grad_batches=accumulate,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 7 and len(recorder.step_lrs) == 7
    if scheduler == "onecycle":  # the last step runs at the schedule's lowest lr, lr / 25 / 1e4
        assert recorder.step_lrs[-1] == pytest.approx(lr / 25 / 1e4)
        assert max(recorder.step_lrs) == pytest.approx(lr, rel=0.05)
    else:  # warmup, then a cosine that reaches eta_min=0 when the run ends
        assert recorder.step_lrs[:2] == pytest.approx([lr / 2, lr])
        assert 0 < recorder.step_lrs[-1] < 0.1 * lr
        assert recorder.final_lr == pytest.approx(0.0, abs=1e-12)


def test_onecycle_total_steps_given_by_the_user_wins(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, scheduler="onecycle", scheduler_kwargs={"total_steps": 20})
    trainer = cpu_trainer(
        tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0, enable_checkpointing=False
    )
    trainer.fit(model, datamodule=digits_data)
    assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 20


def test_scheduler_in_an_open_ended_run_is_refused(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, scheduler="cosine")
    trainer = cpu_trainer(tmp_path, max_epochs=-1)
    with pytest.raises(ValueError, match=r"'cosineannealinglr'.*`max_epochs` or `max_steps`"):
        trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 0


class _GradNormRecorder(pl.Callback):
    """The total gradient norm before every optimizer step, keyed by the step that logs it."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms[trainer.global_step] = torch.nn.utils.get_total_norm(grads).item()


def test_logged_grad_norm_is_the_norm_of_the_logged_step(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, logging_config={"log_gradient_norm": True})
    recorder = _GradNormRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=12,
        limit_val_batches=0,
        log_every_n_steps=5,
        logger=[LoggerConfig("csv")],
        enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=digits_data)
    logged = {int(r["step"]): float(r["train/grad_norm"]) for r in _csv_metrics(trainer) if r.get("train/grad_norm")}
    assert sorted(logged) == [4, 9]
    for step, value in logged.items():
        assert value == pytest.approx(recorder.norms[step], rel=1e-5), f"step {step}"


class _LossRecorder(pl.Callback):
    """The training loss of every batch, by epoch, as `training_step` returned it."""

    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}
        self.steps: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = float(outputs["loss"])
        self.losses.setdefault(trainer.current_epoch, []).append(loss)
        self.steps[trainer.global_step - 1] = loss


def test_step_loss_is_logged_on_written_steps_and_epoch_ends(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10)
    recorder = _LossRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=7,  # 7 batches of 32 images each epoch
        limit_val_batches=1,
        log_every_n_steps=5,
        logger=[LoggerConfig("csv")],
        enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=digits_data)
    logged = {int(r["step"]): float(r["train/loss"]) for r in _csv_metrics(trainer) if r.get("train/loss")}
    assert sorted(logged) == [4, 9]
    for step, value in logged.items():
        assert value == pytest.approx(recorder.steps[step], rel=1e-5), f"step {step}"
    # Each epoch's row of the run record has the epoch's last step loss and the epoch mean.
    epochs = read_run(trainer.run_dir)["epochs"]
    assert len(epochs) == 2
    for row in epochs:
        losses = recorder.losses[row["epoch"]]
        assert len(losses) == 7
        assert row["train/loss"] == pytest.approx(losses[-1], rel=1e-5)
        assert row["train/loss_epoch"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


@pytest.mark.parametrize("progress_bar", [False, True])
def test_progress_bar_values_only_with_a_progress_bar(digits_data, backbone, tmp_path, progress_bar):
    model = ImageClassifier(backbone, num_classes=10)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        enable_progress_bar=progress_bar,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=digits_data)
    # Progress-bar values cost a `.item()` (a device sync) each step: none without a bar.
    expected = {"train/loss", "val/loss", "val/accuracy"} if progress_bar else set()
    assert set(trainer.progress_bar_metrics) == expected


def test_checkpoint_of_an_unfrozen_second_phase_reloads_unfrozen(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10, freeze_backbone=True)
    limits = {"limit_train_batches": 2, "limit_val_batches": 1, "enable_progress_bar": False}
    AutoTrainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path / "one", **limits).fit(
        model, datamodule=digits_data
    )
    model.unfreeze_backbone()
    model._lr = 1e-4
    trainer = AutoTrainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path / "two", **limits)
    trainer.fit(model, datamodule=digits_data)
    restored = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.best_model_path)
    assert not restored.backbone_frozen and restored._lr == pytest.approx(1e-4)


def test_a_transformer_built_for_a_small_size_is_fed_images_of_that_size(make_image_folder, tmp_path):
    # timm reports the pretrained config's 224 px for any ViT; the model says what it was built for.
    root = make_image_folder(classes={"a": 4, "b": 4}, splits=("train", "val"), size=80)
    data = ImageDataModule(root, batch_size=4, num_workers=0)  # no image_size: read from the model
    vit = BackboneConfig("vit_tiny_patch16_224", pretrained=False, kwargs={"img_size": 64, "depth": 1})
    model = ImageClassifier(vit, num_classes=2)
    trainer = cpu_trainer(tmp_path, max_epochs=1, plots=False)
    trainer.fit(model, datamodule=data)
    assert model.data_config["input_size"] == data.data_config["input_size"] == (3, 64, 64)
    assert trainer.global_step == 2
