"""The `RunRecord` callback: `run.json` (status, configuration, versions, results) and per-epoch `metrics.json`.

`autotimm.runs.read_run` reads them back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import socket
import time
import uuid
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from autotimm._atomic import atomic_path
from autotimm.callbacks.checkpoints import last_checkpoint

__all__ = ["RunRecord", "scalar_metrics", "write_json_atomic"]

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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader (or a crash) never sees half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


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
    """Keep a machine-readable record of each `fit` in `<default_root_dir>/runs/<run_id>/`.

    - `run.json`: `status` (`running`, then `completed`, `failed` or `interrupted`), start
      and end times, the process, the resolved configuration of trainer, model and data, the
      library versions, the final and best metrics, the best and last checkpoint paths, and
      the error when the run failed;
    - `metrics.json`: one entry per epoch with every logged scalar.

    Both are rewritten atomically (temporary file, then rename) whenever they change, so a
    reader polling them never sees half a file. A run resumed with `fit(ckpt_path=...)`
    continues its record (the run id travels in the checkpoint) and drops the epochs the
    checkpoint does not contain. A process killed with SIGKILL cannot write anything: its
    record stays `running` with the `pid` and `host` that ran it. Only global rank 0 writes.

    Args:
        trainer_config: The trainer's arguments as the user gave them, recorded under
            `config.trainer` (AutoTrainer passes its own).

    Examples:
        >>> record = RunRecord()
        >>> trainer = pl.Trainer(max_epochs=3, callbacks=[record])  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
        >>> autotimm.read_run(record.run_dir)["status"]  # doctest: +SKIP
        'completed'
    """

    def __init__(self, trainer_config: dict[str, Any] | None = None) -> None:
        self.trainer_config = dict(trainer_config or {})
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self._record: dict[str, Any] = {}
        self._epochs: list[dict[str, Any]] = []
        self._start = 0.0

    # ---- state carried by checkpoints ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = state_dict.get("run_id")

    # ---- lifecycle -----------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run_id is None:
            self.run_id = trainer.strategy.broadcast(_new_run_id())  # one id for all ranks
        self.run_dir = Path(trainer.default_root_dir) / "runs" / self.run_id
        if not trainer.is_global_zero:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rank_zero_info(f"autotimm: run {self.run_id}: record and plots in {self.run_dir}{_checkpoints_text(trainer)}")
        self._start = time.monotonic()
        previous = self.run_dir / "run.json"
        resumed = trainer.ckpt_path is not None and previous.is_file()
        self._record = json.loads(previous.read_text(encoding="utf-8")) if resumed else {}
        self._epochs = self._read_epochs() if resumed else []
        self._record.update(
            {
                "run_id": self.run_id,
                "status": "running",
                "started_at": self._record.get("started_at", _now()),
                "updated_at": _now(),
                "ended_at": None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "error": None,
                "config": {
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
                },
                "versions": _versions(),
            }
        )
        self._write(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        entry = {"epoch": trainer.current_epoch, "step": trainer.global_step, "time": _now()}
        entry.update(scalar_metrics(trainer.callback_metrics))
        self._epochs = [e for e in self._epochs if e["epoch"] != entry["epoch"]] + [entry]
        write_json_atomic(self.run_dir / "metrics.json", self._epochs)
        self._write(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, "completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        error = None if interrupted else {"type": type(exception).__name__, "message": str(exception)}
        self._finish(trainer, "interrupted" if interrupted else "failed", error)

    # ---- writing -------------------------------------------------------------------------
    def _finish(self, trainer: pl.Trainer, status: str, error: dict[str, str] | None = None) -> None:
        if not trainer.is_global_zero or not self._record:
            return
        self._record.update(
            {
                "status": status,
                "ended_at": _now(),
                "duration_s": round(time.monotonic() - self._start, 3),
                "error": error,
            }
        )
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        best = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
        last = last_checkpoint(trainer)
        self._record.update(
            {
                "updated_at": _now(),
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
                "checkpoints": {
                    "best": (best.best_model_path or None) if best is not None else None,
                    "last": last,
                },
            }
        )
        write_json_atomic(self.run_dir / "run.json", self._record)

    def _read_epochs(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


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
