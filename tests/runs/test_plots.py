"""`plot_run` and the drawing functions of `autotimm.runs.plots`, from run folders written by hand."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.image import imread

from autotimm.runs import plot_run
from autotimm.runs import plots as plots_module


def test_related_metrics_share_a_panel_and_absent_size_buckets_are_left_out(tmp_path: Path) -> None:
    # A detector's record: COCO's mAP family, with -1 where the data had no boxes of a size.
    epochs = [
        {"epoch": e, "step": 10 * (e + 1), "train/loss_epoch": 2.0 - e, "val/loss": 2.1 - e, "val/map": 0.1 * e}
        | {"val/map_50": 0.2 * e, "val/map_large": -1.0, "val/mar_100": 0.3 * e, "train/loss_classification": 1.0}
        for e in range(3)
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(epochs))
    series = plots_module._series(epochs)
    families = plots_module._families(series)
    assert {prefix: sorted(names) for prefix, names in families.items()} == {
        "loss": ["loss_classification"],
        "map": ["map", "map_50"],
        "mar": ["mar_100"],
    }
    assert sorted(p.name for p in plot_run(run)) == ["loss.png", "metrics.png"]
    # Three panels side by side, one row: 3 x 4.2 in wide, 3.2 in high at 100 dpi.
    assert imread(run / "plots" / "metrics.png").shape[:2] == (320, 1260)
