"""`AutoTrainer(channels_last=..., compile=...)`: the model runs in the asked-for form, trains, and its
checkpoints stay ordinary."""

from __future__ import annotations

import pytest
import timm
import torch

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, read_run
from autotimm._compat import compiled_in_place
from autotimm.callbacks.fast_path import is_convolutional
from helpers import cpu_trainer


def _conv_weights(model: ImageClassifier) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", True),
        ("efficientnet_b0", True),
        ("convnext_atto", True),  # its pointwise layers are 1x1 convolutions
        ("convnext_tiny", False),  # its pointwise layers are nn.Linear
        ("vit_tiny_patch16_224", False),
    ],
)
def test_convolutional_backbones_are_told_apart_from_transformers(name, expected):
    assert is_convolutional(timm.create_model(name, pretrained=False)) is expected


def test_channels_last_trains_and_its_checkpoint_loads_into_a_plain_model(digits_data, backbone, tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone, num_classes=10, lr=3e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=2, channels_last=True, limit_train_batches=10, limit_val_batches=2)
    trainer.fit(model, datamodule=digits_data)
    weights = _conv_weights(model)
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    epochs = read_run(trainer.run_dir)["epochs"]
    first, last = epochs[0]["train/loss_epoch"], epochs[-1]["train/loss_epoch"]
    assert last < first

    restored = ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path).eval()
    assert all(w.is_contiguous() for w in _conv_weights(restored))  # an ordinary model again
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), restored(x), atol=1e-4, rtol=1e-4)


def test_by_default_a_cpu_run_keeps_the_usual_memory_format(digits_data, backbone, tmp_path):
    model = ImageClassifier(backbone, num_classes=10)
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(model, datamodule=digits_data)
    assert all(w.is_contiguous() for w in _conv_weights(model))


def test_compiled_model_trains_matches_eager_and_saves_ordinary_checkpoints(digits_data, backbone, tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone, num_classes=10, lr=3e-3)
    # aot_eager runs the whole torch.compile capture (dynamo graphs, AOT autograd) without
    # inductor's C++ code generation, which takes minutes on a small CPU; benchmarks/ runs inductor.
    options = {"backend": "aot_eager"}
    trainer = cpu_trainer(tmp_path, max_epochs=2, compile=options, limit_train_batches=6, limit_val_batches=2)
    trainer.fit(model, datamodule=digits_data)
    assert compiled_in_place(model)
    epochs = read_run(trainer.run_dir)["epochs"]
    first, last = epochs[0]["train/loss_epoch"], epochs[-1]["train/loss_epoch"]
    assert last < first

    checkpoint = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    eager = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=10)
    eager.load_state_dict(checkpoint["state_dict"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), eager.eval()(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("yes", TypeError, "Expected `compile` to be True, False or a dict"),
        ({"mdoe": "default"}, ValueError, "Did you mean 'mode'"),
        ({"mode": "fastest"}, ValueError, "max-autotune.*got 'fastest'"),
    ],
)
def test_bad_compile_options_are_refused_when_the_trainer_is_built(value, error, match):
    with pytest.raises(error, match=match):
        AutoTrainer(compile=value)


def test_bad_channels_last_is_refused():
    with pytest.raises(TypeError, match="channels_last"):
        AutoTrainer(channels_last="auto")
