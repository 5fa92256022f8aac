"""Run folders: where they go, a fresh readable name for each, and the lock that allows one run at a time."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from autotimm._atomic import write_json_atomic

__all__ = ["RUN_FILE", "RunLock", "RunLockedError", "check_run_name", "make_runs_dir", "new_run_dir"]

# The file that makes a folder a run folder.
RUN_FILE = "run.json"
# In `runs_dir`: the lock file, and who holds it (the lock file itself is emptied by every contender).
_LOCK_FILE = ".lock"
_HOLDER_FILE = ".lock.json"


def make_runs_dir(runs_dir: str | os.PathLike[str]) -> Path:
    """Create `runs_dir` if needed and check that runs can be written in it.

    Raises:
        NotADirectoryError: If `runs_dir` (or a folder above it) is a file.
        PermissionError: If the folder cannot be created or written to.

    Examples:
        >>> make_runs_dir(tmp / "runs")  # doctest: +SKIP
        PosixPath('.../runs')
    """
    folder = Path(runs_dir)
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(
            f"`runs_dir={str(folder)!r}` cannot hold runs: {str(blocking)!r} is a file. Pass a folder path."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(
            f"`runs_dir={str(folder)!r}` cannot be created: {e.strerror}. Pass a folder you can write to."
        ) from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"`runs_dir={str(folder)!r}` is not writable. Pass a folder you can write to.")
    return folder


def check_run_name(run_name: object) -> str:
    """`run_name` if it can name a folder of its own, else a `TypeError`/`ValueError` naming it.

    Examples:
        >>> check_run_name("baseline-lr3e-4")
        'baseline-lr3e-4'
    """
    if not isinstance(run_name, str):
        raise TypeError(f"Expected `run_name` to be a string, but got {type(run_name).__name__} {run_name!r}.")
    if not run_name.strip() or run_name in (".", "..") or any(sep in run_name for sep in ("/", "\\", os.sep)):
        raise ValueError(
            f"Expected `run_name` to be a folder name without '/' (such as 'baseline'), but got {run_name!r}. "
            "Use `runs_dir` to choose the parent folder."
        )
    return run_name


def new_run_dir(runs_dir: Path, run_name: str | None = None) -> tuple[Path, bool]:
    """The folder of a run in `runs_dir`, and whether it existed already (with something in it).

    Without `run_name` the run gets a fresh, readable name: the local start time,
    `2026-12-05_14-03-22`, with `_2`, `_3`, ... when that is taken. The folder is created
    atomically (two processes starting in the same second get two folders).

    Examples:
        >>> new_run_dir(Path("runs"))  # doctest: +SKIP
        (PosixPath('runs/2026-12-05_14-03-22'), False)
    """
    if run_name is not None:
        folder = runs_dir / run_name
        existed = folder.is_dir() and any(folder.iterdir())
        folder.mkdir(exist_ok=True)
        return folder, existed
    stem = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(1, 10_000):
        folder = runs_dir / (stem if n == 1 else f"{stem}_{n}")
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
            return folder, False
    raise FileExistsError(f"No free run name for {stem!r} in {str(runs_dir)!r}.")  # pragma: no cover


class RunLockedError(RuntimeError):
    """Another exclusive run holds the lock of the runs folder."""


class RunLock:
    """One exclusive run at a time in a runs folder: `<runs_dir>/.lock` (the `filelock` package).

    The operating system releases the lock when its process ends, however it ends (a killed
    run's lock is taken over by the next one). Who holds it is written to `.lock.json`, so a
    refused run names the active run, its start time and process. The lock is held until
    `release()`, or until the object is garbage-collected: keep a reference while the run lasts.

    Args:
        runs_dir: The folder of runs to guard.

    Examples:
        >>> lock = RunLock("runs")
        >>> lock.acquire({"run": "train3", "started_at": "2026-12-05T14:03:22+00:00"})  # doctest: +SKIP
        >>> lock.release()  # doctest: +SKIP
    """

    def __init__(self, runs_dir: str | os.PathLike[str]) -> None:
        self.runs_dir = Path(runs_dir)
        self._lock = FileLock(self.runs_dir / _LOCK_FILE, thread_local=False)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.is_locked

    def holder(self) -> dict[str, Any] | None:
        """What the holder wrote about itself (`run`, `run_dir`, `started_at`, `pid`, `host`), or None."""
        try:
            return json.loads((self.runs_dir / _HOLDER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock at once, or raise `RunLockedError` naming the run that holds it.

        Args:
            holder: What to say about this run to a refused one (its `run` name and `started_at`).
        """
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            active = self.holder() or {}
            who = (
                f"run {active.get('run')!r} (started {active.get('started_at')}, process {active.get('pid')} on "
                f"{active.get('host')}, folder {active.get('run_dir')})"
                if active
                else "another process"
            )
            raise RunLockedError(
                f"Another exclusive run is active in {str(self.runs_dir)!r}: {who}. Wait for it to end, or "
                "start this one without `exclusive=True`."
            ) from None
        write_json_atomic(self.runs_dir / _HOLDER_FILE, {**holder, "pid": os.getpid(), "host": socket.gethostname()})

    def release(self) -> None:
        """Give the lock back (nothing happens when it is not held)."""
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                (self.runs_dir / _HOLDER_FILE).unlink()
            self._lock.release(force=True)
