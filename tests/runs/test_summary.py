"""`summarize`: a run's epochs, or a folder's runs, as rows and a printed table, against real short fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import autotimm
from autotimm import ImageClassifier
from helpers import QUICK, cpu_trainer, finished_fit


def test_summarize_one_run_and_a_folder_of_runs(make_image_folder, backbone, tmp_path: Path, capsys) -> None:
    first, _, data = finished_fit(make_image_folder, backbone, tmp_path)
    rows = autotimm.summarize(first.run_dir)
    epochs = json.loads((first.run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == [0, 1]
    for row, entry in zip(rows, epochs, strict=True):
        assert {key: value for key, value in entry.items() if key != "time"} == row
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == list(rows[0]) and len(printed) == 2 + len(rows)
    assert {"val/loss", "val/accuracy", "train/loss_epoch"} <= set(rows[0])

    second = cpu_trainer(tmp_path, plots=False, **QUICK)
    second.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    runs = autotimm.summarize(tmp_path, print_table=False)
    assert [run["run_id"] for run in runs] == [first.run_dir.name, second.run_dir.name]
    assert [run["status"] for run in runs] == ["completed", "completed"] and [run["epochs"] for run in runs] == [2, 1]
    assert runs[0]["monitor"] == "val/accuracy" and runs[0]["best"] == max(e["val/accuracy"] for e in epochs)
    assert runs[1]["monitor"] is None and runs[1]["best"] is None
    assert runs[0]["val/loss"] == epochs[-1]["val/loss"]
    assert autotimm.summarize(tmp_path / "runs", print_table=False) == runs

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        autotimm.summarize(tmp_path / "empty")
    with pytest.raises(TypeError, match="print_table"):
        autotimm.summarize(tmp_path, print_table="no")
