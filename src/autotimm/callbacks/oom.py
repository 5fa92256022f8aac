"""Out-of-memory back-off: find a batch size that fits with a trial step before the run starts."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BatchSizeFinder, Callback, LearningRateFinder, TQDMProgressBar
from pytorch_lightning.utilities.memory import garbage_collection_cuda, is_oom_error
from pytorch_lightning.utilities.model_helpers import is_overridden
from pytorch_lightning.utilities.seed import isolate_rng

from autotimm._warnings import warn

__all__ = ["OOMBackoff"]

log = logging.getLogger(__name__)


class OOMBackoff(Callback):
    """Before a `fit` starts, try one training step and one validation step; on out-of-memory, halve the batch size.

    When `fit` starts (in `on_fit_start`, with the model on its device), the callback runs
    one training batch (forward, backward, optimizer step) and one validation batch at the
    data module's `batch_size`, in a trial `pl.Trainer` of its own on the same device and
    precision, with no loggers, no callbacks and nothing on the console. On an out-of-memory
    error it halves `batch_size` (and `hparams["batch_size"]`), warns, and tries again, down
    to 1. The model's weights and the random-number state are put back after each trial;
    the run's own optimizer is untouched. The run then starts at a batch size that fitted,
    so the run record, the callbacks and the loggers never see the failed tries.

    Nothing is tried when the run resumes from a checkpoint (`ckpt_path`), when the fit is
    one of Lightning's finders (`BatchSizeFinder`, `LearningRateFinder`), or when the run
    has no data module with an integer `batch_size` of 2 or more. An out-of-memory error
    later in the run is raised as it is: a smaller batch would change the run. The model's
    own hooks (`setup`, `on_fit_start`, `configure_optimizers`, ...) also run for the
    trial. Other errors of the trial step are raised as they are.

    Examples:
        >>> trainer = pl.Trainer(accelerator="gpu", devices=1, callbacks=[OOMBackoff()])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise ValueError(
                f"OOMBackoff (`oom_backoff=True`) needs a single-device run, but this one has {trainer.world_size} "
                "processes. Find the batch size in a single-device run, or pass `oom_backoff=False`."
            )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        size = getattr(datamodule, "batch_size", None)
        finder = any(isinstance(cb, (BatchSizeFinder, LearningRateFinder)) for cb in trainer.callbacks)
        if trainer.ckpt_path is not None or finder or isinstance(size, bool) or not isinstance(size, int):
            return
        while size >= 2:
            try:
                _trial_step(trainer, pl_module, datamodule)
                return
            except RuntimeError as error:
                if not (isinstance(error, torch.OutOfMemoryError) or is_oom_error(error)):
                    raise
            garbage_collection_cuda()
            datamodule.batch_size = size // 2
            if "batch_size" in getattr(datamodule, "hparams", {}):
                datamodule.hparams["batch_size"] = size // 2
            warn(
                f"autotimm: out of memory with batch_size={size} in a trial step before the run; retrying with "
                f"batch_size={size // 2}. Pass `oom_backoff=False` to AutoTrainer to fail instead."
            )
            size //= 2


def _trial_step(trainer: pl.Trainer, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
    """One training and one validation batch of `datamodule` in a trial trainer; weights, modes and RNG put back."""
    device = trainer.strategy.root_device
    weights = {name: value.detach().to("cpu", copy=True) for name, value in pl_module.state_dict().items()}
    modes = [(module, module.training) for module in pl_module.modules()]  # a failed validation step leaves eval
    trial = pl.Trainer(
        accelerator=device.type,
        devices=1 if device.index is None else [device.index],
        precision=trainer.precision,
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        gradient_clip_val=trainer.gradient_clip_val,
        gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        log_every_n_steps=trainer.log_every_n_steps,
        logger=False,
        enable_checkpointing=False,
        # A bar that draws nothing where the run has one: the model may log differently with a bar.
        callbacks=[TQDMProgressBar(refresh_rate=0)] if trainer.progress_bar_callback is not None else [],
        enable_progress_bar=trainer.progress_bar_callback is not None,
        enable_model_summary=False,
        default_root_dir=trainer.default_root_dir,
    )
    validate = is_overridden("validation_step", pl_module) and is_overridden("val_dataloader", datamodule)
    try:
        with isolate_rng(), _trial_messages_held_back():
            trial.fit(
                pl_module,
                train_dataloaders=datamodule.train_dataloader(),
                val_dataloaders=datamodule.val_dataloader() if validate else None,
            )
    finally:
        pl_module.trainer = trainer  # the trial trainer took the model over, and moved it back to the CPU
        pl_module.to(device)
        pl_module.load_state_dict(weights)
        for module, training in modes:
            module.training = training


class _ToDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        log.debug("%s (trial step; held back from %s)", record.getMessage(), record.name)
        return False


@contextlib.contextmanager
def _trial_messages_held_back() -> Iterator[None]:
    """Send what Lightning logs below WARNING while the trial runs (device lines, "fit stopped") to DEBUG here."""
    lightning_info = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # where `rank_zero_info` logs
    to_debug = _ToDebug()
    lightning_info.addFilter(to_debug)
    try:
        yield
    finally:
        lightning_info.removeFilter(to_debug)
