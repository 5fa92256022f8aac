"""`AutoTrainer`: a Lightning `Trainer` with checkpoint monitoring, loggers by name and tuning."""

from __future__ import annotations

import inspect
import os
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
    ModelSummary,
    WeightAveraging,
)
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_info

from autotimm._errors import check_bool, check_choice, check_number, check_seed, closest
from autotimm._warnings import warn
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
from autotimm.trainer.quiet import CompactModelSummary, quiet
from autotimm.tuner import TunerConfig, run_tuning

__all__ = ["AutoTrainer"]

# Lightning callbacks that fail without a logger.
_CALLBACKS_NEEDING_A_LOGGER = (LearningRateMonitor, DeviceStatsMonitor)
_TRAINER_ARGS = frozenset(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}


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
    - reliability: checkpoints are written atomically (a crash never leaves half a file),
      each `fit` keeps a run record (`runs/<run_id>/run.json` and `metrics.json` under
      `default_root_dir`, see `trainer.run_dir`), training stops at the first NaN/Inf
      loss, and on CUDA a trial step before the run halves the data module's `batch_size`
      until it fits (`OOMBackoff`).

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
        run_record: Write the run record (`runs/<run_id>/run.json`, `metrics.json`).
        stop_on_nonfinite_loss: Stop with `NonFiniteLossError` at the first NaN/Inf training loss.
        oom_backoff: Before the run starts, try a training and a validation step and, on an
            out-of-memory error, halve the data module's `batch_size` until one fits (see
            `autotimm.callbacks.OOMBackoff`). `None` turns it on for CUDA runs on one device.
        plots: At the end of each `fit`, draw `loss.png`, `metrics.png`, `lr_finder.png` (after
            tuning) and `confusion_matrix.png` (classifiers) into `<run_dir>/plots/` (see
            `RunPlots`); with `run_record=False`, into `<default_root_dir>/plots/`.
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
        trainer_kwargs: Any other `pytorch_lightning.Trainer` argument.

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
        channels_last: bool | None = None,
        compile: bool | dict[str, Any] = False,
        fine_tune: int | None = None,
        ema: bool | float | None = False,
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

        callbacks = list(callbacks or [])
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
        if enable_checkpointing and not fast_dev_run:
            callbacks.extend(checkpoint_callbacks(checkpoint_monitor, checkpoint_mode, callbacks))
        if stop_on_nonfinite_loss:
            callbacks.append(StopOnNonFiniteLoss())
        if run_record and not fast_dev_run:
            config["callbacks"] = [type(cb).__name__ for cb in callbacks]
            callbacks.append(RunRecord(config))
        if plots and not fast_dev_run:
            callbacks.append(RunPlots())
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

        super().__init__(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            precision=precision,
            logger=_loggers(logger, default_root_dir, callbacks),
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

    @property
    def run_dir(self) -> Path | None:
        """The folder of the current (or last) run's record, `<default_root_dir>/runs/<run_id>`."""
        record = next((cb for cb in self.callbacks if isinstance(cb, RunRecord)), None)
        return None if record is None else record.run_dir

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
        if self.seed is not None:
            seed_everything(self.seed, workers=True, verbose=False)
        tuning = self.tuner_config is not None and self.tuner_config.enabled
        if tuning and self.fast_dev_run:
            rank_zero_info("autotimm: tuning skipped under fast_dev_run.")
        elif tuning and ckpt_path is not None:
            rank_zero_info("autotimm: tuning skipped when resuming from a checkpoint.")
        elif tuning:
            self.tuning_results = run_tuning(
                self, self.tuner_config, model, datamodule, train_dataloaders, val_dataloaders
            )
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, **kwargs)

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


def _loggers(logger: Any, default_root_dir: str | os.PathLike, callbacks: list[Callback]) -> Any:
    """Resolve `logger`; with none, give callbacks that log (LearningRateMonitor, ...) a CSV logger."""
    resolved = resolve_loggers(logger, default_root_dir)
    needs_logger = [type(cb).__name__ for cb in callbacks if isinstance(cb, _CALLBACKS_NEEDING_A_LOGGER)]
    if resolved is False and needs_logger:
        rank_zero_info(f"autotimm: {', '.join(needs_logger)} needs a logger; logging to CSV under {default_root_dir}.")
        return resolve_loggers([LoggerConfig("csv")], default_root_dir)
    return resolved
