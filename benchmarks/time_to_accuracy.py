"""Time to accuracy: autotimm with its defaults against a plain PyTorch loop with PyTorch's defaults.

Each side trains the same model from the same initial weights, validating after each epoch,
and stops after the first epoch whose validation score is above a fixed target (or at an epoch
cap). The figure is the wall time to the target, model and loader set-up included; pairs are
interleaved (A B, B A, ...), and the figure reported is the median of the per-pair ratios
autotimm / plain over the pairs where both sides reached the target. The pair index seeds the
initial weights and the shuffling. Both sides use the same recipe (learning rate, a cosine
schedule over the cap stepped once per epoch, no augmentation), so the time is set by what
each side does per epoch and by how many epochs it needs.

Classification is the quickstart (`examples/quickstart.py`): scikit-learn's digits as 32 px PNGs
(`make_digits_folder`), timm `resnet18` from scratch, batch 32, `augmentation_preset="none"`, lr 3e-3,
a cosine schedule over at most 5 epochs. The target is val accuracy above 0.95.

- autotimm: `ImageDataModule` + `ImageClassifier` + `AutoTrainer`, with the library's defaults
  otherwise: AdamW (fused, weight decay 1e-4 on weights only), `min(8, CPUs)` persistent loader
  workers, the sanity check, `last.ckpt` each epoch, the run record, plots and the NaN guard.
  It stops through Lightning's `EarlyStopping(monitor="val/accuracy", mode="max",
  stopping_threshold=...)`. That test is a strict `>`, run after each epoch's validation. Its
  patience is set to the cap, so only the threshold (or the cap) stops the run.
- plain: `torchvision.datasets.ImageFolder` + `DataLoader` with PyTorch's defaults
  (`num_workers=0`), `timm.create_model`, `torch.optim.AdamW(lr=...)` with PyTorch's defaults
  (weight decay 0.01 on every parameter, not fused), `CosineAnnealingLR`, and accuracy on the
  val split after each epoch, with the same strict `>`. The images go through the data
  module's own transform (resize, centre crop to 32 px, normalise), so both sides see the same
  tensors.

Detection uses the synthetic COCO shapes (`make_coco_shapes`: 3 classes, 96 px, 480 train and
100 val images, written at the training size so boxes need no rescaling) and
`ObjectDetector(resnet18, pretrained=False)` (FCOS), batch 16, no augmentation. It uses what the
detection guide tells a user to set when training from scratch on a CPU: `lr=1e-3`,
`fpn_channels=64`, a cosine schedule, and gradient clipping at 1.0 on both sides. The target is
val mAP@0.5 above 0.4, at most 8 epochs.

- autotimm: `DetectionDataModule(augmentation_preset="none")` + `ObjectDetector` +
  `AutoTrainer(gradient_clip_val=1.0)`, stopped by `EarlyStopping(monitor="val/map_50", ...)`
  as above. The defaults otherwise: loader workers, AdamW (not fused: Lightning cannot clip a
  fused optimizer's gradients), a val loss, and COCO mAP (faster-coco-eval when installed).
- plain: the same torchvision FCOS (`ObjectDetector(...).detector`, so the identical network
  and weights), trained by a hand loop over `DataLoader(data.train_dataset, batch_size=16,
  shuffle=True, collate_fn=detection_collate)`. These are the data module's data sets (COCO
  parsing, letterbox), with PyTorch's loader defaults otherwise. It uses `torch.optim.AdamW(lr=...)`
  with PyTorch's defaults, `CosineAnnealingLR` and `clip_grad_norm_(..., 1.0)`, and scores
  mAP@0.5 on the val split after each epoch with
  `torchmetrics.detection.MeanAveragePrecision(box_format="xyxy")` (its default pycocotools
  backend). It computes no val loss.

    python benchmarks/time_to_accuracy.py                          # both tasks, 2 pairs
    python benchmarks/time_to_accuracy.py --task classification --pairs 5
    python benchmarks/time_to_accuracy.py --pairs 1 --digits-per-class 10 --cls-max-epochs 1 \\
        --target-accuracy 0 --num-train 16 --num-val 4 --image-size 64 --det-max-epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision
from torchvision.datasets import ImageFolder

from autotimm import (
    AutoTrainer,
    BackboneConfig,
    DetectionDataModule,
    ImageClassifier,
    ImageDataModule,
    ObjectDetector,
    read_run,
)
from autotimm.data import make_coco_shapes, make_digits_folder
from autotimm.data.detection import detection_collate

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import interleave  # noqa: E402

DIGITS_SIZE = 32
DIGITS_BATCH = 32  # ImageDataModule's default, and the quickstart's
SHAPES = ("circle", "square", "triangle")
DETECTION_BATCH = 16  # DetectionDataModule's default
DETECTION_AUGMENTATION = "none"  # as for classification: the plain side writes no box-aware augmentation
CLIP = 1.0


@dataclass
class Outcome:
    """One side's run: wall seconds, epochs trained, the validation score after each epoch."""

    seconds: float
    epochs: int
    scores: list[float]
    reached: bool


