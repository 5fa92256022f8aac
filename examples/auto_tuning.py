"""Find the batch size and learning rate before training, with `TunerConfig`.

`AutoTrainer.fit` first runs Lightning's batch-size finder (doubling the data module's
`batch_size` from `init_val` while a few training steps still fit in memory), then an
LR range test (a short run whose learning rate grows from `min_lr` to `max_lr`; the
suggestion is where the loss falls fastest; the weights are then put back), writes both results into the data module
and the model, and trains with them. The loss-vs-learning-rate curve is saved as JSON.

On a CPU memory never runs out, so the batch size grows until `max_trials` doublings or
until the learning-rate finder would have too few steps left in the data; on a GPU the
largest batch that fits is found. Run:

    python examples/auto_tuning.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import os
import time

from pytorch_lightning import seed_everything

from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule, TunerConfig
from autotimm.data import make_digits_folder

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
# The smoke run (a wiring check) uses timm's tiny test network; results need a real backbone.
BACKBONE = "test_resnet" if SMOKE else "resnet18"


def main() -> None:
    start = time.perf_counter()
    # The smoke run uses 30 images per digit; the learning-rate finder needs at least 8 steps.
    root = make_digits_folder("data/digits_small", max_per_class=30) if SMOKE else make_digits_folder("data/digits")
    seed_everything(0, workers=True)

    data = ImageDataModule(
        root, image_size=32, batch_size=16, num_workers=0 if SMOKE else 2, augmentation_preset="none"
    )
    model = ImageClassifier(
        backbone=BackboneConfig(BACKBONE, pretrained=False),
        num_classes=data.num_classes,
        lr=1e-3,  # replaced by the learning-rate finder's suggestion
        scheduler="cosine",
    )
    trainer = AutoTrainer(
        max_epochs=1 if SMOKE else 5,
        accelerator="cpu",
        default_root_dir="runs/auto_tuning",
        checkpoint_monitor="val/accuracy",
        tuner_config=TunerConfig(
            auto_lr=True,
            auto_batch_size=True,
            lr_find_kwargs={"min_lr": 1e-6, "max_lr": 1.0, "num_training": 20 if SMOKE else 100},
            batch_size_kwargs={"mode": "power", "init_val": 16, "max_trials": 2 if SMOKE else 3},
        ),
    )
    trainer.fit(model, datamodule=data)  # tunes, then trains
    (result,) = trainer.test(model, datamodule=data, verbose=False)

    found = trainer.tuning_results
    print(f"batch size found: {found['batch_size']} (data.batch_size is now {data.batch_size})")
    print(f"learning rate found: {found['lr']:.3g} (model.lr is now {model.lr:.3g})")
    print(f"loss-vs-learning-rate curve: {found['lr_find_curve']}")
    print(f"test accuracy: {result['test/accuracy']:.3f}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
