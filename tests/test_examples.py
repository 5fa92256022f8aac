"""The example scripts run end to end (in smoke mode: `AUTOTIMM_SMOKE=1` shrinks data and epochs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path) -> str:
    env = {**os.environ, "AUTOTIMM_SMOKE": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_quickstart(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("quickstart.py", tmp_path)
    assert "test accuracy:" in out
    assert list((tmp_path / "runs" / "quickstart").rglob("*.ckpt"))


def test_full_training_example(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("full_training_example.py", tmp_path)
    assert "learning rate found by the tuner:" in out and "test accuracy:" in out
    assert list((tmp_path / "runs" / "full_training_example").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "runs" / "full_training_example").rglob("last.ckpt"))
