"""Tests of `autotimm.data`: image folders, built-ins, transforms and the digits demo (real files, no mocks)."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import timm
import torch
from PIL import Image
from timm.data import resolve_model_data_config

from autotimm.data import (
    CorruptImageError,
    ImageDataModule,
    create_eval_transform,
    create_train_transform,
    eval_input_box,
    list_augmentations,
    make_digits_folder,
    resolve_data_config,
)

# --------------------------------------------------------------------------- helpers


def _module(root: Path, **kwargs) -> ImageDataModule:
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("image_size", 32)
    return ImageDataModule(root, **kwargs)


def _first_batch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(loader))


def _sample_paths(dataset) -> list[str]:
    return [dataset.dataset.samples[i][0] for i in dataset.indices]


def _write_mnist(root: Path, n_train: int = 40, n_test: int = 10) -> Path:
    """Write a tiny MNIST in torchvision's raw IDX layout, so the built-in path runs offline."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x0803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x0801, n) + labels.tobytes())
    return root


# --------------------------------------------------------------------------- layout


def test_layout_and_class_names(digits_root: Path) -> None:
    data = _module(digits_root)
    assert data.num_classes == 10
    assert data.class_names == [str(d) for d in range(10)]
    assert data.train_dataset is None  # nothing read before setup

    data.setup()
    for split, dataset in (("train", data.train_dataset), ("val", data.val_dataset), ("test", data.test_dataset)):
        n_files = len(list((digits_root / split).glob("*/*.png")))
        assert len(dataset) == n_files > 0
        assert dataset.dataset.classes == data.class_names


def test_num_classes_before_setup(make_image_folder) -> None:
    root = make_image_folder(classes=["zebra", "ant", "mole"])
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    data = _module(root)
    assert data.num_classes == 3
    assert data.class_names == ["ant", "mole", "zebra"]


def test_batches_have_shape_and_labels_in_range(digits_root: Path) -> None:
    data = _module(digits_root, batch_size=16)
    data.setup("fit")
    for loader in (data.train_dataloader(), data.val_dataloader()):
        images, labels = _first_batch(loader)
        assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < data.num_classes


def test_batch_size_attribute_takes_effect(digits_root: Path) -> None:
    data = _module(digits_root, batch_size=8)
    data.setup("fit")
    assert _first_batch(data.train_dataloader())[0].shape[0] == 8
    data.batch_size = 5  # what Lightning's batch-size finder does
    assert _first_batch(data.train_dataloader())[0].shape[0] == 5
    assert _first_batch(data.val_dataloader())[0].shape[0] == 5


def test_test_and_predict_loaders(digits_root: Path, make_image_folder) -> None:
    data = _module(digits_root)
    data.setup("predict")
    assert data.predict_dataloader().dataset is data.test_dataset

    no_test = _module(make_image_folder(splits=("train", "val")))
    no_test.setup()
    assert no_test.predict_dataloader().dataset is no_test.val_dataset
    with pytest.raises(RuntimeError, match="no 'test' folder"):
        no_test.test_dataloader()


def test_loader_defaults(make_image_folder) -> None:
    data = ImageDataModule(make_image_folder(classes={"a": 5, "b": 4}), image_size=32, val_split=0, batch_size=4)
    assert 1 <= data.num_workers <= min(8, os.cpu_count() or 1)
    data.setup("fit")
    loader = data.train_dataloader()  # not iterated: no worker starts
    assert loader.num_workers == data.num_workers and loader.persistent_workers
    assert loader.pin_memory is False  # no trainer on CUDA
    assert loader.drop_last  # 9 images in batches of 4 would end with a batch of 1
    data.batch_size = 3
    assert not data.train_dataloader().drop_last


def test_dataloader_before_setup_says_call_setup(digits_root: Path) -> None:
    with pytest.raises(RuntimeError, match=re.escape("setup('fit')")):
        _module(digits_root).train_dataloader()


# --------------------------------------------------------------------------- split


