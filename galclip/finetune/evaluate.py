"""``galclip evaluate``: label-budget comparison of galclip against the alternatives.

For each label budget (10, 30, 100, ...) and seed, the same stratified labeled subset is
drawn for every method and each is scored on one fixed held-out test split. Encoder
features are computed once per encoder (pretrained, random init, image-only SSL) and
reused by every head, so the whole table runs on a laptop CPU.

Methods (``methods`` selects a subset; each row is ``method`` [+ inference variant]):

=========================  ==============================================================
galclip_fusion             pretrained image+spectrum embeddings → fusion head; also scored
                           with image-only and spectrum-only inference (``@image_only``...)
galclip_fusion_morph       the same + morphology/catalogue statistics (linear term + branch)
galclip_image              pretrained image tower alone → same head (single modality)
galclip_image_tabular      pretrained image tower + tabular statistics
galclip_spectrum           pretrained spectrum tower alone → same head (single modality)
tabular_head               tabular statistics only → same head
random_init                randomly initialised encoders, fused → same head
image_ssl                  image tower of an image-only SSL checkpoint (``image_ssl_checkpoint``)
image_ssl_morph            the same + morphology statistics
morphology_lr              Gini/M20/A/C... + logistic regression (scikit-learn); morphology
                           columns only, even when the dataset has other catalogue columns
cnn_scratch                small timm CNN trained from scratch with augmentation
=========================  ==============================================================
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galclip.config import to_dict
from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import check_compatible, load_checkpoint
from galclip.finetune.baselines import CNNConfig, cnn_from_scratch, morphology_lr
from galclip.finetune.features import (cached_features, extract_features, feature_tensors, load_batches,
                                       output_dirs)
from galclip.finetune.head_io import head_factory
from galclip.finetune.head_training import HeadTrainConfig, fit_with_threshold, predict
from galclip.finetune.heads import HeadConfig
from galclip.finetune.labels import labeled_dataset, merger_probability, n_classes
from galclip.finetune.metrics import METRIC_NAMES, binary_metrics, summarise
from galclip.finetune.sampling import holdout_split, stratified_budget
from galclip.finetune.tabular_inputs import TabularInputConfig, build_tabular
from galclip.tables import columns_table, write_table
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

ALL_METHODS = ("galclip_fusion", "galclip_fusion_morph", "galclip_image", "galclip_image_tabular",
               "galclip_spectrum", "tabular_head", "random_init", "image_ssl", "image_ssl_morph",
               "morphology_lr", "cnn_scratch")


@dataclasses.dataclass
class EvaluateConfig:
    """Label-budget evaluation.

    Attributes:
        data: dataset (needs the ``label`` column).
        checkpoint: pretrained galclip model (image+spectrum).
        image_ssl_checkpoint: optional galclip checkpoint pretrained with the image SSL term
            only (its image tower is the ``image_ssl`` baseline); "" = skip that baseline.
        out: output directory.
        label: binary label column (``merger``); multi-class labels are scored as merger
            vs not (class 0 = not merger).
        budgets: labeled-set sizes (stratified, ≥ ``min_per_class`` of each class).
        seeds: repetitions (different labeled subsets and initialisations).
        min_per_class: minimum labels per class in every budget.
        test_fraction, split_seed: the fixed held-out test split.
        methods: methods to run (None = all that apply: spectrum methods need spectra,
            tabular methods need statistics, ``image_ssl`` needs its checkpoint).
        head: fusion head used by every embedding method.
        tabular_head: head tabular mode for the ``*_morph``/``*_tabular`` methods
            (``linear`` or ``encoder`` = FT-Transformer branch).
        train: head training.
        tabular: which statistics (catalogue columns, morphology).
        morph_lr_c: inverse regularisation of the morphology + LR baseline.
        cnn: from-scratch CNN baseline.
        random_seed: seed of the random-init encoders.
        plot_metrics: metrics drawn against the budget in ``label_budget.png``.
        batch_size, cache_dir, n_jobs, progress: as in ``finetune``.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: str = ""
    image_ssl_checkpoint: str = ""
    out: str = "runs/evaluate"
    label: str = "merger"
    budgets: list[int] = dataclasses.field(default_factory=lambda: [10, 30, 100, 300, 1000])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    min_per_class: int = 2
    test_fraction: float = 0.3
    split_seed: int = 0
    methods: list[str] | None = None
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    tabular_head: str = "linear"
    train: HeadTrainConfig = dataclasses.field(default_factory=HeadTrainConfig)
    tabular: TabularInputConfig = dataclasses.field(default_factory=TabularInputConfig)
    morph_lr_c: float = 0.3
    cnn: CNNConfig = dataclasses.field(default_factory=CNNConfig)
    random_seed: int = 12345
    plot_metrics: list[str] = dataclasses.field(default_factory=lambda: ["roc_auc", "balanced_accuracy", "f1"])
    batch_size: int = 64
    cache_dir: str = ""
    n_jobs: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.methods is not None:
            bad = [m for m in self.methods if m not in ALL_METHODS]
            if bad:
                raise ValueError(f"methods: unknown {bad[0]!r} (known: {', '.join(ALL_METHODS)})")
        if any(b < 2 for b in self.budgets):
            raise ValueError("budgets must be >= 2")
        if self.tabular_head not in ("linear", "encoder"):
            raise ValueError(f"tabular_head must be linear or encoder, got {self.tabular_head!r}")


