"""Data pipeline throughput: `ImageDataModule` against `torchvision.datasets.ImageFolder`.

A class-folder data set of real image files (256 px JPEGs and PNGs, written from the
synthetic COCO shapes) is read for `--epochs` epochs by both pipelines, with the same
training transform (the data module's own: random resized crop to 224, flip, normalise),
batch size and worker count. The baseline is what one writes by hand:
`DataLoader(ImageFolder(root, transform), shuffle=True, num_workers=N)`. Runs are
interleaved (A B, B A, ...); the figure is the median of the per-pair ratios of images per
second (autotimm / torchvision).

    python benchmarks/data_pipeline.py
    python benchmarks/data_pipeline.py --pairs 3 --workers 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from autotimm import ImageDataModule
from autotimm.data import make_coco_shapes

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import interleave, report  # noqa: E402


def make_folder(root: Path, num_images: int) -> Path:
    """`num_images` 256 px images in 4 class folders, alternately JPEG and PNG."""
    shapes = make_coco_shapes(root / "shapes", image_size=256, num_train=num_images, num_val=0)
    folder = root / "images" / "train"
    for i, path in enumerate(sorted((shapes / "train2017").iterdir())):
        target = folder / f"class{i % 4}"
        target.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            if i % 2:
                image.convert("RGB").save(target / f"{i:05d}.jpg", quality=90)
            else:
                image.save(target / f"{i:05d}.png")
    return root / "images"


def images_per_second(loader: DataLoader, epochs: int) -> float:
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for images, _labels in loader:
            seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "data_pipeline.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp), args.images)

        def autotimm_loader() -> DataLoader:
            data = ImageDataModule(
                root, image_size=224, batch_size=args.batch_size, num_workers=args.workers, val_split=0.0
            )
            data.setup("fit")
            return data.train_dataloader()

        def torchvision_loader() -> DataLoader:
            reference = ImageDataModule(root, image_size=224, val_split=0.0)
            reference.setup("fit")
            transform = reference.train_dataset.transform  # the very same transform
            dataset = ImageFolder(str(root / "train"), transform=transform)
            return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)

        images_per_second(torchvision_loader(), 1)  # warm-up: page cache, lazy imports

        def measured(make):
            def one(pair: int) -> float:
                torch.manual_seed(0)
                return images_per_second(make(), args.epochs)

            return one

        rates = interleave(
            {"torchvision": measured(torchvision_loader), "autotimm": measured(autotimm_loader)}, args.pairs
        )
    record = {
        "benchmark": "data_pipeline",
        "data": f"{args.images} images of 256 px (half JPEG, half PNG), 4 classes; random resized crop to 224",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    values = (rates["torchvision"], rates["autotimm"])
    labels = ("torchvision_images_per_second", "autotimm_images_per_second")
    report(record, labels, values, args.out, "median_ratio >= 1.0 (autotimm / torchvision)")


if __name__ == "__main__":
    main()
