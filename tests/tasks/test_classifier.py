"""ImageClassifier trained for real on small data."""

from __future__ import annotations

import csv
import warnings

import pytest
import pytorch_lightning as pl
import timm
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
    model = ImageClassifier(backbone, num_classes=10, freeze_backbone=True, lr=1e-2, scheduler=None)
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
        ({"logging_config": {"log_lr": True}}, ValueError, "'log_learning_rate'.*but got 'log_lr'"),
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


@pytest.mark.slow
def test_default_schedule_warms_up_then_ends_at_zero_on_the_real_last_step(digits_data, backbone, tmp_path, one_thread):
    model = ImageClassifier(backbone, num_classes=10, lr=1e-2)  # the default scheduler, "cosine_warmup"
    recorder = _LrRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=4,
        limit_train_batches=5,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=digits_data)
    lrs = recorder.step_lrs
    assert len(lrs) == trainer.global_step == 20  # 4 epochs of 5 steps
    assert lrs[0] == pytest.approx(1e-2 / 1)  # 5% of 20 steps: a one-step warmup at the full lr...
    assert max(lrs) == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # ...then the cosine only falls
    assert 0 < lrs[-1] < 0.01 * 1e-2 and recorder.final_lr == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_scheduler_none_keeps_the_lr_constant(digits_data, backbone, tmp_path, one_thread):
    model = ImageClassifier(backbone, num_classes=10, lr=1e-2, scheduler=None)
    recorder = _LrRecorder()
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=0,
        enable_checkpointing=False,
        callbacks=[recorder],
    )
    trainer.fit(model, datamodule=digits_data)
    assert recorder.step_lrs == [1e-2] * 6 and trainer.lr_scheduler_configs == []


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


# The smallest model (by parameter count, timm 1.0.31) of each timm module, the families that `list_backbones()`
# offers. A module missing here is still tested, with its first model.
_SMALLEST = {
    "beit": "beit_base_patch16_224",
    "byoanet": "halonet_h1",
    "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224",
    "coat": "coat_tiny",
    "convit": "convit_tiny",
    "convmixer": "convmixer_768_32",
    "convnext": "test_convnext",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2",
    "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m",
    "deit": "deit_tiny_patch16_224",
    "densenet": "densenet121",
    "dla": "dla46x_c",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0",
    "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t0",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "gemma4_vit": "gemma4_vit_167m",
    "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_t",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s",
    "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12",
    "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "lcnet_035",
    "mobilenetv5": "mobilenetv5_base",
    "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_parfac_gap",
    "nasnet": "nasnetalarge",
    "nest": "nest_tiny",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_ti_224",
    "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0",
    "qwen3_vit": "qwen3_vit_88m",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002",
    "repghost": "repghostnet_050",
    "repvit": "repvit_m1",
    "res2net": "res2next50",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "vgg": "vgg11",
    "visformer": "visformer_tiny",
    "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224",
    "vitamin": "vitamin_small_224",
    "volo": "volo_d1_224",
    "vovnet": "ese_vovnet19b_slim_dw",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
}
# CNNs whose stems need more than 64 px (and say nothing in their pretrained config).
_MIN_SIZE = {"inception_resnet_v2": 96, "inception_v3": 96, "inception_v4": 96}
# Families whose pooled features are wider than `num_features` (a pre-logits head), and plain ones; all small.
_QUICK = [
    "mobilenetv3_small_100",
    "mobilenetv4_conv_small",
    "ghostnet_050",
    "lcnet_035",
    "hgnetv2_b0",
    "test_resnet",
    "test_convnext",
    "test_vit",
    "test_efficientnet",
    BackboneConfig(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        kwargs={"img_size": 64, "window_size": 4, "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
    ),
]


def _one_step_on_two_images(backbone: str | BackboneConfig) -> None:
    """Build a 3-class classifier, run a training forward and backward on 2 images of the smallest size it takes."""
    if isinstance(backbone, str):
        backbone = BackboneConfig(backbone, pretrained=False)
    model = ImageClassifier(backbone, num_classes=3)
    cfg = model.backbone.pretrained_cfg
    if cfg.get("fixed_input_size") or backbone.kwargs.get("img_size"):
        size = model.data_config["input_size"][1:]
    else:
        smallest = max(_MIN_SIZE.get(backbone.model_name, 64), *(cfg.get("min_input_size") or (0, 0, 0))[1:])
        size = (smallest, smallest)
    torch.manual_seed(0)
    logits = model.train()(torch.randn(2, 3, *size))
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert model.head[1].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("backbone", _QUICK, ids=lambda b: b if isinstance(b, str) else b.model_name)
def test_a_head_after_pooling_is_sized_from_what_the_backbone_returns(backbone):
    # MobileNetV3 & co. widen the pooled features (576 -> 1024): a head sized from `num_features` failed at step one.
    _one_step_on_two_images(backbone)


@pytest.mark.slow
@pytest.mark.parametrize("module", timm.list_modules())
def test_the_smallest_model_of_every_timm_family_trains_one_step(module):
    _one_step_on_two_images(_SMALLEST.get(module) or timm.list_models(module=module)[0])


def test_each_family_representative_belongs_to_its_family():
    wrong = {module: name for module, name in _SMALLEST.items() if name not in timm.list_models(module=module)}
    assert not wrong


def test_mobilenetv3_classifier_fits(make_image_folder, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4, "c": 4}, splits=("train", "val"), size=48)
    data = ImageDataModule(root, image_size=48, batch_size=6, num_workers=0)
    model = ImageClassifier(BackboneConfig("mobilenetv3_small_100", pretrained=False), num_classes=3)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["val/loss"])


def test_a_grayscale_backbone_is_measured_with_one_channel():
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False, kwargs={"in_chans": 1}), num_classes=3)
    assert model.data_config["input_size"][0] == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_an_unpooled_backbone_is_refused_at_construction():
    unpooled = BackboneConfig("test_resnet", pretrained=False, kwargs={"global_pool": ""})
    with pytest.raises(ValueError, match=r"'test_resnet' to return pooled features \[batch, width\].*global_pool"):
        ImageClassifier(unpooled, num_classes=3)
