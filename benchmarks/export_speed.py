"""The detector's ONNX export on this machine: the check's figures, and images per second of ONNX Runtime vs PyTorch.

Trains the tests' tiny detector (test_resnet, 64 px shapes, one epoch), exports it to ONNX checked
on new shape images (another seed, some resized to other sizes), then times `predict` on a folder
of new images with the PyTorch model and with `OnnxPredictor`, and the forward pass alone on a
letterboxed batch prepared beforehand (the PyTorch `ExportableDetector` vs the ONNX Runtime session).

    nice -n 10 python benchmarks/export_speed.py
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

import autotimm
from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import make_coco_shapes
from autotimm.models import letterbox_batch

OUT = Path(__file__).parent / "results" / "export_speed.json"


def best_rate(run: callable, count: int, repeats: int) -> float:
    """Images per second of the fastest of `repeats` runs, after one warm-up run."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return count / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        coco = make_coco_shapes(root / "coco", image_size=64, num_train=16, num_val=8)
        data = DetectionDataModule(coco, image_size=64, batch_size=8, num_workers=0, augmentation_preset="none")
        model = ObjectDetector(BackboneConfig("test_resnet", pretrained=False), fpn_channels=64, lr=1e-3)
        trainer = AutoTrainer(
            max_epochs=1, accelerator="cpu", default_root_dir=root, enable_progress_bar=False, plots=False
        )
        trainer.fit(model, datamodule=data)
        detector = autotimm.load(trainer.run_dir, device="cpu")

        new = make_coco_shapes(root / "new", image_size=64, num_train=args.images, num_val=0, seed=7) / "train2017"
        files = sorted(new.iterdir())
        for file, size in zip(files[:3], ((100, 60), (48, 80), (150, 150)), strict=False):
            Image.open(file).convert("RGB").resize(size).save(file)
        path = detector.to_onnx(root / "detector.onnx", check_images=files[:8])
        predictor = autotimm.load(path)
        check = predictor.export_check

        bs = args.batch_size
        torch_predict = best_rate(lambda: detector.predict(new, batch_size=bs), len(files), args.repeats)
        onnx_predict = best_rate(lambda: predictor.predict(new, batch_size=bs), len(files), args.repeats)
        images = [to_tensor(Image.open(f).convert("RGB")) for f in files[:bs]]
        batch, sizes = letterbox_batch(images, predictor.metadata)
        graph = detector.inference_module()
        feeds = {"images": batch.numpy(), "image_sizes": sizes.numpy()}
        with torch.inference_mode():
            torch_forward = best_rate(lambda: graph(batch, sizes), bs, args.repeats * 3)
        onnx_forward = best_rate(lambda: predictor.session.run(None, feeds), bs, args.repeats * 3)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "images": len(files),
        "batch_size": bs,
        "export_check": check,
        "images_per_second": {
            "predict_pytorch": round(torch_predict, 1),
            "predict_onnxruntime": round(onnx_predict, 1),
            "forward_pytorch": round(torch_forward, 1),
            "forward_onnxruntime": round(onnx_forward, 1),
        },
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
