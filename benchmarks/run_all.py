"""Run every benchmark in turn and print one summary (about 10 minutes on a 2-core CPU).

python benchmarks/run_all.py            # the recorded configurations, results in benchmarks/results/
python benchmarks/run_all.py --quick    # a smoke run of each script (about 1 minute), results in a temp folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
# script -> (arguments of a quick run, the figures to show)
BENCHMARKS = {
    "detection_shapes.py": (["--num-train", "32", "--num-test", "16", "--epochs", "1"], ["map_50", "wall_seconds"]),
    "overhead.py": (["--pairs", "1", "--epochs", "1"], ["median_ratio", "target"]),
    "data_pipeline.py": (["--pairs", "1", "--images", "40", "--epochs", "1"], ["median_ratio", "target"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny runs that only check that each script works")
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp()) if args.quick else HERE / "results"
    summary = []
    for script, (quick_args, keys) in BENCHMARKS.items():
        out = out_dir / script.replace(".py", ".json")
        command = [sys.executable, str(HERE / script), "--out", str(out), *(quick_args if args.quick else [])]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        record = json.loads(out.read_text())
        summary.append((script, time.perf_counter() - start, {k: record[k] for k in keys}))
    print("\nbenchmark              seconds  figures")
    for script, seconds, figures in summary:
        print(f"{script:<22} {seconds:>7.0f}  {figures}")


if __name__ == "__main__":
    main()
