"""Object detection from a YOLO-format folder (`data.yaml`, `images/`, `labels/*.txt`), as Ultralytics writes it.

`make_coco_shapes(..., format="yolo")` writes synthetic circles, squares and triangles in the
Ultralytics layout: `data.yaml` (`names`, `train: images/train`, `val: images/val`) and one
`labels/<split>/<image>.txt` of normalised `class cx cy w h` lines per image. Point
`DetectionDataModule` at your own YOLO folder instead: the format is told from the `data.yaml`,
the class names come from its `names`, and a box outside [0, 1] or a class id outside `names` is
refused before training, naming the file and line. Run:

    python examples/detection_yolo.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import os

from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, DetectionDataModule, ObjectDetector
from autotimm.data import make_coco_shapes

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
BACKBONE = "test_resnet" if SMOKE else "resnet18"  # the smoke run uses timm's tiny test network
IMAGE_SIZE = 64 if SMOKE else 128


def main() -> None:
    root = make_coco_shapes(
        "data/yolo_shapes_smoke" if SMOKE else "data/yolo_shapes",
        image_size=IMAGE_SIZE,
        num_train=8 if SMOKE else 400,
        num_val=4 if SMOKE else 100,
        format="yolo",
    )
    print((root / "data.yaml").read_text().strip())
    seed_everything(0, workers=True)
    data = DetectionDataModule(root, image_size=IMAGE_SIZE, batch_size=4 if SMOKE else 16, num_workers=0)
    print(f"format: {data.format}, classes: {data.class_names}")
    model = ObjectDetector(BackboneConfig(BACKBONE, pretrained=False), fpn_channels=64, lr=1e-3, scheduler="cosine")
    smoke = {"limit_train_batches": 2, "limit_val_batches": 1} if SMOKE else {}
    trainer = AutoTrainer(
        max_epochs=1 if SMOKE else 12,
        accelerator="cpu",
        gradient_clip_val=1.0,
        checkpoint_monitor="val/map",
        checkpoint_mode="max",
        default_root_dir="runs/detection_yolo",
        **smoke,
    )
    trainer.fit(model, datamodule=data)
    print(f"val mAP: {trainer.callback_metrics['val/map'].item():.3f}")
    print(f"best checkpoint: {trainer.checkpoint_callback.best_model_path}")


if __name__ == "__main__":
    main()