@dataclasses.dataclass
class _HeadMethod:
    """An embedding-based method: which features, modalities, tabular inputs, inference variants."""

    name: str
    feats: str  # key into the feature store
    modalities: list[str]
    tabular: bool
    variants: dict[str, list[str]]


def _head_methods(cfg: EvaluateConfig, has_spec: bool, has_tab: bool, has_ssl: bool) -> list[_HeadMethod]:
    both = ["image", "spectrum"] if has_spec else ["image"]
    v_fusion = {"": both}
    if has_spec:
        v_fusion |= {"@image_only": ["image"], "@spectrum_only": ["spectrum"]}
    out = [
        _HeadMethod("galclip_fusion", "pretrained", both, False, v_fusion),
        _HeadMethod("galclip_fusion_morph", "pretrained", both, True, {"": both} | ({"@image_only": ["image"]} if has_spec else {})),
        _HeadMethod("galclip_image", "pretrained", ["image"], False, {"": ["image"]}),
        _HeadMethod("galclip_image_tabular", "pretrained", ["image"], True, {"": ["image"]}),
        _HeadMethod("galclip_spectrum", "pretrained", ["spectrum"], False, {"": ["spectrum"]}),
        _HeadMethod("tabular_head", "pretrained", [], True, {"": []}),
        _HeadMethod("random_init", "random", both, False, {"": both}),
        _HeadMethod("image_ssl", "image_ssl", ["image"], False, {"": ["image"]}),
        _HeadMethod("image_ssl_morph", "image_ssl", ["image"], True, {"": ["image"]}),
    ]
    keep = []
    for m in out:
        if "spectrum" in m.modalities and not has_spec:
            continue
        if m.tabular and not has_tab:
            continue
        if m.feats == "image_ssl" and not has_ssl:
            continue
        if m.name.startswith("galclip_fusion") and not has_spec:
            continue  # image-only data: identical to galclip_image / galclip_image_tabular
        keep.append(m)
    return keep


