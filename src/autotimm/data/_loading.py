"""Data loader settings shared by the data modules."""

from __future__ import annotations

import os

__all__ = ["check_optional_bool", "default_num_workers"]


def default_num_workers() -> int:
    """Loader worker processes by default: the usable CPUs, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cpus)


def check_optional_bool(name: str, value: object) -> bool | None:
    """Return `value` if it is True, False or None, else raise a `TypeError` naming `name`."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"Expected `{name}` to be True, False or None, but got {value!r}.")
    return value
