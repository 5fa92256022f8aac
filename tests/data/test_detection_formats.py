"""Tests of the YOLO, Pascal VOC and CSV detection formats: the same shapes read as from COCO, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from autotimm import BackboneConfig, ObjectDetector
from autotimm.data import make_coco_shapes
from autotimm.data.detection import DetectionDataModule
from helpers import cpu_trainer

SIZE = 64
FORMATS = ("yolo", "voc", "csv")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    kwargs = {"image_size": SIZE, "num_train": 4, "num_val": 3, "num_test": 2}
    return {f: make_coco_shapes(root / f, format=f, **kwargs) for f in ("coco", *FORMATS)}


def copy_of(shapes: dict[str, Path], format: str, tmp_path: Path) -> Path:
    """A copy of the shapes in `format` that a test may break."""
    import shutil

    return Path(shutil.copytree(shapes[format], tmp_path / format))


def targets(data: DetectionDataModule, split: str) -> list[tuple[list[int], torch.Tensor, list[int]]]:
    dataset = {"val": data.val_dataset, "test": data.test_dataset}[split]
    return [
        (t["labels"].tolist(), t["boxes"], t["iscrowd"].tolist()) for _, t in (dataset[i] for i in range(len(dataset)))
    ]


@pytest.mark.parametrize("format", FORMATS)
def test_each_format_reads_the_same_boxes_as_coco(shapes: dict[str, Path], format: str) -> None:
    expected = DetectionDataModule(shapes["coco"], image_size=SIZE, num_workers=0)
    data = DetectionDataModule(shapes[format], image_size=SIZE, num_workers=0)  # format="auto"
    assert data.format == format and expected.format == "coco"
    assert data.class_names == expected.class_names == ["circle", "square", "triangle"]
    expected.setup()
    data.setup()
    assert len(data.train_dataset) == 4
    for split in ("val", "test"):
        got, want = targets(data, split), targets(expected, split)
        assert len(got) == len(want) and sum(len(labels) for labels, _, _ in want) > 0
        for (labels, boxes, crowd), (labels0, boxes0, crowd0) in zip(got, want, strict=True):
            assert labels == labels0 and crowd == crowd0
            assert torch.allclose(boxes, boxes0, atol=1e-3)  # YOLO's 6 decimals of normalised values


def test_format_argument_and_detection_errors(shapes: dict[str, Path], tmp_path: Path) -> None:
    assert DetectionDataModule(shapes["voc"], format="voc", num_workers=0).format == "voc"
    with pytest.raises(ValueError, match=r"Expected `format` to be one of.*'yolov8'.*Did you mean 'yolo'"):
        DetectionDataModule(shapes["yolo"], format="yolov8")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"detection format of .*stuff.*data\.yaml.*Annotations/.*notes\.txt"):
        DetectionDataModule(tmp_path / "stuff")
    with pytest.raises(FileNotFoundError, match=r"No data\.yaml.*YOLO layout"):
        DetectionDataModule(tmp_path / "stuff", format="yolo")
    with pytest.raises(ValueError, match="`class_names` is for the VOC and CSV formats"):
        DetectionDataModule(shapes["yolo"], class_names=["a", "b", "c"])


# ---------------------------------------------------------------------- YOLO


def test_yolo_names_as_dict_and_label_file_lines(shapes: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(shapes, "yolo", tmp_path)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nnames: {0: circle, 1: square, 2: triangle}\n")
    data = DetectionDataModule(root, image_size=SIZE, num_workers=0)
    assert data.class_names == ["circle", "square", "triangle"] and data.category_ids == [0, 1, 2]
    data.setup("fit")
    assert data.val_dataset is None  # no `val` in the yaml


def test_yolo_image_list_file_and_polygon_lines(shapes: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(shapes, "yolo", tmp_path)
    images = sorted((root / "images" / "train").glob("*.png"))
    (root / "train.txt").write_text("".join(f"./images/train/{p.name}\n" for p in images[:2]))
    (root / "data.yaml").write_text("train: train.txt\nnames: [circle, square, triangle]\n")
    (root / "labels" / "train" / f"{images[0].stem}.txt").write_text("2 0.25 0.25 0.75 0.25 0.5 0.75\n")
    data = DetectionDataModule(root, image_size=SIZE, num_workers=0, augmentation_preset="none")
    data.setup("fit")
    assert len(data.train_dataset) == 2
    _, target = data.train_dataset[0]
    assert target["labels"].tolist() == [2]
    assert torch.allclose(target["boxes"], torch.tensor([[16.0, 16.0, 48.0, 48.0]]))  # the polygon's bounding box
    (root / "train.txt").write_text("./images/train/missing.png\n")
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) named in .*train\.txt.*missing\.png"):
        DetectionDataModule(root, num_workers=0).setup("fit")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 1.2 0.1 0.1", r"line 2: box value 1\.2 is outside \[0, 1\]"),
        ("7 0.5 0.5 0.1 0.1", r"line 2: class id 7 is not in `names`.*\['circle', 'square', 'triangle'\]"),
        ("0 0.5 0.5 0.1", r"line 2: expected `class cx cy w h`"),
        ("cat 0.5 0.5 0.1 0.1", r"line 2: expected an integer class"),
    ],
)
def test_yolo_bad_label_line_names_file_and_line(
    shapes: dict[str, Path], tmp_path: Path, line: str, match: str
) -> None:
    root = copy_of(shapes, "yolo", tmp_path)
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text("1 0.5 0.5 0.2 0.2\n" + line + "\n")
    data = DetectionDataModule(root, num_workers=0)
    with pytest.raises(ValueError, match=f"{label.name}', {match}"):
        data.setup("fit")


def test_yolo_degenerate_boxes_dropped_and_missing_labels_are_negatives(
    shapes: dict[str, Path], tmp_path: Path
) -> None:
    root = copy_of(shapes, "yolo", tmp_path)
    labels = sorted((root / "labels" / "train").glob("*.txt"))
    labels[0].write_text("1 0.5 0.5 0.0 0.2\n2 0.5 0.5 0.5 0.25\n")
    labels[1].unlink()
    data = DetectionDataModule(root, image_size=SIZE, num_workers=0, augmentation_preset="none")
    with pytest.warns(UserWarning, match=rf"dropped 1 box\(es\).*file:line {labels[0].name}:1"):
        data.setup("fit")
    _, target = data.train_dataset[0]
    assert target["labels"].tolist() == [2]
    assert torch.allclose(target["boxes"], torch.tensor([[16.0, 24.0, 48.0, 40.0]]))
    assert data.train_dataset[1][1]["boxes"].shape == (0, 4)


# ---------------------------------------------------------------------- Pascal VOC


def test_voc_difficult_objects_are_ignored_like_crowds(shapes: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(shapes, "voc", tmp_path)
    stem = (root / "ImageSets" / "Main" / "val.txt").read_text().split()[0]
    xml = root / "Annotations" / f"{stem}.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    data = DetectionDataModule(root, image_size=SIZE, num_workers=0, augmentation_preset="none")
    data.setup("validate")
    assert data.val_dataset[0][1]["iscrowd"].tolist()[0] == 1  # kept, flagged, for evaluation


def test_voc_class_names_argument_and_unknown_class(shapes: dict[str, Path], tmp_path: Path) -> None:
    data = DetectionDataModule(shapes["voc"], class_names=["triangle", "square", "circle", "ring"], num_workers=0)
    assert data.class_names == ["triangle", "square", "circle", "ring"]
    data = DetectionDataModule(shapes["voc"], class_names=["triangle", "square", "cirle"], num_workers=0)
    with pytest.raises(ValueError, match=r"\.xml': object #\d has class 'circle'.*Did you mean 'cirle'"):
        data.setup("fit")


def test_voc_missing_annotation_and_image_files_named(shapes: dict[str, Path], tmp_path: Path) -> None:
    root = copy_of(shapes, "voc", tmp_path)
    stems = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    (root / "JPEGImages" / f"{stems[1]}.png").unlink()
    data = DetectionDataModule(root, num_workers=0)
    with pytest.raises(FileNotFoundError, match=rf"1 image file\(s\) named in .*train\.txt.*{stems[1]}\.png"):
        data.setup("fit")
    (root / "Annotations" / f"{stems[0]}.xml").unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 annotation file\(s\) listed in .*train\.txt.*{stems[0]}\.xml"):
        DetectionDataModule(root)


# ---------------------------------------------------------------------- CSV


def rewrite_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_csv_autotimm_spelling_with_other_columns(shapes: dict[str, Path], tmp_path: Path) -> None:
    with open(shapes["csv"] / "train.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    table = tmp_path / "boxes.csv"
    rewrite_csv(table, ["file", "x1", "y1", "x2", "y2", "shape"], rows)
    data = DetectionDataModule(
        train_csv=table,
        val_csv=shapes["csv"] / "val.csv",
        image_dir=shapes["csv"],
        image_column="file",
        bbox_columns=["x1", "y1", "x2", "y2"],
        label_column="shape",
        image_size=SIZE,
        num_workers=0,
    )
    assert data.format == "csv" and data.class_names == ["circle", "square", "triangle"]
    with pytest.raises(ValueError, match=r"val\.csv' has no column 'file' \(`image_column`\).*'image_path'"):
        data.setup("fit")


def test_csv_bad_input_named(shapes: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "boxes.csv"
    rewrite_csv(table, ["image_path", "xmin", "y_min", "x_max", "y_max", "label"], [])
    with pytest.raises(
        ValueError, match=r"no column 'x_min' \(`bbox_columns\[0\]`\); the columns found are .*Did you mean 'xmin'"
    ):
        DetectionDataModule(train_csv=table, image_dir=shapes["csv"])
    header = ["image_path", "x_min", "y_min", "x_max", "y_max", "label"]
    rewrite_csv(table, header, [["images/a.png", "1", "2", "x", "4", "cat"]])
    with pytest.raises(ValueError, match=r"boxes\.csv', line 2: expected four numbers"):
        DetectionDataModule(train_csv=table, image_dir=shapes["csv"])
    rewrite_csv(
        table, header, [["images/nope.png", "1", "2", "3", "4", "cat"], ["images/gone.png", "", "", "", "", ""]]
    )
    data = DetectionDataModule(train_csv=table, image_dir=shapes["csv"], class_names=["cat", "dog"])
    with pytest.raises(FileNotFoundError, match=r"2 image file\(s\) named in .*boxes\.csv.*nope\.png"):
        data.setup("fit")
    rewrite_csv(table, header, [["images/000000000001.png", "1", "2", "3", "4", "cta"]])
    data = DetectionDataModule(train_csv=table, image_dir=shapes["csv"], class_names=["cat", "dog"])
    with pytest.raises(ValueError, match=r"line 2: label 'cta' is not one of the class names.*Did you mean 'cat'"):
        data.setup("fit")


# ---------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_detector_trains_from_yolo_format(shapes: dict[str, Path], tmp_path: Path) -> None:
    data = DetectionDataModule(shapes["yolo"], image_size=SIZE, batch_size=4, num_workers=0, augmentation_preset="none")
    model = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), fpn_channels=64, lr=1e-3)
    trainer = cpu_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    assert model.num_classes == 3 and model.class_names == ["circle", "square", "triangle"]
    assert torch.isfinite(trainer.callback_metrics["train/loss"]) and "val/map" in trainer.callback_metrics
