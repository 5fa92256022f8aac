"""`predict` on new images: each result checked against the trained model's own forward pass."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou
from torchvision.transforms.functional import to_tensor

import autotimm
from autotimm import ImageClassifier, ObjectDetector
from autotimm.inference import NotAnImageError
from helpers import COLOURS, training_root

pytestmark = pytest.mark.slow  # the fixtures train a model (once a session)


@pytest.fixture
def classifier(classifier_ckpt: Path) -> ImageClassifier:
    return autotimm.load(classifier_ckpt, device="cpu")


@pytest.fixture
def detector(detector_ckpt: Path) -> ObjectDetector:
    return autotimm.load(detector_ckpt, device="cpu")


def _new_images(folder: Path) -> list[Path]:
    """One unseen 48x40 image per colour class, named after it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, colour in COLOURS.items():
        pixels = np.broadcast_to(np.array(colour, dtype=np.uint8), (40, 48, 3))
        path = folder / f"{name}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        paths.append(path)
    return paths


def _forward_probs(model: ImageClassifier, image: Image.Image, flip: bool = False) -> torch.Tensor:
    x = model.eval_transform()(image.convert("RGB"))[None]
    with torch.no_grad():
        return model(x.flip(-1) if flip else x).softmax(-1)[0]


# ---------------------------------------------------------------------------- classification


def test_classifier_predicts_a_folder_as_its_own_forward_pass(classifier: ImageClassifier, tmp_path: Path):
    paths = _new_images(tmp_path / "new")
    (tmp_path / "new" / "notes.txt").write_text("not an image")  # left out of a folder
    results = classifier.predict(tmp_path / "new", batch_size=2, top_k=2)
    assert [r.path for r in results] == [str(p) for p in sorted(paths)]
    for result in results:
        expected = _forward_probs(classifier, Image.open(result.path))
        torch.testing.assert_close(result.probs, expected, atol=1e-5, rtol=1e-4)
        assert result.label_id == int(expected.argmax()) and result.label == classifier.class_names[result.label_id]
        assert result.score == pytest.approx(float(expected.max()), abs=1e-5)
        assert [name for name, _ in result.top_k][0] == result.label and len(result.top_k) == 2
    # trained on these colours: each new image gets its own class
    assert [r.label for r in results] == [Path(r.path).stem for r in results]


def test_every_kind_of_source_gives_the_same_prediction(classifier: ImageClassifier, tmp_path: Path):
    path = _new_images(tmp_path)[0]
    image = Image.open(path).convert("RGB")
    array = np.asarray(image)
    sources = {
        "path": str(path),
        "pathlib": path,
        "list": [path],
        "glob": str(tmp_path / "red*.png"),
        "pil": image,
        "array": array,
        "float array": array / 255.0,
        "tensor": to_tensor(image)[None],
    }
    expected = _forward_probs(classifier, image)
    for kind, source in sources.items():
        results = classifier.predict(source)
        assert len(results) == 1, kind
        torch.testing.assert_close(results[0].probs, expected, atol=1e-5, rtol=1e-4, msg=kind)