def test_stratified_seeded_split(make_image_folder) -> None:
    root = make_image_folder(classes={"a": 20, "b": 10, "c": 3, "single": 1})

    def split(seed: int) -> tuple[list[str], list[str]]:
        data = _module(root, val_split=0.2, seed=seed)
        data.setup("fit")
        return _sample_paths(data.train_dataset), _sample_paths(data.val_dataset)

    train, val = split(seed=1)
    assert split(seed=1) == (train, val)  # same seed, same split
    assert split(seed=2) != (train, val)
    assert not set(train) & set(val)
    assert len(train) + len(val) == 34

    def per_class(paths: list[str]) -> dict[str, int]:
        return {c: sum(Path(p).parent.name == c for p in paths) for c in ("a", "b", "c", "single")}

    assert per_class(val) == {"a": 4, "b": 2, "c": 1, "single": 0}  # >= 1 per class with >= 2 images
    assert per_class(train)["single"] == 1


def test_no_val_split_gives_empty_val_loader(make_image_folder) -> None:
    data = _module(make_image_folder(), val_split=0)
    data.setup("fit")
    assert data.val_dataset is None
    assert data.val_dataloader() == []  # Lightning skips validation
    assert len(data.train_dataset) == 8


# --------------------------------------------------------------------------- transforms


def test_eval_transforms_deterministic_train_random(digits_root: Path) -> None:
    data = _module(digits_root)
    data.setup()
    for dataset in (data.val_dataset, data.test_dataset):
        assert torch.equal(dataset[0][0], dataset[0][0])
    draws = [data.train_dataset[0][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_split_val_subset_uses_eval_transform(make_image_folder) -> None:
    data = _module(make_image_folder(classes={"a": 10, "b": 10}), val_split=0.3)
    data.setup("fit")
    assert data.val_dataset.dataset is data.train_dataset.dataset  # same folder, different transforms
    assert torch.equal(data.val_dataset[0][0], data.val_dataset[0][0])
    draws = [data.train_dataset[0][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


@pytest.mark.parametrize("preset", list_augmentations())
def test_augmentation_presets_build(preset: str) -> None:
    image = Image.new("RGB", (40, 30), (200, 10, 50))
    out = create_train_transform({"input_size": (3, 24, 24)}, preset)(image)
    assert out.shape == (3, 24, 24)
    if preset == "none":
        assert torch.equal(out, create_eval_transform({"input_size": (3, 24, 24)})(image))


_PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # tensors hold the pixel values / 255


def _coordinates_image(size: int = 32) -> Image.Image:
    """Red = 4 * column, green = 4 * row, blue = 255: every pixel says where it comes from."""
    x, y = np.meshgrid(np.arange(size) * 4, np.arange(size) * 4)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 255)], axis=-1).astype(np.uint8))