# ---------------------------------------------------------------------- classification


def classify_plain(root: Path, transform: Callable, state: dict, args: argparse.Namespace) -> Outcome:
    """Hand-written classification loop with PyTorch's defaults; stops after the first epoch above the target."""
    start = time.perf_counter()
    train = DataLoader(ImageFolder(str(root / "train"), transform=transform), batch_size=DIGITS_BATCH, shuffle=True)
    val = DataLoader(ImageFolder(str(root / "val"), transform=transform), batch_size=DIGITS_BATCH)
    model = timm.create_model(args.model, pretrained=False, num_classes=len(train.dataset.classes))
    model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.cls_max_epochs)
    scores: list[float] = []
    for _ in range(args.cls_max_epochs):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        scores.append(correct / total)
        if scores[-1] > args.target_accuracy:
            break
    return Outcome(time.perf_counter() - start, len(scores), scores, scores[-1] > args.target_accuracy)


def classify_autotimm(root: Path, state: dict, args: argparse.Namespace, out: Path) -> Outcome:
    """`ImageDataModule` + `ImageClassifier` + `AutoTrainer` with the defaults, stopped by `EarlyStopping`."""
    start = time.perf_counter()
    data = ImageDataModule(root, image_size=DIGITS_SIZE, augmentation_preset="none")
    model = ImageClassifier(
        BackboneConfig(args.model, pretrained=False), num_classes=data.num_classes, lr=args.lr, scheduler="cosine"
    )
    # The same initial weights: timm's classifier is `fc` on resnets, autotimm's head is `head.1`.
    model.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    model.head[1].load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    stop = EarlyStopping(
        monitor="val/accuracy", mode="max", stopping_threshold=args.target_accuracy, patience=args.cls_max_epochs
    )
    trainer = _trainer(args.cls_max_epochs, stop, out)
    trainer.fit(model, datamodule=data)
    return _autotimm_outcome(trainer, stop, "val/accuracy", time.perf_counter() - start)


# ---------------------------------------------------------------------- detection


def _detector(num_classes: int, args: argparse.Namespace) -> ObjectDetector:
    return ObjectDetector(
        BackboneConfig("resnet18", pretrained=False),
        num_classes=num_classes,
        image_size=args.image_size,
        fpn_channels=args.fpn_channels,
        lr=args.det_lr,
        scheduler="cosine",
    )


