"""Export to ONNX and TorchScript: the written files load, run and match the PyTorch model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from autotimm import BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.data import create_eval_transform
from autotimm.export import METADATA_FILE, ExportCheckError, export_onnx, export_torchscript
from helpers import cpu_trainer

onnx = pytest.importorskip("onnx", reason="ONNX export needs the `export` extra")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the `export` extra")

# TorchScript is deprecated in torch, which warns at each trace, script, save and load; these tests use it on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")

TINY = BackboneConfig("test_resnet", pretrained=False)
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(scope="module")
def images_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 32 px noise images: 8 per class in `train/`, 2 in `val/`."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 2)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def _data(root: Path) -> ImageDataModule:
    return ImageDataModule(root, image_size=32, batch_size=8, num_workers=0, augmentation_preset="none")


@pytest.fixture(scope="module")
def trained(images_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageClassifier, ImageDataModule]:
    """A classifier after a short real fit at 32 px (still attached to its trainer and data)."""
    data = _data(images_root)
    model = ImageClassifier(TINY, num_classes=len(CLASSES), lr=3e-3)
    cpu_trainer(tmp_path_factory.mktemp("fit"), max_epochs=1).fit(model, datamodule=data)
    return model, data


def _images(batch: int, size: int = 32, seed: int = 7) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_onnx(session: ort.InferenceSession, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_onnx_export_after_fit_matches_model_and_carries_metadata(trained, tmp_path):
    model, data = trained
    model.train()
    path = model.to_onnx(tmp_path / "model.onnx")  # no input sample: the data module's 32 px
    assert path == tmp_path / "model.onnx" and model.training  # the model's mode is restored
    onnx.checker.check_model(str(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no external data

    session = _session(path)
    assert session.get_inputs()[0].shape == ["batch", 3, 32, 32]
    for batch in (1, 5):  # fresh inputs, batch sizes other than the example's
        x = _images(batch, seed=batch)
        torch.testing.assert_close(_run_onnx(session, x), _logits(model, x), atol=1e-4, rtol=1e-3)

    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["class_names"] == data.class_names == CLASSES
    assert meta["mean"] == list(data.data_config["mean"]) and meta["std"] == list(data.data_config["std"])
    assert meta["input_size"] == [3, 32, 32] and meta["num_classes"] == 3
    assert meta["output"] == "logits" and meta["activation"] == "softmax" and meta["backbone"] == "test_resnet"


@pytest.mark.parametrize("method", ["trace", "script"])
def test_torchscript_export_after_fit_matches_model(trained, tmp_path, method):
    model, data = trained
    returned = model.to_torchscript(tmp_path / "model.pt", method=method)
    extra = {METADATA_FILE: ""}
    loaded = torch.jit.load(tmp_path / "model.pt", _extra_files=extra)
    x = _images(5)
    expected = _logits(model, x)
    torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(returned(x), expected, atol=1e-5, rtol=1e-4)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["class_names"] == data.class_names and meta["input_size"] == [3, 32, 32]
    assert meta["mean"] == list(data.data_config["mean"])


def test_frozen_channels_last_model_exports(images_root, tmp_path):
    model = ImageClassifier(TINY, num_classes=3, freeze_backbone=True, lr=1e-2).to(memory_format=torch.channels_last)
    cpu_trainer(tmp_path / "fit", max_epochs=1, limit_val_batches=0).fit(model, datamodule=_data(images_root))
    model.train()
    model.backbone.eval()  # as during a frozen epoch: the export restores each submodule's own mode
    path = export_onnx(model, tmp_path / "frozen.onnx")
    assert model.training and not model.backbone.training
    conv = next(p for p in model.backbone.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.requires_grad
    x = _images(4).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_run_onnx(_session(path), x.contiguous()), _logits(model, x), atol=1e-4, rtol=1e-3)


def test_vit_backbone_exports_to_onnx(tmp_path):
    vit = BackboneConfig("vit_tiny_patch16_224", pretrained=False, kwargs={"img_size": 32, "depth": 2})
    model = ImageClassifier(vit, num_classes=4)
    path = tmp_path / "vit.onnx"
    # No size given: the model's data config holds the 32 px the ViT was built for (not timm's 224).
    model.to_onnx(path, dynamic_batch=False, class_names=["a", "b", "c", "d"])
    session = _session(path)
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["input_size"] == [3, 32, 32]
    x = _images(1)
    torch.testing.assert_close(_run_onnx(session, x), _logits(model, x), atol=1e-4, rtol=1e-3)
    session = _session(path)
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    x = _images(1, seed=3)
    torch.testing.assert_close(_run_onnx(session, x), _logits(model, x), atol=1e-4, rtol=1e-3)


def test_a_backbone_with_a_pre_logits_head_exports_to_onnx(tmp_path):
    # MobileNetV3's pooled features go through its `conv_head` (576 -> 1024 wide) before autotimm's head.
    model = ImageClassifier(BackboneConfig("mobilenetv3_small_100", pretrained=False), num_classes=3)
    path = model.to_onnx(tmp_path / "mobilenet.onnx", input_sample=_images(1, size=64), class_names=CLASSES)
    x = _images(2, size=64, seed=3)
    torch.testing.assert_close(_run_onnx(_session(path), x), _logits(model, x), atol=1e-4, rtol=1e-3)


def test_bad_arguments_raise_before_writing(tmp_path):
    model = ImageClassifier(TINY, num_classes=3)
    path = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"`image_size`.*got 0"):
        export_onnx(model, path, image_size=0)
    with pytest.raises(ValueError, match=r"`image_size`.*\(32, -1\)"):
        export_torchscript(model, path, image_size=(32, -1))
    with pytest.raises(ValueError, match=r"`method`.*\['trace', 'script'\].*'compile'"):
        model.to_torchscript(path, method="compile")
    with pytest.raises(TypeError, match=r"`dynamic_batch`.*'yes'"):
        model.to_onnx(path, dynamic_batch="yes")
    with pytest.raises(ValueError, match=r"`opset_version`.*99"):
        model.to_onnx(path, opset_version=99)
    with pytest.raises(ValueError, match=r"`class_names`.*\(3\).*\['cat'\]"):
        model.to_onnx(path, image_size=32, class_names=["cat"])
    with pytest.raises(ValueError, match=r"`input_sample`.*\(3, 32, 32\)"):
        model.to_onnx(path, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="directory"):
        model.to_onnx(tmp_path)
    assert list(tmp_path.iterdir()) == []


class _Noisy(nn.Module):
    """Adds fresh noise at every call: no export of it can match a second run."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3))) + torch.rand(x.shape[0], 2)


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_failed_check_keeps_the_existing_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"the previous export")
    export = export_onnx if suffix == ".onnx" else export_torchscript
    with pytest.raises(ExportCheckError, match=r"max abs[\s\S]*was not written"):
        export(_Noisy(), path, image_size=32)
    assert path.read_bytes() == b"the previous export"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_missing_onnx_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install onnx onnxscript onnxruntime"):
        export_onnx(ImageClassifier(TINY, num_classes=3), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_model_loaded_from_a_checkpoint_exports_at_its_training_size_with_its_class_names(images_root, tmp_path):
    data = ImageDataModule(images_root, image_size=40, batch_size=8, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(TINY, num_classes=len(CLASSES), lr=3e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=data)
    assert model.data_config["input_size"] != (3, 40, 40)  # so the size below can only come from the checkpoint

    loaded = ImageClassifier.load_from_checkpoint(trainer.run_dir / "checkpoints" / "last.ckpt")
    assert loaded.class_names == CLASSES and loaded.trained_data_config["input_size"] == (3, 40, 40)
    image = Image.open(next((images_root / "val" / "dog").iterdir()))
    assert create_eval_transform(loaded.trained_data_config)(image).shape == (3, 40, 40)
    session = _session(loaded.to_onnx(tmp_path / "model.onnx"))  # no image_size, no class_names
    assert session.get_inputs()[0].shape == ["batch", 3, 40, 40]
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["class_names"] == CLASSES and meta["input_size"] == [3, 40, 40]