def _plot(summary: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    """Metric vs label budget, one line per method (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, met in zip(axes[0], metrics):
        for i, m in enumerate(methods):
            rows = sorted((r for r in summary if r["method"] == m), key=lambda r: r["budget"])
            x = [r["budget"] for r in rows]
            mu = np.array([r.get(f"{met}_mean", np.nan) for r in rows])
            sd = np.array([r.get(f"{met}_std", np.nan) for r in rows])
            style = "-" if m.startswith("galclip") else "--"
            ax.errorbar(x, mu, yerr=sd, label=m, color=cmap(i % 20), ls=style, marker="o", ms=3, capsize=2)
        ax.set_xscale("log")
        ax.set_xlabel("labeled galaxies")
        ax.set_ylabel(met.replace("_", " "))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _write_outputs(cfg: EvaluateConfig, out: Path, dataset: SurveyDataset, results: list[dict[str, Any]],
                   pred_rows: dict[str, list[Any]], budgets: list[int], yi: np.ndarray, extra: dict[str, Any],
                   final: bool) -> dict[str, Any]:
    """Summary (mean ± std over seeds), results JSON/CSV, plot, per-object CSV.

    Called after every (budget, seed) so a long run that is stopped keeps what it measured
    (``complete`` is false until the end).
    """
    summary = []
    for name in dict.fromkeys(r["method"] for r in results):
        for b in budgets:
            rs = [r for r in results if r["method"] == name and r["budget"] == b]
            if rs:
                summary.append({"method": name, "budget": b, **summarise(rs, METRIC_NAMES + ("seconds",))})
    report = {"config": to_dict(cfg), **extra, "complete": final, "summary": summary,
              "headline": _headline(summary), "runs": results}
    atomic_write_json(out / "results.json", report)
    _write_csv(summary, out / "results.csv")
    if summary:
        _plot(summary, list(cfg.plot_metrics), out / "label_budget.png")
    idx = np.asarray(pred_rows["index"], dtype=np.int64)
    ids, ra, dec = dataset.column(S.OBJECT_ID).astype(str), dataset.column(S.RA), dataset.column(S.DEC)
    table = {"object_id": ids[idx], "ra": ra[idx], "dec": dec[idx],
             **{k: np.asarray(v) for k, v in pred_rows.items() if k != "index"}, "label": yi[idx]}
    if final or idx.size:
        write_table(columns_table(table, {"label": cfg.label}), out / "predictions", ("csv",))
    return report


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Run the label-budget evaluation; writes results CSV/JSON, a PNG and per-object probabilities."""
    t0 = time.time()
    out, cache = output_dirs(cfg.out, cfg.cache_dir)
    ckpt, dataset, y = labeled_dataset(cfg.checkpoint, cfg.data, cfg.label)
    model, mcfg, sha = ckpt.model, ckpt.cfg, ckpt.sha256
    if n_classes(y, cfg.label) > 1:  # multi-class label: score merger vs rest
        y = np.where(np.isfinite(y), merger_probability(np.eye(n_classes(y, cfg.label))[np.nan_to_num(y).astype(int)],
                                                        cfg.label), np.nan)
    pool, test = holdout_split(y, cfg.test_fraction, cfg.split_seed)
    yi = np.nan_to_num(y).astype(int)
    log.info("%d rows: %d labeled pool, %d test (%d mergers)", len(dataset), pool.size, test.size, yi[test].sum())
    wanted = list(cfg.methods) if cfg.methods is not None else list(ALL_METHODS)

    # ---- features, computed once per encoder
    store: dict[str, dict[str, np.ndarray]] = {}
    tokens = cfg.head.kind == "cross_attention"
    batches: list[dict[str, Any]] | None = None

    def rows() -> list[dict[str, Any]]:
        nonlocal batches
        if batches is None:
            batches = load_batches(dataset, cfg.batch_size, cfg.progress)
        return batches

    def feats_of(enc: Any, key: str) -> dict[str, np.ndarray]:
        got = cached_features(dataset, cache, key, tokens)
        return got if got is not None else extract_features(enc, dataset, tokens, cfg.batch_size, cache, key,
                                                             cfg.progress, batches=rows())

    store["pretrained"] = feats_of(model, sha)
    has_spec = bool(store["pretrained"]["has_spectrum"].any())
    if "random_init" in wanted:
        from galclip.models import build_model

        torch.manual_seed(cfg.random_seed)
        rnd = build_model(mcfg)
        store["random"] = feats_of(rnd, f"random{cfg.random_seed}_{sha}")
    if cfg.image_ssl_checkpoint and any(m.startswith("image_ssl") for m in wanted):
        ssl = load_checkpoint(cfg.image_ssl_checkpoint)
        check_compatible(ssl.cfg, dataset, ssl.path)
        store["image_ssl"] = feats_of(ssl.model, ssl.sha256)
    tab, tab_names = None, []
    if any(m in wanted for m in ("galclip_fusion_morph", "galclip_image_tabular", "tabular_head", "image_ssl_morph",
                                 "morphology_lr")):
        fit_rows = np.setdiff1d(np.arange(len(dataset)), test)
        tab, tab_names, _ = build_tabular(dataset, cfg.tabular, fit_rows, cache, cfg.n_jobs)
        if not tab_names:
            tab = None
    # the classical baseline uses the morphology statistics only (not other catalogue columns)
    from galclip.data.morphology import MORPH_COLUMNS

    morph_cols = [j for j, c in enumerate(tab_names) if c in MORPH_COLUMNS and c != "flag"]
    methods = [m for m in _head_methods(cfg, has_spec, tab is not None, "image_ssl" in store) if m.name in wanted]
    images = torch.cat([b["image"] for b in rows()]) if "cnn_scratch" in wanted else None

    # ---- budgets × seeds × methods
    results: list[dict[str, Any]] = []
    pred_rows: dict[str, list[Any]] = {k: [] for k in ("method", "budget", "seed", "index", "p_merger", "predicted")}
    budgets = sorted({min(b, pool.size) for b in cfg.budgets})

    def record(name: str, budget: int, seed: int, rows: np.ndarray, p: np.ndarray, thr: float, secs: float) -> None:
        met = binary_metrics(yi[rows], p, thr)
        results.append({"method": name, "budget": budget, "seed": seed, "seconds": round(secs, 3), **met})
        pred_rows["method"] += [name] * rows.size
        pred_rows["budget"] += [budget] * rows.size
        pred_rows["seed"] += [seed] * rows.size
        pred_rows["index"] += rows.tolist()
        pred_rows["p_merger"] += np.asarray(p, np.float64).tolist()
        pred_rows["predicted"] += (np.asarray(p) >= thr).astype(int).tolist()

    from tqdm.auto import tqdm

    extra = {"checkpoint_sha256": sha, "tabular_columns": tab_names,
             "morphology_columns": [tab_names[j] for j in morph_cols], "n_rows": len(dataset),
             "n_pool": int(pool.size), "n_test": int(test.size), "n_test_mergers": int(yi[test].sum()),
             "budgets": budgets}
    jobs = [(b, s) for b in budgets for s in cfg.seeds]
    for budget, seed in tqdm(jobs, desc="budgets×seeds", disable=not cfg.progress):
        tr = stratified_budget(yi, pool, budget, seed, cfg.min_per_class)
        for m in methods:
            t1 = time.time()
            hcfg = dataclasses.replace(cfg.head, tabular=cfg.tabular_head if m.tabular else "none")
            feats = store[m.feats]
            names = tab_names if m.tabular else []
            factory = head_factory(hcfg, feats, m.modalities, 1, names, seed)
            ftr = feature_tensors(feats, tr, tab if m.tabular else None, keep=m.modalities)
            head, thr, _ = fit_with_threshold(factory, ftr, yi[tr], cfg.train, seed=seed)
            secs = time.time() - t1
            for suffix, keep in m.variants.items():
                rows = test
                for mod in keep if suffix else []:
                    rows = rows[feats[f"has_{mod}"][rows].astype(bool)]
                p = predict(head, feature_tensors(feats, rows, tab if m.tabular else None, keep=keep))
                record(m.name + suffix, budget, seed, rows, p, thr, secs)
        if "morphology_lr" in wanted and morph_cols:
            t1 = time.time()
            xm = tab[:, morph_cols]
            p, thr = morphology_lr(xm[tr], yi[tr], xm[test], cfg.morph_lr_c, cfg.train.cv_folds,
                                   cfg.train.threshold_metric, seed)
            record("morphology_lr", budget, seed, test, p, thr, time.time() - t1)
        if images is not None:
            t1 = time.time()
            p, thr = cnn_from_scratch(images, yi, tr, test, cfg.cnn, seed, cfg.train.threshold_metric)
            record("cnn_scratch", budget, seed, test, p, thr, time.time() - t1)
        _write_outputs(cfg, out, dataset, results, pred_rows, budgets, yi, extra, final=False)
        log.info("budget %d seed %d done (%.0f s)", budget, seed, time.time() - t0)

    extra["seconds"] = round(time.time() - t0, 1)
    report = _write_outputs(cfg, out, dataset, results, pred_rows, budgets, yi, extra, final=True)
    log.info("evaluation done in %.0f s → %s", time.time() - t0, out)
    return report


def _write_csv(summary: list[dict[str, Any]], path: Path) -> None:
    import csv
    import io

    keys = list(dict.fromkeys(k for r in summary for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in summary:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    from galclip.utils.io import atomic_write_text

    atomic_write_text(path, buf.getvalue())


def _headline(summary: list[dict[str, Any]], metric: str = "roc_auc") -> dict[str, Any]:
    """Key comparisons: gain from pretraining at ~100 labels; fusion@100 vs best single modality@max."""
    def get(m: str, b: int) -> float:
        for r in summary:
            if r["method"] == m and r["budget"] == b:
                return r[f"{metric}_mean"]
        return math.nan

    budgets = sorted({r["budget"] for r in summary})
    if not budgets:
        return {}
    b100 = min(budgets, key=lambda b: abs(b - 100))
    bmax = budgets[-1]
    out: dict[str, Any] = {"metric": metric, "budget_small": b100, "budget_large": bmax}
    for m in ("galclip_fusion", "galclip_fusion_morph", "galclip_image", "galclip_image_tabular", "random_init",
              "morphology_lr", "cnn_scratch"):
        out[f"{m}@{b100}"] = get(m, b100)
    out["pretraining_gain"] = get("galclip_fusion", b100) - get("random_init", b100)
    singles = {m: get(m, bmax) for m in ("galclip_image", "galclip_spectrum", "image_ssl", "cnn_scratch",
                                          "morphology_lr", "tabular_head")}
    singles = {k: v for k, v in singles.items() if np.isfinite(v)}
    if singles:
        best = max(singles, key=singles.get)
        out["best_single_modality"] = best
        out[f"best_single_modality@{bmax}"] = singles[best]
        fus = max(get("galclip_fusion", b100), get("galclip_fusion_morph", b100))
        out["fusion_small_beats_best_single_large"] = bool(np.isfinite(fus) and fus >= singles[best])
    return out
