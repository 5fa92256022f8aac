"""Framework overhead: `ImageClassifier` + `AutoTrainer` against a hand-written PyTorch loop.

Both sides train the same timm model from the same initial weights on the same batches (one
`ImageDataModule`'s loaders), with the same optimizer (fused AdamW, no weight decay on biases and
normalisation layers), a validation pass (loss and accuracy) each epoch, a checkpoint each epoch
and the loss written to a CSV file. autotimm runs as a user would have it: its default
checkpoints (`last.ckpt`), the run record, the NaN guard and a CSV logger (but not its end-of-fit
plots, which the hand loop does not draw). Both sides run once before the timing (lazy imports,
first-use set-up). Runs are interleaved (A B, B A, ...) and the figure is the median of the
per-pair ratios of fit wall time, so drifts in machine speed cancel. Each side also times its
checkpoint writes, and a second figure leaves them out: autotimm writes a new file and renames
it over the old one (crash-safe), the hand loop overwrites its file in place (a kill mid-save
destroys it). The process CPU time of each run is recorded too.

    python benchmarks/overhead.py                # 9 pairs, resnet18 at 32 px on the digits
    python benchmarks/overhead.py --pairs 3 --epochs 2
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, LoggerConfig
from autotimm.callbacks import AtomicCheckpointIO
from autotimm.data import make_digits_folder

sys.path.insert(0, str(Path(__file__).parent))
from _pairs import interleave, report  # noqa: E402

SAVE_SECONDS: dict[str, float] = {}  # checkpoint-write time of the latest run of each side


class TimedCheckpointIO(AtomicCheckpointIO):
    """autotimm's default checkpoint writer, timed."""

    def save_checkpoint(self, *args, **kwargs) -> None:
        start = time.perf_counter()
        super().save_checkpoint(*args, **kwargs)
        SAVE_SECONDS["autotimm"] += time.perf_counter() - start


def plain_loop(data: ImageDataModule, state: dict, args: argparse.Namespace, out: Path) -> float:
    """The hand-written baseline; returns its wall time in seconds."""
    SAVE_SECONDS["plain"] = 0.0
    start = time.perf_counter()
    model = timm.create_model(args.model, pretrained=False, num_classes=data.num_classes)
    model.load_state_dict(state)
    # The optimizer autotimm builds by default, so that the ratio measures the framework: fused
    # AdamW, weight decay on the weights but not on biases and normalisation layers (timm's groups).
    groups = param_groups_weight_decay(model, weight_decay=1e-4)
    optimizer = torch.optim.AdamW(groups, lr=1e-3, fused=True)
    train_loader, val_loader = data.train_dataloader(), data.val_dataloader()
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        for epoch in range(args.epochs):
            model.train()
            for step, (x, y) in enumerate(train_loader):
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step % 50 == 0:
                    writer.writerow([epoch, step, loss.item()])
            model.eval()
            correct = total = 0
            loss_sum = torch.zeros(())
            with torch.no_grad():
                for x, y in val_loader:
                    logits = model(x)
                    loss_sum += F.cross_entropy(logits, y, reduction="sum")
                    correct += (logits.argmax(1) == y).sum().item()
                    total += len(y)
            writer.writerow([epoch, "val_loss", loss_sum.item() / total, "val_accuracy", correct / total])
            saving = time.perf_counter()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, out / "last.pt")
            SAVE_SECONDS["plain"] += time.perf_counter() - saving
    return time.perf_counter() - start


def autotimm_fit(data: ImageDataModule, state: dict, args: argparse.Namespace, out: Path) -> float:
    SAVE_SECONDS["autotimm"] = 0.0
    start = time.perf_counter()
    model = ImageClassifier(BackboneConfig(args.model, pretrained=False), num_classes=data.num_classes, lr=1e-3)
    # The same initial weights: timm's classifier is `fc` on resnets, autotimm's head is `head.1`.
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model.backbone.load_state_dict(body)
    model.head[1].load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    trainer = AutoTrainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        default_root_dir=out,
        logger=[LoggerConfig("csv")],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        plots=False,  # the hand loop draws none
        plugins=[TimedCheckpointIO()],
    )
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results") / "overhead.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = make_digits_folder(work / "digits", image_size=32)
        data = ImageDataModule(
            root, image_size=32, batch_size=args.batch_size, num_workers=0, augmentation_preset="none"
        )
        data.setup("fit")
        torch.manual_seed(0)
        state = timm.create_model(args.model, pretrained=False, num_classes=data.num_classes).state_dict()
        # Warm-up of both sides, one epoch: first-touch allocations, lazy imports, first-use set-up.
        one_epoch = argparse.Namespace(**{**vars(args), "epochs": 1})
        for name, run in (("plain", plain_loop), ("autotimm", autotimm_fit)):
            (work / f"{name}-warm-up").mkdir()
            run(data, state, one_epoch, work / f"{name}-warm-up")

        saves: dict[str, list[float]] = {"plain": [], "autotimm": []}
        cpu: dict[str, list[float]] = {"plain": [], "autotimm": []}

        def timed(run, name):
            def one(pair: int) -> float:
                folder = work / f"{name}{pair}"
                folder.mkdir()
                torch.manual_seed(pair)
                cpu_start = time.process_time()
                seconds = run(data, state, args, folder)
                cpu[name].append(time.process_time() - cpu_start)
                saves[name].append(SAVE_SECONDS[name])
                return seconds

            return one

        times = interleave(
            {"plain": timed(plain_loop, "plain"), "autotimm": timed(autotimm_fit, "autotimm")}, args.pairs
        )
    pairs = zip(times["plain"], times["autotimm"], saves["plain"], saves["autotimm"], strict=True)
    without_saves = [(a - a_save) / (p - p_save) for p, a, p_save, a_save in pairs]
    record = {
        "benchmark": "overhead",
        "model": args.model,
        "data": f"scikit-learn digits as 32 px PNGs, batch size {args.batch_size}, {args.epochs} epochs",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "plain_checkpoint_seconds": [round(v, 3) for v in saves["plain"]],
        "autotimm_checkpoint_seconds": [round(v, 3) for v in saves["autotimm"]],
        "median_ratio_without_checkpoint_writes": round(statistics.median(without_saves), 4),
        "plain_cpu_seconds": [round(v, 2) for v in cpu["plain"]],
        "autotimm_cpu_seconds": [round(v, 2) for v in cpu["autotimm"]],
        "median_cpu_time_ratio": round(
            statistics.median(a / p for p, a in zip(cpu["plain"], cpu["autotimm"], strict=True)), 4
        ),
    }
    values = (times["plain"], times["autotimm"])
    report(record, ("plain_seconds", "autotimm_seconds"), values, args.out, "median_ratio <= 1.03 (autotimm / plain)")
    print(
        f"checkpoint writes per run (median): plain {statistics.median(saves['plain']):.2f} s, autotimm "
        f"{statistics.median(saves['autotimm']):.2f} s; median ratio without them: "
        f"{record['median_ratio_without_checkpoint_writes']:.3f}; median CPU-time ratio: "
        f"{record['median_cpu_time_ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
