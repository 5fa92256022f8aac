"""`summarize`: a run's epochs, or a folder's runs, as a table."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from autotimm._errors import check_bool
from autotimm._warnings import warn
from autotimm.runs.record import RunRecordError, find_runs, read_run

__all__ = ["summarize"]

_STAGE_ORDER = {"train": 0, "val": 1, "test": 2}


def summarize(path: str | os.PathLike[str], print_table: bool = True) -> list[dict[str, Any]]:
    """Summarize one run (one row per epoch) or every run under a folder (one row per run).

    For a run folder (`trainer.run_dir`, holding `run.json`) each row is one epoch of
    `metrics.json`: `epoch`, `step` and every logged scalar under its logged name
    (`train/loss_epoch`, `val/loss`, `val/accuracy`, ...). For any folder above runs (a
    `runs_dir`, a `default_root_dir`, a folder of sweeps: runs are found at any depth) each row
    is one run, oldest first: `run_id`, `status` (`lost` for a running record whose process
    died), `epochs`, `started_at`, `duration_s`, the checkpoint `monitor` and its `best` value
    (`None` without a monitor), the last epoch's `val/...` values and the `test/...` results of
    `trainer.test`. A corrupt `run.json` is a row with status `corrupt` (and a warning), never a
    failure. Every row has the same keys; a value a row lacks is `None`.

    Args:
        path: A run folder, or any folder with runs under it.
        print_table: Print the rows as an aligned text table.

    Returns:
        The rows, plain dicts (no pandas needed; `pandas.DataFrame(rows)` makes a frame).

    Raises:
        FileNotFoundError: If `path` holds no run record.
        TypeError: If `path` is not a path, or `print_table` not a bool.

    Examples:
        >>> import autotimm
        >>> rows = autotimm.summarize(trainer.run_dir)  # doctest: +SKIP
        epoch  step  train/loss  train/loss_epoch  val/accuracy  val/loss
        -----  ----  ----------  ----------------  ------------  --------
            0    40      0.0736            0.7721        0.6097    2.2638
            1    80      0.0157            0.1479        0.8699    0.4904
        >>> autotimm.summarize("outputs", print_table=False)[0]["status"]  # doctest: +SKIP
        'completed'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected `path` to be a path, but got {type(path).__name__} {path!r}.")
    check_bool("print_table", print_table)
    folder = Path(path)
    if (folder / "run.json").is_file():
        rows = _epoch_rows(read_run(folder)["epochs"])
    else:
        rows = _fill([_run_row(run) for run in _run_folders(folder)])
    if print_table:
        print(_table(rows) if rows else f"No epochs recorded yet in {folder}.")
    return rows


def _run_folders(folder: Path) -> list[Path]:
    """The run folders at any depth under `folder`, oldest first."""
    if not folder.is_dir():
        raise FileNotFoundError(f"No run record at {str(folder)!r}: no such folder.")
    runs = find_runs(folder)
    if not runs:
        raise FileNotFoundError(
            f"No run record in {str(folder)!r}: expected a run folder (holding run.json) or a folder with run "
            "folders under it (`<runs_dir>/<run_name>/run.json`). AutoTrainer writes them unless `run_record=False`."
        )
    return runs


def _epoch_rows(epochs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = {key for entry in epochs for key in entry} - {"epoch", "step", "time"}
    columns = ["epoch", "step", *sorted(keys, key=_metric_order)]
    return [{column: entry.get(column) for column in columns} for entry in epochs]


def _metric_order(key: str) -> tuple[int, str]:
    """Train, then val, then test columns, then the rest; by name within each."""
    return _STAGE_ORDER.get(key.split("/", 1)[0], len(_STAGE_ORDER)), key


def _run_row(run: Path) -> dict[str, Any]:
    try:
        record = read_run(run)
    except RunRecordError as e:
        warn(f"autotimm: {e}")
        return {"run_id": run.name, "status": "corrupt"}
    best = (record.get("metrics") or {}).get("best") or {}
    final = (record.get("metrics") or {}).get("final") or {}
    row = {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "epochs": record.get("epochs_completed", len(record["epochs"])),
        "started_at": record.get("started_at"),
        "duration_s": record.get("duration_s"),
        "monitor": best.get("monitor"),
        "best": best.get("value"),
    }
    row.update({key: final[key] for key in sorted(final) if key.startswith("val/")})
    tested = (record.get("test") or {}).get("metrics") or {}
    row.update({key: tested[key] for key in sorted(tested)})
    return row


def _fill(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every row the keys of all rows, in first-seen order; missing values are `None`."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{column: row.get(column) for column in columns} for row in rows]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    """Columns aligned, numbers to the right, everything else to the left."""
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    numeric = [all(isinstance(row[column], (int, float)) or row[column] is None for row in rows) for column in columns]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    header = line(columns)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([header, rule, *(line(values) for values in cells)])
