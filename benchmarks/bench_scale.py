"""Scale: streaming peak memory for a survey 1× vs 10× larger, simulation and embedding rates.

    .venv/bin/python benchmarks/bench_scale.py [--rows 2048] [--sim-n 200] [--embed-n 1000]

Writes benchmarks/results/scale.json. Memory is the peak RSS of a fresh process streaming
one full epoch (``StreamingSurvey``); flat memory from 1× to 10× rows is the target.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from streaming_memory import build, measure  # noqa: E402


def streaming(rows: int, shard_size: int) -> dict:
    out = {}
    for mult in (1, 10):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d) / "ds"
            mb = build(root, max(1, rows * mult // shard_size), shard_size)
            r = measure(ROOT / "galclip/data/dataset.py", root)
            out[f"{mult}x"] = {"rows": r["rows"], "dataset_mb": round(mb, 1), "peak_rss_mb": round(r["base_mb"] + r["growth_mb"], 1),
                               "growth_after_warmup_mb": round(r["growth_mb"], 1), "rows_per_s": round(r["rows_per_s"], 1)}
    out["peak_ratio_10x_over_1x"] = round(out["10x"]["peak_rss_mb"] / out["1x"]["peak_rss_mb"], 3)
    return out


def simulation(n: int, n_jobs: int) -> dict:
    from galclip.data.sim.survey import SimulateConfig, run_simulate

    res = {}
    for derived, morph in ((False, False), (True, False), (True, True)):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            run_simulate(SimulateConfig(out=str(Path(d) / "s"), n=n, n_jobs=n_jobs, derived=derived,
                                        morphology=morph, progress=False))
            dt = time.perf_counter() - t0
        res[f"derived={derived},morphology={morph}"] = {"galaxies_per_s": round(n / dt, 2), "seconds": round(dt, 1)}
    return res


def embedding(n: int, model: str) -> dict:
    import torch

    from galclip.data.dataset import DataConfig, SurveyDataset
    from galclip.data.sim.survey import SimulateConfig, run_simulate
    from galclip.models.config import get_model_config
    from galclip.models.galclip import build_model
    from galclip.encode import embed_dataset

    with tempfile.TemporaryDirectory() as d:
        run_simulate(SimulateConfig(out=str(Path(d) / "s"), n=n, derived=False, progress=False))
        ds = SurveyDataset(DataConfig(path=str(Path(d) / "s")))
        cfg = get_model_config(model, n_bands=ds.n_bands, image_size=64, spectrum_length=ds.spectrum_length)
        m = build_model(cfg).eval()
        t0 = time.perf_counter()
        embed_dataset(m, ds, batch_size=256)
        dt = time.perf_counter() - t0
    return {"model": model, "galaxies": n, "galaxies_per_s": round(n / dt, 1), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--sim-n", type=int, default=200)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--embed-n", type=int, default=1000)
    ap.add_argument("--model", default="small")
    args = ap.parse_args()
    result = {"machine": f"{os.cpu_count()} cores", "load_avg_1min_start": os.getloadavg()[0],
              "streaming": streaming(args.rows, args.shard_size),
              "simulation": simulation(args.sim_n, args.n_jobs),
              "embedding": embedding(args.embed_n, args.model)}
    result["load_avg_1min_end"] = os.getloadavg()[0]
    out = ROOT / "benchmarks/results/scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
