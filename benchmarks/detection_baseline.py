"""Detection quality against a hand-written torchvision FCOS, on the same synthetic COCO set.

The baseline is what a user would write without autotimm: torchvision's resnet18 (random
weights) under `BackboneWithFPN` (64 channels, P3..P7), `FCOS` with a two-conv head, one
anchor size per level and `min_size = max_size = 128`, AdamW with a cosine schedule over the
epochs, gradient norm clipped at 1.0, horizontal flips, and a plain loop. The autotimm side is
`ObjectDetector(BackboneConfig("resnet18", pretrained=False), fpn_channels=64)` with the same
optimiser settings through `AutoTrainer`. Both are scored with pycocotools on the held-out test
split against the original annotation file. The figure is the ratio of mAP@0.5 (autotimm /
baseline); it is a quality check, not a timing, so the two runs are not interleaved.

    python benchmarks/detection_baseline.py                          # hard set, 600 images, 12 epochs
    python benchmarks/detection_baseline.py --epochs 2 --num-train 64  # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import make_coco_shapes, to_coco_results
from autotimm.data.demo import DIFFICULTIES

CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = 128


def coco_map(annotation_file: Path, results: list[dict]) -> tuple[float, float]:
    """pycocotools' mAP@[.5:.95] and mAP@0.5 of `results` (0 when there are none)."""
    if not results:
        return 0.0, 0.0
    truth = COCO(str(annotation_file))
    evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def _load_split(root: Path, split: str) -> tuple[COCO, list[int]]:
    coco = COCO(str(root / "annotations" / f"instances_{split}2017.json"))
    return coco, sorted(coco.getImgIds())


def _image(root: Path, split: str, info: dict) -> torch.Tensor:
    pixels = np.asarray(Image.open(root / f"{split}2017" / info["file_name"]).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1) / 255.0


def train_baseline(root: Path, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int) -> dict:
    """The hand-written torchvision FCOS: build, train, predict on the test split, score."""
    torch.manual_seed(seed)
    coco, ids = _load_split(root, "train")
    categories = sorted(coco.getCatIds())
    label_of = {cat: i + 1 for i, cat in enumerate(categories)}  # 0 is background
    images, targets = [], []
    for image_id in ids:
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        boxes = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=torch.float32,
        ).reshape(-1, 4)
        labels = torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        images.append(_image(root, "train", info))
        targets.append({"boxes": boxes, "labels": labels})

    body = torchvision.models.resnet18(weights=None)
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[128, 256, 512],
        out_channels=64,
        extra_blocks=LastLevelP6P7(64, 64),
    )
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,), (128,)), aspect_ratios=((1.0,),) * 5)
    model = FCOS(
        backbone,
        num_classes=len(categories) + 1,
        min_size=IMAGE_SIZE,
        max_size=IMAGE_SIZE,
        anchor_generator=anchors,
        head=FCOSHead(64, 1, len(categories) + 1, num_convs=2),
        score_thresh=0.05,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    regression: list[float] = []
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator).tolist()
        losses = []
        for first in range(0, len(order), batch_size):
            batch_images, batch_targets = [], []
            for i in order[first : first + batch_size]:
                image, target = images[i], dict(targets[i])
                if torch.rand(1, generator=generator).item() < 0.5:
                    image = image.flip(-1)
                    boxes = target["boxes"].clone()
                    boxes[:, [0, 2]] = image.shape[-1] - target["boxes"][:, [2, 0]]
                    target["boxes"] = boxes
                batch_images.append(image)
                batch_targets.append(target)
            loss = model(batch_images, batch_targets)
            optimizer.zero_grad()
            sum(loss.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss["bbox_regression"].detach()))
        schedule.step()
        regression.append(round(sum(losses) / len(losses), 4))
    train_seconds = time.perf_counter() - start

    model.eval()
    test, test_ids = _load_split(root, "test")
    category_of = {label: cat for cat, label in label_of.items()}
    results = []
    with torch.no_grad():
        for first in range(0, len(test_ids), batch_size):
            chunk = test_ids[first : first + batch_size]
            outputs = model([_image(root, "test", test.loadImgs(i)[0]) for i in chunk])
            for image_id, out in zip(chunk, outputs, strict=True):
                columns = (out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist())
                for box, score, label in zip(*columns, strict=True):
                    x1, y1, x2, y2 = box
                    results.append(
                        {
                            "image_id": image_id,
                            "category_id": category_of[label],
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": score,
                        }
                    )
    map_all, map_50 = coco_map(root / "annotations" / "instances_test2017.json", results)
    return {
        "map_50_95": round(map_all, 4),
        "map_50": round(map_50, 4),
        "regression_loss_per_epoch": regression,
        "train_seconds": round(train_seconds, 1),
    }


class _RegressionLoss(pl.Callback):
    def __init__(self) -> None:
        self.per_epoch: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_epoch.append(round(float(trainer.callback_metrics["train/loss_bbox_regression"]), 4))


def train_autotimm(
    root: Path, work: Path, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int
) -> dict:
    """The same detector through autotimm: `ObjectDetector` + `AutoTrainer`, scored the same way."""
    pl.seed_everything(seed, verbose=False)
    data = DetectionDataModule(root, image_size=IMAGE_SIZE, batch_size=batch_size, num_workers=0)
    model = ObjectDetector(
        BackboneConfig("resnet18", pretrained=False),
        fpn_channels=64,
        lr=lr,
        weight_decay=weight_decay,
        scheduler="cosine",
    )
    regression = _RegressionLoss()
    trainer = AutoTrainer(
        max_epochs=epochs,
        callbacks=[regression],
        accelerator="cpu",
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=work,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    train_seconds = time.perf_counter() - start
    predictions = trainer.predict(model, datamodule=data)
    map_all, map_50 = coco_map(
        root / "annotations" / "instances_test2017.json", to_coco_results(predictions, data.category_ids)
    )
    return {
        "map_50_95": round(map_all, 4),
        "map_50": round(map_50, 4),
        "regression_loss_per_epoch": regression.per_epoch,
        "train_seconds": round(train_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="hard")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "detection_baseline.json")
    args = parser.parse_args()

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
        settings = (args.epochs, args.batch_size, args.lr, args.weight_decay, args.seed)
        baseline = train_baseline(root, *settings)
        ours = train_autotimm(root, work, *settings)
    ratio = ours["map_50"] / baseline["map_50"] if baseline["map_50"] > 0 else math.nan
    record = {
        "benchmark": "detection_baseline",
        "data": f"make_coco_shapes: {IMAGE_SIZE} px, difficulty {args.difficulty!r}, classes {list(CLASSES)}, "
        f"{args.num_train} train / {args.num_test} held-out test images, seed {args.seed}",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "baseline": baseline,
        "autotimm": ours,
        "map_50_ratio": round(ratio, 4),
        "target": "map_50 ratio (autotimm / hand-written torchvision FCOS) >= 0.9",
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
    }
    for side in ("baseline", "autotimm"):
        print(f"{side:<9} {record[side]}")
    print(f"mAP@0.5 ratio: {record['map_50_ratio']} (target: >= 0.9)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
