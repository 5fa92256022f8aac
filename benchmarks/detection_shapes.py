"""Detection quality benchmark: FCOS over resnet18 from scratch on synthetic COCO shapes.

Trains `ObjectDetector(resnet18, pretrained=False)` on a deterministic synthetic COCO set
(128 px, 3 classes: circle, square, triangle; `--difficulty hard` for coloured, striped and
checkered backgrounds, un-annotated lines and dots, pixel noise and shapes of 12..60 px,
the set on which a detector that never learns a box scores 0), then scores the boxes that `predict`
returns on held-out test images with pycocotools' COCOeval against the original
annotation file. Prints the figures and writes them as JSON.

Target (issue 3): mAP@0.5 >= 0.8 within 10 minutes of wall time on a 2-core CPU, data
generation and evaluation included.

    python benchmarks/detection_shapes.py                 # the recorded configuration
    python benchmarks/detection_shapes.py --epochs 2      # a quick look
    python benchmarks/detection_shapes.py --difficulty hard --num-train 600   # the hard set
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import coco_evaluate, make_coco_shapes, to_coco_results
from autotimm.data.demo import DIFFICULTIES

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 128


class RegressionLoss(pl.Callback):
    """Keeps FCOS's box regression loss (GIoU) of each epoch: pinned at 1.0 means no box is learned."""

    def __init__(self) -> None:
        self.per_epoch: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_epoch.append(round(float(trainer.callback_metrics["train/loss_bbox_regression"]), 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--scheduler", default="cosine", help="a name from autotimm.optim.list_schedulers()")
    parser.add_argument("--ema", type=float, default=0.0, help="AutoTrainer(ema=...): a decay, 0 for none")
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="easy")
    parser.add_argument("--out", type=Path, default=None, help="default: results/detection_shapes[_hard].json")
    args = parser.parse_args()
    if args.out is None:
        suffix = "" if args.difficulty == "easy" else f"_{args.difficulty}"
        args.out = Path(__file__).with_name("results") / f"detection_shapes{suffix}.json"

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = make_coco_shapes(
            work / "shapes",
            image_size=IMAGE_SIZE,
            num_train=args.num_train,
            num_val=0,
            num_test=args.num_test,
            classes=CLASSES,
            seed=args.seed,
            difficulty=args.difficulty,
        )
        data_seconds = time.perf_counter() - start
        pl.seed_everything(args.seed, verbose=False)
        data = DetectionDataModule(root, image_size=IMAGE_SIZE, batch_size=args.batch_size, num_workers=args.workers)
        model = ObjectDetector(
            BackboneConfig("resnet18", pretrained=False),
            num_classes=data.num_classes,
            image_size=IMAGE_SIZE,
            fpn_channels=args.fpn_channels,
            lr=args.lr,
            weight_decay=args.weight_decay,
            scheduler=args.scheduler,
        )
        regression = RegressionLoss()
        trainer = AutoTrainer(
            max_epochs=args.epochs,
            ema=args.ema or False,
            callbacks=[regression],
            accelerator="cpu",
            gradient_clip_val=1.0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=work,
        )
        train_start = time.perf_counter()
        trainer.fit(model, datamodule=data)
        train_seconds = time.perf_counter() - train_start
        eval_start = time.perf_counter()
        predictions = trainer.predict(model, datamodule=data)  # the held-out test split
        scores = coco_evaluate(
            root / "annotations" / "instances_test2017.json", to_coco_results(predictions, data.category_ids)
        )
        map_all, map_50 = scores["map"], scores["map_50"]
        eval_seconds = time.perf_counter() - eval_start
    wall = time.perf_counter() - start

    record = {
        "benchmark": "detection_shapes",
        "model": "ObjectDetector(resnet18, pretrained=False, architecture='fcos')",
        "data": f"make_coco_shapes: {IMAGE_SIZE} px, difficulty {args.difficulty!r}, classes {list(CLASSES)}, "
        f"{args.num_train} train / {args.num_test} held-out test images, seed {args.seed}",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "map_50_95": round(map_all, 4),
        "map_50": round(map_50, 4),
        "regression_loss_per_epoch": regression.per_epoch,
        "wall_seconds": round(wall, 1),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "train_images_per_second": round(args.num_train * args.epochs / train_seconds, 1),
        "target": "map_50 >= 0.8 within 600 s wall",
        "met": map_50 >= 0.8 and wall <= 600,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    width = max(len(k) for k in record)
    for key in (
        "map_50_95",
        "map_50",
        "wall_seconds",
        "data_seconds",
        "train_seconds",
        "eval_seconds",
        "train_images_per_second",
        "regression_loss_per_epoch",
        "met",
    ):
        print(f"{key:<{width}}  {record[key]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