def detect_plain(root: Path, state: dict, args: argparse.Namespace) -> Outcome:
    """Hand loop over the same torchvision FCOS; mAP@0.5 with torchmetrics after each epoch."""
    start = time.perf_counter()
    data = DetectionDataModule(root, image_size=args.image_size, augmentation_preset=DETECTION_AUGMENTATION)
    data.setup("fit")  # only for its data sets (COCO parsing, letterbox)
    train = DataLoader(data.train_dataset, batch_size=DETECTION_BATCH, shuffle=True, collate_fn=detection_collate)
    val = DataLoader(data.val_dataset, batch_size=DETECTION_BATCH, collate_fn=detection_collate)
    detector = _detector(data.num_classes, args).detector
    detector.load_state_dict(state)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=args.det_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.det_max_epochs)
    scores: list[float] = []
    for _ in range(args.det_max_epochs):
        detector.train()
        for images, targets in train:
            loss = sum(detector(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(detector.parameters(), CLIP)
            optimizer.step()
        schedule.step()
        detector.eval()
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        with torch.no_grad():
            for images, targets in val:
                truth = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
                metric.update(detector(images), truth)
        scores.append(metric.compute()["map_50"].item())
        if scores[-1] > args.target_map:
            break
    return Outcome(time.perf_counter() - start, len(scores), scores, scores[-1] > args.target_map)


def detect_autotimm(root: Path, state: dict, args: argparse.Namespace, out: Path) -> Outcome:
    """`DetectionDataModule` + `ObjectDetector` + `AutoTrainer(gradient_clip_val=1.0)`, stopped by `EarlyStopping`."""
    start = time.perf_counter()
    data = DetectionDataModule(root, image_size=args.image_size, augmentation_preset=DETECTION_AUGMENTATION)
    model = _detector(data.num_classes, args)
    model.detector.load_state_dict(state)
    stop = EarlyStopping(
        monitor="val/map_50", mode="max", stopping_threshold=args.target_map, patience=args.det_max_epochs
    )
    trainer = _trainer(args.det_max_epochs, stop, out, gradient_clip_val=CLIP)
    trainer.fit(model, datamodule=data)
    return _autotimm_outcome(trainer, stop, "val/map_50", time.perf_counter() - start)


# ---------------------------------------------------------------------- shared


def _trainer(max_epochs: int, stop: EarlyStopping, out: Path, **kwargs: Any) -> AutoTrainer:
    # No progress bar or model summary: console output only, as in the other benchmarks.
    return AutoTrainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[stop],
        default_root_dir=out,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _autotimm_outcome(trainer: AutoTrainer, stop: EarlyStopping, monitor: str, seconds: float) -> Outcome:
    scores = [epoch[monitor] for epoch in read_run(trainer.run_dir)["epochs"] if monitor in epoch]
    return Outcome(
        seconds, trainer.current_epoch, scores, stop.stopping_reason == EarlyStoppingReason.STOPPING_THRESHOLD
    )


def summarize(task: str, target: str, plain: list[Outcome], auto: list[Outcome]) -> dict[str, Any]:
    """Print one task's table; return its record (seconds are `None` where the target was not reached)."""
    ratios = [a.seconds / p.seconds for p, a in zip(plain, auto, strict=True) if p.reached and a.reached]
    median = round(statistics.median(ratios), 4) if ratios else None

    def cell(o: Outcome) -> str:
        return f"{o.seconds:8.1f} s {o.epochs:>3} ep" if o.reached else f"not reached ({o.epochs} ep)"

    print(f"\n{task}: time to {target}")
    print(f"{'pair':>4} {'plain':>22} {'autotimm':>22} {'ratio':>7}")
    for i, (p, a) in enumerate(zip(plain, auto, strict=True)):
        ratio = f"{a.seconds / p.seconds:7.3f}" if p.reached and a.reached else f"{'-':>7}"
        print(f"{i:>4} {cell(p):>22} {cell(a):>22} {ratio}")
    print(f"median ratio autotimm / plain: {median if median is not None else '-'} ({len(ratios)} pairs reached)")

    def side(outcomes: list[Outcome]) -> dict[str, Any]:
        return {
            "seconds": [round(o.seconds, 2) if o.reached else None for o in outcomes],
            "epochs": [o.epochs for o in outcomes],
            "run_seconds": [round(o.seconds, 2) for o in outcomes],
            "scores": [[round(s, 4) for s in o.scores] for o in outcomes],
        }

    return {
        "target": target,
        "plain": side(plain),
        "autotimm": side(auto),
        "ratios": [round(r, 4) for r in ratios],
        "median_ratio": median,
        "pairs_reached": len(ratios),
    }


def classification(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    root = make_digits_folder(work / "digits", image_size=DIGITS_SIZE, max_per_class=args.digits_per_class)
    # The data module's own transform for the plain side (augmentation "none": train = eval).
    reference = ImageDataModule(root, image_size=DIGITS_SIZE, augmentation_preset="none")
    reference.set_data_config(timm.data.resolve_model_data_config(timm.create_model(args.model, pretrained=False)))
    reference.setup("fit")
    transform = reference.val_dataset.transform

    def state(pair: int) -> dict:
        torch.manual_seed(pair)
        return timm.create_model(args.model, pretrained=False, num_classes=reference.num_classes).state_dict()

    # Warm-up of both sides, one epoch each: page cache, lazy imports, first-touch allocations.
    one_epoch = argparse.Namespace(**{**vars(args), "cls_max_epochs": 1})
    classify_plain(root, transform, state(0), one_epoch)
    classify_autotimm(root, state(0), one_epoch, work / "cls-warm-up")
    outcomes = interleave(
        {
            "plain": lambda pair: classify_plain(root, transform, state(pair), args),
            "autotimm": lambda pair: classify_autotimm(root, state(pair), args, work / f"cls{pair}"),
        },
        args.pairs,
    )
    record = summarize(
        "classification", f"val accuracy > {args.target_accuracy}", outcomes["plain"], outcomes["autotimm"]
    )
    counts = {split: len(ImageFolder(str(root / split))) for split in ("train", "val")}
    return {
        "model": f"timm {args.model}, pretrained=False",
        "data": f"scikit-learn digits as {DIGITS_SIZE} px PNGs, {counts['train']} train / {counts['val']} val, "
        f"batch {DIGITS_BATCH}, no augmentation",
        "optimizer": f"AdamW lr {args.lr}, cosine over {args.cls_max_epochs} epochs; autotimm: fused, weight decay "
        "1e-4 on weights only; plain: torch defaults (not fused, weight decay 0.01 on all parameters)",
        "loaders": "autotimm: the data module's defaults (persistent workers); plain: DataLoader defaults (no workers)",
        "max_epochs": args.cls_max_epochs,
        **record,
    }


def detection(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    root = make_coco_shapes(
        work / "shapes", image_size=args.image_size, num_train=args.num_train, num_val=args.num_val, classes=SHAPES
    )

    def state(pair: int) -> dict:
        torch.manual_seed(pair)
        return _detector(len(SHAPES), args).detector.state_dict()

    # Warm-up of both sides (lazy imports, first-use set-up): one epoch each on a few images.
    small = make_coco_shapes(
        work / "shapes-warm-up", image_size=args.image_size, num_train=32, num_val=8, classes=SHAPES
    )
    one_epoch = argparse.Namespace(**{**vars(args), "det_max_epochs": 1})
    detect_plain(small, state(0), one_epoch)
    detect_autotimm(small, state(0), one_epoch, work / "det-warm-up")
    outcomes = interleave(
        {
            "plain": lambda pair: detect_plain(root, state(pair), args),
            "autotimm": lambda pair: detect_autotimm(root, state(pair), args, work / f"det{pair}"),
        },
        args.pairs,
    )
    record = summarize("detection", f"val mAP@0.5 > {args.target_map}", outcomes["plain"], outcomes["autotimm"])
    return {
        "model": f"ObjectDetector(resnet18, pretrained=False, fcos, fpn_channels={args.fpn_channels}) / its .detector",
        "data": f"make_coco_shapes: {args.image_size} px, classes {list(SHAPES)}, {args.num_train} train / "
        f"{args.num_val} val images, batch {DETECTION_BATCH}, no augmentation",
        "optimizer": f"AdamW lr {args.det_lr}, cosine over {args.det_max_epochs} epochs, gradient norm clipped at "
        f"{CLIP}; autotimm: weight decay 1e-4 on weights only; plain: torch defaults (weight decay 0.01 on all "
        "parameters); neither fused",
        "loaders": "autotimm: the data module's defaults (persistent workers); plain: DataLoader defaults (no workers) "
        "over the data module's data sets",
        "differences": "plain computes no val loss and uses torchmetrics' default mAP backend (pycocotools)",
        "max_epochs": args.det_max_epochs,
        **record,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("classification", "detection", "both"), default="both")
    parser.add_argument("--pairs", type=int, default=2, help="2 keeps run_all.py under 15 minutes here")
    parser.add_argument("--model", default="resnet18", help="classification: a timm model name")
    parser.add_argument("--lr", type=float, default=3e-3, help="classification learning rate (the quickstart's)")
    parser.add_argument("--target-accuracy", type=float, default=0.95)
    parser.add_argument("--cls-max-epochs", type=int, default=5, help="the cap, and the cosine schedule's length")
    parser.add_argument("--digits-per-class", type=int, default=None, help="fewer digits, for smoke runs")
    parser.add_argument("--image-size", type=int, default=96, help="detection image size")
    parser.add_argument("--num-train", type=int, default=480, help="detection training images")
    parser.add_argument("--num-val", type=int, default=100, help="detection validation images")
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--det-lr", type=float, default=1e-3)
    parser.add_argument("--target-map", type=float, default=0.4, help="detection: val mAP@0.5 to exceed")
    parser.add_argument("--det-max-epochs", type=int, default=8, help="the cap, and the cosine schedule's length")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "time_to_accuracy.json")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")

    record: dict[str, Any] = {
        "benchmark": "time_to_accuracy",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "lightning": pl.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
        "figure": "median over pairs of autotimm seconds / plain seconds to the target (pairs where both reach it)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task, run in (("classification", classification), ("detection", detection)):
            result = run(work, args) if args.task in (task, "both") else None
            record[task] = result
            record[f"{task}_median_ratio"] = None if result is None else result["median_ratio"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
