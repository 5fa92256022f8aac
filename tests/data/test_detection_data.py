"""Tests of `DetectionDataModule` on real files: synthetic COCO shapes and small hand-written COCO sets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from autotimm.data import CorruptImageError, coco_evaluate, make_coco_shapes, to_coco_results
from autotimm.data.detection import DetectionDataModule, boxes_to_original, detection_collate
from helpers import ann, write_coco

SIZE = 64


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_coco_shapes(tmp_path_factory.mktemp("shapes") / "coco", image_size=SIZE, num_train=6, num_val=4)


@pytest.fixture
def custom_root(tmp_path: Path) -> Path:
    """Non-contiguous category ids (12, 3, 7), one crowd box, one negative image."""
    return write_coco(
        tmp_path / "custom",
        images=[
            {"id": 10, "file_name": "a.png", "size": (32, 32)},
            {"id": 20, "file_name": "b.png", "size": (32, 32)},
            {"id": 30, "file_name": "neg.png", "size": (32, 32)},
        ],
        annotations=[
            ann(1, 10, 12, [2, 2, 10, 10]),
            ann(2, 10, 3, [15, 15, 8, 6]),
            ann(3, 20, 7, [4, 4, 12, 12]),
            ann(4, 20, 3, [0, 0, 30, 30], iscrowd=1),
        ],
        categories=[{"id": 12, "name": "twelve"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
    )


def sample_of(dataset, image_id: int):
    index = next(i for i, r in enumerate(dataset.records) if r.image_id == image_id)
    return dataset[index]


def test_class_names_follow_sorted_category_ids(custom_root: Path) -> None:
    data = DetectionDataModule(custom_root, image_size=32, num_workers=0)
    assert data.class_names == ["three", "seven", "twelve"]
    assert data.num_classes == 3
    assert data.category_ids == [3, 7, 12]
    data.setup("validate")
    _, target = sample_of(data.val_dataset, 10)
    assert target["labels"].tolist() == [2, 0]  # category 12 -> 2, category 3 -> 0
    assert torch.allclose(target["boxes"], torch.tensor([[2.0, 2, 12, 12], [15, 15, 23, 21]]))


def test_train_batch_shapes_and_boxes_inside(shapes_root: Path) -> None:
    data = DetectionDataModule(shapes_root, image_size=SIZE, batch_size=3, num_workers=0)
    assert data.class_names == ["circle", "square", "triangle"]
    data.setup("fit")
    torch.manual_seed(0)
    loader = data.train_dataloader()
    assert loader.batch_size == 3 and not loader.pin_memory
    images, targets = next(iter(loader))
    assert images.shape == (3, 3, SIZE, SIZE) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert len(targets) == 3
    for target in targets:
        boxes = target["boxes"]
        assert boxes.dtype == torch.float32 and boxes.shape == (len(target["labels"]), 4)
        assert target["labels"].dtype == torch.int64
        assert ((boxes >= 0) & (boxes <= SIZE)).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 1).all()
        assert isinstance(target["image_id"], int)
    data.batch_size = 2  # read when the loader is built
    assert data.train_dataloader().batch_size == 2


@pytest.mark.parametrize("preset", ["strong", "none"])
def test_presets_keep_boxes_valid(shapes_root: Path, preset: str) -> None:
    data = DetectionDataModule(shapes_root, image_size=48, batch_size=6, num_workers=0, augmentation_preset=preset)
    data.setup("fit")
    torch.manual_seed(1)
    images, targets = next(iter(data.train_dataloader()))
    assert images.shape == (6, 3, 48, 48)
    for target in targets:
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 48)).all()


def test_flip_moves_boxes_with_the_object(shapes_root: Path) -> None:
    data = DetectionDataModule(shapes_root, image_size=SIZE, num_workers=0, augmentation_preset="none")
    data.setup("fit")
    train = data.train_dataset
    index = next(i for i, r in enumerate(train.records) if len(r.labels) > 0)
    image, target = train[index]
    train.transform.steps.insert(0, v2.RandomHorizontalFlip(p=1.0))
    flipped, flipped_target = train[index]
    assert torch.equal(flipped, image.flip(-1))
    x1, y1, x2, y2 = target["boxes"].unbind(-1)
    assert torch.allclose(flipped_target["boxes"], torch.stack([SIZE - x2, y1, SIZE - x1, y2], -1))
    # The box holds the drawn shape: its saturated pixels lie inside it, in the flipped image too.
    for img, boxes in ((image, target["boxes"]), (flipped, flipped_target["boxes"])):
        x1, y1, x2, y2 = boxes[0].round().int().tolist()
        inside = img[:, y1:y2, x1:x2]
        saturation = inside.max(0).values - inside.min(0).values
        assert saturation.max() > 0.3


def test_negatives_kept_in_val(shapes_root: Path) -> None:
    data = DetectionDataModule(shapes_root, image_size=SIZE, batch_size=4, num_workers=0)
    data.setup("validate")
    coco = json.loads((shapes_root / "annotations" / "instances_val2017.json").read_text())
    assert len(data.val_dataset) == len(coco["images"])
    _, targets = next(iter(data.val_dataloader()))
    assert any(t["boxes"].shape == (0, 4) for t in targets)
    assert data.predict_dataloader().dataset is data.val_dataset  # no test split


def test_crowd_boxes_excluded_from_training(custom_root: Path) -> None:
    data = DetectionDataModule(custom_root, image_size=32, num_workers=0, augmentation_preset="none")
    data.setup("fit")
    _, train_target = sample_of(data.train_dataset, 20)
    assert train_target["labels"].tolist() == [1]
    assert train_target["iscrowd"].tolist() == [0]
    _, val_target = sample_of(data.val_dataset, 20)
    assert val_target["labels"].tolist() == [1, 0]
    assert val_target["iscrowd"].tolist() == [0, 1]
    _, negative = sample_of(data.train_dataset, 30)
    assert negative["boxes"].shape == (0, 4)


def test_boxes_map_back_to_original_pixels(tmp_path: Path) -> None:
    root = write_coco(
        tmp_path / "wide",
        images=[{"id": 1, "file_name": "wide.png", "size": (40, 80)}],
        annotations=[ann(1, 1, 1, [10, 5, 30, 20])],
        categories=[{"id": 1, "name": "thing"}],
    )
    data = DetectionDataModule(root, image_size=64, num_workers=0)
    data.setup("validate")
    image, target = data.val_dataset[0]
    assert image.shape == (3, 64, 64)  # 80x40 -> 64x32, padded at the bottom
    assert target["orig_size"] == (40, 80)
    assert target["scale"] == pytest.approx((0.8, 0.8))
    assert torch.allclose(target["boxes"], torch.tensor([[8.0, 4.0, 32.0, 20.0]]))
    assert torch.allclose(boxes_to_original(target["boxes"], target), torch.tensor([[10.0, 5.0, 40.0, 25.0]]))
    assert torch.allclose(image[:, 33:, :], torch.tensor(114 / 255))  # letterbox padding


def test_collate_and_dataset_pickle(shapes_root: Path) -> None:
    assert pickle.loads(pickle.dumps(detection_collate)) is detection_collate
    data = DetectionDataModule(shapes_root, image_size=SIZE, num_workers=0)
    data.setup("fit")
    pickle.loads(pickle.dumps(data.train_dataset))
    a, b = torch.zeros(3, 4, 4), torch.zeros(3, 5, 4)
    images, targets = detection_collate([(a, {"i": 0}), (b, {"i": 1})])
    assert isinstance(images, list) and [t["i"] for t in targets] == [0, 1]


# ---------------------------------------------------------------------- bad input


def break_train_json(root: Path, edit) -> None:
    path = root / "annotations" / "instances_train2017.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def test_malformed_json_names_file(custom_root: Path) -> None:
    path = custom_root / "annotations" / "instances_train2017.json"
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match=r"instances_train2017\.json' is not valid JSON: Expecting value"):
        DetectionDataModule(custom_root, num_workers=0)


def test_missing_key_named(custom_root: Path) -> None:
    break_train_json(custom_root, lambda coco: coco["annotations"][1].pop("bbox"))
    data = DetectionDataModule(custom_root, num_workers=0)
    with pytest.raises(ValueError, match=r"annotation #1 lacks the key\(s\) \['bbox'\]"):
        data.setup("fit")
    break_train_json(custom_root, lambda coco: coco.pop("categories"))
    with pytest.raises(ValueError, match=r"instances_train2017\.json.*\['categories'\]"):
        DetectionDataModule(custom_root, num_workers=0)


def test_degenerate_boxes_warned_and_dropped(custom_root: Path) -> None:
    def edit(coco):
        coco["annotations"][0]["bbox"] = [2, 2, 0, 10]
        coco["annotations"][2]["bbox"] = [2, 2, 5, -1]

    break_train_json(custom_root, edit)
    data = DetectionDataModule(custom_root, image_size=32, num_workers=0, augmentation_preset="none")
    with pytest.warns(UserWarning, match=r"dropped 2 box\(es\).*annotation ids 1, 3"):
        data.setup("fit")
    _, target = sample_of(data.train_dataset, 10)
    assert target["labels"].tolist() == [0]


def test_unknown_category_names_annotation(custom_root: Path) -> None:
    break_train_json(custom_root, lambda coco: coco["annotations"][2].update(category_id=99))
    data = DetectionDataModule(custom_root, num_workers=0)
    with pytest.raises(ValueError, match="annotation id 3 has category id 99"):
        data.setup("fit")


def test_missing_image_files_named(custom_root: Path) -> None:
    (custom_root / "train2017" / "b.png").unlink()
    data = DetectionDataModule(custom_root, num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\).*b\.png"):
        data.setup("fit")


def test_missing_folders_explain_layout(tmp_path: Path, custom_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist.*COCO layout"):
        DetectionDataModule(tmp_path / "nowhere")
    (custom_root / "annotations" / "instances_train2017.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"train annotation file .*instances_train2017\.json.*COCO layout"):
        DetectionDataModule(custom_root)


def test_missing_val_folder_with_annotations(custom_root: Path) -> None:
    for f in (custom_root / "val2017").iterdir():
        f.unlink()
    (custom_root / "val2017").rmdir()
    with pytest.raises(FileNotFoundError, match=r"val image folder .*val2017"):
        DetectionDataModule(custom_root)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="augmentation_preset"):
        DetectionDataModule(".", augmentation_preset="heavy")
    with pytest.raises(ValueError, match="batch_size"):
        DetectionDataModule(".", batch_size=0)
    with pytest.raises(ValueError, match="min_box_size"):
        DetectionDataModule(".", min_box_size=0.5)


def test_coco_evaluate_scores_perfect_and_empty_predictions(custom_root: Path) -> None:
    annotation_file = custom_root / "annotations" / "instances_val2017.json"
    coco = json.loads(annotation_file.read_text())
    data = DetectionDataModule(custom_root, image_size=32, num_workers=0)
    label_of = {cid: label for label, cid in enumerate(data.category_ids)}
    predictions = []
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        labels = torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        predictions.append(
            {"image_id": image["id"], "boxes": boxes.float(), "labels": labels, "scores": torch.ones(len(anns))}
        )
    results = to_coco_results([predictions], data.category_ids)  # one batch, as `trainer.predict` returns
    assert [r["bbox"] for r in results if r["image_id"] == 10] == [[2.0, 2.0, 10.0, 10.0], [15.0, 15.0, 8.0, 6.0]]
    scores = coco_evaluate(annotation_file, results)
    assert scores["map"] == pytest.approx(1.0) and scores["map_50"] == pytest.approx(1.0)
    # A detection on the crowd region alone is ignored, not counted as a false positive.
    crowd_hit = {"image_id": 20, "category_id": 3, "bbox": [0.0, 0.0, 30.0, 30.0], "score": 0.99}
    assert coco_evaluate(annotation_file, [*results, crowd_hit])["map_50"] == pytest.approx(1.0)
    assert coco_evaluate(annotation_file, [])["map"] == 0.0
    with pytest.raises(ValueError, match="image_id"):
        to_coco_results([{"boxes": boxes, "labels": labels, "scores": torch.ones(len(labels))}], data.category_ids)


def test_truncated_image_is_named_when_read(custom_root: Path) -> None:
    path = custom_root / "train2017" / "a.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    data = DetectionDataModule(custom_root, image_size=32, num_workers=0, augmentation_preset="none")
    data.setup("fit")
    with pytest.raises(CorruptImageError, match="a.png"):
        sample_of(data.train_dataset, 10)
