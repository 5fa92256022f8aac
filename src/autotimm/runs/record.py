"""Reading runs: `read_run` (a record as written by `RunRecord`), `find_runs` and the `Run` object."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from autotimm.runs.folder import RUN_FILE

__all__ = ["Run", "RunRecordError", "find_runs", "read_run"]

# A running record whose heartbeat is older than this, written on another host, is reported `lost`.
LOST_AFTER_S = 1800.0


class RunRecordError(ValueError):
    """A `run.json` that cannot be read (not JSON, or not a run record)."""


def read_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run's record: `run.json`, with the per-epoch entries of `metrics.json` under `epochs`.

    A record that says `running` is checked: when the process that writes it is gone (the
    record's `pid` on this host, or, for another host, no heartbeat for 30 minutes), `status`
    reads `lost` and `alive` is `False`. A running record whose process lives has `alive: True`;
    other records have `alive: None`. The file itself is never changed.

    Raises:
        FileNotFoundError: If `run_dir` holds no `run.json`.
        RunRecordError: If `run.json` is not a run record (a `ValueError`; the message names the file).

    Examples:
        >>> record = read_run(trainer.run_dir)  # doctest: +SKIP
        >>> record["status"], record["metrics"]["best"]  # doctest: +SKIP
        ('completed', {'monitor': 'val/accuracy', 'value': 0.98, ...})
    """
    folder = Path(run_dir)
    path = folder / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"No run record at {str(folder)!r}: {RUN_FILE} is missing.")
    record = _load(path, dict)
    metrics = folder / "metrics.json"
    record["epochs"] = _load(metrics, list) if metrics.is_file() else []
    record["alive"] = None
    if record.get("status") == "running":
        record["alive"] = _alive(record)
        if not record["alive"]:
            record["status"] = "lost"
    return record


def _load(path: Path, kind: type) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunRecordError(f"{str(path)!r} is not valid JSON ({e}); it was left as it is.") from e
    if not isinstance(data, kind):
        raise RunRecordError(f"{str(path)!r} holds a {type(data).__name__}, not a run's {kind.__name__}.")
    return data


def _alive(record: dict[str, Any]) -> bool:
    """Whether the process writing a running record still runs."""
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True
    beat = record.get("heartbeat_at") or record.get("updated_at")
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(beat)).total_seconds()
    except (TypeError, ValueError):
        return True  # nothing to judge by
    return age < LOST_AFTER_S


def find_runs(folder: str | os.PathLike[str]) -> list[Path]:
    """The run folders (holding `run.json`) at any depth under `folder`, or `folder` itself; oldest first.

    Examples:
        >>> find_runs("outputs")  # doctest: +SKIP
        [PosixPath('outputs/runs/2026-12-05_14-03-22'), PosixPath('outputs/sweep/lr3/runs/train')]
    """
    root = Path(folder)
    if (root / RUN_FILE).is_file():
        return [root]
    runs = [path.parent for path in root.rglob(RUN_FILE) if path.is_file()]
    return sorted(runs, key=lambda run: (_started(run), str(run)))


def _started(run: Path) -> str:
    try:
        record = json.loads((run / RUN_FILE).read_text(encoding="utf-8"))
        return str(record.get("created_at") or record.get("started_at") or "")
    except (OSError, ValueError, AttributeError):
        return ""


class Run:
    """A run folder, read: its status, best result, metrics, checkpoints and configuration.

    What a GUI or a script needs without knowing the files. The record is read when the
    object is made; `refresh()` reads it again (a running run changes).

    Args:
        path: The run folder (`trainer.run_dir`).

    Raises:
        FileNotFoundError: If `path` holds no `run.json`.
        RunRecordError: If its `run.json` is corrupt.

    Examples:
        >>> run = Run(trainer.run_dir)  # doctest: +SKIP
        >>> run.status, run.best["value"], run.checkpoints["best"]  # doctest: +SKIP
        ('completed', 0.97, PosixPath('runs/2026-12-05_14-03-22/checkpoints/best.ckpt'))
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.record = read_run(self.path)

    def refresh(self) -> Run:
        """Read the record again; returns the run."""
        self.record = read_run(self.path)
        return self

    @property
    def name(self) -> str:
        """The run's name (its folder's name)."""
        return str(self.record.get("run_id") or self.path.name)

    @property
    def status(self) -> str:
        """`pending`, `running`, `completed`, `failed`, `interrupted`, or `lost` (its process died)."""
        return str(self.record.get("status"))

    @property
    def error(self) -> dict[str, str] | None:
        """`{"type": ..., "message": ..., "stage": ...}` for a failed run, else None."""
        return self.record.get("error")

    @property
    def best(self) -> dict[str, Any] | None:
        """`{"monitor", "mode", "value", "checkpoint"}` of the best checkpoint, or None without a monitor."""
        best = (self.record.get("metrics") or {}).get("best")
        return None if best is None else {**best, "checkpoint": self.checkpoints["best"]}

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One entry per epoch (`metrics.json`): `epoch`, `step`, `time` and every logged scalar."""
        return self.record["epochs"]

    @property
    def test(self) -> dict[str, Any] | None:
        """The results of `trainer.test` on this run, or None."""
        return self.record.get("test")

    @property
    def checkpoints(self) -> dict[str, Path | None]:
        """`{"best": path, "last": path}`; a file that is not there is None."""
        recorded = self.record.get("checkpoints") or {}
        out: dict[str, Path | None] = {}
        for which in ("best", "last"):
            path = recorded.get(which)
            out[which] = Path(path) if path and Path(path).is_file() else None
        return out

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved configuration: `config.yaml` (trainer, model, data) when there is one."""
        path = self.path / "config.yaml"
        if path.is_file():
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return self.record.get("config") or {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"
