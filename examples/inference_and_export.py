"""Load the best checkpoint, predict, and export to ONNX and TorchScript; run the ONNX file with ONNX Runtime.

After a short training run on the digits demo folder:

1. `ImageClassifier.load_from_checkpoint(best_path)` rebuilds the model from the best
   checkpoint alone (architecture and hyperparameters are stored in it; no download);
2. `trainer.predict` returns class probabilities for the test images;
3. `model.to_onnx(path)` and `model.to_torchscript(path)` export it; each export is checked
   by running the written file against PyTorch, and carries its metadata (class names,
   input size, mean and std, output activation);
4. the ONNX file runs in ONNX Runtime on real test images, and the script prints its largest
   difference from PyTorch and its accuracy;
5. `autotimm.load(run_dir)` takes the run's best checkpoint, `model.predict(folder)` classifies a flat
   folder of image files (the same accuracy as step 2), writes a CSV and draws the top labels;
6. a detector trained briefly on synthetic shapes is loaded the same way and predicts boxes on unseen
   images of other sizes (in their own pixels), with class-agnostic NMS, into a CSV and drawings;
   both models are saved as portable folders with `save_pretrained`;
7. `autotimm.analyze` lists what the classifier gets wrong on the test split (per-class table,
   confusion matrix, misclassified files, a gallery of the highest losses), and `explain` draws
   Grad-CAM maps of four new images (with captum, the `explain` extra);
8. the detector is exported to ONNX (decoding and NMS inside, checked box by box) and
   `autotimm.load("shapes.onnx")` predicts the same boxes with ONNX Runtime alone.

A model loaded from a checkpoint has no data module attached, so the export is given the
size it was trained at (`image_size=32`) and the class names. ONNX export needs the `export`
extra (`pip install -e ".[export]"` in the clone: onnx, onnxscript, onnxruntime). Run:

    python examples/inference_and_export.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from PIL import Image
from pytorch_lightning import seed_everything

import autotimm
from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ImageClassifier, ImageDataModule, ObjectDetector
from autotimm.data import make_coco_shapes, make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
OUT = Path("runs/inference_and_export")
IMAGE_SIZE = 32


def main() -> None:
    start = time.perf_counter()
    root = make_digits_folder("data/digits", image_size=IMAGE_SIZE)
    seed_everything(0, workers=True)
    data = ImageDataModule(
        root, image_size=IMAGE_SIZE, batch_size=32, num_workers=0 if SMOKE else 2, augmentation_preset="none"
    )
    model = ImageClassifier(
        BackboneConfig(BACKBONE, pretrained=False), num_classes=data.num_classes, lr=3e-3, scheduler="cosine"
    )
    trainer = AutoTrainer(
        max_epochs=1 if SMOKE else 5,
        accelerator="cpu",
        default_root_dir=OUT,
        checkpoint_monitor="val/accuracy",
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)

    # 1. The best checkpoint is all that is needed to rebuild the model.
    best_path = trainer.checkpoint_callback.best_model_path
    best = ImageClassifier.load_from_checkpoint(best_path)
    print(f"loaded {best_path}")

    # 2. Predict: probabilities [B, num_classes] per batch of the test split.
    probabilities = torch.cat(trainer.predict(best, datamodule=data))
    labels = torch.tensor(data.test_dataset.targets)
    accuracy = (probabilities.argmax(dim=1) == labels).float().mean().item()
    print(f"predicted {len(labels)} test images: accuracy {accuracy:.3f}")

    # 3. Export; both files are checked against PyTorch before they are kept.
    onnx_path = best.to_onnx(OUT / "digits.onnx", image_size=IMAGE_SIZE, class_names=data.class_names)
    best.to_torchscript(OUT / "digits.pt", image_size=IMAGE_SIZE, class_names=data.class_names)
    for path in (onnx_path, OUT / "digits.pt"):
        print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB)")
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(onnx_path)).metadata_props}
    print(f"ONNX metadata: classes {metadata['class_names']}, input size {metadata['input_size']}, ", end="")
    print(f"mean {metadata['mean']}, activation {metadata['activation']}")

    # 4. Run the ONNX file on real test images (already normalised by the data module) and compare.
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(OUT / "digits.pt"))
    best.eval()
    max_diff_onnx = max_diff_script = 0.0
    correct = 0
    with torch.no_grad():
        for images, targets in data.test_dataloader():
            expected = best(images)
            logits = session.run(None, {"input": images.numpy()})[0]
            max_diff_onnx = max(max_diff_onnx, float(np.abs(logits - expected.numpy()).max()))
            max_diff_script = max(max_diff_script, (scripted(images) - expected).abs().max().item())
            correct += int((logits.argmax(axis=1) == targets.numpy()).sum())
    print(f"ONNX Runtime vs PyTorch: max abs difference of the logits {max_diff_onnx:.2e}")
    print(f"TorchScript vs PyTorch: max abs difference of the logits {max_diff_script:.2e}")
    print(f"ONNX Runtime test accuracy: {correct / len(labels):.3f}")

    # 5. New images, from the run folder alone: a flat folder of files, as a user would have them.
    new_images = OUT / "new_images"
    shutil.rmtree(new_images, ignore_errors=True)
    new_images.mkdir(parents=True)
    truth = {}
    for i, path in enumerate(sorted(Path(root, "test").glob("*/*.png"))):
        shutil.copy(path, new_images / f"{i:04d}.png")
        truth[str(new_images / f"{i:04d}.png")] = path.parent.name  # the class folder
    classifier = autotimm.load(trainer.run_dir, device="cpu")
    predictions = classifier.predict(new_images, batch_size=64)
    hits = sum(result.label == truth[result.path] for result in predictions)
    predictions.to_csv(OUT / "digits_predictions.csv")
    predictions[0].save(OUT / "digits_first.png")
    print(f"predict(): {len(predictions)} new images, accuracy {hits / len(predictions):.3f}")
    print(f"saved {classifier.save_pretrained(OUT / 'digits_model')}")

    # 6. A detector, loaded and used the same way on unseen images of other sizes.
    shapes = make_coco_shapes(
        "data/shapes", image_size=64 if SMOKE else 128, num_train=16 if SMOKE else 300, num_val=8 if SMOKE else 60
    )
    shapes_data = DetectionDataModule(shapes, image_size=64 if SMOKE else 128, batch_size=8 if SMOKE else 16)
    detector = ObjectDetector(BackboneConfig(BACKBONE, pretrained=False), fpn_channels=64 if SMOKE else 128, lr=1e-3)
    detection_run = AutoTrainer(
        max_epochs=1 if SMOKE else 12,
        accelerator="cpu",
        default_root_dir=OUT / "detector",
        checkpoint_monitor="val/map",
        gradient_clip_val=1.0,
    )
    detection_run.fit(detector, datamodule=shapes_data)
    detector = autotimm.load(detection_run.run_dir, device="cpu")
    unseen = OUT / "unseen_shapes"
    unseen.mkdir(exist_ok=True)
    for i, path in enumerate(sorted((shapes / "val2017").iterdir())[:4]):
        with Image.open(path) as image:  # other sizes than the training size: boxes come back in their pixels
            image.resize((image.width * 3 // 2, image.height)).save(unseen / f"wide_{i}.jpg")
    found = detector.predict(unseen, score_thresh=0.3, class_agnostic_nms=True)
    found.to_csv(OUT / "shapes_boxes.csv")
    found.save_images(OUT / "shapes_drawn")
    boxes = sum(len(result) for result in found)
    print(f"detector: {len(found)} unseen images, {boxes} boxes scoring >= 0.3, drawings in {OUT / 'shapes_drawn'}")
    print(f"saved {detector.save_pretrained(OUT / 'shapes_model')}")

    # 7. What the classifier gets wrong, and where it looks.
    analysis = autotimm.analyze(classifier, data, OUT / "digits_analysis")
    print(f"analysis: accuracy {analysis.summary['accuracy']:.3f}, {len(analysis.errors)} misclassified files ", end="")
    print(f"({analysis.weights}); gallery {analysis.files.get('top_losses_png')}")
    if importlib.util.find_spec("captum") is not None:
        maps = classifier.explain(sorted(new_images.iterdir())[:4])
        maps.save_images(OUT / "digits_gradcam")
        print(f"explain: {len(maps)} Grad-CAM overlays in {OUT / 'digits_gradcam'}")
    else:
        print("explain: skipped (captum, the `explain` extra, is not installed)")

    # 8. The detector as one ONNX file, run with ONNX Runtime alone.
    onnx_detector = detector.to_onnx(OUT / "shapes.onnx", check_images=unseen)
    runtime = autotimm.load(onnx_detector)
    found_onnx = runtime.predict(unseen, score_thresh=0.3, class_agnostic_nms=True)
    print(f"ONNX detector: export check {runtime.export_check['passed']}, ", end="")
    print(f"{sum(len(result) for result in found_onnx)} boxes scoring >= 0.3 (PyTorch: {boxes})")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
