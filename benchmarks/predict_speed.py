"""Images per second of `model.predict` on a folder of image files, for a classifier and a detector, on this machine.

`predict` reads each file, converts it to RGB, preprocesses it (a classifier's eval transform; a
detector letterboxes inside the model), runs the model in batches and builds one result per
image. The second figure of each task is the model's forward pass alone on tensors prepared
beforehand, at the same batch size: the gap between the two is what reading, preprocessing and
results cost.

    nice -n 10 python benchmarks/predict_speed.py
    nice -n 10 python benchmarks/predict_speed.py --images 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from autotimm import BackboneConfig, ImageClassifier, ObjectDetector
from autotimm.data import make_coco_shapes

OUT = Path(__file__).parent / "results" / "predict_speed.json"


def make_folder(root: Path, num_images: int, size: int) -> Path:
    """`num_images` JPEG files of synthetic shapes, `size` px."""
    shapes = make_coco_shapes(root / "shapes", image_size=size, num_train=num_images, num_val=0)
    folder = root / "new_images"
    folder.mkdir()
    for i, path in enumerate(sorted((shapes / "train2017").iterdir())):
        with Image.open(path) as image:
            image.convert("RGB").save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def images_per_second(run: callable, count: int, repeats: int) -> float:
    """The best of `repeats` timed runs (after one warm-up run), as images per second."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return count / best


def _timed(run: callable) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(model: torch.nn.Module, folder: Path, batch_size: int, repeats: int, tensors: list) -> dict[str, float]:
    files = sorted(folder.iterdir())
    model.eval()

    def forward_only() -> None:
        with torch.inference_mode():
            for start in range(0, len(tensors), batch_size):
                chunk = tensors[start : start + batch_size]
                model(torch.stack(chunk) if isinstance(model, ImageClassifier) else chunk)

    return {
        "predict_images_per_s": round(
            images_per_second(lambda: model.predict(folder, batch_size), len(files), repeats), 1
        ),
        "forward_only_images_per_s": round(images_per_second(forward_only, len(files), repeats), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="Image files in the folder.")
    parser.add_argument("--size", type=int, default=320, help="Side of the image files, px.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": args.threads,
        "images": args.images,
        "file_size_px": args.size,
        "batch_size": args.batch_size,
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),  # other processes on the machine
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp), args.images, args.size)
        files = sorted(folder.iterdir())
        classifier = ImageClassifier(BackboneConfig("resnet18", pretrained=False), num_classes=10)
        classifier.trained_data_config = {"input_size": (3, 224, 224), "crop_pct": 0.875}
        transform = classifier.eval_transform()
        tensors = [transform(Image.open(p).convert("RGB")) for p in files]
        record["classifier resnet18 @224"] = measure(classifier, folder, args.batch_size, args.repeats, tensors)
        print("classifier", record["classifier resnet18 @224"], flush=True)
        detector = ObjectDetector(BackboneConfig("resnet18", pretrained=False), num_classes=3, image_size=320)
        tensors = [to_tensor(Image.open(p).convert("RGB")) for p in files]
        record["detector fcos resnet18 @320"] = measure(detector, folder, args.batch_size, args.repeats, tensors)
        print("detector", record["detector fcos resnet18 @320"], flush=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
