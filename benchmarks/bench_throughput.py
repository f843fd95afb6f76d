"""Pretraining throughput: bare model step vs the full galclip pipeline, FLOP/s vs matmul peak.

    .venv/bin/python benchmarks/bench_throughput.py --data /tmp/sim2k --models small,small-conv \
        --threads 2 --batch 128 --steps 30

For each model (same batch, same threads):

* ``bare``: forward (both towers) + CLIP loss + backward + AdamW on pre-made tensors;
  FLOPs of one step counted with ``torch.utils.flop_counter.FlopCounterMode``;
* ``full``: ``run_pretrain`` for ``--steps`` steps (in-memory data, augmentation, loss,
  Lightning loop, CSV/TensorBoard logging), steady-state objects/s from its own timer and
  the fraction of training wall time spent outside the step (data wait + loop overhead);
* ``matmul_peak``: best fp32 ``torch.mm`` GFLOP/s on the same threads.

Writes ``benchmarks/results/throughput.json``. Run it on a quiet machine: on a shared one
(as while developing) the numbers move by tens of percent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.data.dataset import DataConfig, SurveyDataset  # noqa: E402
from galclip.models import build_model  # noqa: E402
from galclip.pretrain.data import load_tensors  # noqa: E402
from galclip.pretrain.losses import clip_loss  # noqa: E402
from galclip.pretrain.train import PretrainConfig, resolve_model_config, run_pretrain  # noqa: E402


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """Best-of fp32 GEMM GFLOP/s on the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def bare_step(model_name: str, ds: SurveyDataset, batch: dict, steps: int) -> dict:
    cfg = PretrainConfig(model=model_name)
    cfg.data = ds.cfg
    mcfg = resolve_model_config(cfg, ds.n_bands, ds.cfg.image.size, ds.spectrum_length)
    torch.manual_seed(0)
    model = build_model(mcfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    img, flux, ivar, fscale = batch["image"], batch["spectrum"], batch["spectrum_ivar"], batch["spectrum_scale"]

    def step() -> None:
        zi, zs, scale = model(img, flux, ivar, fscale)
        loss = clip_loss(zi, zs, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    t_med = times[len(times) // 2]
    n = img.shape[0]
    return {"batch": n, "step_seconds_median": t_med, "step_seconds_min": times[0],
            "objects_per_second": n / t_med, "flops_per_step": flops, "gflops_per_second": flops / t_med / 1e9,
            "n_parameters": sum(p.numel() for p in model.parameters())}


def full_pipeline(model_name: str, data: str, image_size: int, batch: int, steps: int, out: Path) -> dict:
    cfg = PretrainConfig(model=model_name, out=str(out), progress=False, resume="never")
    cfg.data.path = data
    cfg.data.image.size = image_size
    cfg.train.steps = steps
    cfg.train.batch_size = batch
    cfg.train.checkpoint_every = 0
    cfg.train.val_fraction = 0.05
    cfg.train.val_max = 200
    cfg.train.log_every = 10
    t = time.perf_counter()
    m = run_pretrain(cfg)
    return {"objects_per_second": m["objects_per_second"], "pairs_per_second": m["pairs_per_second"],
            "train_seconds": m["train_seconds"], "steps": m["steps"],
            "data_wait_fraction": m["data_wait_fraction"], "wall_seconds_incl_cache_and_val": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/sim2k")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--models", default="small,small-conv")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dcfg = DataConfig(path=args.data)
    dcfg.image.size = args.image_size
    ds = SurveyDataset(dcfg)
    batch = load_tensors(ds.subset(range(args.batch)), progress=False)
    peak = matmul_peak()
    results = {"threads": args.threads, "batch": args.batch, "data": args.data, "n_rows": len(ds),
               "matmul_peak_gflops": peak, "machine": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(), "models": {}}
    for name in args.models.split(","):
        bare = bare_step(name, ds, batch, args.steps)
        with tempfile.TemporaryDirectory() as tmp:
            full = full_pipeline(name, args.data, args.image_size, args.batch, args.steps, Path(tmp))
        results["models"][name] = {
            "bare": bare, "full": full,
            "full_over_bare": full["objects_per_second"] / bare["objects_per_second"],
            "step_fraction_of_matmul_peak": bare["gflops_per_second"] / peak,
        }
        print(json.dumps({name: results["models"][name]}, indent=1), flush=True)
    results["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
