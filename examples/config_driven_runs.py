"""Config-driven training runs, each in its own folder: overrides, `--print_config`, profilers, summaries.

Modelled on a fake-art detector trained from configs: the whole configuration lives in a YAML
file (`examples/configs/real_vs_fake.yaml`), any key is overridden on the command line
(optimizer, precision, data-loader workers, epochs), `--print_config` prints the resolved
configuration, and each run keeps everything in one folder
(`runs/real_vs_fake_cli/runs/<run_name>/`): the resolved `config.yaml` (which repeats the run),
`run.json`, per-epoch `metrics.json`, `train.log`, CSV and TensorBoard logs under `logs/`,
`checkpoints/best.ckpt` and `last.ckpt`, `plots/`, and the profiler's output under `profiler/`.

The script runs the `autotimm` command (as `autotimm.cli.main([...])`, the same as typing it):

1. `autotimm fit --config real_vs_fake.yaml --print_config`;
2. three short runs, with the simple, the advanced and the PyTorch profiler, and overrides;
3. `autotimm runs list` and `autotimm runs show` (the training summary);
4. a repeat of the first run from its saved `config.yaml`.

Run:

    python examples/config_driven_runs.py

Set `AUTOTIMM_SMOKE=1` for a quick check that everything is wired up.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

from _data import make_real_vs_fake_folder

from autotimm.cli import main as autotimm
from autotimm.runs import find_runs

SMOKE = os.environ.get("AUTOTIMM_SMOKE") == "1"
CONFIG = str(Path(__file__).resolve().parent / "configs" / "real_vs_fake.yaml")
RUNS = Path("runs/real_vs_fake_cli/runs")


def main() -> None:
    start = time.perf_counter()
    root = make_real_vs_fake_folder("data", per_class=40 if SMOKE else 800, image_size=32)
    data = ["--data.init_args.data_dir", str(root), "--data.init_args.num_workers", "0" if SMOKE else "2"]
    small = ["--model.init_args.backbone.model_name", "test_resnet", "--trainer.limit_train_batches", "2"]
    small = small if SMOKE else []

    print("1. the resolved configuration")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        autotimm(["fit", "--config", CONFIG, *data, "--trainer.max_epochs", "2", "--print_config"])
    print("\n".join(printed.getvalue().splitlines()[:12]) + "\n  ...")

    print("2. three runs, one per profiler, with overrides")
    for profiler, optimizer in (("simple", "adam"), ("advanced", "sgd"), ("pytorch", "adamw")):
        overrides = ["--trainer.profiler", profiler, "--model.init_args.optimizer", optimizer]
        overrides += [
            "--trainer.max_epochs",
            "1" if profiler == "pytorch" else "2",
            "--trainer.enable_progress_bar",
            "false",
        ]
        autotimm(["fit", "--config", CONFIG, *data, *small, *overrides])
    runs = find_runs(RUNS)
    for run in runs:
        print(f"  {run.name}: {sorted(p.name for p in run.iterdir())}")
        print(f"    profiler/: {sorted(p.name for p in (run / 'profiler').iterdir())}")

    print("3. the runs, and the training summary of the first")
    autotimm(["runs", "list", str(RUNS)])
    autotimm(["runs", "show", runs[0].name, "--dir", str(RUNS)])

    print("4. repeat the first run from its saved config")
    autotimm(["fit", "--config", str(runs[0] / "config.yaml"), "--trainer.enable_progress_bar", "false"])
    print(f"  runs now: {[run.name for run in find_runs(RUNS)]}")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
