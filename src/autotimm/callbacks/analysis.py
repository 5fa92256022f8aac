"""The `RunAnalysis` callback: the error analysis of the tested weights after `trainer.test`, into the run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader

from autotimm._warnings import warn
from autotimm.analysis import Analysis, analyze, batch_limit
from autotimm.callbacks.run_record import RunRecord
from autotimm.tasks import ImageClassifier, ObjectDetector

log = logging.getLogger(__name__)

__all__ = ["RunAnalysis"]


class RunAnalysis(Callback):
    """After `trainer.test`, analyse the tested model's errors on the test set (see `autotimm.analyze`).

    Writes into `<run_dir>/analysis/test/` (`trainer.run_dir`; `<default_root_dir>/analysis/test/`
    without a run folder): `per_class.csv` and `.png`, and for a classifier `confusion_matrix.csv`,
    `confusion_matrix_normalized.csv`, `confusion_matrix.png`, `misclassified.csv` and
    `top_losses.png`, for a detector `errors.csv` and `worst_images.png`. The weights are those the
    test ran with: `AutoTrainer.test` after `fit` loads the best checkpoint, and each picture names the
    checkpoint (file, epoch, monitored score). A `RunRecord` of the run lists the files and the
    summary in `run.json` under `analysis.test`.

    The analysis runs the model once more over the test batches (`limit_test_batches` applies), on
    global rank 0 only (over the whole set when given a data module, else the loader it tested), outside
    Lightning's loop; a failure gives a warning and never fails the test. AutoTrainer adds this
    callback unless `analysis=False`.

    Args:
        gallery_size: How many images the gallery shows.

    Attributes:
        analysis: The last `Analysis` (`None` before).

    Examples:
        >>> trainer = pl.Trainer(callbacks=[RunRecord(), RunAnalysis()])  # doctest: +SKIP
        >>> trainer.test(model, datamodule=data, ckpt_path="best")  # doctest: +SKIP
        >>> trainer.callbacks[-1].analysis.summary["accuracy"]  # doctest: +SKIP
        0.92
    """

    def __init__(self, gallery_size: int = 16) -> None:
        self.gallery_size = gallery_size
        self.analysis: Analysis | None = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(pl_module, (ImageClassifier, ObjectDetector)):
            return
        try:
            self._analyse(trainer, pl_module)
        except Exception as e:  # an analysis must never fail the test
            warn(f"autotimm: could not write the error analysis: {type(e).__name__}: {e}")

    def _analyse(self, trainer: pl.Trainer, pl_module: ImageClassifier | ObjectDetector) -> None:
        record = next((cb for cb in trainer.callbacks if isinstance(cb, RunRecord)), None)
        root = getattr(trainer, "run_dir", None) or (record.run_dir if record is not None else None)
        out = Path(root or trainer.default_root_dir) / "analysis" / "test"
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            data = datamodule
        else:
            loaders = trainer.test_dataloaders
            data = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
            if not isinstance(data, DataLoader):
                return
        # The tested checkpoint's weights are in the model already; naming it describes them (epoch, score).
        tested = trainer.ckpt_path if trainer.ckpt_path and Path(trainer.ckpt_path).is_file() else None
        limit = batch_limit(trainer, trainer.num_test_batches)  # the batches the test ran on
        analysis = analyze(
            pl_module, data, out, split="test", checkpoint=tested, gallery_size=self.gallery_size, limit_batches=limit
        )
        self.analysis = analysis
        if record is not None:
            record.record_analysis(trainer, "test", analysis.to_dict())
        say = log.debug if record is not None else rank_zero_info
        say(f"autotimm: error analysis written to {out} ({', '.join(p.name for p in analysis.files.values())})")