def _pixels_kept(out: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Fraction of the 32 x 32 source pixels in `out` (padding has blue 0), and the columns of its middle row."""
    pixels = (out * 255).round().long()
    source = pixels[2] == 255
    coordinates = {(int(r), int(g)) for r, g in zip(pixels[0][source], pixels[1][source], strict=True)}
    return len(coordinates) / 32**2, pixels[0, 16][source[16]] // 4


def test_small_images_keep_their_content_and_the_default_preset_flips() -> None:
    image, config = _coordinates_image(), {"input_size": (3, 32, 32), **_PLAIN}
    kept, columns = _pixels_kept(create_eval_transform(config)(image))
    assert kept == 1.0 and columns.tolist() == list(range(32))  # no centre crop at 32 px
    assert resolve_data_config(config)["crop_pct"] == 1.0
    assert resolve_data_config({**config, "input_size": (3, 96, 96)})["crop_pct"] == 0.875  # larger: timm's crop

    torch.manual_seed(0)
    auto = create_train_transform(config)  # "auto": at 32 px a shift of at most 4 px, and a flip
    draws = [_pixels_kept(auto(image)) for _ in range(40)]
    assert min(kept for kept, _ in draws) >= (28 / 32) ** 2  # at least 28 x 28 of the 32 x 32 pixels
    flipped = [bool((cols[1:] < cols[:-1]).all()) for _, cols in draws]
    assert any(flipped) and not all(flipped)
    no_flip = create_train_transform(config, "no_flip")
    assert all(bool((_pixels_kept(no_flip(image))[1].diff() == 1).all()) for _ in range(20))
    # An explicit preset does what it says: "default" is timm's random-resized-crop down to 8%.
    assert min(_pixels_kept(create_train_transform(config, "default")(image))[0] for _ in range(40)) < 0.5


def test_auto_preset_is_the_timm_recipe_for_large_images() -> None:
    config = {"input_size": (3, 96, 96), **_PLAIN}
    steps = [type(t).__name__ for t in create_train_transform(config).transforms]
    assert steps == [type(t).__name__ for t in create_train_transform(config, "default").transforms]
    assert "RandomResizedCropAndInterpolation" in steps and "RandomHorizontalFlip" in steps
    assert "RandomHorizontalFlip" not in [
        type(t).__name__ for t in create_train_transform(config, "no_flip").transforms
    ]


@pytest.fixture(scope="module")
def backbone_data_configs() -> dict[str, dict]:
    """`resolve_model_data_config` of two backbones with different normalisation (built once)."""
    names = ("resnet18", "vit_tiny_patch16_224")
    return {name: resolve_model_data_config(timm.create_model(name, pretrained=False)) for name in names}


def test_vit_and_resnet_configs_differ(backbone_data_configs: dict[str, dict]) -> None:
    resnet, vit = backbone_data_configs["resnet18"], backbone_data_configs["vit_tiny_patch16_224"]
    assert resnet["mean"] != vit["mean"] and resnet["std"] != vit["std"]


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224"])
def test_normalisation_follows_data_config(make_image_folder, backbone_data_configs, backbone: str) -> None:
    color = (200, 100, 30)  # a solid colour survives any resize and crop unchanged
    root = make_image_folder(color=color, splits=("train", "val"))
    config = backbone_data_configs[backbone]
    data = _module(root, image_size=32, batch_size=4)
    data.set_data_config(config)
    data.setup("fit")
    images, _ = _first_batch(data.val_dataloader())
    assert images.shape == (4, 3, 32, 32)
    expected = (torch.tensor(color) / 255 - torch.tensor(config["mean"])) / torch.tensor(config["std"])
    torch.testing.assert_close(images.mean(dim=(0, 2, 3)), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(images.std(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    assert data.data_config["mean"] == tuple(config["mean"])


def test_defaults_and_image_size_override(make_image_folder) -> None:
    root = make_image_folder(splits=("train", "val"))
    data = ImageDataModule(root, num_workers=0, batch_size=2)
    data.setup("fit")
    assert data.data_config["input_size"] == (3, 224, 224)
    assert data.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert _first_batch(data.val_dataloader())[0].shape == (2, 3, 224, 224)

    data = ImageDataModule(root, num_workers=0, batch_size=2, image_size=(32, 40))
    data.set_data_config({"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    data.setup("fit")
    assert data.data_config["input_size"] == (3, 32, 40)
    assert _first_batch(data.train_dataloader())[0].shape == (2, 3, 32, 40)


def test_custom_transforms_override_presets(make_image_folder) -> None:
    def constant(image: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 8, 8)

    data = _module(make_image_folder(splits=("train", "val")), train_transforms=constant, batch_size=2)
    data.setup("fit")
    assert _first_batch(data.train_dataloader())[0].shape == (2, 3, 8, 8)
    assert _first_batch(data.val_dataloader())[0].shape == (2, 3, 32, 32)


class _ConfigModel(pl.LightningModule):
    """A tiny model exposing `data_config` the way autotimm tasks do; records the batch shapes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 2)
        self.data_config = {"input_size": (3, 40, 40), "mean": (0.5,) * 3, "std": (0.25,) * 3}
        self.shapes: list[tuple[int, ...]] = []

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.shapes.append(tuple(images.shape))
        return torch.nn.functional.cross_entropy(self.head(images.mean(dim=(2, 3))), labels)

    def validation_step(self, batch, batch_idx) -> None:
        self.shapes.append(tuple(batch[0].shape))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("image_size", [None, 32])
