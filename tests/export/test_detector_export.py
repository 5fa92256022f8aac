"""Detector export (ONNX, TorchScript) with decoding and NMS inside, and the ONNX Runtime predictor for both tasks.

The detector is trained once for the module (64 px shapes, one epoch); it is checked on new shape
images it has not seen, at the training size and at other sizes and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

import autotimm
from autotimm.cli import main
from autotimm.data import make_coco_shapes
from autotimm.export import METADATA_FILE
from autotimm.inference import OnnxPredictor
from autotimm.models import letterbox_batch, to_image_pixels
from helpers import trained_classifier, trained_detector, training_root

onnx = pytest.importorskip("onnx", reason="ONNX export needs the `export` extra")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the `export` extra")

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def new_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Shape images the detector never saw (another seed), some resized to other sizes and shapes."""
    coco = make_coco_shapes(tmp_path_factory.mktemp("new") / "coco", image_size=64, num_train=1, num_val=6, seed=7)
    files = sorted((coco / "val2017").glob("*.png"))
    for file, size in zip(files[:3], ((100, 60), (48, 80), (150, 150)), strict=False):
        Image.open(file).convert("RGB").resize(size).save(file)
    return files


@pytest.fixture(scope="module")
def detector_export(tmp_path_factory: pytest.TempPathFactory, new_images: list[Path]):
    """A trained detector (loaded as a user would), its ONNX export checked on the new images, its checkpoint."""
    checkpoint = trained_detector(tmp_path_factory.mktemp("detector"))
    detector = autotimm.load(checkpoint, device="cpu")
    path = detector.to_onnx(tmp_path_factory.mktemp("onnx") / "detector.onnx", check_images=new_images)
    return detector, path, checkpoint


def _metadata(path: Path) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}


def _assert_same_detections(want: dict, have: dict, atol: float = 1e-3, thresh: float = 0.0, limit: int = 100) -> None:
    """The same boxes, classes and scores (each box of one side matched to one of the other, in any order).

    Boxes whose score lies within float rounding of the score threshold, or of the last box kept when an
    image reaches the `limit` of boxes, may be kept by one side and not the other: those are not compared.
    """
    floor = thresh
    for found in (want, have):
        if len(found["scores"]) >= limit:
            floor = max(floor, float(found["scores"].min()))
    rows = []
    for found in (want, have):
        found_rows = zip(found["scores"].tolist(), found["labels"].tolist(), found["boxes"].tolist(), strict=True)
        rows.append([r for r in found_rows if r[0] > floor + 1e-4])
    expected, unmatched = rows
    assert len(expected) == len(unmatched)
    for score, label, box in expected:
        same = [
            r
            for r in unmatched
            if r[1] == label
            and abs(r[0] - score) <= 1e-4
            and max(abs(a - b) for a, b in zip(r[2], box, strict=True)) <= atol
        ]
        assert same, f"no match for {label} {score:.4f} {box}"
        unmatched.remove(same[0])


@pytest.mark.slow
def test_onnx_detector_matches_pytorch_on_new_images_of_other_sizes_and_batch_sizes(detector_export, new_images):
    detector, path, _ = detector_export
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 64, 64]
    meta = _metadata(path)
    images = [to_tensor(Image.open(p).convert("RGB")) for p in new_images]
    with torch.no_grad():
        expected = detector(images)
    assert sum(len(d["boxes"]) for d in expected) > 0
    for chunk in (images[:1], images[1:]):  # batch sizes 1 and 5 (the graph was traced on 2)
        batch, sizes = letterbox_batch(chunk, meta)
        outputs = session.run(None, {"images": batch.numpy(), "image_sizes": sizes.numpy()})
        got = to_image_pixels(outputs, sizes, [tuple(i.shape[-2:]) for i in chunk])
        offset = 0 if len(chunk) == 1 else 1
        for i, have in enumerate(got):
            _assert_same_detections(dict(expected[offset + i]), have, thresh=detector.hparams["score_thresh"])


