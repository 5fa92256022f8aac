"""Recipes: what the library's defaults reach on real small images, and what each default buys.

The task is the one of issue 17: scikit-learn's handwritten digits (1,797 real 8x8 scans, upscaled to
32 px PNGs by `make_digits_folder`, a 70/15/15 stratified split), `ImageClassifier("resnet18",
pretrained=False)`, `ImageDataModule(root, image_size=32)` and `AutoTrainer(max_epochs=15)`, everything
else at the library's defaults. The figure is `trainer.test`'s accuracy on the 270 test images (after
`fit`, from the last epoch's weights), per variant and seed, with the val accuracy of each epoch and
the first epoch whose val accuracy reached the target (`--target`, 0.99).

Variants (`--variants`): `defaults`, then one default switched back to what the library did before:

- `old_augmentation`: `augmentation_preset="default"` (timm's random-resized-crop down to 8% of the
  image, flip, colour jitter) instead of `"auto"` (a shift of up to 1/8 of the side, flip, at <= 64 px);
- `constant_lr`: `scheduler=None` instead of `"cosine_warmup"` (5% linear warmup, cosine to 0);
- `eval_crop`: the backbone's centre crop at evaluation (`crop_pct` 0.95 for resnet18) instead of
  the whole image (`crop_pct` 1.0 at <= 64 px);
- `old_defaults`: all three at once, the library before these defaults.

    python benchmarks/recipes.py                                   # defaults, 3 seeds, 15 epochs
    python benchmarks/recipes.py --variants defaults old_augmentation constant_lr eval_crop --seeds 0
    python benchmarks/recipes.py --quick                           # a smoke run (about 20 s)

Results go to `benchmarks/results/recipes.json` (`--out`); a run adds to and replaces entries of the
same (variant, seed, epochs) in that file, so variants can be measured in separate runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
from timm.data import create_transform

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule
from autotimm.data import make_digits_folder

HERE = Path(__file__).parent
VARIANTS = ("defaults", "old_augmentation", "constant_lr", "eval_crop", "old_defaults")


def _old_eval_transform(image_size: int) -> Any:
    """The eval transform before small images kept their border: the backbone's own centre crop."""
    config = timm.data.resolve_model_data_config(timm.create_model("resnet18", pretrained=False))
    return create_transform(
        input_size=(3, image_size, image_size),
        interpolation=config["interpolation"],
        mean=config["mean"],
        std=config["std"],
        crop_pct=config["crop_pct"],
    )


def _settings(variant: str, image_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The classifier's and the data module's arguments of a variant (empty: the defaults)."""
    old = variant == "old_defaults"
    model: dict[str, Any] = {"scheduler": None} if old or variant == "constant_lr" else {}
    data: dict[str, Any] = {}
    if old or variant == "old_augmentation":
        data["augmentation_preset"] = "default"
    if old or variant == "eval_crop":
        data["eval_transforms"] = _old_eval_transform(image_size)
    return model, data


class _EpochClock(pl.Callback):
    """Val accuracy and wall time of each training epoch (validation included)."""

    def __init__(self) -> None:
        self.val_accuracy: list[float] = []
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        value = trainer.callback_metrics.get("val/accuracy")
        self.val_accuracy.append(round(float(value), 4) if value is not None else float("nan"))


def run_once(
    root: Path, variant: str, seed: int, epochs: int, image_size: int, work: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    model_kwargs, data_kwargs = _settings(variant, image_size)
    model_kwargs.update(extra.get("model", {}))
    data_kwargs.update(extra.get("data", {}))
    pl.seed_everything(seed, workers=True, verbose=False)  # the initial weights
    model = ImageClassifier(BackboneConfig("resnet18", pretrained=False), **model_kwargs)
    data = ImageDataModule(root, image_size=image_size, **data_kwargs)
    clock = _EpochClock()
    trainer = AutoTrainer(
        max_epochs=epochs,
        seed=seed,
        **extra.get("trainer", {}),
        callbacks=[clock],
        default_root_dir=work / f"{variant}-{seed}-{epochs}",
        enable_progress_bar=False,
        plots=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=data, verbose=False)[0]["test/accuracy"]
    return {
        "variant": variant,
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": round(float(test), 4),
        "val_accuracy": clock.val_accuracy,
        "fit_seconds": round(fit_seconds, 1),
        "seconds_per_epoch": round(sum(clock.seconds) / max(1, len(clock.seconds)), 2),
    }


def _epochs_to(values: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["defaults"], choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[15], help="one run per epoch count")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--target", type=float, default=0.99, help="accuracy the issue asks for")
    parser.add_argument("--max-per-class", type=int, default=None, help="fewer digits (smoke runs)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 on a busy machine: spinning threads cost more)"
    )
    parser.add_argument(
        "--extra",
        type=json.loads,
        default={},
        help='settings on top of the variant, e.g. \'{"model": {"lr": 3e-3}, "trainer": {"ema": true}}\'',
    )
    parser.add_argument("--name", default=None, help="record the runs under this name (default: the variant)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 12 digits per class")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/recipes.json")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.max_per_class = args.seeds[:1], [1], 12
    out = args.out or (Path(tempfile.mkdtemp()) / "recipes.json" if args.quick else HERE / "results" / "recipes.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="autotimm-recipes-"))
    root = make_digits_folder(work / "digits", image_size=args.image_size, max_per_class=args.max_per_class, seed=0)
    record = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    for variant in args.variants:
        for epochs in args.epochs:
            for seed in args.seeds:
                result = run_once(root, variant, seed, epochs, args.image_size, work, args.extra)
                if args.name:
                    result["variant"] = args.name
                if args.extra:
                    result["extra"] = args.extra
                result["epochs_to_target_val"] = _epochs_to(result["val_accuracy"], args.target)
                print(json.dumps(result), flush=True)
                key = (result["variant"], seed, epochs)
                record["runs"] = [r for r in record["runs"] if (r["variant"], r["seed"], r["epochs"]) != key]
                record["runs"].append(result)
                record.update(
                    {
                        "task": f"digits {args.image_size} px, resnet18 from scratch, library defaults",
                        "target": args.target,
                        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
                        "max_per_class": args.max_per_class,
                    }
                )
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(record, indent=1))
    print(f"\n{'variant':<18}{'epochs':>7}{'seeds':>6}{'test acc (mean, min)':>24}{'s/epoch':>9}")
    for variant in [args.name] if args.name else args.variants:
        for epochs in args.epochs:
            rows = [r for r in record["runs"] if r["variant"] == variant and r["epochs"] == epochs]
            accs = [r["test_accuracy"] for r in rows]
            cost = sum(r["seconds_per_epoch"] for r in rows) / len(rows)
            print(f"{variant:<18}{epochs:>7}{len(rows):>6}{sum(accs) / len(accs):>15.4f}, {min(accs):.4f}{cost:>9.1f}")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