def test_trainer_model_data_config_is_used(make_image_folder, tmp_path: Path, image_size: int | None) -> None:
    root = make_image_folder(splits=("train", "val"))
    data = ImageDataModule(root, image_size=image_size, num_workers=0, batch_size=4)
    model = _ConfigModel()
    trainer = pl.Trainer(
        accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, datamodule=data)
    side = image_size or 40
    assert model.shapes == [(4, 3, side, side)] * 2
    assert data.data_config["std"] == (0.25,) * 3

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # datamodule hyper-parameters are primitives
    assert checkpoint["datamodule_hyper_parameters"]["image_size"] == image_size


def _strings(value: object) -> list[str]:
    """Every string inside nested dicts, lists and tuples (keys included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def test_checkpoint_hyperparameters_hold_no_data_path(make_image_folder, tmp_path: Path) -> None:
    from autotimm import AutoTrainer, BackboneConfig, ImageClassifier

    root = make_image_folder(splits=("train", "val"), size=32)
    data = _module(root, batch_size=4)
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=data.num_classes)
    trainer = AutoTrainer(
        max_epochs=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        limit_train_batches=1,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    saved = {key: checkpoint[key] for key in ("hyper_parameters", "datamodule_hyper_parameters")}
    assert saved["datamodule_hyper_parameters"]["batch_size"] == 4
    leaked = [s for s in _strings(saved) if str(tmp_path) in s or str(root) in s]
    assert not leaked, f"paths in the checkpoint's hyperparameters: {leaked}"
    # The data module is rebuilt from the checkpoint with the data folder given again.
    restored = ImageDataModule.load_from_checkpoint(path, data_dir=root, num_workers=0)
    assert restored.num_classes == data.num_classes and restored.batch_size == 4
    with pytest.raises(TypeError, match="data_dir"):
        ImageDataModule.load_from_checkpoint(path)


def test_datasets_pickle_for_spawned_workers(make_image_folder) -> None:
    data = _module(make_image_folder(splits=("train", "val")))
    data.setup("fit")
    clone = pickle.loads(pickle.dumps(data.val_dataset))
    assert torch.equal(clone[0][0], data.val_dataset[0][0])


# --------------------------------------------------------------------------- bad files


def test_non_image_file_warning_names_file(make_image_folder) -> None:
    root = make_image_folder()
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / ".DS_Store").write_bytes(b"\0")  # system files are ignored silently
    data = _module(root)
    with pytest.warns(UserWarning, match=r"1 file\(s\) without an image extension.*notes\.txt") as record:
        data.setup("fit")
    assert not any("DS_Store" in str(w.message) for w in record)
    assert len(data.train_dataset) + len(data.val_dataset) == 8


@pytest.mark.parametrize("num_workers", [0, 1])
def test_corrupt_image_error_names_file(make_image_folder, num_workers: int) -> None:
    root = make_image_folder(splits=("train", "val"))
    (root / "val" / "dog" / "broken.png").write_bytes(b"this is not a png")
    data = _module(root, num_workers=num_workers, batch_size=16)
    data.setup("fit")
    with pytest.raises(CorruptImageError, match=re.escape(str(root / "val" / "dog" / "broken.png"))):
        _first_batch(data.val_dataloader())


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*Expected layout"):
        ImageDataModule(missing)


def test_missing_train_folder(tmp_path: Path) -> None:
    (tmp_path / "validation").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No 'train' folder.*validation.*Expected layout"):
        ImageDataModule(tmp_path)


def test_images_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "a.png")
    with pytest.raises(FileNotFoundError, match=r"No class folders.*1 files"):
        ImageDataModule(tmp_path)


def test_mismatched_class_folders(make_image_folder) -> None:
    root = make_image_folder(splits=("train", "val"))
    (root / "val" / "dog").rename(root / "val" / "bird")
    with pytest.raises(ValueError, match=r"missing in val/: \['dog'\]; extra in val/: \['bird'\]"):
        ImageDataModule(root)


def test_empty_class_folder(make_image_folder) -> None:
    root = make_image_folder()
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "readme.md").write_text("")
    data = _module(root)
    with pytest.warns(UserWarning, match="readme.md"), pytest.raises(FileNotFoundError, match=r"\['empty'\]"):
        data.setup("fit")


# --------------------------------------------------------------------------- built-in data sets


def test_builtin_class_names_without_download(tmp_path: Path) -> None:
    assert ImageDataModule(tmp_path / "x", dataset_name="cifar10").class_names[:2] == ["airplane", "automobile"]
    assert ImageDataModule(tmp_path / "x", dataset_name="CIFAR100").num_classes == 100
    assert ImageDataModule(tmp_path / "x", dataset_name="FashionMNIST").num_classes == 10
    assert not (tmp_path / "x").exists()  # nothing downloaded at construction


def test_unknown_dataset_name_suggests_closest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"(?i)'cifar11'.*did you mean 'cifar10'"):
        ImageDataModule(tmp_path, dataset_name="cifar11")


def test_builtin_mnist_from_local_files_is_rgb_and_split(tmp_path: Path) -> None:
    root = _write_mnist(tmp_path / "mnist")
    data = ImageDataModule(root, dataset_name="mnist", image_size=32, batch_size=4, num_workers=0, val_split=0.25)
    data.prepare_data()  # files present: no download
    data.setup()
    assert (len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)) == (30, 10, 10)
    assert sorted(data.val_dataset.targets) == list(range(10))  # stratified: one per digit
    images, labels = _first_batch(data.val_dataloader())
    assert images.shape == (4, 3, 32, 32) and labels.max() < 10


def test_builtin_missing_files_error(tmp_path: Path) -> None:
    data = ImageDataModule(tmp_path, dataset_name="MNIST", num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"MNIST was not found .*prepare_data"):
        data.setup("fit")


def test_builtin_download_failure_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    data = ImageDataModule(blocker / "data", dataset_name="CIFAR10", num_workers=0)
    with pytest.raises(RuntimeError, match=r"Could not download CIFAR10.*place the files in .*image folder"):
        data.prepare_data()  # fails creating the folder, before any network access


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 2.5}, TypeError),
        ({"batch_size": True}, TypeError),
        ({"val_split": 1.0}, ValueError),
        ({"val_split": -0.1}, ValueError),
        ({"num_workers": -1}, ValueError),
        ({"image_size": 0}, ValueError),
        ({"image_size": "big"}, TypeError),
        ({"augmentation_preset": "heavy"}, ValueError),
        ({"train_transforms": "flip"}, TypeError),
        ({"pin_memory": "yes"}, TypeError),
        ({"num_workers": 0, "persistent_workers": True}, ValueError),
    ],
)
def test_bad_arguments_name_the_value(make_image_folder, kwargs: dict, error: type) -> None:
    root = make_image_folder()
    name, value = list(kwargs.items())[-1]
    with pytest.raises(error, match=re.escape(name)) as info:
        ImageDataModule(root, **kwargs)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_bad_augmentation_lists_presets(make_image_folder) -> None:
    presets = r"\['auto', 'default', 'light', 'no_flip', 'none', 'small', 'strong'\]"
    with pytest.raises(ValueError, match=rf"`augmentation_preset`.*{presets}.*'heavy'"):
        ImageDataModule(make_image_folder(), augmentation_preset="heavy")


# --------------------------------------------------------------------------- one vocabulary


def test_augmentation_preset_is_the_name_of_both_data_modules() -> None:
    """The argument is `augmentation_preset` for classification as for detection (the API document's name)."""
    import inspect

    from autotimm import DetectionDataModule

    for cls in (ImageDataModule, DetectionDataModule):
        assert "augmentation_preset" in inspect.signature(cls).parameters


def test_augmentation_is_a_deprecated_alias(make_image_folder) -> None:
    root = make_image_folder(splits=("train", "val"))
    with pytest.warns(FutureWarning, match=r"augmentation_preset='none'"):
        data = _module(root, augmentation="none")
    assert data.augmentation_preset == "none" and data.hparams["augmentation_preset"] == "none"
    data.setup("fit")
    image = data.train_dataset[0][0]
    assert torch.equal(image, data.train_dataset[0][0])  # "none": training is deterministic
    with pytest.raises(TypeError, match="both `augmentation_preset` and its deprecated name `augmentation`"):
        _module(root, augmentation="none", augmentation_preset="light")


def test_val_split_is_the_name_everywhere(tmp_path: Path) -> None:
    """`val_split` (the original AutoTimm's name) splits the demo folder too; `val_fraction` still works, warning."""
    from autotimm.data import stratified_split

    new = make_digits_folder(tmp_path / "new", val_split=0.2, test_split=0, max_per_class=5)
    with pytest.warns(FutureWarning, match="val_split"):
        old = make_digits_folder(tmp_path / "old", val_fraction=0.2, test_split=0, max_per_class=5)
    assert _tree_digest(new) == _tree_digest(old)
    assert sorted(p.name for p in new.iterdir()) == ["autotimm_demo.json", "train", "val"]
    with pytest.warns(FutureWarning, match="val_split"):
        assert stratified_split([0, 0, 1, 1], val_fraction=0.5, seed=0) == stratified_split([0, 0, 1, 1], 0.5, 0)


@pytest.mark.parametrize("name", ["build_train_transform", "build_eval_transform"])
def test_old_transform_factories_warn_and_work(name: str) -> None:
    import autotimm.data

    image = Image.new("RGB", (40, 30), (200, 10, 50))
    with pytest.warns(FutureWarning, match=f"`{name}` is deprecated.*`{name.replace('build', 'create')}`"):
        transform = getattr(autotimm.data, name)({"input_size": (3, 32, 32)})
    assert transform(image).shape == (3, 32, 32)


def test_one_smallest_image_size(make_image_folder, tmp_path: Path) -> None:
    """Every data module, the detector and the demos take `MIN_IMAGE_SIZE` and refuse one pixel less."""
    from autotimm import BackboneConfig, DetectionDataModule, ObjectDetector
    from autotimm._errors import MIN_IMAGE_SIZE
    from autotimm.data import make_coco_shapes

    coco = make_coco_shapes(tmp_path / "coco", image_size=MIN_IMAGE_SIZE, num_train=2, num_val=0)
    builders = {
        "ImageDataModule": lambda size: _module(make_image_folder(), image_size=size),
        "DetectionDataModule": lambda size: DetectionDataModule(coco, image_size=size, num_workers=0),
        "ObjectDetector": lambda size: ObjectDetector(
            BackboneConfig("test_resnet", pretrained=False), num_classes=2, image_size=size
        ),
        "make_digits_folder": lambda size: make_digits_folder(tmp_path / f"digits{size}", image_size=size),
        "make_coco_shapes": lambda size: make_coco_shapes(tmp_path / f"coco{size}", image_size=size, num_train=1),
    }
    for name, build in builders.items():
        if not name.startswith("make_"):  # the demos at that size: `coco` above, `test_digits_folder_layout`
            build(MIN_IMAGE_SIZE)
        with pytest.raises(ValueError, match=f"`image_size`.*>= {MIN_IMAGE_SIZE}.*{MIN_IMAGE_SIZE - 1}"):
            build(MIN_IMAGE_SIZE - 1)


def test_one_seed_range(make_image_folder, tmp_path: Path) -> None:
    """Seeds are ints in [0, 2**32) for the data modules, the demos and the trainer alike."""
    from autotimm import AutoTrainer
    from autotimm.data import make_coco_shapes

    builders = {
        "ImageDataModule": lambda seed: _module(make_image_folder(), seed=seed),
        "make_digits_folder": lambda seed: make_digits_folder(tmp_path / "d", seed=seed),
        "make_coco_shapes": lambda seed: make_coco_shapes(tmp_path / "c", seed=seed),
        "AutoTrainer": lambda seed: AutoTrainer(seed=seed, accelerator="cpu", default_root_dir=tmp_path / "run"),
    }
    for build in builders.values():
        for seed in (-1, 2**32):
            with pytest.raises(ValueError, match=rf"`seed` to be an int in \[0, 4294967296\), but got {seed}"):
                build(seed)
    _module(make_image_folder(), seed=2**32 - 1)


# --------------------------------------------------------------------------- digits demo


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def test_digits_folder_layout(digits_root: Path) -> None:
    for split in ("train", "val", "test"):
        assert sorted(p.name for p in (digits_root / split).iterdir()) == [str(d) for d in range(10)]
    assert len(list(digits_root.rglob("*.png"))) == 1797
    with Image.open(next((digits_root / "train" / "3").iterdir())) as image:
        assert image.mode == "RGB" and image.size == (32, 32)


def test_digits_folder_deterministic(tmp_path: Path) -> None:
    first = make_digits_folder(tmp_path / "a", image_size=32, max_per_class=6)
    second = make_digits_folder(tmp_path / "b", image_size=32, max_per_class=6)
    other = make_digits_folder(tmp_path / "c", image_size=32, max_per_class=6, seed=1)
    assert _tree_digest(first) == _tree_digest(second)
    assert len(_tree_digest(first)) == 60
    assert _tree_digest(first) != _tree_digest(other)


def test_digits_folder_idempotent(tmp_path: Path) -> None:
    root = make_digits_folder(tmp_path / "d", image_size=32, max_per_class=4)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert make_digits_folder(tmp_path / "d", image_size=32, max_per_class=4) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    with pytest.raises(ValueError, match="made with"):
        make_digits_folder(root, image_size=40, max_per_class=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging folder left behind


def test_digits_folder_refuses_user_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not an autotimm digits demo folder"):
        make_digits_folder(tmp_path / "mine")
    assert (tmp_path / "mine" / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["holiday.jpg"]


def test_digits_folder_without_val_works_with_split(tmp_path: Path) -> None:
    root = make_digits_folder(tmp_path / "e", val_split=0, test_split=0, max_per_class=10)
    assert sorted(p.name for p in root.iterdir()) == ["autotimm_demo.json", "train"]
    data = ImageDataModule(root, image_size=32, num_workers=0, val_split=0.2)
    data.setup("fit")
    assert (len(data.train_dataset), len(data.val_dataset)) == (80, 20)


@pytest.mark.parametrize(
    ("config", "size"),
    [
        ({"input_size": (3, 72, 72), "crop_pct": 0.875}, (150, 100)),  # shorter side resized, centre crop
        ({"input_size": (3, 80, 80), "crop_pct": 0.9}, (97, 241)),
        ({"input_size": (3, 96, 72), "crop_pct": 0.875}, (160, 200)),  # a non-square input: timm's ResizeKeepRatio
        ({"input_size": (3, 72, 72), "crop_pct": 0.8, "crop_mode": "squash"}, (100, 240)),
        ({"input_size": (3, 72, 72), "crop_pct": 1.0, "crop_mode": "border"}, (80, 160)),  # padded top and bottom
    ],
)
def test_eval_input_box_is_where_the_eval_transform_takes_its_pixels(config: dict, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    # Waves of a 12 px period: a box a few pixels off cuts other pixels, while interpolation differences stay small.
    ys, xs = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    waves = [np.sin(xs * np.pi / 6), np.sin(ys * np.pi / 6), np.sin((xs + ys) * np.pi / 12)]
    pixels = (np.stack(waves, axis=-1) + 1) * 100 + rng.uniform(0, 1, size=(*size, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    cfg = resolve_data_config(config)
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    seen = create_eval_transform(cfg)(image) * std + mean  # the input, un-normalised, in [0, 1]
    left, top, right, bottom = eval_input_box(cfg, size)
    height, width = cfg["input_size"][1:]
    # The same pixels cut from the image with the box (beyond the image: the mean colour the transform pads with).
    padded = Image.new("RGB", (size[1] * 3, size[0] * 3), tuple(round(255 * m) for m in cfg["mean"]))
    padded.paste(image, (size[1], size[0]))
    box = (left + size[1], top + size[0], right + size[1], bottom + size[0])
    resample = Image.BICUBIC if cfg["interpolation"] == "bicubic" else Image.BILINEAR
    cut = torch.from_numpy(np.array(padded.resize((width, height), resample, box=box))).permute(2, 0, 1)
    assert (seen - cut / 255).abs()[:, 2:-2, 2:-2].mean() < 0.02  # the edges mix in padding differently
