"""Two-phase object detection training: first the head on a frozen backbone, then the whole model.

The API document's recommended recipe for `ObjectDetector`: phase 1 trains the feature
pyramid and the detection head with the backbone frozen (`freeze_backbone=True`, a higher
learning rate); phase 2 unfreezes the backbone and fine-tunes everything with a lower
learning rate, gradient clipping and the best checkpoint kept by `val/map`. The data is
`make_coco_shapes`: a synthetic COCO-layout set of circles, squares and triangles.

The recipe is made for a pretrained backbone. Here it starts from random weights
(`pretrained=False`, offline), so phase 1 learns on random backbone features and most of
the progress comes in phase 2. Pass `--pretrained` where timm can download weights. Run:

    python examples/two_phase_detection.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import argparse
import os
import time

from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import make_coco_shapes

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"
IMAGE_SIZE = 64 if SMOKE else 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase1-epochs", type=int, default=1 if SMOKE else 3)
    parser.add_argument("--phase2-epochs", type=int, default=1 if SMOKE else 8)
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
    data = DetectionDataModule(
        root, image_size=IMAGE_SIZE, batch_size=4 if SMOKE else 16, num_workers=0 if SMOKE else 2
    )
    smoke = {"limit_train_batches": 2, "limit_val_batches": 1} if SMOKE else {}

    # Phase 1: train the feature pyramid and the detection head only.
    model = ObjectDetector(
        backbone=BackboneConfig(BACKBONE, pretrained=args.pretrained),
        num_classes=data.num_classes,
        image_size=IMAGE_SIZE,
        fpn_channels=64,
        freeze_backbone=True,
        lr=1e-3,  # higher learning rate for head-only training
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"phase 1: backbone frozen, {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters train")
    trainer_phase1 = AutoTrainer(
        max_epochs=args.phase1_epochs, accelerator="cpu", default_root_dir="runs/two_phase_detection/phase1", **smoke
    )
    trainer_phase1.fit(model, datamodule=data)
    map_phase1 = trainer_phase1.callback_metrics["val/map"].item()

    # Phase 2: fine-tune the entire model. `unfreeze_backbone()` is the API document's
    # `for param in model.backbone.parameters(): param.requires_grad = True`, and `model.lr`
    # its `model._lr`: the next `fit` builds its optimizer with them.
    model.unfreeze_backbone()
    model.lr = 1e-4  # lower learning rate for the whole model
    print(f"phase 2: backbone unfrozen, {sum(p.numel() for p in model.parameters() if p.requires_grad):,} train")
    trainer_phase2 = AutoTrainer(
        max_epochs=args.phase2_epochs,
        accelerator="cpu",
        gradient_clip_val=1.0,
        checkpoint_monitor="val/map",
        checkpoint_mode="max",
        default_root_dir="runs/two_phase_detection/phase2",
        **smoke,
    )
    trainer_phase2.fit(model, datamodule=data)
    metrics = trainer_phase2.callback_metrics

    print(f"val mAP after phase 1 (frozen backbone): {map_phase1:.3f}")
    print(f"val mAP after phase 2 (whole model): {metrics['val/map'].item():.3f} (mAP@0.5 {metrics['val/map_50']:.3f})")
    print(f"best checkpoint: {trainer_phase2.checkpoint_callback.best_model_path}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
