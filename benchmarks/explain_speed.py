"""Seconds per image of `model.explain` (Grad-CAM) against `model.predict`, on a folder of image files, on this machine.

`explain` runs a forward pass for the probabilities, then captum's Grad-CAM (a second forward and a
backward pass to the explained layer), and lays each map back onto its image: expect two to three
times `predict`'s time. A ResNet-18 and a ViT-Tiny at 224 px, random weights (the cost does not
depend on them).

    nice -n 10 python benchmarks/explain_speed.py
    nice -n 10 python benchmarks/explain_speed.py --images 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from predict_speed import images_per_second, make_folder

from autotimm import BackboneConfig, ImageClassifier

OUT = Path(__file__).parent / "results" / "explain_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="Image files in the folder.")
    parser.add_argument("--size", type=int, default=320, help="Side of the image files, px.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
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
        for name in ("resnet18", "vit_tiny_patch16_224"):
            model = ImageClassifier(BackboneConfig(name, pretrained=False), num_classes=10).eval()
            model.trained_data_config = {"input_size": (3, 224, 224), "crop_pct": 0.875}
            figures = {}
            for method in ("predict", "explain"):
                run = getattr(model, method)
                per_s = images_per_second(
                    lambda run=run: run(folder, batch_size=args.batch_size), args.images, args.repeats
                )
                figures[f"{method}_s_per_image"] = round(1 / per_s, 4)
            record[f"{name} @224"] = figures
            print(name, figures, flush=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