def test_tta_averages_the_image_and_its_mirror(classifier: ImageClassifier, tmp_path: Path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    result = classifier.predict(image, tta=True)[0]
    expected = (_forward_probs(classifier, image) + _forward_probs(classifier, image, flip=True)) / 2
    torch.testing.assert_close(result.probs, expected, atol=1e-5, rtol=1e-4)


def test_grey_rgba_16_bit_and_large_images_are_converted_and_resized(classifier: ImageClassifier, tmp_path: Path):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    grey = rgb.convert("L")
    grey.save(tmp_path / "grey.png")
    rgb.convert("RGBA").save(tmp_path / "rgba.png")
    deep = (np.asarray(grey).astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    rgb.resize((800, 800)).save(tmp_path / "large.png")
    results = {Path(r.path).stem: r for r in classifier.predict(tmp_path)}
    grey_rgb = grey.convert("RGB")
    torch.testing.assert_close(results["grey"].probs, _forward_probs(classifier, grey_rgb), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results["deep"].probs, _forward_probs(classifier, grey_rgb), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results["rgba"].probs, _forward_probs(classifier, rgb), atol=1e-5, rtol=1e-4)
    large = _forward_probs(classifier, Image.open(tmp_path / "large.png"))  # resized by the eval transform
    torch.testing.assert_close(results["large"].probs, large, atol=1e-5, rtol=1e-4)


def test_files_that_are_not_images_are_named_and_skipped_or_refused(
    classifier: ImageClassifier, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    good = _new_images(tmp_path)[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    with caplog.at_level(logging.WARNING):
        results = classifier.predict([good, broken, text])
    assert [r.path for r in results] == [str(good)]
    assert results.skipped == [str(broken)]
    assert "broken.jpg" in caplog.text and "readme.txt" in caplog.text
    with pytest.raises(NotAnImageError, match="broken.jpg"):
        classifier.predict([good, broken], on_bad_file="raise")
    with pytest.raises(NotAnImageError, match="readme.txt"):
        classifier.predict(text, on_bad_file="raise")
    with pytest.raises(ValueError, match="on_bad_file"):
        classifier.predict(good, on_bad_file="ignore")


def test_empty_folder_missing_path_and_no_images_are_clear_errors(classifier: ImageClassifier, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files in .*empty"):
        classifier.predict(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        classifier.predict(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"\*.jpg"):
        classifier.predict(str(tmp_path / "*.jpg"))
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(ValueError, match="None of the 1 files"):
        classifier.predict(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="batch_size"):
        classifier.predict(tmp_path / "bad.png", batch_size=0)


def test_predict_restores_training_mode_and_writes_csv_json_and_drawings(classifier: ImageClassifier, tmp_path: Path):
    paths = _new_images(tmp_path / "new")
    classifier.train()
    results = classifier.predict(tmp_path / "new")
    assert classifier.training
    csv_text = results.to_csv(tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv_text[0] == "path,label,label_id,score,top_k" and len(csv_text) == 1 + len(paths)
    assert csv_text[1].startswith(f"{sorted(paths)[0]},{results[0].label},")
    saved = json.loads(results.to_json(tmp_path / "results.json").read_text())
    assert saved["predictions"][0] == results[0].to_dict() and saved["skipped"] == []
    drawn = results.save_images(tmp_path / "drawn")
    assert sorted(p.name for p in drawn) == sorted(p.name for p in paths)
    picture = Image.open(drawn[0])
    assert picture.size == (48, 40)
    assert np.asarray(picture).std() > 0  # the label was written on a one-colour image


# ---------------------------------------------------------------------------- detection


def _shapes(detector_ckpt: Path) -> list[Path]:
    return sorted((training_root(detector_ckpt) / "coco" / "val2017").glob("*.png"))


def test_detector_boxes_are_its_own_forward_pass_in_original_pixels(
    detector: ObjectDetector, detector_ckpt: Path, tmp_path: Path
):
    # Unseen sizes: a val image stretched to 100x70 and one enlarged to 300x300.
    original = Image.open(_shapes(detector_ckpt)[0]).convert("RGB")
    original.resize((100, 70)).save(tmp_path / "wide.png")
    original.resize((300, 300)).save(tmp_path / "large.png")
    results = detector.predict(tmp_path, score_thresh=0.0)
    for result in results:
        image = Image.open(result.path).convert("RGB")
        with torch.no_grad():
            expected = detector([to_tensor(image)])[0]
        order = expected["scores"].argsort(descending=True)
        assert result.image_size == (image.height, image.width)
        # batched with another image: float sums in another order
        torch.testing.assert_close(result.boxes, expected["boxes"][order], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(result.scores, expected["scores"][order], atol=1e-5, rtol=1e-4)
        assert result.label_ids.tolist() == expected["labels"][order].tolist()
        assert result.labels == [detector.class_names[i] for i in result.label_ids]
        assert len(result) > 0 and result.boxes[:, 2].max() <= image.width and result.boxes[:, 3].max() <= image.height
        assert result.boxes[:, 2].max() > 64 or image.width <= 100  # not letterbox pixels


def test_score_threshold_and_class_agnostic_nms(detector: ObjectDetector, detector_ckpt: Path):
    path = _shapes(detector_ckpt)[1]
    every = detector.predict(path, score_thresh=0.0)[0]
    kept = detector.predict(path, score_thresh=0.2)[0]
    assert (kept.scores >= 0.2).all() and len(kept) == int((every.scores >= 0.2).sum())
    agnostic = detector.predict(path, score_thresh=0.0, class_agnostic_nms=True)[0]
    overlap = box_iou(agnostic.boxes, agnostic.boxes).fill_diagonal_(0)
    assert overlap.max() <= detector.hparams["nms_thresh"] + 1e-6
    assert len(agnostic) < len(every)
    assert agnostic.scores[0] == every.scores[0]  # the best box survives


def test_detector_tta_merges_the_mirror_image_boxes(detector: ObjectDetector, detector_ckpt: Path):
    image = Image.open(_shapes(detector_ckpt)[2]).convert("RGB")
    plain = detector.predict(image, score_thresh=0.0)[0]
    mirrored = detector.predict(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), score_thresh=0.0)[0]
    merged = detector.predict(image, score_thresh=0.0, tta=True)[0]
    assert merged.scores[0] == max(plain.scores[0], mirrored.scores[0])
    # each merged box is a box of the image or a mirrored box mapped back onto it
    back = mirrored.boxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor(
        [image.width, 0, image.width, 0]
    )
    candidates = torch.cat([plain.boxes, back])
    assert torch.cdist(merged.boxes, candidates).min(dim=1).values.max() < 0.1  # px; a flipped view runs other kernels


def test_detection_results_write_a_row_per_box_and_draw_the_boxes(
    detector: ObjectDetector, detector_ckpt: Path, tmp_path: Path
):
    paths = _shapes(detector_ckpt)[:2]
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank)
    results = detector.predict([*paths, blank])
    lines = results.to_csv(tmp_path / "b.csv").read_text().splitlines()
    assert lines[0] == "path,label,label_id,score,x1,y1,x2,y2"
    assert len(lines) == 1 + sum(max(1, len(r)) for r in results)
    saved = json.loads(results.to_json(tmp_path / "b.json").read_text())["predictions"]
    assert [len(s["detections"]) for s in saved] == [len(r) for r in results]
    drawn = next(r for r in results if len(r))
    picture = np.asarray(drawn.plot()).astype(int)
    assert picture.shape[:2] == drawn.image_size
    assert (picture != np.asarray(Image.open(drawn.path).convert("RGB"))).any()
    nothing = detector.predict(blank, score_thresh=1.0)
    assert nothing.to_csv(tmp_path / "none.csv").read_text().splitlines()[1] == f"{blank},,,,,,,"
    assert np.array_equal(np.asarray(nothing[0].plot()), np.asarray(Image.open(blank)))
