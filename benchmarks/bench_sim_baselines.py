"""How hard is the default simulated survey? Classic baselines + simulation speed.

Measures, on a default-settings survey (``configs/simulate.yaml`` values):

1. the Gini–M20 merger criterion of Lotz et al. (2008), G > -0.14 M20 + 0.33, on the
   r-band morphology measured by statmorph (galclip.data.morphology) of the first
   ``--n-morph`` galaxies;
2. a logistic regression on gini / m20 / asymmetry / concentration (5-fold CV);
3. a small supervised CNN trained on 1,000 labelled images, evaluated on held-out galaxies;
4. the simulation rate (galaxies/s, wall clock with 2 processes, and CPU s/galaxy) and the
   cost of the derived tabular measurements (line fluxes/D4000 and morphology).

Targets (issue 3): Gini–M20 balanced accuracy ~0.60–0.75; the CNN well below perfect.
Writes ``benchmarks/results/sim_baselines.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sim_baselines.py --n 2400
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def simulate(out: Path, n: int, n_jobs: int, **kw) -> float:
    from galclip.data.sim.survey import SimulateConfig, run_simulate

    cfg = SimulateConfig(out=str(out), n=n, n_jobs=n_jobs, progress=False, **kw)
    t0 = time.perf_counter()
    run_simulate(cfg)
    return time.perf_counter() - t0


def speed(tmp: Path, n: int) -> dict:
    """Wall-clock rate with 2 processes and CPU cost per galaxy of each part."""
    from galclip.data.morphology import measure_morphology
    from galclip.data.preprocess import log_grid
    from galclip.data.sim.measure import measure_lines
    from galclip.data.sim.survey import SimulateConfig, simulate_rows

    wall = simulate(tmp / "speed", n, 2, derived=True, morphology=False)
    cfg = SimulateConfig(derived=False)
    simulate_rows(cfg, 10**7, 10**7 + 20)  # warm GalSim caches
    t = time.process_time()
    rows = simulate_rows(cfg, 0, 60)
    cpu_sim = (time.process_time() - t) / 60
    wave = log_grid(3800, 9200, 3840)
    t = time.process_time()
    for r in rows:
        measure_lines(wave, r["spectrum_flux"], r["spectrum_ivar"], r["z"])
    cpu_lines = (time.process_time() - t) / len(rows)
    t = time.process_time()
    for r in rows[:30]:
        measure_morphology(r["image_array"][1], r["image_ivar"][1])
    cpu_morph = (time.process_time() - t) / 30
    return {"n_wall": n, "wall_s_2jobs_no_morphology": wall, "gal_per_s_2jobs_no_morphology": n / wall,
            "cpu_s_per_galaxy_simulation": cpu_sim, "cpu_s_per_galaxy_lines_d4000": cpu_lines,
            "cpu_s_per_galaxy_morphology": cpu_morph,
            "projected_10k_minutes_2cores_no_morphology": 10000 * (cpu_sim + cpu_lines) / 2 / 60,
            "projected_10k_minutes_2cores_with_morphology": 10000 * (cpu_sim + cpu_lines + cpu_morph) / 2 / 60,
            "load_average": os.getloadavg()[0]}


def r_band_cutouts(ds_path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw r-band images and ivars (nanomaggies) of the first ``n`` galaxies."""
    import h5py

    from galclip.data.shards import read_manifest

    man = read_manifest(ds_path)
    b = man.bands.index("r")
    imgs, ivs = [], []
    for sh in man.shards:
        with h5py.File(ds_path / sh.path, "r") as h5:
            imgs.append(h5["image_array"][:, b])
            ivs.append(h5["image_ivar"][:, b])
    return np.concatenate(imgs)[:n], np.concatenate(ivs)[:n]


