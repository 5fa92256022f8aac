"""Load the best checkpoint, predict, and export to ONNX and TorchScript; run the ONNX file with ONNX Runtime.

After a short training run on the digits demo folder:

1. `ImageClassifier.load_from_checkpoint(best_path)` rebuilds the model from the best
   checkpoint alone (architecture and hyperparameters are stored in it; no download);
2. `trainer.predict` returns class probabilities for the test images;
3. `model.to_onnx(path)` and `model.to_torchscript(path)` export it; each export is checked
   by running the written file against PyTorch, and carries its metadata (class names,
   input size, mean and std, output activation);
4. the ONNX file runs in ONNX Runtime on real test images, and the script prints its largest
   difference from PyTorch and its accuracy.

A model loaded from a checkpoint has no data module attached, so the export is given the
size it was trained at (`image_size=32`) and the class names. ONNX export needs the `export`
extra (`pip install -e ".[export]"` in the clone: onnx, onnxscript, onnxruntime). Run:

    python examples/inference_and_export.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.data import make_digits_folder

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
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
