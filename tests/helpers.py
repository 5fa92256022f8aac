"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autotimm import AutoTrainer


def cpu_trainer(root: Path, **kwargs: Any) -> AutoTrainer:
    """A quiet CPU `AutoTrainer` writing under `root`; `kwargs` override the defaults."""
    defaults = {
        "accelerator": "cpu",
        "default_root_dir": root,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return AutoTrainer(**{**defaults, **kwargs})
