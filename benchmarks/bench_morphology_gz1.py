"""Classical morphology + logistic regression on real Galaxy Zoo 1 mergers (gz1_dev), by stamp recipe.

    .venv/bin/python benchmarks/bench_morphology_gz1.py [--variants old,native_bin3,...] [--seeds 20]

Each variant ingests ``../shared/data/gz1_dev`` with ``configs/ingest_gz1.yaml`` plus its own
``morphology_options`` (so the product path is what is measured), then scores galclip's
``morphology_lr`` baseline (class-balanced L2 logistic regression, C = 0.3, as
``galclip evaluate``) on the stored ``morph_*`` columns.

Fixed split, documented: the 440 rows in object-id order; for seed s in 0..S-1,
``numpy.random.default_rng(s)`` permutes the 40 merger and the 400 non-merger indices; the
first n of each train (n+n labels), every other galaxy is the test set (40-n mergers).
Also reported: zero-label ROC AUC of each statistic alone (asymmetry etc.).

Writes ``benchmarks/results/morphology_gz1.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.config import load_config  # noqa: E402
from galclip.data.dataset import SurveyDataset  # noqa: E402
from galclip.data.ingest import IngestConfig, run_ingest  # noqa: E402
from galclip.finetune.baselines import morphology_lr  # noqa: E402

#: name → morphology_options overrides.
VARIANTS: dict[str, dict] = {
    "r_crop192_bin4_48px": {"band": "r", "crop": "192px", "size": 48},
    "r_crop192_bin3_64px": {"band": "r", "crop": "192px", "size": 64},
    "r_crop192_bin2_96px": {"band": "r", "crop": "192px", "size": 96},
    "r_crop192_native": {"band": "r", "crop": "192px", "size": 0},
}
REFERENCE_15 = ("gini", "m20", "asymmetry", "concentration", "smoothness", "gini_m20_merger", "gini_m20_bulge",
                "shape_asymmetry", "outer_asymmetry", "multimode", "intensity", "deviation", "rpetro_circ",
                "ellipticity_asymmetry", "sn_per_pixel")


def ingest_variant(name: str, out: Path, n_jobs: int) -> tuple[SurveyDataset, float]:
    overrides = [f"out={out}", "progress=false", "overwrite=true", f"morphology_n_jobs={n_jobs}",
                 f"images=[{ROOT.parent / 'shared/data/gz1_dev/images'}]",
                 f"labels.path={ROOT.parent / 'shared/data/gz1_dev/labels.csv'}"]
    overrides += [f"morphology_options.{k}={v if v != '' else chr(39) * 2}" for k, v in VARIANTS[name].items()]
    cfg = load_config(IngestConfig, ROOT / "configs/ingest_gz1.yaml", overrides)
    t0 = time.perf_counter()
    run_ingest(cfg)
    return SurveyDataset(str(out)), time.perf_counter() - t0


_OLD_INGEST = """
import sys
from galclip.config import load_config
from galclip.data.ingest import IngestConfig, run_ingest
cfg = load_config(IngestConfig, "configs/ingest_gz1.yaml", sys.argv[1:])
run_ingest(cfg)
"""


def ingest_old(tree: Path, out: Path) -> tuple[SurveyDataset, float]:
    """The previous recipe, run from a checkout of it (``git worktree add TREE f0a46ca``):
    the whole 423-px field area-resampled to 64 px, band-summed, whole-image sky."""
    import subprocess

    data = ROOT.parent / "shared/data/gz1_dev"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", _OLD_INGEST, f"out={out}", "progress=false", f"images=[{data / 'images'}]",
                    f"labels.path={data / 'labels.csv'}"], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                   check=True)
    return SurveyDataset(str(out)), time.perf_counter() - t0


def score(x: np.ndarray, y: np.ndarray, n: int, seeds: int) -> dict:
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs, baccs = [], []
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    for s in range(seeds):
        rng = np.random.default_rng(s)
        p, q = rng.permutation(pos), rng.permutation(neg)
        tr = np.r_[p[:n], q[:n]]
        te = np.setdiff1d(np.arange(len(y)), tr)
        prob, thr = morphology_lr(x[tr], y[tr], x[te], c=0.3, folds=3, seed=s)
        aucs.append(roc_auc_score(y[te], prob))
        baccs.append(balanced_accuracy_score(y[te], prob >= thr))
    return {"roc_auc_mean": float(np.mean(aucs)), "roc_auc_std": float(np.std(aucs)),
            "balanced_accuracy_mean": float(np.mean(baccs)), "n_seeds": seeds, "labels_per_class": n}


def standardise(x: np.ndarray) -> np.ndarray:
    """NaN → column median, then zero mean / unit variance (morphology_lr reads NaN as 0 = typical)."""
    med = np.nanmedian(x, 0)
    x = np.where(np.isfinite(x), x, med)
    return (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)


def evaluate(ds: SurveyDataset, seeds: int) -> dict:
    y = np.nan_to_num(ds.column("merger")).astype(int)
    names = [c for c in ds.tabular_names if c.startswith("morph_") and c != "morph_flag"]
    x = standardise(np.stack([ds.column(c).astype(np.float64) for c in names], 1))
    sets = {"all": names, "reference_15": [c for c in names if c.removeprefix("morph_") in REFERENCE_15]}
    out: dict = {"columns": names, "failed_rows": int(np.isnan(ds.column(names[0])).sum())}
    for label, cols in sets.items():
        idx = [names.index(c) for c in cols]
        out[label] = {str(n): score(x[:, idx], y, n, seeds) for n in (10, 20)}
    from sklearn.metrics import roc_auc_score

    single = {}
    for j, c in enumerate(names):
        a = roc_auc_score(y, x[:, j])
        single[c] = round(float(max(a, 1 - a)), 3)
    out["zero_label_auc_single_statistic"] = single
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--old-tree", default="", help="checkout of the previous recipe (commit f0a46ca) to measure it too")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/morphology_gz1.json"))
    args = ap.parse_args()
    if not (ROOT.parent / "shared/data/gz1_dev/labels.csv").exists():
        raise SystemExit("needs ../shared/data/gz1_dev")
    result: dict = {"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "variants": {}}
    prev = Path(args.out)
    if prev.exists():
        result["variants"] = json.loads(prev.read_text()).get("variants", {})
    with tempfile.TemporaryDirectory() as tmp:
        names = [n for n in args.variants.split(",") if n] + (["old_f0a46ca_64px_whole_field"] if args.old_tree else [])
        for name in names:
            load0 = os.getloadavg()[0]
            if name in VARIANTS:
                ds, secs = ingest_variant(name, Path(tmp) / name, args.n_jobs)
            else:
                ds, secs = ingest_old(Path(args.old_tree), Path(tmp) / name)
            res = {"morphology_options": VARIANTS.get(name, "configs/ingest_gz1.yaml at f0a46ca"),
                   "ingest_seconds": round(secs, 1),
                   "galaxies_per_s": round(len(ds) / secs, 2), "load_avg_1min_before": round(load0, 2),
                   **evaluate(ds, args.seeds)}
            result["variants"][name] = res
            print(f"{name}: AUC 10+10 {res['all']['10']['roc_auc_mean']:.3f}±{res['all']['10']['roc_auc_std']:.3f}, "
                  f"20+20 {res['all']['20']['roc_auc_mean']:.3f}±{res['all']['20']['roc_auc_std']:.3f} "
                  f"(15 reference stats: {res['reference_15']['10']['roc_auc_mean']:.3f} / "
                  f"{res['reference_15']['20']['roc_auc_mean']:.3f}); {res['galaxies_per_s']} gal/s", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
