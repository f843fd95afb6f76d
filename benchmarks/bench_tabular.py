"""Tabular-only merger classification from few labels vs the morphology logistic regression.

Question: an astronomer holds only catalogue measurements (line fluxes/EWs, D4000, ...)
and image morphology statistics (Gini, M20, asymmetry, ...) for a survey plus a handful
of merger labels. How well does the FT-Transformer tabular encoder do, and does it beat
the classical baseline (logistic regression on the morphology statistics)?

Methods (all see only the tabular columns; preprocessing is fitted without labels on the
non-test rows):

* ``morph_lr_std`` the classical baseline as usually run: sklearn median imputation +
  StandardScaler + logistic regression on the morphology columns
* ``morph_lr``  the same regression on the morphology columns after galclip's
  :class:`TabularPreprocessor` (robust scaling, auto log/asinh, clipping)
* ``tab_lr``    logistic regression on all tabular columns (galclip preprocessing)
* ``ft``        :class:`galclip.models.tabular.TabularEncoder` + linear head trained on the labels
* ``ft_scarf``  the same encoder first pretrained without labels on all non-test rows
  (SCARF: random-feature-corruption views + NT-Xent from lightly), then a logistic
  regression on its frozen [CLS] features
* ``ft_clip``   the encoder as GalClip's second tower (``spectrum.kind: tabular``),
  pretrained contrastively against the *images* of the non-test rows (CLIP loss of
  ``galclip.pretrain.losses``), then a logistic regression on its frozen features: does
  image supervision make the catalogue encoder better at finding mergers? (one
  pretraining per scenario, ``--clip-steps 0`` skips it)

Each at several label budgets × seeds, also with 30 % of all tabular entries removed at
random (``missing30``: the baselines impute the median, the encoder uses its learned
missing tokens). Metrics on a fixed held-out test split: ROC AUC and average precision.

Run (CPU, a few minutes)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tabular.py --n 1500
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tabular.py --data path/to/dataset

Writes ``benchmarks/results/tabular.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import average_precision_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.data.dataset import SurveyDataset  # noqa: E402
from galclip.data.morphology import MORPH_COLUMNS, MID_COLUMNS, SERSIC_COLUMNS  # noqa: E402
from galclip.data.tabular import TabularPrepConfig, TabularPreprocessor, dataset_table  # noqa: E402
from galclip.models.tabular import TabularEncoder  # noqa: E402
from galclip.pretrain.scarf import scarf_pretrain  # noqa: E402
from galclip.utils.io import atomic_write_json  # noqa: E402

MORPH = set(MORPH_COLUMNS) | set(MID_COLUMNS) | set(SERSIC_COLUMNS)


def get_dataset(args: argparse.Namespace) -> Path:
    if args.data:
        return Path(args.data)
    out = ROOT / "runs" / "bench_cache" / f"sim_tabular_n{args.n}_s{args.sim_seed}"  # runs/ is git-ignored
    if not (out / "manifest.json").exists():
        from galclip.config import load_config
        from galclip.data.sim.survey import SimulateConfig, run_simulate

        cfg = load_config(SimulateConfig, None, [f"n={args.n}", f"out={out}", f"seed={args.sim_seed}",
                                                 "derived=true", "morphology=true"])  # the baseline needs morphology
        run_simulate(cfg)
    return out


def morph_names(names: list[str]) -> list[str]:
    """Morphology statistics among the dataset's tabular columns (``gini`` or ``morph_gini``)."""
    out = []
    for c in names:
        base = c[6:] if c.startswith("morph_") else c
        if base in MORPH and base != "flag":
            out.append(c)
    return out


def fit_lr(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, c: float = 1.0) -> np.ndarray:
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    clf.fit(np.nan_to_num(xtr), ytr)
    return clf.predict_proba(np.nan_to_num(xte))[:, 1]


def fit_lr_std(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray) -> np.ndarray:
    """Textbook baseline: median imputation + z-scoring + balanced logistic regression."""
    pipe = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    pipe.fit(xtr, ytr)
    return pipe.predict_proba(xte)[:, 1]


