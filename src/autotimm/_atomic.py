"""Files that a crash cannot leave half-written: write beside the destination, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json_atomic"]


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary file beside `path` to write; on success, rename it over `path`.

    A process killed at any moment, even with SIGKILL, leaves `path` either as it was or
    complete. On an error the temporary file is removed and `path` is left as it was. After a
    success, temporary files that a killed writer of the same `path` left behind are removed.
    The file gets the permissions a plain `open(path, "w")` would give it (`0o666` less the
    umask), so that a teammate or a serving container can read it.

    Args:
        path: The destination; its folder is created if needed.
        durable: Also flush the file and the rename to the disk (`fsync`), so that the new
            file survives a power cut or a kernel crash too, not only the death of the process.

    Examples:
        >>> with atomic_path(Path(folder) / "run.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    tmp = _create_beside(path.parent, prefix)
    try:
        yield tmp
        if durable:
            _fsync(tmp, os.O_RDWR)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        with contextlib.suppress(OSError):  # the rename itself (folders cannot be opened on Windows)
            _fsync(path.parent, os.O_RDONLY)
    for stale in path.parent.glob(f"{prefix}*.tmp"):
        stale.unlink(missing_ok=True)


def _create_beside(folder: Path, prefix: str) -> Path:
    """Create a new, empty, uniquely named file in `folder`, as `open()` would (mode `0o666` less the umask).

    `tempfile.mkstemp` would make it `0o600` whatever the umask, and the rename keeps that mode.
    """
    while True:
        tmp = folder / f"{prefix}{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def _fsync(path: Path, flags: int) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON so that a reader (or a crash, even SIGKILL) never sees half a file.

    Examples:
        >>> write_json_atomic(Path(folder) / "run.json", {"status": "running"})  # doctest: +SKIP
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
