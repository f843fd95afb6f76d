"""Pretraining throughput: bare model step vs the full galclip pipeline, FLOP/s vs a robust matmul peak.

    .venv/bin/python benchmarks/bench_throughput.py --data /tmp/sim3k --models small-cnn,compact,small \
        --threads 2 --batch 128 --steps 60 --repeat 2 --study 20

For each model preset (same batch, same threads, the run config of ``configs/pretrain.yaml``):

* ``bare``: the training step without the pipeline around it, on one fixed batch of
  pre-made tensors: forward of both towers, the pretraining objective (CLIP loss, plus the
  morphology regression term when the survey stores ``morph_*`` columns, exactly as
  ``PretrainModule.compute_loss`` computes it, with every augmentation switched off),
  backward, gradient clipping and AdamW + LR schedule — the module ``run_pretrain`` builds
  (:func:`galclip.pretrain.train.build_module`), with the preset's speed options
  (channels-last, ``torch.compile``, fused AdamW; ``runtime`` in the JSON). FLOPs of one
  step are counted with ``torch.utils.flop_counter.FlopCounterMode``. Warm-up steps first
  (compilation, allocator), then ``--steps`` timed steps: median and mean.
* ``augment``: the same step's augmentations alone (images: flips, rotations, sub-pixel
  shift, PSF blur, noise; spectra: noise, masks, tilt; flux scale) — the extra work the
  full pipeline does on the step's critical path.
* ``full``: ``run_pretrain`` for ``--steps`` steps (in-memory data, augmentation, the same
  losses, Lightning loop, CSV/TensorBoard logging), steady-state objects/s from its own timer
  (first step, validation and checkpoint writes excluded).
* ``full_over_bare``: full objects/s over bare objects/s from the bare step's *mean* time
  (the full pipeline's figure is a mean over its steps too).
* ``step_fraction_of_matmul_peak``: the bare step's GFLOP/s (median step time) over the
  reference peak.

The reference peak is the best fp32 ``torch.mm`` GFLOP/s over several square sizes and
repeats on the same threads, measured before *and* after the model timings; the ratio is
taken against the higher of the two (a peak measured while the machine was busier would
flatter every fraction). Its spread, the CPU model, the MKL/oneDNN versions and the load
average are recorded with it. ``--repeat 2`` runs the whole measurement twice in one
invocation and records how well the two agree.

Writes ``benchmarks/results/throughput.json``. Run it on a quiet machine: on a shared one
(as while developing) the numbers move by tens of percent.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.config import load_config  # noqa: E402
from galclip.data.dataset import SurveyDataset  # noqa: E402
from galclip.pretrain.augment import AugmentConfig, augment_images, augment_scale, augment_spectra  # noqa: E402
from galclip.pretrain.data import load_tensors  # noqa: E402
from galclip.pretrain.module import PretrainModule  # noqa: E402
from galclip.pretrain.runtime import Runtime  # noqa: E402
from galclip.pretrain.train import (PretrainConfig, build_module, load_morph_targets, resolve_losses,  # noqa: E402
                                    resolve_model_config, run_pretrain, run_runtime)

#: augmentations off: the bare step computes the objective on the stored batch
NO_AUGMENT = AugmentConfig(rot90=False, flip=False, shift_px=0.0, image_noise=0.0, psf_sigma=0.0,
                           spectrum_noise=0.0, mask_windows=0, tilt=0.0, scale_jitter=0.0, scale_drop=0.0)


# -- the machine -------------------------------------------------------------------------
def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def math_libraries() -> dict[str, Any]:
    """torch build, MKL / oneDNN versions and the CPU kernels torch dispatches to."""
    show = torch.__config__.show()

    def grab(pattern: str) -> str | None:
        m = re.search(pattern, show)
        return m.group(1).strip() if m else None

    return {"torch": torch.__version__,
            "mkl": grab(r"Math Kernel Library Version ([^\n]+?) for") if torch.backends.mkl.is_available() else None,
            "onednn": grab(r"MKL-DNN (v[^\s]+)") if torch.backends.mkldnn.is_available() else None,
            "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
            "openmp": grab(r"OpenMP (\d+)"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine(threads: int) -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpu_model": cpu_model(), "arch": platform.machine(), "cpu_count": os.cpu_count(),
            "threads": threads, "interop_threads": torch.get_num_interop_threads(), **math_libraries()}


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048, 3072, 4096), reps: int = 5) -> dict[str, Any]:
    """Best fp32 GEMM GFLOP/s over square ``sizes`` × ``reps`` (one warm-up each), with the
    spread: the best size's median and worst repeat relative to its best."""
    per_size: dict[str, dict[str, float]] = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        rates = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
        per_size[str(n)] = {"best": max(rates), "median": statistics.median(rates), "worst": min(rates)}
    best_n = max(per_size, key=lambda k: per_size[k]["best"])
    best = per_size[best_n]
    return {"gflops": best["best"], "size": int(best_n), "median_over_best": best["median"] / best["best"],
            "worst_over_best": best["worst"] / best["best"], "per_size": per_size,
            "load_average": os.getloadavg()}


