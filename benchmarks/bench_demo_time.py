"""Time ``galclip demo`` on a fixed set of pinned CPU cores, and say how fast those cores were.

The quickstart's target is "≤ 5 minutes on 2 cores". A shared VM's cores run at a speed that
changes from day to day (``torch.mm`` on 2048² has ranged 92–409 GFLOP/s on the development
VM), so a wall time means little without the speed it ran at. This script pins the demo to the
given cores (``taskset`` semantics through ``os.sched_setaffinity``; ``OMP_NUM_THREADS`` set to
their count; CUDA hidden), measures a 2048² float32 matrix product on the same cores just
before, and writes one JSON: wall time, stage times, the report's ROC AUC per method and
budget, candidate precision and the software versions.

    python benchmarks/bench_demo_time.py --cores 0 1 --out runs/demo_timed \
        --json benchmarks/results/demo_time.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throughput import cpu_model  # noqa: E402

GFLOPS_SNIPPET = """
import time, torch
a = torch.randn(2048, 2048); torch.mm(a, a)
t = time.perf_counter()
for _ in range(10):
    torch.mm(a, a)
print(10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
"""


def _env(cores: list[int]) -> dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(len(cores))
    return env


def _pinned(cmd: list[str], cores: list[int], **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` with its affinity (and so its children's) set to ``cores``."""
    return subprocess.run(cmd, env=_env(cores), preexec_fn=lambda: os.sched_setaffinity(0, cores), **kw)


def _auc_table(results_csv: Path) -> dict[str, dict[str, float]]:
    """method → {budget: mean ROC AUC} from evaluate's results.csv."""
    table: dict[str, dict[str, float]] = {}
    with results_csv.open() as fh:
        for row in csv.DictReader(fh):
            table.setdefault(row["method"], {})[row["budget"]] = round(float(row["roc_auc_mean"]), 4)
    return table


def _versions() -> dict[str, str]:
    import numpy
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", default="runs/demo_timed", help="demo run folder (must not hold a finished run)")
    ap.add_argument("--json", required=True, help="result file")
    ap.add_argument("overrides", nargs="*", help="dotted overrides passed to galclip demo")
    args = ap.parse_args(argv)
    if (Path(args.out) / "summary.json").exists():
        ap.error(f"{args.out} already holds a finished demo: the stages would be re-used, not timed")
    gflops = float(_pinned([sys.executable, "-c", GFLOPS_SNIPPET], args.cores, capture_output=True,
                           text=True, check=True).stdout.strip())
    cmd = [sys.executable, "-m", "galclip.cli", "demo", "--out", args.out, *args.overrides]
    t0 = time.perf_counter()
    _pinned(cmd, args.cores, check=True)
    wall = time.perf_counter() - t0
    out = Path(args.out)
    summary = json.loads((out / "summary.json").read_text())
    cand = summary.get("candidates", {})
    result = {
        "command": " ".join(cmd),
        "cores": args.cores,
        "cpu_model": cpu_model(),
        "matmul_2048_gflops_on_these_cores": round(gflops, 1),
        "wall_seconds": round(wall, 1),
        "stage_seconds": summary["timings_s"],
        "stage_sum_seconds": summary["total_s"],
        "roc_auc": _auc_table(out / "evaluate" / "results.csv"),
        "candidates_precision_at_20": cand.get("top20_mean"),
        "candidates_base_rate": cand.get("base_rate_mean"),
        "versions": _versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_seconds", "matmul_2048_gflops_on_these_cores")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
