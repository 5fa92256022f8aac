"""GPU training throughput: `ImageClassifier` + `AutoTrainer`'s fast path against the best hand-written loop.

Both sides train timm `resnet50` at 224 px, batch 128, on synthetic in-memory data: a few
distinct batches of random images and labels, held in pinned host memory and sent to the GPU
each step (no decoding, so the figure is the training step itself). The figure is images per
second over `--steps` training steps after `--warmup` steps (compilation and allocator growth
fall in the warm-up), with the GPU synchronised at both ends of the timed window. Runs are
interleaved (A B, B A, ...) and the figure is the median of the per-pair ratios autotimm /
hand-written.

- autotimm: `ImageClassifier("resnet50", pretrained=False)` (AdamW, fused by default) and
  `AutoTrainer(precision="bf16-mixed", channels_last=True, compile=True)` fed by a `DataLoader`
  over the pinned batches. Everything else is the default: the NaN guard, step logging, and a
  checkpoint, the run record and plots at the end (outside the timed window). Only the progress
  bar and the model summary are off. A callback reads the clock.
- hand-written: the same network (timm's `fc` head where autotimm has `Dropout(0)` + `Linear`),
  `channels_last` model and inputs, `torch.compile(model)`, bf16 `torch.autocast`,
  `torch.optim.AdamW(..., fused=True)`, `zero_grad(set_to_none=True)`, `non_blocking=True`
  transfers.

Both sides use AdamW with lr 1e-3 and weight decay 1e-4, and compile from scratch
(`torch._dynamo.reset()` before each run). Neither side sets `torch.backends.cudnn.benchmark`:
it is process-wide, and Lightning leaves it as it finds it.

Without a CUDA GPU the script exits with an error, except with `--device cpu --quick`: a tiny
model, batch and step count (no `torch.compile` unless `--compile`) that checks the code path.

    python benchmarks/gpu_throughput.py                         # resnet50, 224 px, batch 128, 3 pairs
    python benchmarks/gpu_throughput.py --batch-size 256 --pairs 5
    python benchmarks/gpu_throughput.py --device cpu --quick    # a smoke run on a CPU
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import interleave, report  # noqa: E402

Batch = tuple[torch.Tensor, torch.Tensor]  # images [B, 3, H, W], labels [B]
DISTINCT_BATCHES = 4
LR, WEIGHT_DECAY = 1e-3, 1e-4  # ImageClassifier's defaults
FULL = {"model": "resnet50", "image_size": 224, "batch_size": 128, "warmup": 20, "steps": 50, "pairs": 3}
QUICK = {"model": "test_resnet", "image_size": 64, "batch_size": 8, "warmup": 2, "steps": 3, "pairs": 1}


class Batches(Dataset):
    """`length` ready-made `(images, labels)` batches, cycling over a few held in (pinned) host memory."""

    def __init__(self, batches: list[Batch], length: int) -> None:
        self.batches = batches
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index % len(self.batches)]


class StepClock(Callback):
    """Times training batches `warmup` to `warmup + steps - 1`, synchronising the device at both ends."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.seconds = float("nan")
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if idx == self.warmup:
            _sync(self.device)
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup + self.steps - 1:
            _sync(self.device)
            self.seconds = time.perf_counter() - self._start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh_compiler(args: argparse.Namespace) -> None:
    """Each run compiles from scratch (dynamo's cache of a code object holds at most a few models)."""
    if args.compile:
        torch._dynamo.reset()


def make_batches(args: argparse.Namespace, device: torch.device) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(DISTINCT_BATCHES):
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
        y = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator)
        batches.append((x.pin_memory(), y.pin_memory()) if device.type == "cuda" else (x, y))
    return batches


def hand_loop(batches: list[Batch], args: argparse.Namespace, device: torch.device) -> float:
    """The best hand-written loop; returns images per second over the timed steps."""
    _fresh_compiler(args)
    model = timm.create_model(args.model, pretrained=False, num_classes=args.num_classes)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    step_model = torch.compile(model) if args.compile else model
    start = 0.0
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        if i == args.warmup:  # as the callback on the other side: after the batch's transfer
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def autotimm_fit(batches: list[Batch], args: argparse.Namespace, device: torch.device, out: Path) -> float:
    """`ImageClassifier` + `AutoTrainer` with the fast path; returns images per second over the timed steps."""
    _fresh_compiler(args)
    model = ImageClassifier(BackboneConfig(args.model, pretrained=False), num_classes=args.num_classes)
    clock = StepClock(args.warmup, args.steps, device)
    trainer = AutoTrainer(
        max_epochs=1,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        channels_last=True,
        compile=args.compile,
        callbacks=[clock],
        default_root_dir=out,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    # batch_size=None: the data set yields whole batches, so the loader neither collates nor copies.
    loader = DataLoader(Batches(batches, args.warmup + args.steps), batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    return args.steps * args.batch_size / clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu only with --quick")
    parser.add_argument("--quick", action="store_true", help="tiny model, batch and step count: checks the code path")
    parser.add_argument("--model", help=f"a timm model name (default {FULL['model']}; {QUICK['model']} with --quick)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--warmup", type=int, help="steps left out of the timing (compilation happens here)")
    parser.add_argument("--steps", type=int, help="timed steps")
    parser.add_argument("--pairs", type=int)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--precision", choices=("bf16-mixed", "32"), default="bf16-mixed")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile both sides (default: on; off with --quick)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "gpu_throughput.json")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compile is None:
        args.compile = not args.quick
    for key in ("image_size", "batch_size", "steps", "pairs", "num_classes"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 1:
        parser.error(f"--warmup must be >= 1 (the first step compiles and autotunes), got {args.warmup}")
    if args.device == "cpu" and not args.quick:
        parser.error("--device cpu is only for smoke runs of the code path: add --quick")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "gpu_throughput.py needs a CUDA GPU, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}). To check the code path on a CPU: --device cpu --quick"
        )

    device = torch.device(args.device)
    batches = make_batches(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def seeded(run):
            def one(pair: int) -> float:
                torch.manual_seed(pair)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                return run(pair)

            return one

        rates = interleave(
            {
                "hand": seeded(lambda pair: hand_loop(batches, args, device)),
                "autotimm": seeded(lambda pair: autotimm_fit(batches, args, device, work / f"autotimm{pair}")),
            },
            args.pairs,
        )
    record = {
        "benchmark": "gpu_throughput",
        "model": f"timm {args.model}, pretrained=False, {args.num_classes} classes",
        "data": f"synthetic, {DISTINCT_BATCHES} distinct batches of {args.batch_size} x 3 x {args.image_size} x "
        f"{args.image_size} in {'pinned ' if device.type == 'cuda' else ''}host memory",
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "lightning": pl.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
    }
    labels = ("hand_images_per_second", "autotimm_images_per_second")
    values = (rates["hand"], rates["autotimm"])
    report(record, labels, values, args.out, "median_ratio >= 0.95 (autotimm / hand-written)")


if __name__ == "__main__":
    main()