@pytest.mark.slow
def test_onnx_metadata_names_the_task_its_preprocessing_and_the_check_figures(detector_export):
    detector, path, _ = detector_export
    meta = _metadata(path)
    assert meta["task"] == "detection" and meta["class_names"] == detector.class_names == [
        "circle",
        "square",
        "triangle",
    ]
    assert meta["letterbox"] == {"image_size": 64, "canvas_size": 64, "fill": 114, "align": "top-left"}
    assert meta["input_size"] == [3, 64, 64] and len(meta["mean"]) == len(meta["std"]) == 3
    assert meta["score_thresh"] == detector.hparams["score_thresh"] and meta["architecture"] == "fcos"
    check = meta["export_check"]
    assert check["passed"] and check["images"] == 6 and check["expected"] > 0
    assert check["matched_fraction"] == 1.0 and check["max_box_diff"] < 1e-2


@pytest.mark.slow
def test_onnx_predictor_predicts_what_the_detector_predicts(detector_export, new_images, tmp_path):
    detector, path, _ = detector_export
    predictor = autotimm.load(path)
    assert isinstance(predictor, OnnxPredictor) and predictor.task == "detection"
    assert predictor.export_check["passed"]
    for options in ({}, {"score_thresh": 0.1, "class_agnostic_nms": True}):
        want = detector.predict(new_images, batch_size=4, **options)
        have = predictor.predict(new_images, batch_size=4, **options)
        for w, h in zip(want, have, strict=True):
            assert w.path == h.path and w.image_size == h.image_size
            _assert_same_detections(
                {"boxes": w.boxes, "scores": w.scores, "labels": w.label_ids},
                {"boxes": h.boxes, "scores": h.scores, "labels": h.label_ids},
                thresh=options.get("score_thresh", detector.hparams["score_thresh"]),
            )
            assert list(h.labels) == [detector.class_names[int(i)] for i in h.label_ids]
    rows = have.to_csv(tmp_path / "boxes.csv").read_text().splitlines()
    assert rows[0] == "path,label,label_id,score,x1,y1,x2,y2" and len(rows) == 1 + sum(max(len(r), 1) for r in have)


@pytest.mark.slow
def test_cli_exports_a_detector_to_torchscript_and_prints_the_check(detector_export, new_images, tmp_path, capsys):
    detector, _, checkpoint = detector_export
    out = tmp_path / "detector.pt"
    main(
        [
            "export",
            str(checkpoint),
            "--format",
            "torchscript",
            "--out",
            str(out),
            "--check-images",
            str(new_images[0].parent),
        ]
    )
    printed = capsys.readouterr().out
    assert f"ObjectDetector written to {out}" in printed
    assert "TorchScript check passed: " in printed and "(100.0%) on 6 images" in printed

    extra = {METADATA_FILE: ""}
    traced = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    assert meta["task"] == "detection" and meta["export_check"]["passed"]
    images = [to_tensor(Image.open(p).convert("RGB")) for p in new_images]
    batch, sizes = letterbox_batch(images, meta)
    with torch.no_grad():
        expected = detector(images)
        got = to_image_pixels(traced(batch, sizes), sizes, [tuple(i.shape[-2:]) for i in images])
    for want, have in zip(expected, got, strict=True):
        _assert_same_detections(dict(want), have, atol=1e-4)


@pytest.mark.slow
def test_onnx_predictor_classifies_as_the_classifier_does(tmp_path):
    checkpoint = trained_classifier(tmp_path / "classifier")
    model = autotimm.load(checkpoint, device="cpu")
    path = model.to_onnx(tmp_path / "classifier.onnx")
    predictor = autotimm.load(path)
    assert predictor.task == "classification" and predictor.class_names == ["blue", "green", "red"]
    images = training_root(checkpoint) / "data" / "val"
    want, have = model.predict(images, top_k=2), predictor.predict(images, top_k=2, batch_size=5)
    assert [r.label for r in have] == [r.label for r in want] and len(have) == 12
    torch.testing.assert_close(
        torch.stack([r.probs for r in have]), torch.stack([r.probs for r in want]), atol=1e-5, rtol=1e-4
    )
    assert [name for name, _ in have[0].top_k] == [name for name, _ in want[0].top_k]


def test_corrupt_or_foreign_onnx_files_are_refused_naming_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match=r"Could not open '.*corrupt\.onnx' as an ONNX model"):
        autotimm.load(corrupt)

    # A valid ONNX model that autotimm did not write: no task, no preprocessing in its metadata.
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", 1, [1, 3])], [value("y", 1, [1, 3])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save_model(onnx.helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match=r"'.*foreign\.onnx' is not an ONNX file exported by autotimm"):
        OnnxPredictor(foreign)
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxPredictor(tmp_path / "missing.onnx")
