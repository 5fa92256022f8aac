"""`autotimm.load` (checkpoints, run folders, model folders) and `save_pretrained`, on trained models."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import autotimm
from autotimm import ImageClassifier, ObjectDetector
from helpers import training_root

pytestmark = pytest.mark.slow  # the fixtures train a model (once a session)


def _weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_load_a_checkpoint_for_inference(classifier_ckpt: Path):
    model = autotimm.load(classifier_ckpt)
    assert isinstance(model, ImageClassifier) and not model.training
    assert model.device.type == autotimm.tasks.pretrained.best_device().type
    assert model.class_names == ["blue", "green", "red"]
    assert model.eval_data_config["input_size"] == (3, 32, 32)  # the training size, not the backbone's 160
    reference = ImageClassifier.load_from_checkpoint(classifier_ckpt)
    assert _weights_equal(model, reference)


def test_load_never_fetches_pretrained_weights(classifier_ckpt: Path, tmp_path: Path):
    checkpoint = torch.load(classifier_ckpt, weights_only=False)
    checkpoint["hyper_parameters"]["backbone"]["pretrained"] = True  # as if trained from timm's weights
    path = tmp_path / "from_pretrained.ckpt"
    torch.save(checkpoint, path)
    model = autotimm.load(path, device="cpu")  # offline here: a download would fail
    assert _weights_equal(model, autotimm.load(classifier_ckpt, device="cpu"))


def test_load_a_run_folder_takes_its_best_checkpoint(classifier_ckpt: Path, tmp_path: Path):
    run_dir = classifier_ckpt.parents[1]  # `<run>/checkpoints/best.ckpt`; run.json names the checkpoints
    assert (run_dir / "run.json").is_file()
    assert autotimm.tasks.pretrained.run_checkpoint(run_dir) == classifier_ckpt
    assert _weights_equal(autotimm.load(run_dir, device="cpu"), autotimm.load(classifier_ckpt, device="cpu"))
    organised = tmp_path / "run" / "checkpoints"  # the run-folder layout `<run>/checkpoints/best.ckpt`
    organised.mkdir(parents=True)
    shutil.copy(classifier_ckpt, organised / "best.ckpt")
    shutil.copy(classifier_ckpt, organised / "last.ckpt")
    assert autotimm.tasks.pretrained.run_checkpoint(tmp_path / "run") == organised / "best.ckpt"
    (organised / "best.ckpt").unlink()
    assert autotimm.tasks.pretrained.run_checkpoint(tmp_path / "run") == organised / "last.ckpt"


def test_load_a_detector_and_an_old_checkpoint_without_the_task_name(detector_ckpt: Path, tmp_path: Path):
    model = autotimm.load(detector_ckpt, device="cpu")
    assert isinstance(model, ObjectDetector) and model.class_names == ["circle", "square", "triangle"]
    checkpoint = torch.load(detector_ckpt, weights_only=False)
    del checkpoint["autotimm"]["task"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert isinstance(autotimm.load(tmp_path / "old.ckpt", device="cpu"), ObjectDetector)


def test_bad_files_and_folders_are_named(classifier_ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        autotimm.load(tmp_path / "missing.ckpt")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.ckpt"):
        autotimm.load(tmp_path / "notes.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match="bare.ckpt.*not a Lightning checkpoint of an autotimm task"):
        autotimm.load(tmp_path / "bare.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No checkpoint in .*empty"):
        autotimm.load(tmp_path / "empty")
    checkpoint = torch.load(classifier_ckpt, weights_only=False)
    checkpoint["autotimm"]["task"] = "ImageClassifer"
    torch.save(checkpoint, tmp_path / "typo.ckpt")
    with pytest.raises(ValueError, match="typo.ckpt.*'ImageClassifer'.*Did you mean 'ImageClassifier'"):
        autotimm.load(tmp_path / "typo.ckpt")
    checkpoint["autotimm"].update(task="ImageClassifier", version="99.0")
    torch.save(checkpoint, tmp_path / "newer.ckpt")
    with caplog.at_level(logging.WARNING):
        autotimm.load(tmp_path / "newer.ckpt", device="cpu")
    assert "newer.ckpt was written by autotimm 99.0" in caplog.text
    (tmp_path / "timm_folder").mkdir()
    (tmp_path / "timm_folder" / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(ValueError, match="not written by autotimm's `save_pretrained`.*local-dir"):
        autotimm.load(tmp_path / "timm_folder")


def test_a_checkpoint_of_another_task_is_refused_naming_the_file_its_task_and_the_call(
    classifier_ckpt: Path, detector_ckpt: Path, tmp_path: Path
):
    with pytest.raises(ValueError, match=r"best.ckpt' holds a checkpoint of ImageClassifier, not of ObjectDetector"):
        ObjectDetector.load_from_checkpoint(classifier_ckpt)
    with pytest.raises(ValueError, match=r"of ObjectDetector, not of ImageClassifier.*ObjectDetector.load_from_check"):
        ImageClassifier.load_from_checkpoint(detector_ckpt)
    checkpoint = torch.load(classifier_ckpt, weights_only=False)
    del checkpoint["autotimm"]  # an older checkpoint: the task is recognised by its hyperparameters
    torch.save(checkpoint, tmp_path / "old.ckpt")
    with pytest.raises(ValueError, match=r"old.ckpt' holds a checkpoint of ImageClassifier.*autotimm.load\("):
        ObjectDetector.load_from_checkpoint(tmp_path / "old.ckpt")
    assert isinstance(ImageClassifier.load_from_checkpoint(tmp_path / "old.ckpt"), ImageClassifier)

    class MyClassifier(ImageClassifier):  # a user's subclass loads its parent's checkpoints
        pass

    assert isinstance(MyClassifier.load_from_checkpoint(classifier_ckpt), MyClassifier)


def test_save_pretrained_classifier_is_a_timm_model_folder(classifier_ckpt: Path, tmp_path: Path):
    model = autotimm.load(classifier_ckpt, device="cpu")
    folder = model.save_pretrained(tmp_path / "colours")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    x = torch.randn(4, 3, 32, 32)
    timm_model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert timm_model.pretrained_cfg["label_names"] == ["blue", "green", "red"]
    assert timm_model.pretrained_cfg["input_size"] == (3, 32, 32)
    reloaded = autotimm.load(folder, device="cpu")
    assert isinstance(reloaded, ImageClassifier) and reloaded.class_names == model.class_names
    assert reloaded.eval_data_config == model.eval_data_config
    with torch.no_grad():
        torch.testing.assert_close(timm_model(x), model(x))
        torch.testing.assert_close(reloaded(x), model(x))
    image = Image.new("RGB", (40, 30), (30, 200, 40))
    assert reloaded.predict(image)[0].to_dict() == model.predict(image)[0].to_dict()


def test_save_pretrained_detector_loads_back(detector_ckpt: Path, tmp_path: Path):
    model = autotimm.load(detector_ckpt, device="cpu")
    reloaded = autotimm.load(model.save_pretrained(tmp_path / "shapes"), device="cpu")
    assert isinstance(reloaded, ObjectDetector) and reloaded.class_names == model.class_names
    assert _weights_equal(reloaded, model)
    image = sorted((training_root(detector_ckpt) / "coco" / "val2017").glob("*.png"))[0]
    torch.testing.assert_close(reloaded.predict(image)[0].boxes, model.predict(image)[0].boxes)
