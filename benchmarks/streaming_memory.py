"""Peak-RSS growth and throughput of StreamingSurvey on a dataset of many shards.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streaming_memory.py [n_shards] [shard_size]

Builds a temporary dataset (3×32×32 images + 512-pixel spectra), then streams one epoch in
a fresh subprocess and reports ``ru_maxrss`` growth after warm-up. With ``--compare REV``
the same is measured for dataset.py at a git revision (e.g. the original one-row-at-a-time
implementation). Writes benchmarks/results/streaming_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = textwrap.dedent("""
    import json, resource, sys, time, importlib.util
    import torch
    torch.set_num_threads(1)
    mod_path, root = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("ds_under_test", mod_path)
    mod = importlib.util.module_from_spec(spec); sys.modules["ds_under_test"] = mod; spec.loader.exec_module(mod)
    ds = mod.StreamingSurvey(mod.DataConfig(path=root, block_rows=64, shuffle_blocks=8), seed=0)
    it = iter(ds)
    for _ in range(600):
        next(it)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    n = 600 + sum(1 for _ in it)
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": n, "growth_mb": (peak - base) / 1024, "base_mb": base / 1024,
                      "rows_per_s": (n - 600) / dt}))
""")


def build(root: Path, n_shards: int, shard_size: int) -> float:
    from galclip.data.preprocess import log_grid
    from galclip.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    w = ShardWriter(root, ["g", "r", "i"], 32, log_grid(3800, 9200, 512), label_columns=["merger"],
                    shard_size=shard_size)
    img = rng.normal(size=(3, 32, 32)).astype(np.float32)
    for i in range(n_shards * shard_size):
        w.add(dict(object_id=f"o{i}", image_array=img, spectrum_flux=np.ones(512, np.float32),
                   spectrum_ivar=np.ones(512, np.float32), merger=i % 2))
    w.close()
    return sum(f.stat().st_size for f in root.glob("*.h5")) / 2**20


def measure(module: Path, root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", CHILD, str(module), str(root)], env=env, capture_output=True,
                         text=True, timeout=1800)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n_shards", type=int, nargs="?", default=20)
    ap.add_argument("shard_size", type=int, nargs="?", default=256)
    ap.add_argument("--compare", default="", help="git revision of galclip/data/dataset.py to compare with")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "ds"
        t = time.perf_counter()
        mb = build(root, args.n_shards, args.shard_size)
        result = {"n_shards": args.n_shards, "shard_size": args.shard_size, "dataset_mb": round(mb, 1),
                  "build_s": round(time.perf_counter() - t, 1), "load_avg_1min": os.getloadavg()[0],
                  "current": measure(ROOT / "galclip/data/dataset.py", root)}
        if args.compare:
            old = Path(d) / "dataset_old.py"
            old.write_text(subprocess.run(["git", "show", f"{args.compare}:galclip/data/dataset.py"], cwd=ROOT,
                                          capture_output=True, text=True, check=True).stdout)
            result[f"rev_{args.compare}"] = measure(old, root)
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks/results/streaming_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
