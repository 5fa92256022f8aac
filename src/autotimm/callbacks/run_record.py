"""The `RunRecord` callback: a run's `run.json` (status, configuration, versions, results), per-epoch
`metrics.json` and `config.yaml`.

`autotimm.runs.read_run` and `autotimm.runs.Run` read them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import platform
import socket
import time
import traceback
import uuid
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from autotimm._atomic import atomic_path, write_json_atomic
from autotimm.callbacks.checkpoints import last_checkpoint
from autotimm.runs.folder import RUN_FILE

__all__ = ["RunRecord", "scalar_metrics", "write_json_atomic"]

# `run.json` is rewritten at least this often while batches run, so that a reader can tell a live run.
HEARTBEAT_S = 30.0
# Trainer arguments a repeat of the run (`autotimm fit --config <run_dir>/config.yaml`) must not take over.
_NOT_REPEATED = ("run_name", "run_dir", "retry_of")
_PACKAGES = ("autotimm", "torch", "torchvision", "timm", "pytorch-lightning", "torchmetrics")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of `value`: containers kept, paths and dataclasses converted, the rest `repr`ed."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return _jsonable(value.item())
    if isinstance(value, (os.PathLike, torch.dtype, torch.device)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in _PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    return out


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-number values of `metrics` (such as `trainer.callback_metrics`) as JSON-safe floats.

    Examples:
        >>> scalar_metrics({"val/loss": torch.tensor(0.5), "note": "text"})
        {'val/loss': 0.5}
    """
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = _jsonable(value.item())
        elif isinstance(value, (int, float)):
            out[key] = _jsonable(float(value))
    return out


