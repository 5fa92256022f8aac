"""Backbone configuration, creation, local weights and offline errors."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from autotimm import BackboneConfig, PretrainedWeightsError, list_backbones
from autotimm.backbones import create_backbone


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


@pytest.mark.parametrize("bad", [{"drop_rate": 1.5}, {"drop_path_rate": -0.1}, {"pretrained": 3}])
def test_bad_config_values_are_named(bad):
    with pytest.raises((ValueError, TypeError), match=str(list(bad.values())[0])):
        BackboneConfig("resnet18", **{"pretrained": False, **bad})


def test_list_backbones_filters():
    names = list_backbones("resnet1*")
    assert "resnet18" in names and all(n.startswith("resnet1") for n in names)
    tagged = list_backbones("resnet18*", pretrained=True)
    assert any("." in n for n in tagged)