def morphology_baselines(ds_path: Path, n_morph: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from galclip.data.dataset import SurveyDataset
    from galclip.data.morphology import MorphologyOptions, morphology_table

    ds = SurveyDataset(ds_path)
    n = min(n_morph, len(ds))
    y = ds.column("merger").astype(int)[:n]
    stage = ds.column("merger_stage").astype(int)[:n]
    imgs, ivs = r_band_cutouts(ds_path, n)
    t0 = time.perf_counter()
    tab = morphology_table(imgs, ivs, n_jobs=2, progress=False)
    col = {k: tab[:, i] for i, k in enumerate(MorphologyOptions().columns())}
    g, m20, a, c = col["gini"], col["m20"], col["asymmetry"], col["concentration"]
    ok = np.isfinite(g) & np.isfinite(m20)
    pred = ok & (g > -0.14 * m20 + 0.33)
    res = {"n_morphology": int(n), "morphology_wall_s_2jobs": time.perf_counter() - t0,
           "merger_fraction": float(y.mean()), "morph_failed_fraction": float(1 - ok.mean()),
           "gini_m20_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
           "gini_m20_balanced_accuracy_measured_only": float(balanced_accuracy_score(y[ok], pred[ok])),
           "gini_m20_flagged_fraction_by_stage": {int(s): float(pred[stage == s].mean()) for s in range(5)}}
    X = np.column_stack([g, m20, a, c])
    good = np.isfinite(X).all(1)
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(clf, X[good], y[good], cv=cv, method="predict_proba")[:, 1]
    res["logreg_gmac_balanced_accuracy"] = float(balanced_accuracy_score(y[good], p > 0.5))
    res["logreg_gmac_auc"] = float(roc_auc_score(y[good], p))
    return res


def cnn_baseline(ds_path: Path, n_train: int, epochs: int, seed: int = 0) -> dict:
    import torch
    import torch.nn as nn
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from galclip.data.dataset import SurveyDataset
    from galclip.data.preprocess import arcsinh_stretch

    torch.manual_seed(seed)
    ds = SurveyDataset(ds_path)
    y = ds.column("merger").astype(np.float32)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    x = arcsinh_stretch(x)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(ds))
    tr, te = idx[:n_train], idx[n_train:]
    net = nn.Sequential(
        nn.Conv2d(x.shape[1], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * ((len(tr) + 63) // 64))
    ytr = torch.from_numpy(y[tr])
    pos_w = (1 - ytr.mean()) / ytr.mean().clamp_min(1e-3)
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_w)
    xtr = x[tr]
    t0 = time.perf_counter()
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(tr))
        for k in range(0, len(tr), 64):
            b = perm[k:k + 64]
            xb = xtr[b]
            if torch.rand(()) < 0.5:
                xb = xb.flip(-1)
            xb = torch.rot90(xb, int(torch.randint(0, 4, ())), dims=(-2, -1))
            loss = lossf(net(xb).squeeze(1), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(net(x[te][k:k + 256]).squeeze(1)) for k in range(0, len(te), 256)]).numpy()
    stage = ds.column("merger_stage").astype(int)[te]
    return {"cnn_n_train": int(n_train), "cnn_n_test": int(len(te)), "cnn_epochs": epochs,
            "cnn_train_s": time.perf_counter() - t0,
            "cnn_balanced_accuracy": float(balanced_accuracy_score(y[te], p > 0.5)),
            "cnn_auc": float(roc_auc_score(y[te], p)),
            "cnn_recall_by_stage": {int(s): float((p[stage == s] > 0.5).mean()) for s in range(5)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2400, help="galaxies in the evaluation survey")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-morph", type=int, default=1200, help="galaxies measured with statmorph")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_sim_baselines")
    ap.add_argument("--difficulty", type=float, default=1.0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sim_baselines.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from galclip.utils.io import atomic_write_json

    ds_path = args.work / f"survey_n{args.n}_d{args.difficulty:g}"
    t = simulate(ds_path, args.n, 2, derived=True, morphology=False, difficulty=args.difficulty)
    res: dict = {"command": " ".join(sys.argv), "dataset": str(ds_path), "n": args.n, "difficulty": args.difficulty,
                 "simulate_wall_s_2jobs": t}
    res.update(morphology_baselines(ds_path, args.n_morph))
    print(json.dumps(res, indent=1), flush=True)
    res.update(cnn_baseline(ds_path, args.n_train, args.epochs))
    if not args.skip_speed:
        res["speed"] = speed(args.work, 400)
    print(json.dumps(res, indent=1))
    atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
