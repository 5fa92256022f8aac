"""`autotimm.analyze` and `RunAnalysis`: error analyses of real trained models, checked against their predictions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.detection import MeanAveragePrecision

import autotimm
from autotimm import DetectionDataModule, ImageClassifier, ImageDataModule
from helpers import COLOURS, assert_png, cpu_trainer, training_root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _mislabelled_folder(root: Path, target: Path) -> Path:
    """The trained classifier's val images, plus 2 images of each colour filed under the next class: errors
    the analysis must find whatever the model learnt."""
    names = sorted(COLOURS)
    for split in ("train", "test"):
        shutil.copytree(root / "data" / "val", target / split)
    for k, name in enumerate(names):
        wrong = names[(k + 1) % len(names)]
        for i in range(2):
            shutil.copy(root / "data" / "val" / name / f"{i}.png", target / "test" / wrong / f"from_{name}_{i}.png")
    return target


@pytest.mark.slow
def test_classifier_analysis_lists_exactly_what_the_model_gets_wrong(classifier_ckpt: Path, tmp_path: Path) -> None:
    folder = _mislabelled_folder(training_root(classifier_ckpt), tmp_path / "data")
    data = ImageDataModule(folder, image_size=32, batch_size=5, num_workers=0, augmentation_preset="none")
    analysis = autotimm.analyze(classifier_ckpt, data, tmp_path / "out")  # the test split, by default

    # The model's own predictions, file by file, against the folder each file lies in.
    model = autotimm.load(classifier_ckpt)
    files = sorted((folder / "test").rglob("*.png"))
    predicted = {str(p): r.label for p, r in zip(files, model.predict(files), strict=True)}
    true = {str(p): p.parent.name for p in files}
    wrong = {p for p in files if predicted[str(p)] != true[str(p)]}
    assert len(wrong) >= 6 - 2  # the mislabelled files at least, less what the model gets wrong itself

    rows = _rows(analysis.files["misclassified_csv"])
    assert {r["path"] for r in rows} == {str(p) for p in wrong}
    assert all(r["true"] == true[r["path"]] and r["predicted"] == predicted[r["path"]] for r in rows)
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True) and all(loss > 0 for loss in losses)
    assert analysis.errors == [{**r, "score": pytest.approx(float(r["score"]), abs=1e-6),
                                "loss": pytest.approx(float(r["loss"]), abs=1e-6)} for r in rows]  # fmt: skip

    # Per class: counted from the same predictions.
    table = {r["class"]: r for r in _rows(analysis.files["per_class_csv"])}
    assert sorted(table) == sorted(COLOURS)
    counts = _rows(analysis.files["confusion_matrix_csv"])
    for name in COLOURS:
        hits = sum(1 for p in files if true[str(p)] == name and predicted[str(p)] == name)
        support = sum(1 for p in files if true[str(p)] == name)
        guessed = sum(1 for p in files if predicted[str(p)] == name)
        assert int(table[name]["support"]) == support
        assert float(table[name]["recall"]) == pytest.approx(hits / support, abs=1e-5)
        assert float(table[name]["precision"]) == pytest.approx(hits / guessed if guessed else 0.0, abs=1e-5)
        row = next(r for r in counts if r["true"] == name)
        assert [int(row[c]) for c in sorted(COLOURS)] == [
            sum(1 for p in files if true[str(p)] == name and predicted[str(p)] == c) for c in sorted(COLOURS)
        ]
    shares = _rows(analysis.files["confusion_matrix_normalized_csv"])
    assert all(sum(float(r[c]) for c in COLOURS) == pytest.approx(1.0, abs=1e-5) for r in shares)
    assert analysis.summary["accuracy"] == pytest.approx(1 - len(wrong) / len(files))

    # The weights are the checkpoint's, named in the result and on the pictures' titles.
    assert analysis.weights.startswith("checkpoint best.ckpt (epoch ") and "val/accuracy" in analysis.weights
    for kind in ("per_class_png", "confusion_matrix_png", "top_losses_png"):
        assert_png(analysis.files[kind])


@pytest.mark.slow
def test_after_fit_and_test_the_run_folder_holds_the_best_checkpoints_analysis(
    make_image_folder, backbone, tmp_path: Path
) -> None:
    root = make_image_folder(classes={"cat": 6, "dog": 6, "fox": 6}, splits=("train", "val", "test"), size=32)
    data = ImageDataModule(root, image_size=32, batch_size=4, num_workers=0, augmentation_preset="none")
    torch.manual_seed(0)
    model = ImageClassifier(backbone, num_classes=3)
    # On noise, with these seeds, validation accuracy is highest at epoch 0: the best checkpoint is not the last.
    trainer = cpu_trainer(tmp_path, max_epochs=3, limit_train_batches=2, checkpoint_monitor="val/accuracy",
                          num_sanity_val_steps=0, plots=True, analysis=True, seed=0)  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert not (trainer.run_dir / "analysis").exists()  # written by `test`
    run = json.loads((trainer.run_dir / "run.json").read_text())
    best = torch.load(run["checkpoints"]["best"], weights_only=False)
    last = torch.load(run["checkpoints"]["last"], weights_only=False)
    assert best["epoch"] < last["epoch"] == 2

    # The fit's confusion matrix is the best checkpoint's: its accuracy is the best score in run.json.
    drawn = json.loads((trainer.run_dir / "plots" / "confusion_matrix.json").read_text())
    assert drawn["weights"].startswith(f"checkpoint best.ckpt (epoch {best['epoch']}, ")
    counts = torch.tensor(drawn["counts"])
    assert counts.trace().item() / counts.sum().item() == pytest.approx(run["metrics"]["best"]["value"])
    # ... and the model kept its last weights.
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in last["state_dict"].items())

    results = trainer.test(model, datamodule=data)

    run = json.loads((trainer.run_dir / "run.json").read_text())
    recorded = run["analysis"]["test"]
    assert recorded["weights"].startswith("checkpoint best.ckpt (epoch ")
    assert recorded["dir"] == str(trainer.run_dir / "analysis" / "test")
    names = {Path(p).name for p in recorded["files"].values()}
    assert names == {
        "per_class.csv",
        "per_class.png",
        "confusion_matrix.csv",
        "confusion_matrix_normalized.csv",
        "confusion_matrix.png",
        "misclassified.csv",
        "top_losses.png",
    }
    assert all(Path(p).is_file() for p in recorded["files"].values())
    # The analysis ran with the tested (best) weights: the same accuracy as `test`.
    assert recorded["summary"]["accuracy"] == pytest.approx(results[0]["test/accuracy"])
    counts = [
        [int(v) for k, v in r.items() if k != "true"] for r in _rows(Path(recorded["files"]["confusion_matrix_csv"]))
    ]
    assert sum(map(sum, counts)) == 18
    best = ImageClassifier.load_from_checkpoint(run["checkpoints"]["best"])
    assert autotimm.analyze(best, data).confusion == counts


@pytest.mark.slow
def test_a_multi_label_classifier_gets_its_per_label_table_only(tmp_path: Path) -> None:
    model = ImageClassifier(autotimm.BackboneConfig("test_resnet", pretrained=False), num_classes=3, multi_label=True)
    torch.manual_seed(0)
    x, y = torch.randn(10, 3, 32, 32), (torch.rand(10, 3) > 0.5).float()
    analysis = autotimm.analyze(model, DataLoader(TensorDataset(x, y), batch_size=4), tmp_path)
    assert sorted(analysis.files) == ["per_class_csv", "per_class_png"]
    assert analysis.confusion is None and analysis.errors == []
    assert "multi-label" in analysis.not_written[0]
    table = _rows(analysis.files["per_class_csv"])
    assert [int(r["support"]) for r in table] == y.sum(0).int().tolist()
    assert analysis.split == "data" and analysis.weights == "the model's weights"


def test_bad_input_is_named(tmp_path: Path) -> None:
    model = ImageClassifier(autotimm.BackboneConfig("test_resnet", pretrained=False), num_classes=2)
    loader = DataLoader(TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 1])), batch_size=2)
    with pytest.raises(TypeError, match="DataLoader"):
        autotimm.analyze(model, [(torch.zeros(1, 3, 32, 32), torch.tensor([0]))])
    with pytest.raises(TypeError, match="ImageClassifier"):
        autotimm.analyze(torch.nn.Linear(2, 2), loader)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gallery_size"):
        autotimm.analyze(model, loader, gallery_size=-1)
    folder = tmp_path / "images" / "train" / "a"
    folder.mkdir(parents=True)
    with pytest.raises(ValueError, match="'train'.*'val', 'test'|split"):
        autotimm.analyze(model, ImageDataModule(tmp_path / "images", image_size=32), split="train")


@pytest.mark.slow
def test_detector_analysis_agrees_with_torchmetrics(detector_ckpt: Path, tmp_path: Path) -> None:
    coco = training_root(detector_ckpt) / "coco"
    data = DetectionDataModule(coco, image_size=64, batch_size=4, num_workers=0, augmentation_preset="none")
    analysis = autotimm.analyze(detector_ckpt, data, tmp_path, split="val", score_thresh=0.05)

    # AP per class as torchmetrics computes it from the model's own detections.
    model = autotimm.load(detector_ckpt, device="cpu")
    data.setup("validate")
    reference = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
    with torch.no_grad():
        for i, (images, targets) in enumerate(data.val_dataloader()):
            found = model.predict_step((images, targets), i)
            truth = [{"boxes": autotimm.geometry.boxes_to_original(t["boxes"], t), "labels": t["labels"],
                      "iscrowd": t["iscrowd"]} for t in targets]  # fmt: skip
            reference.update([{k: d[k] for k in ("boxes", "scores", "labels")} for d in found], truth)
    expected = reference.compute()
    table = _rows(analysis.files["per_class_csv"])
    assert [r["class"] for r in table] == model.class_names
    for c, row in enumerate(table):
        classes = expected["classes"].tolist()
        if c in classes:
            assert float(row["ap"]) == pytest.approx(float(expected["map_per_class"][classes.index(c)]), abs=1e-6)
        assert int(row["matched"]) + int(row["missed"]) == int(row["gt_boxes"])
    assert analysis.summary["map"] == pytest.approx(float(expected["map"]), abs=1e-6)

    # Every image with an error is listed, most errors first; the gallery shows the worst.
    errors = _rows(analysis.files["errors_csv"])
    assert errors and all(int(r["missed"]) + int(r["false"]) > 0 for r in errors)
    totals = [int(r["missed"]) + int(r["false"]) for r in errors]
    assert totals == sorted(totals, reverse=True)
    assert sum(int(r["missed"]) for r in errors) == analysis.summary["missed"]
    assert all(Path(r["path"]).is_file() for r in errors)
    assert_png(analysis.files["worst_images_png"])
    assert_png(analysis.files["per_class_png"])
