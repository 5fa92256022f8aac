"""How long `DetectionDataModule` takes to read box annotations in each format (COCO, YOLO, Pascal VOC, CSV).

Writes `--images` images with `--boxes` boxes each (10,000 boxes in all by default) in the COCO
layout, rewrites copies in the YOLO, VOC and CSV layouts with the converter `make_coco_shapes`
uses, then times `DetectionDataModule(...)` + `setup("fit")` (every annotation parsed and
checked, every image file's existence checked, no image decoded), best of `--repeats`.
The image files are empty placeholders: reading annotations never opens them.

    nice -n 10 python benchmarks/detection_formats_read.py
    nice -n 10 python benchmarks/detection_formats_read.py --images 10000 --boxes 1
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from autotimm import DetectionDataModule
from autotimm.data.demo.detection_formats import SHAPE_FORMATS, convert_coco_folder

SIZE = 640
CLASSES = ("circle", "square", "triangle")


def write_coco(folder: Path, images: int, boxes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (folder / "annotations").mkdir(parents=True)
    (folder / "train2017").mkdir()
    entries, anns = [], []
    for image_id in range(1, images + 1):
        name = f"{image_id:012d}.png"
        (folder / "train2017" / name).touch()
        entries.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
        for _ in range(boxes):
            x, y = (int(v) for v in rng.integers(0, SIZE - 64, size=2))
            w, h = (int(v) for v in rng.integers(8, 64, size=2))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 4))})
            anns[-1].update(bbox=[x, y, w, h], area=w * h, iscrowd=0)
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    coco = {"images": entries, "annotations": anns, "categories": categories}
    (folder / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2500)
    parser.add_argument("--boxes", type=int, default=4, help="boxes per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for format in SHAPE_FORMATS:
            folder = Path(tmp) / format
            write_coco(folder, args.images, args.boxes)
            convert_coco_folder(folder, ["train"], format)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                data = DetectionDataModule(folder, image_size=SIZE, num_workers=0)
                data.setup("fit")
                times.append(time.perf_counter() - start)
            assert data.format == format and sum(len(r.labels) for r in data.train_dataset.records) > 0
            results[format] = round(min(times), 3)
            print(f"{format:5s} {args.images} images x {args.boxes} boxes: {min(times):.3f} s")
    summary = {"images": args.images, "boxes_per_image": args.boxes, "seconds": results, "cpu": platform.processor()}
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
