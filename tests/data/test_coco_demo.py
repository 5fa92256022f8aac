"""Tests of the synthetic COCO shapes data set (`autotimm.data.demo.coco_shapes`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autotimm.data.demo.coco_shapes import _tight_box, make_coco_shapes
from autotimm.data.demo.folder import MANIFEST_NAME

SMALL = {"image_size": 64, "num_train": 24, "num_val": 8, "num_test": 4, "max_objects": 4, "seed": 3}
SATURATED = 40  # shapes have max - min channel >= 84; the grey backgrounds stay below 20


def _load(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


def _saturation(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    return pixels.max(axis=2) - pixels.min(axis=2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_shapes(tmp_path_factory.mktemp("coco") / "shapes", **SMALL)


def test_layout_and_coco_fields(shapes: Path) -> None:
    assert sorted(p.name for p in shapes.iterdir()) == sorted(
        ["annotations", "train2017", "val2017", "test2017", MANIFEST_NAME]
    )
    image_ids, ann_ids = set(), set()
    for split in ("train", "val", "test"):
        coco = _load(shapes, split)
        assert len(coco["images"]) == SMALL[f"num_{split}"]
        assert coco["categories"] == [
            {"id": 1, "name": "circle", "supercategory": "shape"},
            {"id": 2, "name": "square", "supercategory": "shape"},
            {"id": 3, "name": "triangle", "supercategory": "shape"},
        ]
        files = {p.name for p in (shapes / f"{split}2017").iterdir()}
        assert files == {image["file_name"] for image in coco["images"]}
        for image in coco["images"]:
            assert set(image) == {"id", "file_name", "width", "height"}
            assert (image["width"], image["height"]) == (64, 64)
            assert Image.open(shapes / f"{split}2017" / image["file_name"]).size == (64, 64)
        ids = {image["id"] for image in coco["images"]}
        assert not ids & image_ids, "image ids must be unique across splits"
        image_ids |= ids
        for ann in coco["annotations"]:
            assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} <= set(ann)
            assert ann["image_id"] in ids
            assert ann["category_id"] in {1, 2, 3}
            assert ann["iscrowd"] == 0
            assert ann["id"] not in ann_ids
            ann_ids.add(ann["id"])


def test_loads_with_pycocotools(shapes: Path) -> None:
    coco_module = pytest.importorskip("pycocotools.coco", reason="pip install pycocotools")
    coco = coco_module.COCO(str(shapes / "annotations" / "instances_train2017.json"))
    assert coco.getCatIds() == [1, 2, 3]
    assert len(coco.getImgIds()) == SMALL["num_train"]
    assert len(coco.getAnnIds()) == len(_load(shapes, "train")["annotations"])


def test_boxes_inside_and_tight(shapes: Path) -> None:
    n_boxes = 0
    for split in ("train", "val", "test"):
        coco = _load(shapes, split)
        names = {image["id"]: image["file_name"] for image in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, int) for v in (x, y, w, h))
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert 4 <= ann["area"] <= w * h
            inside = _saturation(shapes / f"{split}2017" / names[ann["image_id"]])[y : y + h, x : x + w] > SATURATED
            # The shape's colour touches every edge of its box, so the box cannot shrink.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), ann
            assert inside.sum() >= ann["area"]
            n_boxes += 1
    assert n_boxes > SMALL["num_train"]


def test_negatives_and_backgrounds(shapes: Path) -> None:
    for split in ("train", "val", "test"):
        coco = _load(shapes, split)
        with_boxes = {ann["image_id"] for ann in coco["annotations"]}
        negatives = [image for image in coco["images"] if image["id"] not in with_boxes]
        assert 1 <= len(negatives) < len(coco["images"]), split
        for image in negatives:
            saturation = _saturation(shapes / f"{split}2017" / image["file_name"])
            assert saturation.max() <= SATURATED  # nothing shape-like on a negative
        pixels = np.asarray(Image.open(shapes / f"{split}2017" / negatives[0]["file_name"]))
        assert pixels.std() > 2  # textured, not flat


def test_object_counts_respect_max_objects(shapes: Path) -> None:
    coco = _load(shapes, "train")
    per_image = np.bincount([ann["image_id"] for ann in coco["annotations"]])
    assert per_image.max() <= SMALL["max_objects"]


def test_deterministic(tmp_path: Path, shapes: Path) -> None:
    again = make_coco_shapes(tmp_path / "again", **SMALL)
    assert _files(again) == _files(shapes)
    other = make_coco_shapes(tmp_path / "other", **{**SMALL, "seed": 4})
    assert _files(other) != _files(shapes)


def test_train_split_independent_of_other_splits(tmp_path: Path, shapes: Path) -> None:
    root = make_coco_shapes(tmp_path / "train_only", **{**SMALL, "num_val": 0, "num_test": 0})
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "autotimm_demo.json", "train2017"]
    assert [p.name for p in (root / "annotations").iterdir()] == ["instances_train2017.json"]
    assert _load(root, "train") == _load(shapes, "train")


def test_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    params = {**SMALL, "num_train": 4, "num_val": 2, "num_test": 0}
    assert make_coco_shapes(root, **params) == root
    stamp = (root / "train2017" / "000000000001.png").stat().st_mtime_ns
    assert make_coco_shapes(str(root), **params) == root
    assert (root / "train2017" / "000000000001.png").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="made with"):
        make_coco_shapes(root, **{**params, "seed": 9})
    (root / "train2017" / "000000000001.png").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        make_coco_shapes(root, **params)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_empty_folder_is_used(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    make_coco_shapes(root, **{**SMALL, "num_train": 2, "num_val": 0, "num_test": 0})
    assert (root / "annotations" / "instances_train2017.json").is_file()


def test_refuses_foreign_folder_and_file(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing"):
        make_coco_shapes(foreign, num_train=2, num_val=0)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        make_coco_shapes(tmp_path / "a_file", num_train=2, num_val=0)


def test_other_classes(tmp_path: Path) -> None:
    root = make_coco_shapes(tmp_path / "rings", image_size=32, num_train=6, num_val=0, classes=["ring", "diamond"])
    coco = _load(root, "train")
    assert [c["name"] for c in coco["categories"]] == ["ring", "diamond"]
    assert {ann["category_id"] for ann in coco["annotations"]} <= {1, 2}


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"image_size": 16}, ValueError, "image_size"),
        ({"image_size": 64.0}, TypeError, "image_size"),
        ({"num_train": 0}, ValueError, "num_train"),
        ({"num_val": -1}, ValueError, "num_val"),
        ({"num_test": True}, TypeError, "num_test"),
        ({"max_objects": -2}, ValueError, "max_objects"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": "0"}, TypeError, "seed"),
        ({"classes": "circle"}, TypeError, "classes"),
        ({"classes": ()}, ValueError, "classes"),
        ({"classes": ("circle", "hexagon")}, ValueError, "hexagon"),
        ({"classes": ("circle", "circle")}, ValueError, "distinct"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        make_coco_shapes(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


def test_tight_box_of_mask() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[2, 3] = mask[5, 7] = True
    assert _tight_box(mask) == [3, 2, 5, 4]
