"""Distributed data parallel on the CPU: two real processes (gloo), one set of files, synchronised metrics."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch

from autotimm import read_run
from helpers import run_ddp_script

# Lightning's DDP launcher starts the other rank by running this script again.
SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch

    from autotimm import AutoTrainer, BackboneConfig, ImageClassifier, ImageDataModule

    root, digits = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    data = ImageDataModule(digits, image_size=32, batch_size=16, num_workers=0, augmentation_preset="none")
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=10)
    trainer = AutoTrainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", default_root_dir=root,
        checkpoint_monitor="val/accuracy", enable_progress_bar=False, enable_model_summary=False,
        limit_train_batches=10, limit_val_batches=4,
    )
    trainer.fit(model, datamodule=data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    info = {"world_size": trainer.world_size, "global_step": trainer.global_step, "metrics": metrics}
    (root / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))
    """
)


def test_ddp_on_two_cpu_processes_writes_one_set_of_files_with_synchronised_metrics(
    digits_root: Path, tmp_path: Path
) -> None:
    root = run_ddp_script(SCRIPT, tmp_path, digits_root)
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["global_step"] == 2 * 10 for r in ranks)
    # Validation metrics are reduced across the processes: both ranks hold the same values.
    for key in ("val/loss", "val/accuracy", "train/loss_epoch"):
        assert ranks[0]["metrics"][key] == ranks[1]["metrics"][key], key
    # One set of checkpoints and one run record, written by rank 0.
    (run_dir,) = (root / "runs").iterdir()  # one run folder for both processes
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    assert all(torch.load(run_dir / "checkpoints" / name, weights_only=True)["global_step"] > 0 for name in checkpoints)
    record = read_run(run_dir)
    assert record["status"] == "completed" and record["config"]["resolved"]["world_size"] == 2
    assert record["config"]["resolved"]["strategy"] == "DDPStrategy"
    assert [e["epoch"] for e in record["epochs"]] == [0, 1]
    # The confusion matrix the classifier counted is summed over both ranks: 2 x 4 batches of 16 images.
    confusion = json.loads((run_dir / "plots" / "confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["counts"])) == 2 * 4 * 16
