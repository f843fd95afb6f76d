"""The measured ceiling of the simulated survey: classic baselines, a supervised CNN, spectra.

Measures, on one survey depth preset (``--survey deep`` by default, the demo preset;
``galclip.data.sim.calibration.SURVEY_PRESETS``), on a simulated survey of ``--n`` galaxies
(or an existing one given with ``--dataset``), all image/spectrum heads scored on the same
held-out galaxies (those after the first ``--n-train-ceiling`` of a seeded permutation):

1. the supervised ceiling: a timm ``resnet10t`` trained on ``--n-train-ceiling`` (10,000)
   labelled images (galclip's noise-unit preprocessing + ``arcsinh_stretch``; flips + rot90
   augmentation, class-balanced BCE, AdamW + OneCycle), and the same CNN trained on
   ``--n-train`` (1,000) labels, so the few-label gap is visible. AUC, balanced accuracy,
   recall per merger stage (0 isolated, 1 projected pair, 2 major pre-merger, 3 minor,
   4 post-merger), wall times;
2. the Gini–M20 merger criterion of Lotz et al. (2008), G > -0.14 M20 + 0.33, and logistic
   regressions (5-fold CV) on gini / m20 / asymmetry / concentration and on every
   morphology statistic — the statmorph columns the survey stores (``morph_*``, simulated
   with ``--store-morphology``) when present, otherwise measured on the r band of the
   first ``--n-morph`` galaxies;
3. spectrum-only heads trained on the same ``--n-train`` labels: a logistic regression on
   the catalogue columns (line fluxes/EWs, D4000; ``SPECTRAL_COLUMNS``) and a small 1-D CNN
   on the preprocessed spectra;
4. (unless ``--skip-speed``) the simulation rate and the cost of the derived measurements.

Targets (issue 15, on ``deep``): ceiling AUC ≥ 0.90; Gini–M20 balanced accuracy ≤ 0.75;
spectrum-only heads clearly above chance (AUC 0.5) and below the image ceiling.
Writes ``benchmarks/results/sim_baselines_<survey>.json`` (command, versions, preset, timings).
The image CNNs run on ``--device`` (cpu by default, 2 torch threads; ``cuda`` if available).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_sim_baselines.py --survey deep --n 12500
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = range(5)


# -- data ------------------------------------------------------------------------------------

def simulate(out: Path, n: int, n_jobs: int, **kw: Any) -> float:
    """Simulate ``n`` galaxies into ``out`` (resumes an existing one); returns wall seconds."""
    from galclip.data.sim.survey import SimulateConfig, run_simulate

    cfg = SimulateConfig(out=str(out), n=n, n_jobs=n_jobs, progress=False, **kw)
    t0 = time.perf_counter()
    run_simulate(cfg)
    return time.perf_counter() - t0


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


def stretched_images(ds_path: Path) -> torch.Tensor:
    """All bands of every galaxy, as ``arcsinh_stretch(SurveyDataset(ds_path)[i]["image"])``.

    Reads the shards in bulk and applies the dataset's own ``prepare_image`` per row, which
    is much faster than indexing the dataset (that also reads and prepares the spectrum).
    """
    import h5py
    import torch

    from galclip.data import schema as S
    from galclip.data.dataset import SurveyDataset
    from galclip.data.preprocess import arcsinh_stretch, prepare_image

    ds = SurveyDataset(ds_path)
    prep = ds.cfg.image
    out = torch.zeros((len(ds), ds.n_bands, prep.size, prep.size))
    k = 0
    for sh in ds.manifest.shards:
        with h5py.File(ds_path / sh.path, "r") as h5:
            img, iv, has = h5[S.IMAGE][()], h5[S.IMAGE_IVAR][()], h5[S.HAS_IMAGE][()]
            scale = h5[S.IMAGE_SCALE][()] if S.IMAGE_SCALE in h5 else np.full(len(img), np.nan)
        for j in range(len(img)):
            if has[j]:
                out[k + j] = torch.from_numpy(prepare_image(img[j], iv[j], prep, float(scale[j]))[0])
        k += len(img)
    return arcsinh_stretch(out, prep.softening, prep.clip)


def images_match_dataset(ds_path: Path, x: torch.Tensor, n_check: int = 8) -> bool:
    """Whether the bulk-loaded images equal the dataset items' images for a few rows."""
    import torch

    from galclip.data.dataset import SurveyDataset
    from galclip.data.preprocess import arcsinh_stretch

    ds = SurveyDataset(ds_path)
    rows = np.linspace(0, len(ds) - 1, min(n_check, len(ds))).astype(int)
    p = ds.cfg.image
    return all(torch.allclose(arcsinh_stretch(ds[int(i)]["image"], p.softening, p.clip), x[i], atol=1e-5)
               for i in rows)


