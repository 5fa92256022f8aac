"""Object detection with a transformer backbone (Swin or ViT): smaller batches, a lower learning rate, clipping.

The API document's advice for transformer backbones, applied to `ObjectDetector` on the
synthetic COCO shapes: a batch size of 8 instead of 16, a learning rate ten times lower than
a CNN's, a cosine schedule, `gradient_clip_val=1.0`, and bf16 mixed precision where the GPU
supports it. Swin gives multi-scale maps directly; a plain ViT's single map is turned into a
pyramid (strides 8, 16, 32). Transformers are built for the detector's input size.

The document's learning rates (1e-4 for CNNs, 1e-5 for transformers) are for pretrained
backbones; from random weights (`pretrained=False`, offline) this script uses 1e-4. Run:

    python examples/transformer_backbone.py                                   # Swin-T (slow on a CPU)
    python examples/transformer_backbone.py --backbone vit_tiny_patch16_224   # a small ViT
    python examples/transformer_backbone.py --pretrained --lr 1e-5            # with timm's weights

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up (with timm's tiny `test_vit`).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import make_coco_shapes

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
IMAGE_SIZE = 64 if SMOKE else 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="test_vit" if SMOKE else "swin_tiny_patch4_window7_224")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-epochs", type=int, default=1 if SMOKE else 12)
    parser.add_argument("--pretrained", action="store_true", help="start from timm's ImageNet weights")
    args = parser.parse_args()
    start = time.perf_counter()
    root = make_coco_shapes(
        "data/coco_shapes_smoke" if SMOKE else "data/coco_shapes",
        image_size=IMAGE_SIZE,
        num_train=8 if SMOKE else 400,
        num_val=4 if SMOKE else 100,
    )
    seed_everything(0, workers=True)

    # Smaller batch size for transformers
    data = DetectionDataModule(root, image_size=IMAGE_SIZE, batch_size=8, num_workers=0 if SMOKE else 2)
    # Lower learning rate for transformers, cosine schedule
    model = ObjectDetector(
        backbone=BackboneConfig(args.backbone, pretrained=args.pretrained),
        num_classes=data.num_classes,
        image_size=IMAGE_SIZE,
        fpn_channels=64,
        lr=args.lr,
        scheduler="cosine",
    )
    # Gradient clipping is even more important with transformers; bf16 saves memory on GPUs that have it.
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    trainer = AutoTrainer(
        max_epochs=args.max_epochs,
        accelerator="auto",
        gradient_clip_val=1.0,
        precision="bf16-mixed" if bf16 else 32,
        checkpoint_monitor="val/map",
        checkpoint_mode="max",
        default_root_dir="runs/transformer_backbone",
        limit_train_batches=1 if SMOKE else 1.0,
    )
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics

    parameters = sum(p.numel() for p in model.backbone.parameters())
    print(
        f"backbone: {args.backbone} ({parameters / 1e6:.1f} M parameters), batch size {data.batch_size}, lr {model.lr}"
    )
    print(f"gradient clipping: {trainer.gradient_clip_val}, precision: {trainer.precision}")
    print(f"val mAP: {metrics['val/map'].item():.3f} (mAP@0.5 {metrics['val/map_50'].item():.3f})")
    print(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
