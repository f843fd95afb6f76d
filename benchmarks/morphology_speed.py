"""Per-galaxy statmorph time at 64 and 96 px on real GZ1 JPEGs (band-summed, as ingest does).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/morphology_speed.py [N]

Writes benchmarks/results/morphology_speed.json. Needs ../shared/data/gz1_dev.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.data.morphology import measure_morphology  # noqa: E402
from galclip.data.preprocess import resize_area  # noqa: E402
from galclip.data.readers.images import read_image  # noqa: E402


def main(n: int = 20) -> dict:
    files = sorted((ROOT.parent / "shared/data/gz1_dev/images").glob("*.jpeg"))[:n]
    if not files:
        raise SystemExit("no GZ1 images under ../shared/data/gz1_dev")
    raw = [read_image(f).image for f in files]
    result: dict = {"n_galaxies": len(files), "cpu_threads": 1, "load_avg_1min": os.getloadavg()[0]}
    for size in (64, 96):
        for label, kw in (("default", {}), ("mid", {"mid": True}), ("sersic", {"sersic": True})):
            if size == 96 and label != "default":
                continue
            times, cpu, fails = [], [], 0
            for img in raw:
                a = resize_area(img, size).sum(0)
                t, c = time.perf_counter(), time.process_time()
                d = measure_morphology(a, None, **kw)
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                fails += int(not np.isfinite(d["gini"]))
            # CPU time is the number to trust on a shared machine; wall time includes contention
            result[f"{size}px_{label}"] = {"cpu_median_s": float(np.median(cpu)), "cpu_mean_s": float(np.mean(cpu)),
                                           "wall_median_s": float(np.median(times)), "failed": fails}
            print(size, label, result[f"{size}px_{label}"], flush=True)
    out = ROOT / "benchmarks/results/morphology_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