class RunRecord(Callback):
    """Keep a machine-readable record of a run in its folder (`trainer.run_dir`).

    - `run.json`: `status` (`pending` when created before training, `running`, then
      `completed`, `failed` or `interrupted`), creation, start and end times, the process
      (`pid`, `host`) and a `heartbeat_at` time rewritten at least every 30 s while batches run
      (`read_run` reports a running record whose process died as `lost`), the resolved
      configuration of trainer, model and data, the library versions, the tuner's outcome,
      the final and best metrics, the best and last checkpoint paths, the results of
      `trainer.test` and their error analysis (`analysis.test`: weights, summary, files; see
      `RunAnalysis`), and the error (type, message, stage, traceback) when the run failed;
    - `metrics.json`: one entry per epoch with every logged scalar, the training throughput
      `images_per_s` and the process's `peak_memory_mb` (GPU memory on CUDA, else resident memory);
    - `config.yaml`: trainer, model and data arguments in the form `autotimm fit --config` reads.

    All are rewritten atomically (temporary file, then rename), so a reader polling them never
    sees half a file. A run resumed with `fit(ckpt_path=...)` continues its record and drops the
    epochs the checkpoint does not contain. Only global rank 0 writes.

    With `AutoTrainer` the folder is `<runs_dir>/<run_name>` and exists from `AutoTrainer(...)`
    on; in a plain `pl.Trainer` it is `<default_root_dir>/runs/<run_id>`, made when `fit` starts.

    Args:
        trainer_config: The trainer's arguments as the user gave them, recorded under
            `config.trainer` (AutoTrainer passes its own).
        run_dir: The run's folder; `None` for a new one under `<default_root_dir>/runs` at `fit`.

    Examples:
        >>> record = RunRecord()
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[record])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
        >>> autotimm.read_run(record.run_dir)["status"]  # doctest: +SKIP
        'completed'
    """

    def __init__(self, trainer_config: dict[str, Any] | None = None, run_dir: str | os.PathLike | None = None) -> None:
        self.trainer_config = dict(trainer_config or {})
        self.run_dir: Path | None = None if run_dir is None else Path(run_dir)
        self.run_id: str | None = None if run_dir is None else self.run_dir.name
        self._fixed = run_dir is not None
        self._record: dict[str, Any] = {}
        self._epochs: list[dict[str, Any]] = []
        self._start = 0.0
        self._last_write = 0.0
        self._phase = "setup"
        self._epoch_start = 0.0
        self._epoch_end = 0.0
        self._epoch_images = 0

    # ---- state carried by checkpoints ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._fixed:  # AutoTrainer chose the folder before the checkpoint was read
            self.run_id = state_dict.get("run_id")

    # ---- the record's life, driven by AutoTrainer (and by the hooks below) ----------------
    @property
    def status(self) -> str | None:
        """The status this process last wrote, or None before the record exists."""
        return self._record.get("status")

    def create(self, **fields: Any) -> None:
        """Write the record of a run that exists but has not started: `status: pending`.

        Args:
            fields: More top-level entries (AutoTrainer's `retry_of`).
        """
        self._record = {
            "run_id": self.run_id,
            "status": "pending",
            "created_at": _now(),
            "started_at": None,
            "ended_at": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "error": None,
            "config": {"trainer": _jsonable(self.trainer_config)},
            "versions": _versions(),
            **_jsonable(fields),
        }
        self._save()

    def adopt(self, record: dict[str, Any]) -> None:
        """Continue the record of an existing run (read from its `run.json` by the caller)."""
        self._record = {k: v for k, v in record.items() if k not in ("epochs", "alive")}
        self._epochs = self._read_epochs()

    def begin(self, trainer: pl.Trainer) -> None:
        """Mark the run `running` (when `fit` starts, before tuning and data setup)."""
        if not trainer.is_global_zero or self.run_dir is None:
            return
        self._start = time.monotonic()
        self._phase = "setup"
        if not self._record:
            self.create()
        self._record.update(
            {
                "status": "running",
                "started_at": self._record.get("started_at") or _now(),
                "ended_at": None,
                "duration_s": None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "error": None,
            }
        )
        self._write(trainer)

    def record_tuning(self, trainer: pl.Trainer, outcome: dict[str, Any]) -> None:
        """Add the tuner's results (or `{"error": ...}`) under `tuning`."""
        if trainer.is_global_zero and self._record:
            self._record["tuning"] = _jsonable(outcome)
            self._write(trainer)

    def record_analysis(self, trainer: pl.Trainer, split: str, outcome: dict[str, Any]) -> None:
        """Add an error analysis (`Analysis.to_dict()`: weights, summary, files) under `analysis.<split>`."""
        if not trainer.is_global_zero or self.run_dir is None:
            return
        if not self._record:
            self.create()
        self._record.setdefault("analysis", {})[split] = _jsonable(outcome)
        self._write(trainer)

    def set_phase(self, phase: str) -> None:
        """Name what the run is doing (`"tuning"`, ...), recorded with an error as its `stage`."""
        self._phase = phase

    def finish(self, trainer: pl.Trainer, status: str, exception: BaseException | None = None) -> None:
        """End the run: `completed`, `failed` (with `exception`) or `interrupted`."""
        if not trainer.is_global_zero or not self._record or self._record.get("status") != "running":
            return
        error = None
        if exception is not None and status == "failed":
            error = {
                "type": type(exception).__name__,
                "message": str(exception),
                "stage": self._phase,
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "traceback": "".join(traceback.format_exception(exception))[-6000:],
            }
        self._record.update(
            {
                "status": status,
                "ended_at": _now(),
                "duration_s": round(time.monotonic() - self._start, 3),
                "error": error,
            }
        )
        self._write(trainer)

    # ---- Lightning hooks -------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._fixed and self.status != "running":
            self.begin(trainer)  # a plain `pl.Trainer.fit`; AutoTrainer began before tuning

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._fixed:
            if self.run_id is None:
                self.run_id = trainer.strategy.broadcast(_new_run_id())  # one id for all ranks
            self.run_dir = Path(trainer.default_root_dir) / "runs" / self.run_id
        if not trainer.is_global_zero:
            return
        if not self._fixed:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            previous = self.run_dir / RUN_FILE
            resumed = trainer.ckpt_path is not None and previous.is_file()
            self._record = json.loads(previous.read_text(encoding="utf-8")) if resumed else {}
            self._epochs = self._read_epochs() if resumed else []
            self._record.pop("status", None)
            self.begin(trainer)
        rank_zero_info(f"autotimm: run {self.run_id}: record and plots in {self.run_dir}{_checkpoints_text(trainer)}")
        self._record["config"] = {
            "trainer": _jsonable(self.trainer_config),
            "resolved": {
                "strategy": type(trainer.strategy).__name__,
                "accelerator": type(trainer.accelerator).__name__,
                "num_devices": trainer.num_devices,
                "num_nodes": trainer.num_nodes,
                "world_size": trainer.world_size,
                "precision": trainer.precision,
                "max_epochs": trainer.max_epochs,
                "max_steps": trainer.max_steps,
            },
            "model": {"class": _qualname(pl_module), "hparams": _jsonable(dict(pl_module.hparams))},
            "data": _data_config(trainer),
        }
        self._record["versions"] = _versions()
        self._write(trainer)
        _write_config_yaml(self.run_dir / "config.yaml", self.trainer_config, pl_module, trainer.datamodule)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase = "sanity_check"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._phase = "train"
        if not trainer.is_global_zero or trainer.ckpt_path is None:
            return
        # The loops are restored by now. Epochs after the checkpoint were lost with the crash:
        # they are trained again, so their entries go.
        self._epochs = [e for e in self._epochs if e["epoch"] < trainer.current_epoch]
        self._record.setdefault("resumed_from", []).append(
            {"checkpoint": str(trainer.ckpt_path), "epoch": trainer.current_epoch, "at": _now()}
        )
        write_json_atomic(self.run_dir / "metrics.json", self._epochs)
        self._write(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._epoch_end = time.monotonic()
        self._epoch_images = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._epoch_images += _batch_len(args[1] if len(args) > 1 else None)
        self._epoch_end = time.monotonic()
        self._heartbeat(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._heartbeat(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, "time": _now()}
        entry.update(scalar_metrics(trainer.callback_metrics))
        seconds = self._epoch_end - self._epoch_start
        if self._epoch_images and seconds > 0:
            entry["images_per_s"] = round(self._epoch_images * trainer.world_size / seconds, 2)
        memory = _peak_memory_mb(pl_module.device)
        if memory is not None:
            entry["peak_memory_mb"] = memory
        self._epochs = [e for e in self._epochs if e["epoch"] != entry["epoch"]] + [entry]
        write_json_atomic(self.run_dir / "metrics.json", self._epochs)
        self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finish(trainer, "completed")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.run_dir is None:
            return
        if not self._record:
            self.create()
        metrics = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("test")}
        self._record["test"] = {"metrics": metrics, "checkpoint": _jsonable(trainer.ckpt_path), "at": _now()}
        if self._record.get("status") == "pending":  # a run that only tested (`autotimm test`) is done
            self._record.update({"status": "completed", "started_at": self._record["created_at"], "ended_at": _now()})
        self._write(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        self.finish(trainer, "interrupted" if interrupted else "failed", exception)

    # ---- writing -------------------------------------------------------------------------
    def _heartbeat(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and self._record and time.monotonic() - self._last_write >= HEARTBEAT_S:
            self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        best = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
        # `test` with a checkpoint restores the callbacks' state of that moment: a file named before stays named.
        recorded = self._record.get("checkpoints") or {}
        last = last_checkpoint(trainer) or _existing(recorded.get("last"))
        best_path = (best.best_model_path or None) if best is not None else None
        self._record.update(
            {
                "epochs_completed": len(self._epochs),
                "global_step": trainer.global_step,
                "metrics": {
                    "final": self._epochs[-1] if self._epochs else {},
                    "best": None
                    if best is None or best.best_model_score is None
                    else {
                        "monitor": best.monitor,
                        "mode": best.mode,
                        "value": _jsonable(best.best_model_score),
                    },
                },
                "checkpoints": {"best": best_path or _existing(recorded.get("best")), "last": last},
            }
        )
        self._save()

    def _save(self) -> None:
        self._record["updated_at"] = self._record["heartbeat_at"] = _now()
        self._last_write = time.monotonic()
        write_json_atomic(self.run_dir / RUN_FILE, self._record)

    def _read_epochs(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def _existing(path: str | None) -> str | None:
    return path if path and Path(path).is_file() else None


def _batch_len(batch: Any) -> int:
    """The number of samples in a batch: a tensor's first dimension, or the length of a list of images."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    if isinstance(batch, dict) and batch:
        return _batch_len(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        return (
            _batch_len(first)
            if isinstance(first, torch.Tensor)
            else len(first)
            if isinstance(first, (list, tuple))
            else len(batch)
        )
    return 0


def _peak_memory_mb(device: torch.device) -> float | None:
    """The peak memory so far: the GPU's allocated memory on CUDA, else the process's resident memory."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)


def _write_config_yaml(
    path: Path, trainer_config: dict[str, Any], pl_module: pl.LightningModule, datamodule: Any
) -> None:
    """`config.yaml`: the run's trainer, model and data arguments as `autotimm fit --config` reads them.

    Trainer arguments that are objects (callbacks, Lightning loggers, ...) cannot be written; they
    are named in a comment at the top. The command line writes its own, complete file over this one.
    """
    trainer, left_out = {}, []
    for key, value in trainer_config.items():
        if key in _NOT_REPEATED:
            continue
        if key == "callbacks":  # their class names (AutoTrainer records no callback objects)
            left_out += ["callbacks"] if value else []
        elif _plain(value):
            trainer[key] = _jsonable(value)
        elif value:
            left_out.append(key)
    config = {"trainer": trainer, "model": _class_config(pl_module)}
    if datamodule is not None:
        config["data"] = _class_config(datamodule)
    header = f"# autotimm fit --config {path}\n"
    if left_out:
        header += f"# Not written (objects, give them again): trainer.{', trainer.'.join(left_out)}\n"
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def _class_config(obj: Any) -> dict[str, Any]:
    """`{"class_path": ..., "init_args": ...}`: the `__init__` arguments an object saved as hyperparameters, or
    keeps as plain attributes of the same name (such as a data module's `data_dir`; not properties)."""
    hparams = dict(getattr(obj, "hparams", {}))
    init_args = {}
    for name in inspect.signature(type(obj).__init__).parameters:
        # A property is derived (a folder data module's `class_names`), not an argument it was given.
        derived = isinstance(inspect.getattr_static(type(obj), name, None), property)
        value = hparams.get(name, inspect.Parameter.empty if derived else getattr(obj, name, inspect.Parameter.empty))
        if value is not inspect.Parameter.empty and _plain(value):
            init_args[name] = _jsonable(value)
    return {"class_path": _qualname(obj), "init_args": init_args}


def _plain(value: Any) -> bool:
    """Whether `value` is data a YAML file can hold (numbers, text, paths, dataclasses and containers of them)."""
    if value is None or isinstance(value, (bool, int, float, str, os.PathLike)):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    if isinstance(value, dict):
        return all(_plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _new_run_id() -> str:
    """`YYYYMMDD-HHMMSS-mmmxxx`: the UTC start time to the millisecond, then 3 random hex digits.

    Run ids sort in the order the runs started, also for runs started within the same second.
    """
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}{uuid.uuid4().hex[:3]}"


def _checkpoints_text(trainer: pl.Trainer) -> str:
    """`"; checkpoints in <folder>"` for the run's checkpoint folder, or `""` without checkpoints."""
    folders = {cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
    return f"; checkpoints in {', '.join(sorted(folders))}" if folders else ""


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _data_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    datamodule = trainer.datamodule
    if datamodule is None:
        return None
    return {"class": _qualname(datamodule), "hparams": _jsonable(dict(datamodule.hparams))}
