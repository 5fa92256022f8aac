"""Fine-tune a CLIP image tower to detect generated images: frozen backbone first, then the whole model.

The recipe of an AI-generated-image detector built on CLIP: phase 1 ("partial
fine-tuning") trains only a linear head on the frozen image tower with a higher learning
rate; phase 2 ("full fine-tuning") unfreezes the tower and trains everything with a lower
one. Both phases use AdamW, the `cosine_warmup` schedule (linear warmup, then cosine decay,
stepped every optimizer step), gradient clipping, and AUROC as the metric that picks the
best checkpoint. The data is the real-vs-synthetic digits set of `real_vs_fake.py`.

timm builds CLIP image towers by name (`timm.list_models("*clip*")`):
`vit_base_patch16_clip_224.openai` is OpenAI's ViT-B/16 tower. Offline, with random
weights (`pretrained=False`), this script uses the small `vit_xsmall_patch16_clip_224`
(TinyCLIP's architecture, 8 M parameters) at 64 px, passing `img_size` to timm through
`BackboneConfig(kwargs=...)`; with random weights the frozen phase trains on random
features, so most of the progress comes in phase 2. Run:

    python examples/clip_frozen_then_unfrozen.py
    python examples/clip_frozen_then_unfrozen.py --backbone vit_base_patch16_clip_224.openai \\
        --image-size 224 --pretrained --lr2 5e-5        # OpenAI's weights (downloaded by timm)

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import argparse
import os
import time

import pytorch_lightning as pl
from _data import make_real_vs_fake_folder
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Callback

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, MetricConfig

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"


class LrTrace(Callback):
    """Keep the learning rate of every training step, to show the schedule."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, i: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def describe(self) -> str:
        peak = max(range(len(self.lrs)), key=self.lrs.__getitem__)
        first, top, last = self.lrs[0], self.lrs[peak], self.lrs[-1]
        return f"{first:.2g} -> peak {top:.2g} at step {peak + 1} -> {last:.2g} at step {len(self.lrs)}"


def run_phase(model: ImageClassifier, data: ImageDataModule, name: str, epochs: int) -> tuple[AutoTrainer, LrTrace]:
    trace = LrTrace()
    trainer = AutoTrainer(
        max_epochs=epochs,
        accelerator="cpu",
        gradient_clip_val=1.0,
        checkpoint_monitor="val/auroc",
        default_root_dir=f"runs/clip_frozen_then_unfrozen/{name}",
        callbacks=[trace],
        limit_train_batches=3 if SMOKE else 1.0,
        limit_val_batches=2 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    return trainer, trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_xsmall_patch16_clip_224")
    parser.add_argument("--image-size", type=int, default=32 if SMOKE else 64)
    parser.add_argument("--pretrained", action="store_true", help="start from timm's CLIP weights")
    parser.add_argument("--lr1", type=float, default=1e-3, help="learning rate of phase 1 (head only)")
    parser.add_argument("--lr2", type=float, default=2e-4, help="learning rate of phase 2 (whole model)")
    parser.add_argument("--epochs1", type=int, default=1 if SMOKE else 3)
    parser.add_argument("--epochs2", type=int, default=1 if SMOKE else 4)
    args = parser.parse_args()
    start = time.perf_counter()
    root = make_real_vs_fake_folder("data", per_class=40 if SMOKE else 600, image_size=args.image_size)
    seed_everything(0, workers=True)

    data = ImageDataModule(
        root, image_size=args.image_size, batch_size=32, num_workers=0 if SMOKE else 2, augmentation_preset="none"
    )
    model = ImageClassifier(
        # The tower is built for the input size: timm's ViTs take `img_size`.
        backbone=BackboneConfig(args.backbone, pretrained=args.pretrained, kwargs={"img_size": args.image_size}),
        num_classes=1,  # one sigmoid output: P(synthetic)
        multi_label=True,
        metrics=[
            MetricConfig("auroc", metric_class="AUROC", stages=["val", "test"], prog_bar=True),
            MetricConfig("accuracy", metric_class="Accuracy", stages=["val", "test"]),
        ],
        optimizer="adamw",
        lr=args.lr1,
        weight_decay=0.01,
        scheduler="cosine_warmup",
        scheduler_kwargs={"warmup_epochs": 0.5, "eta_min": 1e-6},
        freeze_backbone=True,  # phase 1: partial fine-tuning
    )
    phase1, trace1 = run_phase(model, data, "phase1_frozen", args.epochs1)

    model.unfreeze_backbone()  # phase 2: full fine-tuning, lower learning rate
    model.lr = args.lr2
    phase2, trace2 = run_phase(model, data, "phase2_unfrozen", args.epochs2)
    auroc1, auroc2 = phase1.callback_metrics["val/auroc"].item(), phase2.callback_metrics["val/auroc"].item()
    (result,) = phase2.test(model, datamodule=data, verbose=False)

    print(f"backbone: {args.backbone} at {args.image_size} px, classes {data.class_names} (positive: synthetic)")
    print(f"phase 1 (frozen tower): lr {trace1.describe()}; val/auroc {auroc1:.3f}")
    print(f"phase 2 (whole model):  lr {trace2.describe()}; val/auroc {auroc2:.3f}")
    print(f"test AUROC {result['test/auroc']:.3f}, test accuracy {result['test/accuracy']:.3f} (best checkpoint)")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
