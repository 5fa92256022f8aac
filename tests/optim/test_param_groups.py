"""Learning rates per parameter group: `backbone_lr_scale`, `layer_decay`, with schedulers and the LR finder."""

from __future__ import annotations

import math
import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.optim import param_groups_layer_decay

from autotimm import BackboneConfig, ImageClassifier, ObjectDetector
from autotimm.optim import backbone_lr_scales, create_scheduler, step_scheduler

LR = 1e-2


def _classifier(model_name: str = "test_resnet", **kwargs) -> ImageClassifier:
    kwargs.setdefault("scheduler", None)  # a bare optimizer: the default schedule needs a trainer's step count
    return ImageClassifier(BackboneConfig(model_name, pretrained=False), num_classes=3, lr=LR, **kwargs)


def _lr_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    return {name: group_of[id(p)]["lr"] for name, p in model.named_parameters()}


def test_layer_decay_lowers_each_resnet_stage_by_the_factor() -> None:
    model = _classifier(layer_decay=0.5)
    lrs = _lr_by_name(model, model.configure_optimizers())
    # test_resnet's group_matcher: the stem, then layer1..layer4; the head sits one layer above layer4.
    depth = {"conv1": 5, "bn1": 5, "layer1": 4, "layer2": 3, "layer3": 2, "layer4": 1}
    for name, lr in lrs.items():
        if name.startswith("head."):
            assert lr == LR, name
            continue
        top = re.match(r"backbone\.(\w+?)[.]", name).group(1)
        assert lr == pytest.approx(LR * 0.5 ** depth[top]), name


@pytest.mark.parametrize("model_name", ["test_resnet", "test_vit"])
def test_layer_decay_matches_timm_on_the_whole_model(model_name: str) -> None:
    # timm's own layer decay over the whole network (backbone and its classifier) gives each
    # backbone parameter the same scale as ours over the backbone with our head.
    whole = timm.create_model(model_name, pretrained=False, num_classes=3)
    expected = {}
    names = {id(p): n for n, p in whole.named_parameters()}
    for group in param_groups_layer_decay(whole, layer_decay=0.7):
        expected.update({names[id(p)]: group["lr_scale"] for p in group["params"]})
    model = _classifier(model_name, layer_decay=0.7, backbone_lr_scale=0.5)
    lrs = _lr_by_name(model, model.configure_optimizers())
    backbone = {name.removeprefix("backbone."): lr for name, lr in lrs.items() if name.startswith("backbone.")}
    assert backbone.keys() <= expected.keys()
    for name, lr in backbone.items():
        assert lr == pytest.approx(LR * 0.5 * expected[name]), name
    assert all(lr == LR for name, lr in lrs.items() if name.startswith("head."))
    assert len(set(backbone.values())) > 3  # the layers really differ


def test_backbone_lr_scale_keeps_the_weight_decay_rule() -> None:
    model = _classifier(backbone_lr_scale=0.1, weight_decay=0.05)
    optimizer = model.configure_optimizers()
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        group = group_of[id(p)]
        assert group["lr"] == pytest.approx(LR * (0.1 if name.startswith("backbone.") else 1.0)), name
        assert group["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05), name
    # The first group keeps the model's `lr`: what `train/lr` logs and the LR finder ramps.
    assert optimizer.param_groups[0]["lr"] == LR
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_the_groups_follow_a_new_lr_such_as_the_lr_finders() -> None:
    model = _classifier(backbone_lr_scale=0.1)
    model.lr = 4e-3  # what the LR finder does with its suggestion
    lrs = _lr_by_name(model, model.configure_optimizers())
    assert (lrs["head.1.weight"], lrs["backbone.conv1.0.weight"]) == (4e-3, pytest.approx(4e-4))


@pytest.mark.parametrize("scheduler", ["cosine_warmup", "onecyclelr", "steplr", "timm_cosine"])
def test_each_group_follows_the_schedule_at_its_own_scale(scheduler: str) -> None:
    model = _classifier(backbone_lr_scale=0.1, layer_decay=0.5)
    optimizer = model.configure_optimizers()
    starts = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch, epochs = 4, 3
    config = create_scheduler(
        scheduler, optimizer, max_epochs=epochs, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs
    )
    heads = []
    for step in range(steps_per_epoch * epochs - 1):
        optimizer.step()
        if config["interval"] == "step" or (step + 1) % steps_per_epoch == 0:
            step_scheduler(config["scheduler"], None, epoch=step // steps_per_epoch)
        lrs = [group["lr"] for group in optimizer.param_groups]
        heads.append(lrs[0])
        for lr, start in zip(lrs, starts, strict=True):
            assert lr / lrs[0] == pytest.approx(start / starts[0]), (step, lrs)
    assert not all(math.isclose(h, starts[0]) for h in heads)  # the schedule moved the learning rate


def test_the_lr_range_test_keeps_the_groups_ratios(digits_data, one_thread) -> None:
    import pytorch_lightning as pl

    from autotimm.tuner import LRRangeTest

    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), backbone_lr_scale=0.1)
    test = LRRangeTest(min_lr=1e-4, max_lr=1e-2, num_training=3)
    trainer = pl.Trainer(
        max_epochs=4, limit_train_batches=1, limit_val_batches=0, callbacks=[test, Spy()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=digits_data)
    assert [lrs[0] for lrs in seen] == pytest.approx(test.lrs)
    assert all(min(lrs) == pytest.approx(0.1 * lrs[0]) for lrs in seen)


def test_bad_backbone_lr_options_name_the_value() -> None:
    with pytest.raises(ValueError, match="backbone_lr_scale"):
        _classifier(backbone_lr_scale=0)
    with pytest.raises(ValueError, match="layer_decay.*1.5"):
        _classifier(layer_decay=1.5)
    with pytest.raises(TypeError, match="layer_decay"):
        _classifier(layer_decay="0.5")
    with pytest.raises(TypeError, match="layer_decay"):  # the detector's features-only backbones have no layers
        ObjectDetector(BackboneConfig("test_resnet", pretrained=False), layer_decay=0.5)


def test_layer_decay_without_a_group_matcher_says_so() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="group_matcher.*Linear has none"):
        backbone_lr_scales(net, net[0], layer_decay=0.5)


def test_the_options_are_saved_and_a_detector_rebuilds_from_its_hparams() -> None:
    model = _classifier(backbone_lr_scale=0.2, layer_decay=0.8)
    assert (model.hparams["backbone_lr_scale"], model.hparams["layer_decay"]) == (0.2, 0.8)
    again = ImageClassifier(**model.hparams)
    assert (again.backbone_lr_scale, again.layer_decay) == (0.2, 0.8)
    detector = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), backbone_lr_scale=0.2)
    assert ObjectDetector(**detector.hparams).backbone_lr_scale == 0.2
