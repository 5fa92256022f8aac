"""Classification data from tables: CSV files, DataFrame-like objects and records, single- and multi-label."""

from __future__ import annotations

import csv
import pickle
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from autotimm import ImageClassifier, ImageDataModule, LoggerConfig, MultiLabelImageDataModule
from autotimm.data import iterative_split
from helpers import cpu_trainer

COLORS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _write_images(folder: Path, n: int, colors: Sequence[tuple[int, int, int]] | None = None) -> list[str]:
    """`n` 32-px PNGs in `folder`, noise or one colour each (with a little noise); their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        if colors is None:
            pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        else:
            noise = rng.integers(0, 40, size=(32, 32, 3))
            pixels = np.clip(np.array(colors[i % len(colors)]) * 0.8 + noise, 0, 255).astype(np.uint8)
        name = f"img_{i:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    return names


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


class FrameLike:
    """A DataFrame stand-in (pandas is not a dependency): `columns` and `to_dict("records")`, NaN for empty."""

    def __init__(self, rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        self._rows = rows
        self.columns = list(columns if columns is not None else rows[0])

    def to_dict(self, orient: str) -> list[dict[str, Any]]:
        assert orient == "records"
        return [dict(r) for r in self._rows]


def _module(**kwargs: Any) -> ImageDataModule:
    kwargs = {"image_size": 32, "batch_size": 4, "num_workers": 0, "augmentation_preset": "none", **kwargs}
    return ImageDataModule(**kwargs)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    _write_images(tmp_path / "images", 24)
    return tmp_path / "images"


def _rows(n: int = 24, labels: Sequence[str] = ("dog", "cat", "fox")) -> list[dict[str, Any]]:
    return [{"image_path": f"img_{i:03d}.png", "label": labels[i % len(labels)]} for i in range(n)]


# --------------------------------------------------------------------------- formats


def test_csv_file_reads_paths_and_sorted_class_names(images: Path, tmp_path: Path) -> None:
    table = _write_csv(tmp_path / "train.csv", _rows())
    data = _module(train_csv=table, image_dir=images, val_split=0.25)
    assert data.class_names == ["cat", "dog", "fox"] and data.num_classes == 3 and not data.multi_label
    data.setup("fit")
    assert len(data.train_dataset) == 18 and len(data.val_dataset) == 6
    assert Counter(data.val_dataset.targets) == {0: 2, 1: 2, 2: 2}  # stratified: 2 of each class's 8
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    path, label = data.train_dataset.dataset.samples[0]
    assert Path(path) == images / "img_000.png" and data.class_names[label] == "dog"


def test_csv_folder_is_the_default_image_folder(images: Path) -> None:
    data = _module(train_csv=_write_csv(images / "labels.csv", _rows()))
    assert data.data_dir == images and data.num_classes == 3


def test_records_pairs_and_mappings(images: Path) -> None:
    pairs = [(f"img_{i:03d}.png", ["b", "a"][i % 2]) for i in range(24)]
    data = ImageDataModule.from_table(pairs, images, image_size=32, num_workers=0)
    assert data.class_names == ["a", "b"]
    mappings = [{"file": p, "y": y} for p, y in pairs]
    data = ImageDataModule.from_table(mappings, images, image_column="file", label_column="y", image_size=32)
    data.setup("fit")
    assert data.class_names == ["a", "b"] and len(data.train_dataset) + len(data.val_dataset) == 24


def test_dataframe_like_object(images: Path) -> None:
    rows = [{**r, "extra": float("nan")} for r in _rows()]
    data = _module(train_csv=FrameLike(rows), val_csv=FrameLike(rows[:6]), image_dir=images)
    data.setup("fit")
    assert len(data.train_dataset) == 24 and len(data.val_dataset) == 6


def test_image_suffix_completes_the_paths(images: Path) -> None:
    rows = [{"image_id": f"img_{i:03d}", "dx": "nv" if i % 2 else "mel"} for i in range(24)]
    data = _module(train_csv=rows, image_dir=images, image_column="image_id", label_column="dx", image_suffix=".png")
    data.setup("fit")
    assert data.train_dataset.dataset.samples[0][0].endswith("img_000.png")


def test_class_indices_and_given_class_names(images: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "label": i % 3} for i in range(24)]
    assert _module(train_csv=FrameLike(rows), image_dir=images).class_names == ["0", "1", "2"]
    data = _module(train_csv=rows, image_dir=images, class_names=["zebra", "ant", "mole", "bee"])
    data.setup("fit")
    assert data.class_names == ["zebra", "ant", "mole", "bee"]  # the given order, a class without images kept
    assert data.train_dataset.dataset.targets[:3] == [0, 1, 2]


def test_delimited_multi_label(images: Path, tmp_path: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "tags": ["dog cat", "cat", "fox dog", "dog"][i % 4]} for i in range(24)]
    data = MultiLabelImageDataModule(
        train_csv=_write_csv(tmp_path / "tags.csv", rows),
        image_dir=images,
        label_column="tags",
        label_delim=" ",
        image_size=32,
        num_workers=0,
        batch_size=4,
        val_split=0,
    )
    assert data.multi_label and data.class_names == ["cat", "dog", "fox"]
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert y.dtype == torch.float32 and y.shape == (4, 3)
    assert data.train_dataset.targets[:4].tolist() == [[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 1, 0]]


def test_zero_one_columns_keep_their_order(images: Path, tmp_path: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "sky": i % 2, "tree": "1" if i % 2 == 0 else "0.0"} for i in range(24)]
    data = ImageDataModule(
        train_csv=_write_csv(tmp_path / "t.csv", rows), image_dir=images, label_columns=["tree", "sky"], val_split=0
    )
    assert data.multi_label and data.class_names == ["tree", "sky"]
    data.setup("fit")
    assert data.train_dataset.targets[:3].tolist() == [[1, 0], [0, 1], [1, 0]]


def test_split_column(images: Path, tmp_path: Path) -> None:
    splits = ["train"] * 14 + ["val"] * 5 + ["TEST"] * 5
    rows = [{**r, "split": s} for r, s in zip(_rows(), splits, strict=True)]
    data = _module(train_csv=_write_csv(tmp_path / "t.csv", rows), image_dir=images, split_column="split")
    data.setup()
    assert (len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)) == (14, 5, 5)
    assert len(next(iter(data.test_dataloader()))[1]) == 4
    restored = pickle.loads(pickle.dumps(data.train_dataset))  # what spawned loader workers receive
    assert restored.targets == data.train_dataset.targets
    # A test table of its own needs no split column: it is the test split as a whole.
    data = _module(train_csv=rows, test_csv=_rows(4), image_dir=images, split_column="split")
    data.setup("test")
    assert len(data.test_dataset) == 9


def test_group_column_keeps_groups_in_one_split(images: Path) -> None:
    rows = [{**r, "lesion": f"L{i // 3}"} for i, r in enumerate(_rows())]  # 8 lesions of 3 images
    data = _module(train_csv=rows, image_dir=images, group_column="lesion", val_split=0.25, seed=3)
    data.setup("fit")
    train_idx, val_idx = data.train_dataset.indices, data.val_dataset.indices
    lesions = lambda idx: {rows[i]["lesion"] for i in idx}  # noqa: E731
    assert val_idx and not lesions(train_idx) & lesions(val_idx)
    assert len(val_idx) % 3 == 0  # whole lesions only


def test_group_crossing_given_splits_is_refused(images: Path) -> None:
    rows = [{**r, "lesion": f"L{i // 2}", "split": "val" if i == 5 else "train"} for i, r in enumerate(_rows())]
    with pytest.raises(ValueError, match=r"group 'L2' in \['train', 'val'\]"):
        _module(train_csv=rows, image_dir=images, group_column="lesion", split_column="split")


def test_iterative_split_counts_per_label() -> None:
    rng = np.random.default_rng(0)
    label_sets = [tuple(np.flatnonzero(rng.random(4) < [0.6, 0.3, 0.1, 0.05])) for _ in range(400)]
    train, val = iterative_split(label_sets, 0.25, seed=0)
    assert sorted(train + val) == list(range(400))
    for label in range(4):
        total = sum(label in s for s in label_sets)
        in_val = sum(label in label_sets[i] for i in val)
        assert abs(in_val - 0.25 * total) <= 2, (label, in_val, total)
    assert iterative_split(label_sets, 0.25, seed=0) == (train, val)  # seeded
    assert iterative_split(label_sets, 0.25, seed=1) != (train, val)


def test_autotimm_spelling_with_val_and_test_tables(images: Path, tmp_path: Path) -> None:
    rows = [{"file": f"img_{i:03d}.png", "dx": ["nv", "mel"][i % 2]} for i in range(24)]
    data = ImageDataModule(
        train_csv=_write_csv(tmp_path / "train.csv", rows[:16]),
        val_csv=FrameLike(rows[16:20]),
        test_csv=_write_csv(tmp_path / "test.csv", rows[20:]),
        image_dir=images,
        image_column="file",
        label_column="dx",
        val_split=0.2,
        balanced_sampling=True,
        image_size=32,
        num_workers=0,
    )
    data.setup()
    assert data.sampler == "balanced" and data.class_names == ["mel", "nv"]
    assert (len(data.train_dataset), len(data.val_dataset), len(data.test_dataset)) == (16, 4, 4)


@pytest.mark.parametrize("source", ["table", "folder"])
def test_balanced_sampler_draws_rare_classes_as_often(images: Path, make_image_folder, source: str) -> None:
    if source == "table":
        rows = [{"image_path": f"img_{i:03d}.png", "label": "rare" if i < 3 else "common"} for i in range(24)]
        data = _module(train_csv=rows, image_dir=images, sampler="balanced", val_split=0, batch_size=24)
    else:
        root = make_image_folder(classes={"common": 21, "rare": 3})
        data = ImageDataModule(root, image_size=32, num_workers=0, val_split=0, batch_size=24, sampler="balanced")
    data.setup("fit")
    labels = torch.cat([y for _ in range(10) for _, y in data.train_dataloader()])
    rare = data.class_names.index("rare")
    assert 0.35 < (labels == rare).float().mean() < 0.65  # 3 of 24 images (0.125) without the sampler
    unbalanced = _module(train_csv=[(f"img_{i:03d}.png", "x" if i < 3 else "y") for i in range(24)], image_dir=images)
    unbalanced.setup("fit")
    assert unbalanced.train_dataloader().sampler.__class__.__name__ == "RandomSampler"


def test_hyperparameters_hold_no_table_or_path(images: Path, tmp_path: Path) -> None:
    data = _module(train_csv=_write_csv(tmp_path / "t.csv", _rows()), image_dir=images, label_delim=" ")
    text = repr(dict(data.hparams))
    assert str(tmp_path) not in text and "img_000" not in text
    assert data.hparams["class_names"] == ["cat", "dog", "fox"]


# --------------------------------------------------------------------------- bad input


def test_missing_column_names_the_columns_found(images: Path, tmp_path: Path) -> None:
    table = _write_csv(tmp_path / "t.csv", [{"image": "img_000.png", "labels": "a"}])
    with pytest.raises(ValueError, match=r"no column 'image_path' \(its columns: \['image', 'labels'\]\)"):
        _module(train_csv=table, image_dir=images)
    with pytest.raises(ValueError, match=r"no column 'label'.*Did you mean 'labels'\?"):
        _module(train_csv=table, image_dir=images, image_column="image")


def test_missing_images_are_named_with_their_count(images: Path) -> None:
    rows = _rows() + [{"image_path": f"gone_{i}.png", "label": "cat"} for i in range(7)]
    with pytest.raises(
        FileNotFoundError,
        match=r"7 of the 31 image files .* do not exist: 'gone_0\.png', 'gone_1\.png', .* and 2 more\. .*'\S+images' ",
    ):
        _module(train_csv=rows, image_dir=images)


def test_class_index_outside_the_classes(images: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "label": i % 4} for i in range(24)]
    with pytest.raises(ValueError, match=r"records, row 3: class index 3 is outside the classes \[0, 3\)"):
        _module(train_csv=rows, image_dir=images, class_names=["a", "b", "c"])
    rows[5]["label"] = -1
    with pytest.raises(ValueError, match=r"class index -1"):
        _module(train_csv=rows, image_dir=images)


def test_label_outside_given_class_names(images: Path) -> None:
    with pytest.raises(ValueError, match=r"but got 'fox'"):
        _module(train_csv=_rows(), image_dir=images, class_names=["cat", "dog"])


def test_empty_training_split(images: Path) -> None:
    rows = [{**r, "split": "val"} for r in _rows()]
    with pytest.raises(ValueError, match=r"no 'train' rows"):
        _module(train_csv=rows, image_dir=images, split_column="split")
    with pytest.raises(ValueError, match=r"has no rows"):
        _module(train_csv=_rows(), val_csv=FrameLike([], ["image_path", "label"]), image_dir=images)


def test_unknown_split_value(images: Path) -> None:
    rows = [{**r, "split": "train" if i else "valid"} for i, r in enumerate(_rows())]
    with pytest.raises(ValueError, match=r"split column 'split'.*but got 'valid'\. Did you mean 'val'\?"):
        _module(train_csv=rows, image_dir=images, split_column="split")


def test_single_image_class_under_a_split_warns(images: Path) -> None:
    rows = _rows(23, ("cat", "dog")) + [{"image_path": "img_023.png", "label": "fox"}]
    data = _module(train_csv=rows, image_dir=images, val_split=0.2)
    with pytest.warns(UserWarning, match=r"1 class\(es\) have a single training image.*\['fox'\]"):
        data.setup("fit")
    assert "fox" in [data.class_names[t] for t in data.train_dataset.targets]


def test_multi_label_row_without_label_warns_and_is_kept(images: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "tags": "" if i == 4 else "a b"} for i in range(24)]
    with pytest.warns(UserWarning, match=r"1 row\(s\) of .* have no label \(row 4\)"):
        data = _module(train_csv=rows, image_dir=images, label_column="tags", label_delim=" ", val_split=0)
    data.setup("fit")
    assert data.train_dataset.targets[4].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"label_columns": ["a"], "label_delim": " "}, ValueError, "not both"),
        ({"label_columns": "a"}, TypeError, "list of column names"),
        ({"sampler": "balance"}, ValueError, "Did you mean 'balanced'"),
        ({"dataset_name": "CIFAR10"}, ValueError, "not both"),
        ({"data_dir": "elsewhere"}, ValueError, "Give the image folder once"),
        ({"image_dir": "missing"}, FileNotFoundError, "'missing'"),
    ],
)
def test_bad_table_arguments(images: Path, kwargs: dict, error: type, match: str) -> None:
    kwargs = {"image_dir": images, **kwargs}
    with pytest.raises(error, match=match):
        _module(train_csv=_rows(), **kwargs)


def test_bad_zero_one_value_and_other_refusals(images: Path) -> None:
    rows = [{"image_path": f"img_{i:03d}.png", "a": "yes" if i == 2 else 0} for i in range(24)]
    with pytest.raises(ValueError, match=r"row 2: expected 0 or 1 in the label column 'a', but got 'yes'"):
        _module(train_csv=rows, image_dir=images, label_columns=["a"])
    with pytest.raises(TypeError, match="label_columns"):
        MultiLabelImageDataModule(train_csv=_rows(), image_dir=images)
    with pytest.raises(TypeError, match="needs `data_dir`"):
        ImageDataModule()
    with pytest.raises(TypeError, match=r"\['label_delim', 'class_names'\] describe a table"):
        ImageDataModule(images, label_delim=" ", class_names=["a", "b"])
    with pytest.raises(ValueError, match="2 or more distinct names"):
        _module(train_csv=_rows(), image_dir=images, class_names=["cat", "cat", "dog"])
    with pytest.raises(TypeError, match="a CSV path, a DataFrame or a list of records"):
        _module(train_csv=42, image_dir=images)


# --------------------------------------------------------------------------- end to end


def _epoch_losses(trainer) -> list[float]:
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        return [float(r["train/loss_epoch"]) for r in csv.DictReader(f) if r.get("train/loss_epoch")]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_single_label_csv_trains_and_keeps_class_names(tmp_path: Path, backbone) -> None:
    names = _write_images(tmp_path / "images", 48, list(COLORS.values()))
    rows = [{"image_path": n, "label": list(COLORS)[i % 3]} for i, n in enumerate(names)]
    data = _module(train_csv=_write_csv(tmp_path / "images" / "t.csv", rows), batch_size=8, sampler="balanced")
    model = ImageClassifier(backbone, lr=3e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=3, logger=[LoggerConfig("csv")])
    trainer.fit(model, datamodule=data)
    losses = _epoch_losses(trainer)
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0]
    saved = torch.load(trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert model.class_names == ["blue", "green", "red"] and model.num_classes == 3
    assert ImageClassifier.load_from_checkpoint(trainer.checkpoint_callback.last_model_path).class_names == [
        "blue",
        "green",
        "red",
    ]
    assert saved["datamodule_hyper_parameters"]["class_names"] == ["blue", "green", "red"]
    last = trainer.checkpoint_callback.last_model_path
    again = ImageDataModule.load_from_checkpoint(last, train_csv=tmp_path / "images" / "t.csv")
    assert again.class_names == ["blue", "green", "red"] and again.sampler == "balanced"
    with pytest.raises(TypeError, match="describe a table"):
        ImageDataModule.load_from_checkpoint(last, data_dir=tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_multi_label_csv_trains(tmp_path: Path, backbone) -> None:
    # Two labels read off two colour channels: "red" and "green" (both: yellow, neither: black).
    combos = {(255, 0, 0): "red", (0, 255, 0): "green", (255, 255, 0): "red green", (0, 0, 0): ""}
    names = _write_images(tmp_path / "images", 48, list(combos))
    rows = [{"image_path": n, "tags": list(combos.values())[i % 4]} for i, n in enumerate(names)]
    with pytest.warns(UserWarning, match="have no label"):
        data = MultiLabelImageDataModule(
            train_csv=_write_csv(tmp_path / "images" / "t.csv", rows),
            label_column="tags",
            label_delim=" ",
            image_size=32,
            batch_size=8,
            num_workers=0,
            augmentation_preset="none",
        )
    model = ImageClassifier(backbone, multi_label=True, lr=3e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=3, logger=[LoggerConfig("csv")])
    trainer.fit(model, datamodule=data)
    losses = _epoch_losses(trainer)
    assert model.num_classes == 2 and model.class_names == ["green", "red"]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0]


def test_multi_label_data_needs_a_multi_label_model(images: Path, tmp_path: Path, backbone) -> None:
    data = _module(train_csv=_rows(), image_dir=images, label_delim=" ")
    with pytest.raises(ValueError, match=r"multi-label .* `ImageClassifier\(..., multi_label=True\)`"):
        cpu_trainer(tmp_path, fast_dev_run=True).fit(ImageClassifier(backbone), datamodule=data)
    model = ImageClassifier(backbone, multi_label=True, class_weights="balanced")
    with pytest.raises(ValueError, match="multi-label 0/1 vectors"):
        cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=data)