def train_ft(x: torch.Tensor, y: np.ndarray, columns: list[str], seed: int, steps: int = 150) -> TabularEncoder:
    torch.manual_seed(seed)
    enc = TabularEncoder(columns, dim=32, depth=2, heads=4, dropout=0.1)
    head = torch.nn.Linear(32, 1)
    enc.head = head  # kept with the encoder for prediction
    opt = torch.optim.AdamW([*enc.parameters()], lr=1e-3, weight_decay=1e-2)
    yt = torch.as_tensor(y, dtype=torch.float32)
    pos = float(yt.sum())
    pos_weight = torch.tensor((len(yt) - pos) / max(pos, 1.0))
    enc.train()
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(head(enc(x)).squeeze(-1), yt, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


@torch.no_grad()
def predict_ft(enc: TabularEncoder, x: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(enc.head(enc(x)).squeeze(-1)).numpy()


def scarf_encoder(x: torch.Tensor, columns: list[str], seed: int) -> TabularEncoder:
    """Encoder pretrained with the library's SCARF routine on unlabelled rows."""
    torch.manual_seed(seed)
    enc = TabularEncoder(columns, dim=32, depth=2, heads=4, dropout=0.1)
    scarf_pretrain(enc, x, epochs=30, batch_size=256, corrupt=0.4, seed=seed)
    return enc


def clip_pretrain(ds: SurveyDataset, rows: np.ndarray, x: torch.Tensor, raw: np.ndarray, names: list[str],
                  steps: int, batch: int = 128, seed: int = 0) -> torch.nn.Module:
    """Image ↔ catalogue CLIP pretraining of GalClip with the tabular second tower."""
    from galclip.models import build_model, get_model_config
    from galclip.models.tabular_tower import with_tabular_tower
    from galclip.pretrain.scarf import augment_tabular
    from galclip.pretrain.augment import AugmentConfig, augment_images
    from galclip.pretrain.data import load_tensors
    from galclip.pretrain.losses import clip_loss

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    base = get_model_config("tiny", n_bands=ds.n_bands, image_size=ds.cfg.image.size,
                            spectrum=dict(kind="tabular", width=32, depth=2, heads=4, dropout=0.1))
    cfg = with_tabular_tower(base, raw[rows], names)  # same prep config as the benchmark's
    model = build_model(cfg)
    tens = load_tensors(ds.subset(rows), progress=False)
    xt = x[rows]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    aug = AugmentConfig()
    model.train()
    for step in range(steps):
        b = torch.randperm(len(rows), generator=g)[:batch]  # distinct rows: no false negatives
        img, _ = augment_images(tens["image"][b], tens["image_ivar"][b], aug, g)
        zi = model.encode_image(img)
        zt = model.encode_spectrum(augment_tabular(xt[b], generator=g), None)
        loss = clip_loss(zi, zt, model.scale())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sample_labels(pool: np.ndarray, y: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """``budget`` labelled rows from ``pool`` with at least 2 of each class."""
    n_pos = int(y[pool].sum())
    if min(n_pos, len(pool) - n_pos) < 2 or budget > len(pool):
        raise SystemExit(f"cannot draw {budget} labels with 2 of each class from {len(pool)} rows ({n_pos} positive)")
    while True:
        pick = rng.choice(pool, size=budget, replace=False)
        if 2 <= y[pick].sum() <= budget - 2:
            return pick


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": float(roc_auc_score(y, p)), "ap": float(average_precision_score(y, p))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="existing galclip dataset (default: simulate one)")
    ap.add_argument("--n", type=int, default=1500, help="simulated galaxies")
    ap.add_argument("--sim-seed", type=int, default=0)
    ap.add_argument("--label", default="merger")
    ap.add_argument("--budgets", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-frac", type=float, default=0.4)
    ap.add_argument("--clip-steps", type=int, default=200, help="image-catalogue CLIP pretraining steps (0: skip)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tabular.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t_start = time.time()

    path = get_dataset(args)
    ds = SurveyDataset(path)
    raw, names = dataset_table(ds)
    y_all = np.asarray(ds.column(args.label), np.float64)
    keep = np.isfinite(y_all)
    raw, y_all = raw[keep], (y_all[keep] > 0.5).astype(int)
    morph = morph_names(names)
    if not morph:
        raise SystemExit(f"{path}: no morphology columns among tabular columns {names}")
    rng = np.random.default_rng(12345)
    idx = rng.permutation(len(y_all))
    n_test = int(args.test_frac * len(idx))
    test, pool = idx[:n_test], idx[n_test:]
    print(f"{path}: {len(y_all)} rows, merger fraction {y_all.mean():.3f}, {len(names)} tabular columns "
          f"({len(morph)} morphology), test {len(test)}, pool {len(pool)}")

    results: dict[str, dict] = {}
    for scenario in ("complete", "missing30"):
        x_raw = raw.copy()
        if scenario == "missing30":
            x_raw[np.random.default_rng(7).random(x_raw.shape) < 0.3] = np.nan
        frac_missing = float(np.mean(~np.isfinite(x_raw)))
        prep = TabularPreprocessor(TabularPrepConfig()).fit(x_raw[pool], names)  # no labels, no test rows
        x = prep.transform(x_raw, names)
        mcols = [names.index(c) for c in morph]
        xt = torch.from_numpy(x)
        methods = ["morph_lr_std", "morph_lr", "tab_lr", "ft", "ft_scarf"] + (["ft_clip"] if args.clip_steps > 0 else [])
        per: dict[str, dict[int, list[dict[str, float]]]] = {m: {b: [] for b in args.budgets} for m in methods}
        clip_feats = None
        if args.clip_steps > 0:
            t0 = time.time()
            clip_model = clip_pretrain(ds.subset(np.flatnonzero(keep)), pool, xt, x_raw, names, args.clip_steps)
            with torch.no_grad():
                f = clip_model.spectrum_features(xt, None).numpy()
            clip_feats = (f - f[pool].mean(0)) / (f[pool].std(0) + 1e-6)
            print(f"[{scenario}] image-catalogue CLIP pretraining: {time.time() - t0:.0f}s", flush=True)
        for seed in range(args.seeds):
            t0 = time.time()
            scarf = scarf_encoder(xt[pool], names, seed)
            with torch.no_grad():
                feats = scarf(xt).numpy()
            mu, sd = feats[pool].mean(0), feats[pool].std(0) + 1e-6
            feats = (feats - mu) / sd
            t_scarf = time.time() - t0
            srng = np.random.default_rng(1000 + seed)
            for b in args.budgets:
                lab = sample_labels(pool, y_all, b, srng)
                yl, yt_ = y_all[lab], y_all[test]
                # baselines impute the (robust) median: 0 after standardisation
                xs = np.where(np.isfinite(x_raw), x_raw, np.nan)
                per["morph_lr_std"][b].append(scores(yt_, fit_lr_std(xs[lab][:, mcols], yl, xs[test][:, mcols])))
                per["morph_lr"][b].append(scores(yt_, fit_lr(x[lab][:, mcols], yl, x[test][:, mcols])))
                per["tab_lr"][b].append(scores(yt_, fit_lr(x[lab], yl, x[test])))
                enc = train_ft(xt[lab], yl, names, seed)
                per["ft"][b].append(scores(yt_, predict_ft(enc, xt[test])))
                per["ft_scarf"][b].append(scores(yt_, fit_lr(feats[lab], yl, feats[test], c=0.1)))
                if clip_feats is not None:
                    per["ft_clip"][b].append(scores(yt_, fit_lr(clip_feats[lab], yl, clip_feats[test], c=0.1)))
            print(f"[{scenario}] seed {seed} done ({time.time() - t0:.0f}s, scarf {t_scarf:.0f}s)", flush=True)
        summary = {}
        for m, by_b in per.items():
            summary[m] = {}
            for b, runs in by_b.items():
                auc = np.array([r["auc"] for r in runs])
                apv = np.array([r["ap"] for r in runs])
                summary[m][str(b)] = {"auc_mean": float(auc.mean()), "auc_std": float(auc.std()),
                                      "ap_mean": float(apv.mean()), "ap_std": float(apv.std()), "n_runs": len(runs)}
        results[scenario] = {"missing_fraction": frac_missing, "log_columns": prep.log_columns, "methods": summary}
        for b in args.budgets:
            row = "  ".join(f"{m} {summary[m][str(b)]['auc_mean']:.3f}±{summary[m][str(b)]['auc_std']:.3f}"
                            for m in per)
            print(f"[{scenario}] labels={b:4d} AUC: {row}")

    out = {
        "benchmark": "tabular-only merger classification, few labels",
        "command": " ".join(sys.argv),
        "dataset": str(path),
        "n_rows": int(len(y_all)),
        "merger_fraction": float(y_all.mean()),
        "tabular_columns": names,
        "morphology_columns": morph,
        "n_test": int(len(test)),
        "budgets": args.budgets,
        "seeds": args.seeds,
        "clip_steps": args.clip_steps,
        "chance_ap": float(y_all[test].mean()),
        "results": results,
        "seconds": round(time.time() - t_start, 1),
        "host": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