def spectra(ds_path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed spectra ``SurveyDataset(ds_path)[i]["spectrum"]`` and their good-pixel masks."""
    from galclip.data.dataset import SurveyDataset

    ds = SurveyDataset(ds_path)
    items = [ds[int(i)] for i in rows]
    flux = np.stack([it["spectrum"].numpy() for it in items])
    good = np.stack([(it["spectrum_ivar"].numpy() > 0) for it in items]).astype(np.float32)
    return flux, good


def split(n: int, n_train: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation: the first ``n_train`` rows train, the rest are the held-out set."""
    if not 0 < n_train < n:
        raise SystemExit(f"need 0 < n-train-ceiling ({n_train}) < survey size ({n})")
    idx = np.random.default_rng(seed).permutation(n)
    return idx[:n_train], idx[n_train:]


# -- metrics ---------------------------------------------------------------------------------

def scores(y: np.ndarray, p: np.ndarray, stage: np.ndarray, prefix: str) -> dict[str, Any]:
    """AUC, balanced accuracy (threshold 0.5) and recall (flagged fraction) per merger stage."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    return {f"{prefix}_auc": float(roc_auc_score(y, p)),
            f"{prefix}_balanced_accuracy": float(balanced_accuracy_score(y, p > 0.5)),
            f"{prefix}_recall_by_stage": {int(s): float((p[stage == s] > 0.5).mean()) if (stage == s).any() else None
                                          for s in STAGES}}


def logreg_pipeline() -> Any:
    """Median imputation → standardisation → class-balanced logistic regression."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                         LogisticRegression(class_weight="balanced", max_iter=2000))


# -- morphology ------------------------------------------------------------------------------

def morphology_columns(ds_path: Path, n_morph: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Morphology statistics by name: stored ``morph_*`` columns if present, else measured."""
    from galclip.data.dataset import SurveyDataset
    from galclip.data.morphology import MorphologyOptions, morphology_table

    ds = SurveyDataset(ds_path)
    stored = [c for c in ds.tabular_names if c.startswith("morph_")]
    t0 = time.perf_counter()
    if {"morph_gini", "morph_m20"} <= set(stored):
        cols = {c[len("morph_"):]: ds.column(c).astype(np.float64) for c in stored}
        return cols, {"morphology_source": "stored morph_* columns", "n_morphology": len(ds),
                      "morphology_read_s": time.perf_counter() - t0}
    n = min(n_morph, len(ds))
    imgs, ivs = r_band_cutouts(ds_path, n)
    tab = morphology_table(imgs, ivs, n_jobs=2, progress=False)
    cols = {k: tab[:, i] for i, k in enumerate(MorphologyOptions().columns())}
    return cols, {"morphology_source": "measured (statmorph, r band)", "n_morphology": int(n),
                  "morphology_wall_s_2jobs": time.perf_counter() - t0}


def cv_logreg(X: np.ndarray, y: np.ndarray, stage: np.ndarray, prefix: str) -> dict[str, Any]:
    """5-fold cross-validated logistic regression scores."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if np.bincount(y, minlength=2).min() < 5:
        return {f"{prefix}_skipped": "fewer than 5 galaxies in a class"}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(logreg_pipeline(), X, y, cv=cv, method="predict_proba")[:, 1]
    return scores(y, p, stage, prefix)


def morphology_baselines(ds_path: Path, n_morph: int) -> dict[str, Any]:
    """Gini–M20 criterion and logistic regressions on the morphology statistics."""
    from sklearn.metrics import balanced_accuracy_score

    from galclip.data.dataset import SurveyDataset

    col, res = morphology_columns(ds_path, n_morph)
    ds = SurveyDataset(ds_path)
    n = res["n_morphology"]
    y = ds.column("merger").astype(int)[:n]
    stage = ds.column("merger_stage").astype(int)[:n]
    g, m20 = col["gini"], col["m20"]
    ok = np.isfinite(g) & np.isfinite(m20)
    pred = ok & (g > -0.14 * m20 + 0.33)
    res.update({"merger_fraction_morphology_sample": float(y.mean()), "morph_failed_fraction": float(1 - ok.mean()),
                "gini_m20_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
                "gini_m20_balanced_accuracy_measured_only": float(balanced_accuracy_score(y[ok], pred[ok])),
                "gini_m20_flagged_fraction_by_stage": {int(s): float(pred[stage == s].mean()) for s in STAGES}})
    X4 = np.column_stack([col[k] for k in ("gini", "m20", "asymmetry", "concentration")])
    good = np.isfinite(X4).all(1)
    res.update(cv_logreg(X4[good], y[good], stage[good], "logreg_gmac"))
    names = [k for k in col if np.isfinite(col[k]).any()]
    res["logreg_all_morph_columns"] = names
    res.update(cv_logreg(np.column_stack([col[k] for k in names]), y, stage, "logreg_all_morph"))
    return res


# -- image CNN -------------------------------------------------------------------------------

def augment(xb: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and rot90 of a batch (no crops)."""
    import torch

    if torch.rand(()) < 0.5:
        xb = xb.flip(-1)
    return torch.rot90(xb, int(torch.randint(0, 4, ())), dims=(-2, -1))


def fit_binary(net: torch.nn.Module, x: torch.Tensor, y: np.ndarray, epochs: int, batch: int, lr: float,
               device: str, aug: bool) -> float:
    """Class-balanced BCE (pos_weight), AdamW + OneCycle; returns train wall seconds."""
    import torch
    import torch.nn as nn

    net.to(device).train()
    yt = torch.from_numpy(y.astype(np.float32))
    pos_w = ((1 - yt.mean()) / yt.mean().clamp_min(1e-3)).to(device)
    lossf = nn.BCEWithLogitsLoss(pos_weight=pos_w)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for k in range(0, len(x), batch):
            b = perm[k:k + batch]
            if len(b) < 2:  # BatchNorm needs two samples
                sched.step()
                continue
            xb = x[b].to(device)
            xb = augment(xb) if aug else xb
            loss = lossf(net(xb).squeeze(1), yt[b].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def predict(net: torch.nn.Module, x: torch.Tensor, device: str, batch: int = 256) -> np.ndarray:
    """Sigmoid scores, batched, in eval mode."""
    import torch

    net.eval()
    with torch.no_grad():
        return torch.cat([torch.sigmoid(net(x[k:k + batch].to(device)).squeeze(1)).cpu()
                          for k in range(0, len(x), batch)]).numpy()


def image_cnn(x: torch.Tensor, y: np.ndarray, stage: np.ndarray, tr: np.ndarray, te: np.ndarray,
              epochs: int, batch: int, device: str, prefix: str, seed: int = 0) -> dict[str, Any]:
    """timm resnet10t on the stretched images: train on ``tr``, score on ``te``."""
    import timm
    import torch

    torch.manual_seed(seed)
    net = timm.create_model("resnet10t", pretrained=False, in_chans=x.shape[1], num_classes=1)
    t = fit_binary(net, x[tr], y[tr], epochs, batch, 2e-3, device, aug=True)
    t0 = time.perf_counter()
    p = predict(net, x[te], device)
    res = {f"{prefix}_model": "timm resnet10t", f"{prefix}_n_train": int(len(tr)), f"{prefix}_n_test": int(len(te)),
           f"{prefix}_epochs": epochs, f"{prefix}_batch": batch, f"{prefix}_device": device,
           f"{prefix}_train_s": t, f"{prefix}_predict_s": time.perf_counter() - t0}
    res.update(scores(y[te], p, stage[te], prefix))
    return res


# -- spectra ---------------------------------------------------------------------------------

def spectral_logreg(ds_path: Path, y: np.ndarray, stage: np.ndarray, tr: np.ndarray, te: np.ndarray) -> dict[str, Any]:
    """Logistic regression on the stored spectral catalogue columns (NaN imputed, standardised)."""
    from galclip.data.dataset import SurveyDataset
    from galclip.data.sim.measure import SPECTRAL_COLUMNS

    ds = SurveyDataset(ds_path)
    names = [c for c in SPECTRAL_COLUMNS if c in ds.tabular_names]
    if not names:
        return {"spec_logreg_skipped": "survey stores no spectral catalogue columns (simulated with derived=false)"}
    X = np.column_stack([ds.column(c).astype(np.float64) for c in names])
    t0 = time.perf_counter()
    clf = logreg_pipeline().fit(X[tr], y[tr])
    res: dict[str, Any] = {"spec_logreg_columns": names, "spec_logreg_n_train": int(len(tr)),
                           "spec_logreg_nan_fraction": float(np.isnan(X).mean()),
                           "spec_logreg_fit_s": time.perf_counter() - t0}
    res.update(scores(y[te], clf.predict_proba(X[te])[:, 1], stage[te], "spec_logreg"))
    return res


def spectrum_net(n_in: int) -> torch.nn.Module:
    """Small 1-D CNN on (flux, good-pixel mask)."""
    import torch.nn as nn

    def block(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv1d(a, b, 7, padding=3), nn.BatchNorm1d(b), nn.GELU(), nn.MaxPool1d(4)]

    return nn.Sequential(nn.AvgPool1d(2), *block(n_in, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 1))


def spectral_cnn(ds_path: Path, y: np.ndarray, stage: np.ndarray, tr: np.ndarray, te: np.ndarray,
                 epochs: int, device: str, seed: int = 0) -> dict[str, Any]:
    """1-D CNN on ``SurveyDataset[i]["spectrum"]``, trained on ``tr``, scored on ``te``."""
    import torch

    t0 = time.perf_counter()
    flux, good = spectra(ds_path, np.concatenate([tr, te]))
    x = torch.from_numpy(np.stack([flux, good], 1).astype(np.float32))
    load = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = spectrum_net(2)
    t = fit_binary(net, x[:len(tr)], y[tr], epochs, 64, 3e-3, device, aug=False)
    res: dict[str, Any] = {"spec_cnn_n_train": int(len(tr)), "spec_cnn_epochs": epochs,
                           "spec_cnn_length": int(x.shape[-1]),
                           "spec_cnn_load_s": load, "spec_cnn_train_s": t}
    res.update(scores(y[te], predict(net, x[len(tr):], device), stage[te], "spec_cnn"))
    return res


# -- speed -----------------------------------------------------------------------------------

def speed(tmp: Path, n: int, survey: str) -> dict[str, Any]:
    """Wall-clock rate with 2 processes and CPU cost per galaxy of each part."""
    from galclip.data.morphology import measure_morphology
    from galclip.data.preprocess import log_grid
    from galclip.data.sim.measure import measure_lines
    from galclip.data.sim.survey import SimulateConfig, simulate_rows

    wall = simulate(tmp / f"speed_{survey}", n, 2, survey=survey, derived=True, morphology=False)
    cfg = SimulateConfig(survey=survey, derived=False)
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


# -- run -------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers, and the git commit."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("galclip", "torch", "timm", "scikit-learn", "statmorph", "galsim", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["git_commit"] = "unknown"
    return out


def survey_info(ds_path: Path) -> dict[str, Any]:
    """The simulation settings recorded in the dataset's manifest, and its preset."""
    from galclip.data.shards import read_manifest
    from galclip.data.sim.calibration import SURVEY_PRESETS

    sim = read_manifest(ds_path).provenance.get("sim_config", {})
    survey = sim.get("survey", "sdss")
    return {"survey": survey, "preset": SURVEY_PRESETS.get(survey), "sim_config": sim}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--survey", choices=["sdss", "deep"], default="deep", help="survey depth preset")
    ap.add_argument("--n", type=int, default=12500, help="galaxies in the evaluation survey")
    ap.add_argument("--n-train-ceiling", type=int, default=10000, help="labels for the supervised ceiling")
    ap.add_argument("--n-train", type=int, default=1000, help="labels for the few-label image CNN and spectrum heads")
    ap.add_argument("--n-morph", type=int, default=1200, help="galaxies measured with statmorph (if not stored)")
    ap.add_argument("--ceiling-epochs", type=int, default=6)
    ap.add_argument("--few-label-epochs", type=int, default=30, help="epochs of the CNN at --n-train labels")
    ap.add_argument("--spec-epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--difficulty", type=float, default=1.0)
    ap.add_argument("--store-morphology", action="store_true",
                    help="simulate with morphology=True (statmorph of every galaxy; ~0.2 CPU-s each)")
    ap.add_argument("--dataset", type=Path, default=None, help="reuse an existing simulated survey")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_sim_baselines")
    ap.add_argument("--device", default="cpu", help="torch device for the CNNs (cpu, cuda)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-ceiling", action="store_true", help="skip the --n-train-ceiling CNN")
    ap.add_argument("--skip-spec-cnn", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/sim_baselines_<survey>.json")
    return ap.parse_args(argv)


def prepare_dataset(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The survey to evaluate: ``--dataset`` as is, or a simulated one under ``--work``."""
    if args.dataset is not None:
        return args.dataset, {"simulated_here": False}
    tag = f"survey_{args.survey}_n{args.n}_d{args.difficulty:g}" + ("_morph" if args.store_morphology else "")
    from galclip.data import schema as S

    ds_path = args.work / tag
    existed = (ds_path / S.MANIFEST_NAME).exists()
    t = simulate(ds_path, args.n, 2, survey=args.survey, derived=True, morphology=args.store_morphology,
                 difficulty=args.difficulty)
    # a survey already under --work is resumed/reused: the wall time then is not the simulation's
    return ds_path, {"simulated_here": True, "simulate_resumed_existing": existed, "simulate_wall_s_2jobs": t}


def image_heads(args: argparse.Namespace, ds_path: Path, y: np.ndarray, stage: np.ndarray,
                tr: np.ndarray, te: np.ndarray) -> dict[str, Any]:
    """Load the images once; the CNN at ``--n-train`` labels and (unless skipped) the ceiling."""
    t0 = time.perf_counter()
    x = stretched_images(ds_path)
    res: dict[str, Any] = {"image_load_s": time.perf_counter() - t0, "image_shape": list(x.shape[1:]),
                           "image_loader_matches_dataset": images_match_dataset(ds_path, x)}
    res.update(image_cnn(x, y, stage, tr[:args.n_train], te, args.few_label_epochs, args.batch, args.device, "cnn_few"))
    print(json.dumps(res, indent=1), flush=True)
    if not args.skip_ceiling:
        res.update(image_cnn(x, y, stage, tr, te, args.ceiling_epochs, args.batch, args.device, "cnn_ceiling"))
    return res


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(2)
    from galclip.data.dataset import SurveyDataset
    from galclip.utils.io import atomic_write_json

    t_start = time.perf_counter()
    ds_path, res = prepare_dataset(args)
    info = survey_info(ds_path)
    out = args.out or ROOT / "benchmarks" / "results" / f"sim_baselines_{info['survey']}.json"
    ds = SurveyDataset(ds_path)
    y = ds.column("merger").astype(int)
    stage = ds.column("merger_stage").astype(int)
    tr, te = split(len(ds), args.n_train_ceiling)
    if args.n_train > len(tr):
        print(f"--n-train {args.n_train} > --n-train-ceiling {len(tr)}: using {len(tr)}", file=sys.stderr)
        args.n_train = len(tr)
    res.update({"command": " ".join([Path(sys.executable).name] + sys.argv), "versions": versions(),
                "dataset": str(ds_path), "n": len(ds), "n_test": int(len(te)), "merger_fraction": float(y.mean()),
                "n_by_stage": {int(s): int((stage == s).sum()) for s in STAGES},
                "torch_threads": torch.get_num_threads(), **info,
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})
    res.update(morphology_baselines(ds_path, args.n_morph))
    res.update(spectral_logreg(ds_path, y, stage, tr[:args.n_train], te))
    if not args.skip_spec_cnn:
        res.update(spectral_cnn(ds_path, y, stage, tr[:args.n_train], te, args.spec_epochs, args.device))
    print(json.dumps(res, indent=1, default=str), flush=True)
    res.update(image_heads(args, ds_path, y, stage, tr, te))
    if not args.skip_speed:
        res["speed"] = speed(args.work, 400, info["survey"])
    res["total_wall_s"] = time.perf_counter() - t_start
    print(json.dumps(res, indent=1, default=str))
    atomic_write_json(out, res)


if __name__ == "__main__":
    main()