# -- the model step --------------------------------------------------------------------------
def run_config(config: str, model: str, data: str, image_size: int, batch: int, steps: int, threads: int,
               overrides: list[str]) -> PretrainConfig:
    """The pretraining config the CLI would build (``configs/pretrain.yaml`` + overrides)."""
    cfg = load_config(PretrainConfig, config, overrides)
    cfg.model, cfg.data.path, cfg.data.image.size = model, data, image_size
    cfg.train.steps, cfg.train.batch_size, cfg.train.threads = steps, batch, threads
    cfg.train.checkpoint_every, cfg.train.val_every = 0, 0
    cfg.train.val_fraction, cfg.train.val_max, cfg.train.log_every = 0.05, 200, 10
    cfg.progress, cfg.resume = False, "never"
    return cfg


def _times(step: Callable[[], Any], warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def make_step(cfg: PretrainConfig, ds: SurveyDataset, batch: dict[str, torch.Tensor],
              rt: Runtime) -> tuple[Callable[[], None], PretrainModule]:
    """One training step of the module ``run_pretrain`` builds (objective + backward + clipping +
    AdamW/LR step) on a fixed batch, augmentation off, with the speed options ``rt``."""
    mcfg = resolve_model_config(cfg, ds.n_bands, cfg.data.image.size, ds.spectrum_length)
    morph = load_morph_targets(cfg, ds, np.arange(len(ds)), True)
    loss_cfg = resolve_losses(cfg, True, True, morph is not None)
    module = build_module(cfg, mcfg, loss_cfg, rt, ds.label_names, morph=morph).train()
    module.aug_cfg = NO_AUGMENT
    opt_cfg = module.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        loss, _ = module.compute_loss(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        opt.step()
        sched.step()

    return step, module


def bare_step(cfg: PretrainConfig, ds: SurveyDataset, batch: dict[str, torch.Tensor], steps: int,
              warmup: int) -> dict[str, Any]:
    """Time the module's own step (objective + backward + clipping + AdamW) without augmentation,
    data loading or Lightning."""
    rt = run_runtime(cfg)
    # FLOPs on an uncompiled twin: compiled kernels bypass the counter; the arithmetic is the same
    count, module = make_step(cfg, ds, batch, dataclasses.replace(rt, compile=False))
    count()
    with FlopCounterMode(display=False) as fc:
        count()
    flops = fc.get_total_flops()
    terms = ["clip"] + (["morph"] if module.morph is not None else [])
    del count, module
    torch._dynamo.reset()  # each timed model compiles afresh (no stale guards or cache limits)
    step, module = make_step(cfg, ds, batch, rt)
    t = time.perf_counter()
    step()  # first call: lazy init, optimiser state, compilation (reported apart)
    first = time.perf_counter() - t
    times = _times(step, warmup, steps)
    n = batch["image"].shape[0]
    med, mean = statistics.median(times), statistics.fmean(times)
    return {"includes": f"forward (both towers) + objective ({' + '.join(terms)}) + backward + grad clip + "
                        "AdamW/LR step; no augmentation, data loading or Lightning",
            "runtime": dataclasses.asdict(rt), "batch": n, "first_step_seconds": first,
            "step_seconds_median": med, "step_seconds_mean": mean, "step_seconds_min": min(times),
            "objects_per_second": n / med, "objects_per_second_mean": n / mean, "flops_per_step": flops,
            "gflops_per_second": flops / med / 1e9, "n_parameters": sum(p.numel() for p in module.parameters())}


STUDY = {"eager": Runtime(), "channels_last": Runtime(channels_last=True), "fused_adamw": Runtime(fused_adamw=True),
         "compile": Runtime(compile=True)}


def runtime_study(cfg: PretrainConfig, ds: SurveyDataset, batch: dict[str, torch.Tensor], rounds: int) -> dict[str, Any]:
    """Each speed option alone and the preset's choice, against plain eager, side by side: one
    step of each variant per round, the order reversed every other round, and the speed-up
    taken per round (paired) before the median, so load that comes and goes hits all alike."""
    variants = dict(STUDY, preset=run_runtime(cfg))
    torch._dynamo.reset()
    steps = {name: make_step(cfg, ds, batch, rt)[0] for name, rt in variants.items()}
    for step in steps.values():  # compile + warm up
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t)
    return {name: {"runtime": dataclasses.asdict(variants[name]), "step_seconds_median": statistics.median(times[name]),
                   "speedup_over_eager": statistics.median(e / t for e, t in zip(times["eager"], times[name]))}
            for name in names} | {"rounds": rounds}


def augment_cost(cfg: PretrainConfig, batch: dict[str, torch.Tensor], steps: int) -> dict[str, Any]:
    """Seconds per batch of the training augmentations (image, spectrum, flux scale)."""
    gen = torch.Generator().manual_seed(0)
    a = cfg.augment

    def step() -> None:
        augment_images(batch["image"], batch["image_ivar"], a, gen)
        augment_spectra(batch["spectrum"], batch["spectrum_ivar"], a, gen)
        augment_scale(batch["spectrum_scale"], a, gen)

    times = _times(step, 2, steps)
    return {"config": dataclasses.asdict(a), "seconds_median": statistics.median(times)}


def full_pipeline(cfg: PretrainConfig, out: Path) -> dict[str, Any]:
    """``run_pretrain`` as a user runs it; its steady-state throughput."""
    cfg = dataclasses.replace(cfg, out=str(out))
    torch._dynamo.reset()
    t = time.perf_counter()
    m = run_pretrain(cfg)
    return {"objects_per_second": m["objects_per_second"], "pairs_per_second": m["pairs_per_second"],
            "train_seconds": m["train_seconds"], "steps": m["steps"], "runtime": m["runtime"],
            "data_wait_fraction": m["data_wait_fraction"], "wall_seconds_incl_cache_and_val": time.perf_counter() - t}


def measure(args: argparse.Namespace, ds: SurveyDataset, batch: dict[str, torch.Tensor],
            study: int = 0) -> dict[str, Any]:
    """One full measurement: peak, every model (bare, augment, full[, option study]), peak again."""
    before = matmul_peak()
    models: dict[str, Any] = {}
    for name in args.models.split(","):
        cfg = run_config(args.config, name, args.data, args.image_size, args.batch, args.steps, args.threads,
                         args.override)
        bare = bare_step(cfg, ds, batch, args.steps, args.warmup)
        aug = augment_cost(cfg, batch, max(5, args.steps // 4))
        with tempfile.TemporaryDirectory() as tmp:
            full = full_pipeline(cfg, Path(tmp))
        models[name] = {"bare": bare, "augment": aug, "full": full,
                        "full_over_bare": full["objects_per_second"] / bare["objects_per_second_mean"],
                        "augment_over_bare_step": aug["seconds_median"] / bare["step_seconds_median"]}
        if study:
            models[name]["runtime_study"] = runtime_study(cfg, ds, batch, study)
        print(json.dumps({name: models[name]}, indent=1), flush=True)
    after = matmul_peak()
    peak = max(before["gflops"], after["gflops"])
    for m in models.values():
        m["step_fraction_of_matmul_peak"] = m["bare"]["gflops_per_second"] / peak
    return {"matmul_peak_gflops": peak, "matmul_peak_before": before, "matmul_peak_after": after,
            "peak_after_over_before": after["gflops"] / before["gflops"], "models": models}


def agreement(runs: list[dict[str, Any]], tolerance: float = 0.15) -> dict[str, Any]:
    """Per model and ratio: smallest over largest value across the repeats (1 = identical)."""
    out: dict[str, Any] = {}
    for name in runs[0]["models"]:
        for key in ("step_fraction_of_matmul_peak", "full_over_bare"):
            vals = [r["models"][name][key] for r in runs]
            out[f"{name}/{key}"] = min(vals) / max(vals)
    out["all_within_tolerance"] = all(v >= 1 - tolerance for v in out.values())
    out["tolerance"] = tolerance
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/sim3k")
    ap.add_argument("--config", default=str(ROOT / "configs" / "pretrain.yaml"),
                    help="pretraining config (augmentations, losses, optimiser) of both bare and full")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--models", default="small-cnn,compact,small")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per model, bare and full")
    ap.add_argument("--warmup", type=int, default=5, help="untimed bare steps after the first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="run the whole measurement N times (agreement recorded)")
    ap.add_argument("--study", type=int, default=0, metavar="ROUNDS",
                    help="also time each speed option (channels-last, fused AdamW, compile) against eager, "
                         "interleaved, for ROUNDS steps each (0 = off)")
    ap.add_argument("--override", nargs="*", default=[], help="dotted config overrides, e.g. train.compile=false")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = run_config(args.config, "tiny", args.data, args.image_size, args.batch, args.steps, args.threads,
                     args.override)
    ds = SurveyDataset(cfg.data)
    batch = load_tensors(ds.subset(range(args.batch)), progress=False)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads, "batch": args.batch,
        "steps": args.steps, "data": args.data, "n_rows": len(ds), "config": args.config,
        "overrides": args.override, "machine": machine(args.threads), "load_average_start": os.getloadavg()}
    runs = [measure(args, ds, batch, args.study if i == 0 else 0) for i in range(max(1, args.repeat))]
    results.update(runs[0])  # the first run's figures at the top level
    if len(runs) > 1:
        results["repeats"] = runs
        results["agreement"] = agreement(runs)
    results["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("matmul_peak_gflops", "agreement") if k in results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
