"""`read_run`: a run's record as written by the `RunRecord` callback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_run"]


def read_run(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a run's record: `run.json`, with the per-epoch entries of `metrics.json` under `epochs`.

    Examples:
        >>> record = read_run(trainer.run_dir)  # doctest: +SKIP
        >>> record["status"], record["metrics"]["best"]  # doctest: +SKIP
        ('completed', {'monitor': 'val/accuracy', 'value': 0.98, ...})
    """
    folder = Path(run_dir)
    record = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    metrics = folder / "metrics.json"
    record["epochs"] = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else []
    return record
