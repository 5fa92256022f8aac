"""Shared pytest fixtures: small, real image data written to temporary folders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ImageFolderMaker = Callable[..., Path]


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as `train/`, `val/`, `test/` class folders of 32x32 RGB PNGs (made once per session)."""
    pytest.importorskip("sklearn", reason="the digits demo needs scikit-learn")
    from autotimm.data import make_digits_folder

    return make_digits_folder(tmp_path_factory.mktemp("digits") / "digits", image_size=32)


@pytest.fixture
def make_image_folder(tmp_path: Path) -> ImageFolderMaker:
    """Return a function writing a tiny image folder under `tmp_path` and returning its root.

    `make_image_folder(classes={"cat": 4, "dog": 4}, splits=("train",), size=16, color=None, name="images")`
    writes `<root>/<split>/<class>/<i>.png` for each split. Pixels are seeded noise, or one
    solid `color` (an RGB tuple) when given; `classes` may also be a list of names (4 images each).
    """

    def make(
        classes: Mapping[str, int] | Sequence[str] = ("cat", "dog"),
        splits: Sequence[str] = ("train",),
        size: int = 16,
        color: tuple[int, int, int] | None = None,
        name: str = "images",
    ) -> Path:
        counts = dict(classes) if isinstance(classes, Mapping) else {c: 4 for c in classes}
        root = tmp_path / name
        rng = np.random.default_rng(0)
        for split in splits:
            for class_name, count in counts.items():
                folder = root / split / class_name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    if color is None:
                        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                    else:
                        pixels = np.broadcast_to(np.array(color, dtype=np.uint8), (size, size, 3))
                    Image.fromarray(np.ascontiguousarray(pixels)).save(folder / f"{i:03d}.png")
        return root

    return make


# A tiny timm model (0.4 M parameters) that trains in milliseconds per batch on a CPU.
TINY_BACKBONE = "test_resnet"


@pytest.fixture
def backbone():
    """The backbone the task tests train: tiny, random weights (no download)."""
    from autotimm import BackboneConfig

    return BackboneConfig(TINY_BACKBONE, pretrained=False)


@pytest.fixture
def digits_data(digits_root: Path):
    """An `ImageDataModule` over the digits folder at 32 px, loaded in the main process."""
    from autotimm import ImageDataModule

    return ImageDataModule(digits_root, image_size=32, batch_size=32, num_workers=0, augmentation_preset="none")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op torch thread for the test (restored afterwards): on a busy 2-core machine, two
    threads per process spin against the other processes and make a tiny model's step ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a 3-colour classifier (classes blue, green, red); see `helpers.trained_classifier`."""
    from helpers import trained_classifier

    return trained_classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="session")
def detector_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a detector of 64 px shapes, its data in `<root>/coco`; see `helpers.trained_detector`."""
    from helpers import trained_detector

    return trained_detector(tmp_path_factory.mktemp("detector"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked `gpu`, saying why, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
