"""Run the speed benchmarks in turn and print one summary (11-12 minutes on a 2-core CPU).

python benchmarks/run_all.py            # the recorded configurations, results in benchmarks/results/
python benchmarks/run_all.py --quick    # a smoke run of each script (about 2 minutes), results in a temp folder

`gpu_throughput.py` needs a CUDA GPU and is skipped without one (its quick run uses the CPU).
`detection_shapes.py` measures detection quality, not speed, and runs on its own (about 6 minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent
# script -> (arguments of a quick run, the figures to show, whether a full run needs CUDA)
BENCHMARKS = {
    "overhead.py": (
        ["--pairs", "1", "--epochs", "1"],
        ["median_ratio", "median_ratio_without_checkpoint_writes", "target"],
        False,
    ),
    "data_pipeline.py": (["--pairs", "1", "--images", "40", "--epochs", "1"], ["median_ratio", "target"], False),
    "time_to_accuracy.py": (
        [
            *("--pairs", "1", "--digits-per-class", "10", "--cls-max-epochs", "1", "--target-accuracy", "0"),
            *(
                "--num-train",
                "16",
                "--num-val",
                "4",
                "--image-size",
                "64",
                "--det-max-epochs",
                "1",
                "--target-map",
                "-1",
            ),
        ],
        ["classification_median_ratio", "detection_median_ratio"],
        False,
    ),
    "gpu_throughput.py": (["--device", "cpu", "--quick"], ["median_ratio", "device"], True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny runs that only check that each script works")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp()) if args.quick else HERE / "results"
    summary = []
    for script, (quick_args, keys, needs_cuda) in BENCHMARKS.items():
        if needs_cuda and not args.quick and not torch.cuda.is_available():
            summary.append((script, 0.0, "skipped: no CUDA GPU"))
            continue
        out = out_dir / script.replace(".py", ".json")
        command = [sys.executable, str(HERE / script), "--out", str(out), *(quick_args if args.quick else [])]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        record = json.loads(out.read_text())
        summary.append((script, time.perf_counter() - start, {k: record.get(k) for k in keys}))
    print("\nbenchmark              seconds  figures")
    for script, seconds, figures in summary:
        print(f"{script:<22} {seconds:>7.0f}  {figures}")


if __name__ == "__main__":
    main()
