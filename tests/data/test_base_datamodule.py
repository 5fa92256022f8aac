"""Tests of `autotimm.data.BaseDataModule`: both data modules check loader settings and explain missing splits alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autotimm.data import BaseDataModule, DetectionDataModule, ImageDataModule
from helpers import ann, write_coco


@pytest.fixture
def both(make_image_folder, tmp_path: Path) -> dict[str, tuple[type[BaseDataModule], dict]]:
    """Each data module with the keyword arguments that build it on a tiny real folder (train and val, no test)."""
    folder = make_image_folder(splits=("train", "val"), size=32)
    coco = write_coco(
        tmp_path / "coco",
        images=[{"id": i, "file_name": f"{i}.png", "size": (32, 32)} for i in range(1, 4)],
        annotations=[ann(i, i, 1, [2, 2, 10, 10]) for i in range(1, 4)],
        categories=[{"id": 1, "name": "box"}],
    )
    return {
        "classification": (ImageDataModule, {"data_dir": folder, "image_size": 32, "num_workers": 0}),
        "detection": (DetectionDataModule, {"data_dir": coco, "image_size": 32, "num_workers": 0}),
    }


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 2.5}, TypeError),
        ({"num_workers": -1}, ValueError),
        ({"pin_memory": "yes"}, TypeError),
        ({"persistent_workers": 1}, TypeError),
        ({"num_workers": 0, "persistent_workers": True}, ValueError),
        ({"data_dir": 3}, TypeError),
    ],
)
def test_loader_arguments_rejected_alike(both, bad: dict, error: type[Exception]) -> None:
    messages = []
    for cls, kwargs in both.values():
        with pytest.raises(error) as info:
            cls(**{**kwargs, **bad})
        messages.append(str(info.value))
    name, value = list(bad.items())[-1]
    assert f"`{name}`" in messages[0] or f"{name}=" in messages[0]
    assert repr(value) in messages[0] or str(value) in messages[0]
    assert messages[0] == messages[1]


def test_changed_batch_size_checked_when_loader_built(both) -> None:
    """The batch-size finder sets `batch_size` after construction: a bad value fails when the loader is built."""
    for cls, kwargs in both.values():
        data = cls(**kwargs)
        data.setup("fit")
        data.batch_size = 3
        images, _ = next(iter(data.train_dataloader()))
        assert len(images) == 3
        data.batch_size = 0
        with pytest.raises(ValueError, match=r"`batch_size`.*0"):
            data.train_dataloader()


def test_missing_and_unbuilt_splits_explained(both) -> None:
    for cls, kwargs in both.values():
        data = cls(**kwargs)
        assert data.num_classes == len(data.class_names)
        with pytest.raises(RuntimeError, match=r"There is no test set"):
            data.test_dataloader()
        with pytest.raises(RuntimeError, match=r"not built yet: call `setup\('fit'\)`"):
            data.train_dataloader()
        data.setup("predict")  # no test split: predicts on the validation split
        images, _ = next(iter(data.predict_dataloader()))
        assert isinstance(images, torch.Tensor) and images.shape[-2:] == (32, 32)
