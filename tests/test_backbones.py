"""Backbone configuration, creation, local weights and offline errors."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from autotimm import BackboneConfig, PretrainedWeightsError, list_backbones
from autotimm.backbones import create_backbone, skip_pretrained_download


def test_unknown_backbone_suggests_closest():
    with pytest.raises(ValueError, match="resnet181") as info:
        BackboneConfig("resnet181", pretrained=False)
    assert "'resnet18'" in str(info.value)


def test_tagged_name_is_accepted():
    model = create_backbone(BackboneConfig("resnet18.a1_in1k", pretrained=False), num_classes=0)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 512)


def test_local_weights_file_is_loaded(tmp_path):
    source = create_backbone(BackboneConfig("resnet18", pretrained=False))
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_backbone(BackboneConfig("resnet18", pretrained=str(path)), num_classes=0)
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    assert torch.equal(loaded.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        BackboneConfig("resnet18", pretrained=str(missing))


def test_unavailable_pretrained_weights_fail_fast_with_advice(tmp_path, monkeypatch):
    # An empty cache and offline mode: exactly a fresh machine without network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone(BackboneConfig("resnet18", pretrained=True))
    assert time.monotonic() - start < 20
    message = str(info.value)
    assert "pretrained=False" in message and "resnet18" in message and "safetensors" in message


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ({"drop_rate": 1.5}, ValueError, "Expected `drop_rate` to be a finite number in \\[0, 1\\), but got 1.5"),
        (
            {"drop_rate": "0.1"},
            TypeError,
            "Expected `drop_rate` to be a finite number in \\[0, 1\\), but got str '0.1'",
        ),
        ({"drop_rate": float("nan")}, ValueError, "`drop_rate`.*nan"),
        ({"drop_rate": None}, TypeError, "`drop_rate`.*None"),
        ({"drop_path_rate": -0.1}, ValueError, "`drop_path_rate`.*-0.1"),
        ({"drop_path_rate": "0.1"}, TypeError, "`drop_path_rate`.*'0.1'"),
        ({"pretrained": 3}, TypeError, "`pretrained`.*3"),
        ({"kwargs": 5}, TypeError, "Expected `kwargs` to be a dict, but got int 5"),
        ({"kwargs": "in_chans=1"}, TypeError, "`kwargs`.*'in_chans=1'"),
        ({"kwargs": {1: 2}}, TypeError, "keys of `kwargs`"),
        ({"kwargs": {"pretrained": True}}, ValueError, "`pretrained` cannot be given in `kwargs`"),
        ({"kwargs": {"drop_rate": 0.2}}, ValueError, "`drop_rate` cannot be given in `kwargs`"),
        ({"model_name": ""}, ValueError, "`model_name`.*''"),
        ({"model_name": None}, TypeError, "`model_name`.*None"),
    ],
)
def test_bad_config_values_are_named(bad, error, match):
    with pytest.raises(error, match=match):
        BackboneConfig(**{"model_name": "resnet18", "pretrained": False, **bad})


def test_coerce_names_an_unknown_key():
    with pytest.raises(ValueError, match="'drop_out'.*'drop_rate'"):
        BackboneConfig.coerce({"model_name": "resnet18", "pretrained": False, "drop_out": 0.1})


def test_weights_file_is_not_needed_while_rebuilding_from_a_checkpoint(tmp_path):
    missing = str(tmp_path / "gone.safetensors")
    with skip_pretrained_download():
        cfg = BackboneConfig("resnet18", pretrained=missing)
        model = create_backbone(cfg, num_classes=0)  # random weights: the caller loads its own
    assert model.num_features == 512
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):  # checked again outside the block
        BackboneConfig("resnet18", pretrained=missing)


def test_hparams_form_keeps_only_the_weights_file_name(tmp_path):
    path = tmp_path / "user_name" / "weights.safetensors"
    path.parent.mkdir()
    save_file(create_backbone(BackboneConfig("test_resnet", pretrained=False)).state_dict(), str(path))
    cfg = BackboneConfig("test_resnet", pretrained=path, drop_rate=0.1)
    assert cfg.to_hparams() == {**cfg.to_dict(), "pretrained": "weights.safetensors"}
    assert cfg.to_dict()["pretrained"] == str(path)  # the full form still round-trips
    assert BackboneConfig.coerce(cfg.to_dict()) == cfg
    assert BackboneConfig("test_resnet", pretrained=False).to_hparams()["pretrained"] is False


def test_list_backbones_filters():
    names = list_backbones("resnet1*")
    assert "resnet18" in names and all(n.startswith("resnet1") for n in names)
    tagged = list_backbones("resnet18*", pretrained=True)
    assert any("." in n for n in tagged)
