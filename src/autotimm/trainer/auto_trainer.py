"""`AutoTrainer`: a Lightning `Trainer` with checkpoint monitoring, loggers by name and tuning."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from lightning_fabric.plugins.io import CheckpointIO
from pytorch_lightning import seed_everything
from pytorch_lightning.accelerators import Accelerator, CUDAAccelerator
from pytorch_lightning.callbacks import (
    Callback,
    DeviceStatsMonitor,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
    WeightAveraging,
)
from pytorch_lightning.loggers import Logger
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.utilities import rank_zero_info

from autotimm._errors import check_bool, check_choice, check_number, check_seed, closest
from autotimm._warnings import warn
from autotimm.callbacks.analysis import RunAnalysis
from autotimm.callbacks.checkpoint_io import AtomicCheckpointIO
from autotimm.callbacks.checkpoints import checkpoint_callbacks, find_checkpoint
from autotimm.callbacks.ema import ema_callback
from autotimm.callbacks.fast_path import FastPath, check_compile_options
from autotimm.callbacks.finetune import FineTune
from autotimm.callbacks.guards import StopOnNonFiniteLoss
from autotimm.callbacks.oom import OOMBackoff
from autotimm.callbacks.plots import RunPlots
from autotimm.callbacks.run_record import RunRecord
from autotimm.callbacks.time_budget import TimeBudget
from autotimm.loggers import LoggerConfig, LoggerManager, resolve_loggers
from autotimm.runs.folder import RUN_FILE, RunLock, check_run_name, make_runs_dir, new_run_dir
from autotimm.runs.record import read_run
from autotimm.trainer.quiet import CompactModelSummary, quiet
from autotimm.tuner import TunerConfig, run_tuning

__all__ = ["AutoTrainer"]

# Lightning callbacks that fail without a logger.
_CALLBACKS_NEEDING_A_LOGGER = (LearningRateMonitor, DeviceStatsMonitor)
_TRAINER_ARGS = frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
# How rank 0 tells the processes it launches (DDP) which run folder is theirs.
_RUN_DIR_ENV = "AUTOTIMM_RUN_DIR"
# The loggers whose lines of a run go to its `train.log`.
_LOGGED = ("autotimm", "pytorch_lightning", "lightning_fabric")


class AutoTrainer(pl.Trainer):
    """A `pytorch_lightning.Trainer` with sensible defaults for fine-tuning timm backbones.

    On top of Lightning's Trainer it adds:

    - `checkpoint_monitor`: keep the best checkpoint by a logged metric (names with `/`
      such as `"val/accuracy"` work; the file name shows the real value) and `last.ckpt`;
    - `logger`: loggers by name (`[LoggerConfig("tensorboard")]`, a `LoggerManager`) as
      well as Lightning loggers;
    - `tuner_config`: learning-rate and batch-size finding before training (skipped with
      `fast_dev_run` and when resuming with `ckpt_path`), results in `trainer.tuning_results`;
    - `test()` after `fit()` evaluates the best checkpoint when there is one;
    - one folder per run, `<runs_dir>/<run_name>/` (`trainer.run_dir`, made by `AutoTrainer(...)`
      with a `pending` record that `fit` starts): `checkpoints/best.ckpt` and `last.ckpt`,
      `run.json` (status, heartbeat, config, results), `metrics.json` (per epoch),
      `config.yaml` (for `autotimm fit --config`), `train.log`, `plots/`, `logs/` (loggers
      without a `save_dir`), `profiler/` (with a profiler) and `analysis/test/` (after `test`);
      see the "Runs" guide;
    - reliability: checkpoints and records are written atomically (a crash never leaves half a
      file), training stops at the first NaN/Inf loss, and on CUDA a trial step before the run
      halves the data module's `batch_size` until it fits (`OOMBackoff`).

    Args:
        max_epochs: Training epochs; `None` means 10, or, with a time budget (`max_time`), as many as
            fit in it. With `max_time` (Lightning's `"DD:HH:MM:SS"`, a dict such as `{"minutes": 10}`
            or a `timedelta`), a `TimeBudget` callback measures the first epoch and plans the epochs
            and the learning-rate schedule to end within the budget (`max_epochs`, if given, caps
            the plan) instead of Lightning stopping the run mid-schedule.
        accelerator: `"auto"`, `"gpu"`, `"cpu"`, `"tpu"`, ...
        devices: Number of devices or `"auto"`.
        precision: `32`, `16`, `"bf16-mixed"`, `"16-mixed"`, ...: any precision Lightning takes (it checks the value).
        logger: `False`, a `LoggerManager`, a list of `LoggerConfig`, or Lightning loggers.
            With `False`, callbacks that need a logger (`LearningRateMonitor`,
            `DeviceStatsMonitor`) get a CSV logger under `default_root_dir`.
        tuner_config: A `TunerConfig` to tune before training; `None` or `False` (Lightning's "off") for none.
        checkpoint_monitor: Metric to keep the best checkpoint by, e.g. `"val/accuracy"`.
        checkpoint_mode: `"max"` or `"min"` for `checkpoint_monitor`.
        callbacks: Lightning callbacks.
        default_root_dir: Folder for logs and checkpoints.
        gradient_clip_val: Clip gradients to this norm.
        accumulate_grad_batches: Accumulate gradients over this many batches.
        val_check_interval: Validation frequency (fraction of an epoch, or steps).
        limit_train_batches: Batches per training epoch: an int is a number of batches, a float
            a fraction of the data (`None`: all). `limit_val_batches`, `limit_test_batches`,
            `limit_predict_batches` and `overfit_batches` (`None`: off) take the same values;
            on the command line `2` stays an int and `0.5` a float.
        enable_checkpointing: Save checkpoints.
        fast_dev_run: Run 1 (or N) batches of train, val and test to check the code.
        seed: Seed Python, NumPy and torch (data loader workers too) at the start of each
            `fit`, so shuffling, augmentation and dropout repeat. The model's initial weights
            come from where it was built: seed before building it for identical starts.
        run_record: Write the run record (`run.json`, `metrics.json`, `config.yaml` in the run folder).
        stop_on_nonfinite_loss: Stop with `NonFiniteLossError` at the first NaN/Inf training loss.
        oom_backoff: Before the run starts, try a training and a validation step and, on an
            out-of-memory error, halve the data module's `batch_size` until one fits (see
            `autotimm.callbacks.OOMBackoff`). `None` turns it on for CUDA runs on one device.
        plots: At the end of each `fit`, draw `loss.png`, `metrics.png`, `lr_finder.png` (after
            tuning) and `confusion_matrix.png` (classifiers) into `<run_dir>/plots/` (see
            `RunPlots`); a run with a best checkpoint (`checkpoint_monitor`) makes the confusion
            matrix with its weights.
        analysis: After each `test`, write the error analysis of the tested weights (per-class table,
            confusion matrix, misclassified files, the worst images; AP per class for a detector) into
            `<run_dir>/analysis/test/` (see `RunAnalysis` and `autotimm.analyze`).
        channels_last: Channels-last memory format for the model. `None` (the default) turns it
            on where it pays: CUDA runs of a model whose weights are mostly 2-D convolutions.
        compile: `torch.compile` the model when a run starts: `True`, or a dict of
            `torch.compile` arguments (`{"mode": "max-autotune"}`). Checkpoint keys do not change.
        fine_tune: Train the first `fine_tune` epochs with the backbone frozen, then all of it
            (adds `FineTune(freeze_epochs=fine_tune)`; pair it with the task's `backbone_lr_scale`).
        ema: Keep an exponential moving average of the weights (`autotimm.ModelEMA`): `True` for
            the default decay (0.9998, with a warm-up that makes it useful in short runs too), a
            decay in (0, 1), or `False`/`None` for none. Validation uses the averaged weights,
            checkpoints hold them (`load_from_checkpoint` gives the EMA model), resuming goes on
            averaging, and the model keeps them when training ends.
        runs_dir: The folder of runs; `None` for `<default_root_dir>/runs`.
        run_name: The run's folder name in `runs_dir`; `None` for a fresh one (the local time,
            `2026-12-05_14-03-22`). A name whose folder holds a run is refused by `fit` unless it
            resumes (`ckpt_path="last"`) or its record is still `pending`.
        run_dir: The run's folder itself (instead of `runs_dir` and `run_name`), e.g. an earlier run's
            to resume it with `fit(ckpt_path="last")`.
        exclusive: Allow one exclusive run at a time in `runs_dir`: `fit` takes a lock
            (`<runs_dir>/.lock`) and fails at once with `RunLockedError`, naming the active run and
            its start time, while another exclusive run holds it. A killed run's lock is taken over.
        retry_of: The folder of an earlier (failed) run that this run retries; recorded as
            `retry_of` in the new run's `run.json`.
        trainer_kwargs: Any other `pytorch_lightning.Trainer` argument. A `profiler` (`"simple"`,
            `"advanced"`, `"pytorch"` or a profiler without `dirpath`) writes to `<run_dir>/profiler/`.

    Attributes:
        run_dir: The run's folder (`None` under `fast_dev_run`, which keeps no run).
        runs_dir: The folder of runs it is in.
        run_name: Its name.

    Examples:
        >>> trainer = AutoTrainer(max_epochs=3, checkpoint_monitor="val/accuracy")  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
        >>> trainer.test(model, datamodule=data)  # uses the best checkpoint  # doctest: +SKIP
    """

    @quiet
    def __init__(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        precision: int | str = 32,
        logger: bool | LoggerConfig | LoggerManager | Logger | list[LoggerConfig | Logger] | None = False,
        tuner_config: TunerConfig | Literal[False] | None = None,
        checkpoint_monitor: str | None = None,
        checkpoint_mode: Literal["max", "min"] = "max",
        callbacks: list[Callback] | None = None,
        default_root_dir: str | Path = ".",
        gradient_clip_val: float | None = None,
        accumulate_grad_batches: int = 1,
        val_check_interval: int | float = 1.0,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float | None = None,
        enable_checkpointing: bool = True,
        fast_dev_run: bool | int = False,
        seed: int | None = None,
        run_record: bool = True,
        stop_on_nonfinite_loss: bool = True,
        oom_backoff: bool | None = None,
        plots: bool = True,
        analysis: bool = True,
        channels_last: bool | None = None,
        compile: bool | dict[str, Any] = False,
        fine_tune: int | None = None,
        ema: bool | float | None = False,
        runs_dir: str | Path | None = None,
        run_name: str | None = None,
        run_dir: str | Path | None = None,
        exclusive: bool = False,
        retry_of: str | Path | None = None,
        **trainer_kwargs: Any,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "trainer_kwargs", "__class__")}
        config.update(trainer_kwargs)
        # Typed here, int first, rather than passed through: Lightning's `Optional[Union[int, float]]` comes
        # out of Python's typing cache as `Union[float, int, None]` (equal Unions are cached by value), and
        # the command line, trying float first, read `--trainer.limit_train_batches 2` as the fraction 2.0.
        batch_limits = {
            "limit_train_batches": limit_train_batches,
            "limit_val_batches": limit_val_batches,
            "limit_test_batches": limit_test_batches,
            "limit_predict_batches": limit_predict_batches,
            "overfit_batches": overfit_batches,
        }
        for key in trainer_kwargs:
            if key not in _TRAINER_ARGS:
                matches = closest(key, _TRAINER_ARGS)
                hint = f" Did you mean {matches[0]!r}?" if matches else ""
                raise TypeError(
                    f"AutoTrainer got an unknown argument {key!r}.{hint} "
                    "It takes any pytorch_lightning.Trainer argument."
                )
        trainer_kwargs.update({name: value for name, value in batch_limits.items() if value is not None})
        _check_passthrough(trainer_kwargs)
        check_choice("checkpoint_mode", checkpoint_mode, ("max", "min"))
        if not isinstance(accelerator, (str, Accelerator)):
            raise TypeError(
                f"Expected `accelerator` to be a name such as 'auto', 'cpu' or 'gpu', but got {accelerator!r}."
            )
        _check_devices(devices)
        if isinstance(precision, bool) or not isinstance(precision, (int, str)):  # Lightning checks the value
            raise TypeError(
                f"Expected `precision` to be an int or a string such as 'bf16-mixed', but got "
                f"{type(precision).__name__} {precision!r}."
            )
        if max_epochs is not None:
            check_number("max_epochs", max_epochs, low=-1, integer=True)
        check_bool("enable_checkpointing", enable_checkpointing)
        check_bool("run_record", run_record)
        check_bool("plots", plots)
        check_bool("analysis", analysis)
        if channels_last is not None:
            check_bool("channels_last", channels_last)
        compile_options = check_compile_options(compile)
        ema_averaging = ema_callback(ema)
        check_bool("stop_on_nonfinite_loss", stop_on_nonfinite_loss)
        if oom_backoff is not None:
            check_bool("oom_backoff", oom_backoff)
        if seed is not None:
            check_seed(seed)
        if not isinstance(fast_dev_run, bool):
            check_number("fast_dev_run", fast_dev_run, low=0, integer=True)
        check_number("accumulate_grad_batches", accumulate_grad_batches, low=1, integer=True)
        if isinstance(val_check_interval, float):  # a fraction of the training epoch
            check_number(
                "val_check_interval", val_check_interval, low=0, high=1, low_inclusive=False, high_inclusive=True
            )
        else:  # a number of training batches
            check_number("val_check_interval", val_check_interval, low=1, integer=True)
        if gradient_clip_val is not None:
            check_number("gradient_clip_val", gradient_clip_val, low=0, low_inclusive=False)
        if not isinstance(default_root_dir, (str, os.PathLike)):
            raise TypeError(
                "Expected `default_root_dir` to be a path, but got "
                f"{type(default_root_dir).__name__} {default_root_dir!r}."
            )
        if tuner_config is False:
            tuner_config = None  # Lightning's "off", as in `logger=False`
        if tuner_config is not None and not isinstance(tuner_config, TunerConfig):
            hint = " Pass `TunerConfig()` to tune the learning rate." if tuner_config is True else ""
            raise TypeError(
                f"Expected `tuner_config` to be a TunerConfig, or None or False for no tuning, but got "
                f"{type(tuner_config).__name__} {tuner_config!r}.{hint}"
            )
        if checkpoint_monitor is not None and (not isinstance(checkpoint_monitor, str) or not checkpoint_monitor):
            error = TypeError if not isinstance(checkpoint_monitor, str) else ValueError
            raise error(
                f"Expected `checkpoint_monitor` to be a metric name such as 'val/loss', but got {checkpoint_monitor!r}."
            )
        if checkpoint_monitor and not enable_checkpointing:
            raise ValueError(f"`checkpoint_monitor={checkpoint_monitor!r}` needs `enable_checkpointing=True`.")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]
        for callback in callbacks or []:
            if not isinstance(callback, Callback):
                raise TypeError(
                    "Expected `callbacks` to hold Lightning Callback objects, but got "
                    f"{type(callback).__name__} {callback!r}."
                )

        if checkpoint_monitor and checkpoint_mode == "max" and "loss" in checkpoint_monitor.lower():
            warn(
                f"checkpoint_monitor={checkpoint_monitor!r} with checkpoint_mode='max' keeps the checkpoint with the "
                "highest loss; pass checkpoint_mode='min' to keep the lowest."
            )

        check_bool("exclusive", exclusive)
        retried = _retried_run(retry_of)
        callbacks = list(callbacks or [])
        config["callbacks"] = [type(cb).__name__ for cb in callbacks]
        if fine_tune is not None:
            check_number("fine_tune", fine_tune, low=1, integer=True)
            if any(isinstance(cb, FineTune) for cb in callbacks):
                raise ValueError(f"`fine_tune={fine_tune}` adds a FineTune callback, but `callbacks` has one already.")
            callbacks.append(FineTune(freeze_epochs=fine_tune))
        if ema_averaging is not None:
            averaging = [type(cb).__name__ for cb in callbacks if isinstance(cb, WeightAveraging)]
            if averaging:
                raise ValueError(
                    f"`ema={ema!r}` adds a ModelEMA callback, but `callbacks` already average the weights "
                    f"({', '.join(averaging)}); use one of them."
                )
            callbacks.append(ema_averaging)
        timed = trainer_kwargs.get("max_time") is not None
        if max_epochs is None and not timed:
            max_epochs = config["max_epochs"] = 10
        if timed and not fast_dev_run and not any(isinstance(cb, TimeBudget) for cb in callbacks):
            callbacks.append(TimeBudget())
        folder, existing = _run_folder(default_root_dir, runs_dir, run_name, run_dir, fast_dev_run)
        if folder is not None:  # a user's ModelCheckpoint without a folder writes into the run's
            for cb in callbacks:
                if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                    cb.dirpath = str((folder / "checkpoints").resolve())
        if enable_checkpointing and not fast_dev_run:
            dirpath = None if folder is None else folder / "checkpoints"
            callbacks.extend(checkpoint_callbacks(checkpoint_monitor, checkpoint_mode, callbacks, dirpath))
        if stop_on_nonfinite_loss:
            callbacks.append(StopOnNonFiniteLoss())
        record = RunRecord(config, run_dir=folder) if run_record and folder is not None else None
        if record is not None:
            callbacks.append(record)
        if plots and not fast_dev_run:
            callbacks.append(RunPlots())
        if analysis and not fast_dev_run:
            callbacks.append(RunAnalysis())
        if channels_last is not False or compile_options is not None:
            callbacks.append(FastPath(channels_last, compile_options))
        # Lightning's summary without its FLOPs column of zeros, unless the user brought a summary.
        enable_summary = trainer_kwargs.pop("enable_model_summary", True)
        if enable_summary and not trainer_kwargs.get("barebones"):
            if not any(isinstance(cb, ModelSummary) for cb in callbacks):
                callbacks.append(CompactModelSummary())
        plugins = trainer_kwargs.pop("plugins", None)
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [] if plugins is None else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):
            plugins.append(AtomicCheckpointIO())

        try:
            super().__init__(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                precision=precision,
                logger=_loggers(logger, default_root_dir if folder is None else folder / "logs", callbacks, folder),
                callbacks=callbacks,
                default_root_dir=default_root_dir,
                gradient_clip_val=gradient_clip_val,
                accumulate_grad_batches=accumulate_grad_batches,
                # None is Lightning's "every epoch" and, unlike an explicit 1.0, logs nothing at construction.
                val_check_interval=None if val_check_interval == 1.0 else val_check_interval,
                enable_checkpointing=enable_checkpointing,
                fast_dev_run=fast_dev_run,
                plugins=plugins,
                enable_model_summary=False,  # the summary callback, if any, is in `callbacks`
                **trainer_kwargs,
            )
        except BaseException:
            if folder is not None and existing is None and not any(folder.iterdir()):
                folder.rmdir()  # the fresh folder of a trainer that could not be built
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()  # and `runs_dir`, when it holds nothing else
            raise
        if tuner_config is not None and tuner_config.enabled and self.world_size > 1:
            raise ValueError(
                f"Tuning (TunerConfig) cannot run with {self.world_size} processes (strategy "
                f"{type(self.strategy).__name__}). Tune in a single-device run first and pass the found `lr` / "
                "`batch_size` explicitly, or set `tuner_config=None`."
            )
        self.tuner_config = tuner_config
        self.checkpoint_monitor = checkpoint_monitor
        self.checkpoint_mode = checkpoint_mode
        self.tuning_results: dict[str, Any] = {}
        self.seed = seed
        self.oom_backoff = (
            isinstance(self.accelerator, CUDAAccelerator) and self.world_size == 1
            if oom_backoff is None
            else oom_backoff
        )
        if self.oom_backoff and self.world_size > 1:
            raise ValueError(
                f"`oom_backoff=True` needs a single-device run, but this one has {self.world_size} processes "
                f"(strategy {type(self.strategy).__name__}). Find the batch size in a single-device run first."
            )
        if self.oom_backoff:
            # First, so that every other callback's `on_fit_start` (the run record's too) sees the batch size that fits.
            self.callbacks.insert(0, OOMBackoff())
        self.run_dir: Path | None = folder
        self.runs_dir: Path | None = None if folder is None else folder.parent
        self.run_name: str | None = None if folder is None else folder.name
        self._logger_arg = logger
        self._record = record
        self._existing = existing
        self._auto_named = run_name is None and run_dir is None
        self._started = False
        self._lock = RunLock(self.runs_dir) if exclusive and folder is not None else None
        if folder is not None:
            self._place_profiler(folder, isinstance(trainer_kwargs.get("profiler"), str))
        if record is not None and self.is_global_zero:
            if existing is None:
                record.create(**({"retry_of": retried} if retried else {}))
            elif existing.get("status") == "pending":
                record.adopt(existing)

    def _place_profiler(self, folder: Path, by_name: bool) -> None:
        """A profiler without a folder writes into `<run_dir>/profiler/` (named by its kind when given by name)."""
        profiler = self.profiler
        if isinstance(profiler, PassThroughProfiler) or profiler.dirpath is not None:
            return
        profiler.dirpath = folder / "profiler"
        if by_name and profiler.filename is None:
            profiler.filename = type(profiler).__name__.removesuffix("Profiler").lower()

    def _enter_run(self, ckpt_path: str | Path | None) -> None:
        """Before `fit`: refuse a run that exists, continue the run a checkpoint belongs to, take the lock."""
        if self.run_dir is None:
            return
        existing = self._existing if not self._started else None
        owner = _run_of(ckpt_path)
        if owner is not None and owner.resolve() != self.run_dir.resolve() and self._auto_named and not self._started:
            self._move_to(owner)  # resuming another run: its folder, not a new one
            existing = None
        if existing is not None and existing.get("status") != "pending":
            status = existing.get("status")
            if status == "running":
                raise RuntimeError(
                    f"Run {self.run_name!r} in {str(self.runs_dir)!r} is running in process {existing.get('pid')} on "
                    f"{existing.get('host')}; wait for it to end, or choose another `run_name`."
                )
            if ckpt_path is None:
                state = f"a {status} run" if status else "files"
                raise FileExistsError(
                    f"Run {self.run_name!r} exists in {str(self.runs_dir)!r} ({state}); nothing there is overwritten. "
                    "Pass `ckpt_path='last'` to continue it, another `run_name`, or none for a fresh name."
                )
        if existing and ckpt_path is not None and self._record is not None and self.is_global_zero:
            self._record.adopt(existing)  # resuming this run: its record goes on
        self._started = True
        if self._lock is not None and self.is_global_zero:
            self._lock.acquire(
                {
                    "run": self.run_name,
                    "run_dir": str(self.run_dir),
                    "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )

    def _move_to(self, owner: Path) -> None:
        """Make `owner`, the folder of the run a resumed checkpoint belongs to, this trainer's run folder."""
        old = self.run_dir
        self.run_dir, self.runs_dir, self.run_name = owner, owner.parent, owner.name
        checkpoints = str((owner / "checkpoints").resolve())
        for cb in self.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath == str((old / "checkpoints").resolve()):
                cb.dirpath = checkpoints
        if self.loggers and not isinstance(self._logger_arg, Logger):
            self.loggers = _loggers(self._logger_arg, owner / "logs", list(self.callbacks), owner)
        if self.profiler.dirpath == old / "profiler":
            self.profiler.dirpath = owner / "profiler"
        if self._record is not None:
            self._record.run_dir, self._record.run_id = owner, owner.name
            if self.is_global_zero:
                self._record.adopt(read_run(owner))
        if self._lock is not None:
            self._lock = RunLock(owner.parent)
        if self.is_global_zero:
            _remove_unused(old)
        rank_zero_info(f"autotimm: continuing run {owner.name} in {owner}")

    @quiet
    def fit(
        self,
        model: pl.LightningModule,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: pl.LightningDataModule | None = None,
        ckpt_path: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        """Tune (if configured), then train; `ckpt_path` resumes a run and skips tuning.

        `ckpt_path="last"` (or `"best"`) resumes from the newest such checkpoint of an earlier
        run under `default_root_dir` (see `find_checkpoint`), and fails when there is none.
        """
        if ckpt_path in ("last", "best"):
            ckpt_path = find_checkpoint(self, ckpt_path)
            rank_zero_info(f"autotimm: resuming from {ckpt_path}")
        self._enter_run(ckpt_path)
        record = self._record
        try:
            with self._run_log():
                if record is not None:
                    record.begin(self)
                if self.seed is not None:
                    seed_everything(self.seed, workers=True, verbose=False)
                tuning = self.tuner_config is not None and self.tuner_config.enabled
                if tuning and self.fast_dev_run:
                    rank_zero_info("autotimm: tuning skipped under fast_dev_run.")
                elif tuning and ckpt_path is not None:
                    rank_zero_info("autotimm: tuning skipped when resuming from a checkpoint.")
                elif tuning:
                    self._tune(model, datamodule, train_dataloaders, val_dataloaders)
                super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, **kwargs)
        except BaseException as error:  # recorded wherever it happened (Lightning records its own first)
            if record is not None:
                record.finish(self, "interrupted" if isinstance(error, KeyboardInterrupt) else "failed", error)
            raise
        finally:
            if self._lock is not None:
                self._lock.release()

    def _tune(self, model: pl.LightningModule, datamodule: Any, train: Any, val: Any) -> None:
        """Run the tuner; its results, or its failure, go into the run record."""
        record = self._record
        if record is not None:
            record.set_phase("tuning")
        try:
            self.tuning_results = run_tuning(self, self.tuner_config, model, datamodule, train, val)
        except Exception as error:
            if record is not None:
                record.record_tuning(self, {"error": f"{type(error).__name__}: {error}"})
            raise
        if record is not None:
            record.record_tuning(self, self.tuning_results)
            record.set_phase("setup")

    @contextlib.contextmanager
    def _run_log(self) -> Iterator[None]:
        """Copy the library's and Lightning's log lines of this thread to `<run_dir>/train.log` (rank 0)."""
        if self.run_dir is None or not self.is_global_zero:
            yield
            return
        handler = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8", delay=True)
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        thread = threading.get_ident()
        handler.addFilter(lambda line: line.thread == thread)
        loggers = [logging.getLogger(name) for name in _LOGGED]
        for logger in loggers:
            logger.addHandler(handler)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
            handler.close()

    @quiet
    def validate(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's `validate`, with its routine messages held back (see `autotimm.trainer.quiet`)."""
        return super().validate(*args, **kwargs)

    @quiet
    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's `predict`, with its routine messages held back (see `autotimm.trainer.quiet`)."""
        return super().predict(*args, **kwargs)

    @quiet
    def test(
        self,
        model: pl.LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Test; after `fit`, the best checkpoint is evaluated unless `ckpt_path` says otherwise."""
        callback = self.checkpoint_callback
        if (
            ckpt_path is None
            and callback is not None
            and callback.best_model_path
            and Path(callback.best_model_path).is_file()
        ):
            # The path itself rather than "best": with autotimm's two checkpoint callbacks,
            # "best" makes Lightning warn that it picks the first one.
            ckpt_path = callback.best_model_path
        elif ckpt_path in ("last", "best"):
            ckpt_path = find_checkpoint(self, ckpt_path)
        with self._run_log():
            return super().test(model, dataloaders, ckpt_path, *args, **kwargs)


def _check_devices(devices: object) -> None:
    expected = "'auto', a number of devices (-1 for all), a list of device indices, or a string such as '0,1'"
    if isinstance(devices, str):
        return  # Lightning parses "auto", "-1", "0,1", "2"
    if isinstance(devices, bool) or not isinstance(devices, (int, list, tuple)):
        raise TypeError(f"Expected `devices` to be {expected}, but got {type(devices).__name__} {devices!r}.")
    if isinstance(devices, int) and devices not in (-1,) and devices < 1:
        raise ValueError(f"Expected `devices` to be {expected}, but got {devices!r}.")
    if isinstance(devices, (list, tuple)):
        for index in devices:
            check_number("devices", index, low=0, integer=True)


def _check_passthrough(kwargs: dict[str, Any]) -> None:
    """Check the Lightning arguments passed through `**trainer_kwargs` that have a range or choice set."""
    for name in ("max_steps", "num_sanity_val_steps"):
        if kwargs.get(name) is not None:  # None is Lightning's default
            check_number(name, kwargs[name], low=-1, integer=True)
    for name in ("min_epochs", "min_steps", "check_val_every_n_epoch", "log_every_n_steps", "num_nodes",
                 "reload_dataloaders_every_n_epochs"):  # fmt: skip
        if kwargs.get(name) is not None:
            low = 0 if name in ("min_epochs", "min_steps", "reload_dataloaders_every_n_epochs") else 1
            check_number(name, kwargs[name], low=low, integer=True)
    for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                 "overfit_batches"):  # fmt: skip
        value = kwargs.get(name)
        if isinstance(value, float):
            check_number(name, value, low=0, high=1, high_inclusive=True)
        elif value is not None:
            check_number(name, value, low=0, integer=True)
    for name in ("benchmark", "detect_anomaly", "enable_progress_bar", "enable_model_summary", "inference_mode",
                 "barebones", "sync_batchnorm", "use_distributed_sampler"):  # fmt: skip
        if kwargs.get(name) is not None:
            check_bool(name, kwargs[name])
    if kwargs.get("deterministic") is not None and kwargs["deterministic"] != "warn":
        check_bool("deterministic", kwargs["deterministic"])
    if kwargs.get("gradient_clip_algorithm") is not None:
        check_choice("gradient_clip_algorithm", kwargs["gradient_clip_algorithm"], ("norm", "value"))


def _loggers(logger: Any, save_dir: str | os.PathLike, callbacks: list[Callback], folder: Path | None) -> Any:
    """Resolve `logger` into `save_dir`; with none, give callbacks that log (LearningRateMonitor, ...) a CSV logger."""
    resolved = resolve_loggers(logger, save_dir, run_folder=folder is not None)
    needs_logger = [type(cb).__name__ for cb in callbacks if isinstance(cb, _CALLBACKS_NEEDING_A_LOGGER)]
    if resolved is False and needs_logger:
        rank_zero_info(f"autotimm: {', '.join(needs_logger)} needs a logger; logging to CSV under {save_dir}.")
        return resolve_loggers([LoggerConfig("csv")], save_dir, run_folder=folder is not None)
    return resolved


def _run_folder(
    default_root_dir: str | os.PathLike,
    runs_dir: str | os.PathLike | None,
    run_name: str | None,
    run_dir: str | os.PathLike | None,
    fast_dev_run: bool | int,
) -> tuple[Path | None, dict[str, Any] | None]:
    """The run's folder (made now), and what it held already (`None` for a fresh one; `{}` for files, no record).

    Raises:
        ValueError: If `run_dir` is given with `runs_dir` or `run_name`, or a name is not a folder name.
        NotADirectoryError, PermissionError: If runs cannot be written where asked.
        RunRecordError: If the folder holds a corrupt `run.json` (a `ValueError`; the file is left as it is).
    """
    for name, value in (("runs_dir", runs_dir), ("run_dir", run_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"Expected `{name}` to be a path, but got {type(value).__name__} {value!r}.")
    if run_name is not None:
        check_run_name(run_name)
    if run_dir is not None:
        if runs_dir is not None or run_name is not None:
            raise ValueError("Pass either `run_dir`, or `runs_dir` and `run_name`, not both.")
        runs_dir, run_name = Path(run_dir).parent, check_run_name(Path(run_dir).name)
    if fast_dev_run:
        return None, None  # a check of the code, not a run
    if _launched_rank() > 0:  # rank 0 made the folder and writes in it; Lightning broadcasts where checkpoints go
        inherited = os.environ.get(_RUN_DIR_ENV)
        return (Path(inherited) if inherited else None), None
    folder, existed = new_run_dir(
        make_runs_dir(Path(default_root_dir) / "runs" if runs_dir is None else runs_dir), run_name
    )
    folder = Path(os.path.abspath(folder))  # the same folder when the working directory changes
    os.environ[_RUN_DIR_ENV] = str(folder)  # for the processes Lightning's DDP launcher starts
    if not existed:
        return folder, None
    return folder, read_run(folder) if (folder / RUN_FILE).is_file() else {}


def _launched_rank() -> int:
    """This process's rank as a launcher set it in the environment (0 for the first, or a single, process)."""
    return max(int(os.environ.get(name, "0") or 0) for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _retried_run(retry_of: str | os.PathLike | None) -> dict[str, str] | None:
    """`{"run": name, "run_dir": path, "status": ...}` of the run that `retry_of` names."""
    if retry_of is None:
        return None
    if not isinstance(retry_of, (str, os.PathLike)):
        raise TypeError(f"Expected `retry_of` to be a run folder, but got {type(retry_of).__name__} {retry_of!r}.")
    old = read_run(retry_of)  # FileNotFoundError naming it
    return {"run": str(old.get("run_id") or Path(retry_of).name), "run_dir": str(retry_of), "status": old.get("status")}


def _run_of(ckpt_path: str | Path | None) -> Path | None:
    """The run folder a checkpoint file lies in (`<run_dir>/checkpoints/<file>`), or None."""
    if ckpt_path is None or not isinstance(ckpt_path, (str, os.PathLike)):
        return None
    folder = Path(os.path.abspath(ckpt_path)).parent
    return folder.parent if folder.name == "checkpoints" and (folder.parent / RUN_FILE).is_file() else None


def _remove_unused(folder: Path) -> None:
    """Remove a run folder that holds only its pending record and empty folders."""
    record = folder / RUN_FILE
    files = [p for p in folder.rglob("*") if p.is_file()]
    if files not in ([], [record]):
        return
    record.unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        sub.rmdir()
    folder.rmdir()
