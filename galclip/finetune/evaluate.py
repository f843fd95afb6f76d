"""``galclip evaluate``: label-budget comparison of galclip against the alternatives.

For each label budget (10, 30, 100, ...) and seed, the same stratified labeled subset is
drawn for every method and each is scored on one fixed held-out test split. Encoder
features are computed once per encoder (pretrained, random init, image-only SSL) and
reused by every head, so the whole table runs on a laptop CPU.

Methods (``methods`` selects a subset; each row is ``method`` [+ inference variant]) are
the registry :data:`galclip.finetune.methods.METHODS`.
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
from galclip.data.morphology import morphology_columns, morphology_flag
from galclip.encode import Checkpoint, check_compatible, fit_representation, load_checkpoint
from galclip.finetune.baselines import CNNConfig
from galclip.finetune.features import cached_features, extract_features, load_batches, output_dirs
from galclip.finetune.head_training import HeadTrainConfig
from galclip.finetune.heads import HeadConfig
from galclip.finetune.labels import labeled_dataset, merger_probability, n_classes
from galclip.finetune.methods import ALL_METHODS, METHODS, Bench, Method
from galclip.finetune.metrics import METRIC_NAMES, binary_metrics, summarise
from galclip.finetune.sampling import holdout_split, stratified_budget
from galclip.finetune.self_training import SelfTrainConfig
from galclip.finetune.tabular_inputs import TabularInputConfig, build_tabular, repaired_tabular
from galclip.models import build_model
from galclip.tables import columns_table, write_table
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

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
            tabular methods need statistics, ``image_ssl`` needs its checkpoint;
            ``galclip_self_trained`` runs only when listed: it trains the tower per draw).
        self_train: the self-training of ``galclip_self_trained`` (as ``finetune``'s; its
            ``prior`` 0 = the drawn labels' fraction, which evaluate's stratified draws keep
            at the survey's).
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
    self_train: SelfTrainConfig = dataclasses.field(default_factory=SelfTrainConfig)
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


#: seconds between redrawings of the label-budget plot while a run is in progress
_PLOT_EVERY_S = 60.0


def _plot(summary: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    """Metric vs label budget, one line per method (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in summary))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab20")
    budgets = sorted({r["budget"] for r in summary})
    for ax, met in zip(axes[0], metrics):
        for i, m in enumerate(methods):
            rows = sorted((r for r in summary if r["method"] == m), key=lambda r: r["budget"])
            x = [r["budget"] for r in rows]
            mu = np.array([r.get(f"{met}_mean", np.nan) for r in rows])
            sd = np.array([r.get(f"{met}_std", np.nan) for r in rows])
            style = "-" if m.startswith("galclip") else "--"
            ax.errorbar(x, mu, yerr=sd, label=m, color=cmap(i % 20), ls=style, marker="o", ms=3, capsize=2)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])  # the budgets, not log-axis minor ticks
        ax.minorticks_off()
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
                   final: bool, plot: bool = True) -> dict[str, Any]:
    """Summary (mean ± std over seeds), results JSON/CSV, plot, per-object CSV.

    Called after every (budget, seed) so a long run that is stopped keeps what it measured
    (``complete`` is false until the end); ``plot`` false skips the PNG (0.75 s a drawing,
    a fifth of the demo's evaluation when drawn after every step).
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
    if summary and (plot or final):
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
    from tqdm.auto import tqdm

    t0 = time.time()
    out, cache = output_dirs(cfg.out, cfg.cache_dir)
    ckpt, dataset, y = labeled_dataset(cfg.checkpoint, cfg.data, cfg.label)
    y = _merger_or_not(y, cfg.label)
    pool, test = holdout_split(y, cfg.test_fraction, cfg.split_seed)
    yi = np.nan_to_num(y).astype(int)
    log.info("%d rows: %d labeled pool, %d test (%d mergers)", len(dataset), pool.size, test.size, yi[test].sum())
    wanted = [m for name, m in METHODS.items()
              if (cfg.methods is None and not getattr(m, "opt_in", False)) or name in (cfg.methods or ())]
    bench = _bench(cfg, ckpt, dataset, cache, yi, test, wanted)
    methods = [m for m in wanted if m.available(bench)]
    budgets = sorted({min(b, pool.size) for b in cfg.budgets})
    extra = {"checkpoint_sha256": ckpt.sha256, "tabular_columns": bench.tab_names,
             "morphology_columns": [bench.tab_names[j] for j in bench.morph_cols], "n_rows": len(dataset),
             "n_pool": int(pool.size), "n_test": int(test.size), "n_test_mergers": int(yi[test].sum()),
             "budgets": budgets, "statistics_repaired_for": sorted(bench.repaired_tab)}
    runs = _Runs(yi)
    last_plot = time.time()
    for budget, seed in tqdm([(b, s) for b in budgets for s in cfg.seeds], desc="budgets×seeds",
                             disable=not cfg.progress):
        tr = stratified_budget(yi, pool, budget, seed, cfg.min_per_class)
        for m in methods:
            secs, scored = m.run(bench, tr, seed)
            for name, rows, p, thr in scored:
                runs.add(name, budget, seed, rows, p, thr, secs)
        plot = time.time() - last_plot > _PLOT_EVERY_S
        _write_outputs(cfg, out, dataset, runs.results, runs.pred_rows, budgets, yi, extra, final=False, plot=plot)
        last_plot = time.time() if plot else last_plot
        log.info("budget %d seed %d done (%.0f s)", budget, seed, time.time() - t0)
    extra["seconds"] = round(time.time() - t0, 1)
    report = _write_outputs(cfg, out, dataset, runs.results, runs.pred_rows, budgets, yi, extra, final=True)
    log.info("evaluation done in %.0f s → %s", time.time() - t0, out)
    return report


def _merger_or_not(y: np.ndarray, label: str) -> np.ndarray:
    """A multi-class label is scored as merger vs rest (NaN stays unknown)."""
    k = n_classes(y, label)
    if k <= 1:
        return y
    return np.where(np.isfinite(y), merger_probability(np.eye(k)[np.nan_to_num(y).astype(int)], label), np.nan)


def _bench(cfg: EvaluateConfig, ckpt: Checkpoint, dataset: SurveyDataset, cache: Path, yi: np.ndarray,
           test: np.ndarray, wanted: list[Method]) -> Bench:
    """Inputs of the wanted methods, each computed once: encoder features, tabular statistics, cutouts."""
    tokens = cfg.head.kind == "cross_attention"
    batches: list[dict[str, Any]] | None = None

    def rows() -> list[dict[str, Any]]:  # rows are read (and preprocessed) once, shared by every encoder
        nonlocal batches
        if batches is None:
            batches = load_batches(dataset, cfg.batch_size, cfg.progress)
        return batches

    def feats_of(enc: Any, key: str) -> dict[str, np.ndarray]:
        got = cached_features(dataset, cache, key, tokens)
        return got if got is not None else extract_features(enc, dataset, tokens, cfg.batch_size, cache, key,
                                                             cfg.progress, batches=rows())

    bench = Bench(cfg, yi, test, {"pretrained": feats_of(ckpt.model, ckpt.sha256)}, dataset=dataset,
                  checkpoint=str(cfg.checkpoint))
    needs = {m.features for m in wanted}
    if "random" in needs:  # the same read-out as the pretrained model, fitted label-free here
        key = f"random{cfg.random_seed}_fitted_{ckpt.sha256}"
        got = cached_features(dataset, cache, key, tokens)
        if got is None:
            torch.manual_seed(cfg.random_seed)
            model = build_model(ckpt.cfg)
            fit_representation(model, rows())
            got = feats_of(model, key)
        bench.features["random"] = got
    if cfg.image_ssl_checkpoint and "image_ssl" in needs:
        ssl = load_checkpoint(cfg.image_ssl_checkpoint)
        check_compatible(ssl.cfg, dataset, ssl.path)
        bench.features["image_ssl"] = feats_of(ssl.model, ssl.sha256)
    if any(m.tabular for m in wanted):
        fit_rows = np.setdiff1d(np.arange(len(dataset)), test)
        tab, bench.tab_names, _ = build_tabular(dataset, cfg.tabular, fit_rows, cache, cfg.n_jobs)
        bench.tab = tab if bench.tab_names else None
        flag = morphology_flag(dataset) if bench.tab is not None else None
        for key, feats in bench.features.items() if flag is not None else ():
            if "image" in feats:
                fixed, repair = repaired_tabular(cfg.tabular, tab, bench.tab_names, feats["image"], flag, fit_rows)
                if repair is not None:
                    bench.repaired_tab[key] = fixed
    # the classical baseline uses the morphology statistics only (not other catalogue columns)
    bench.morph_cols = morphology_columns(bench.tab_names)
    if any(m.images for m in wanted):
        bench.images = torch.cat([b["image"] for b in rows()])
    return bench


@dataclasses.dataclass
class _Runs:
    """Per-run metrics and per-object probabilities, appended as methods are scored."""

    yi: np.ndarray
    results: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pred_rows: dict[str, list[Any]] = dataclasses.field(default_factory=lambda: {
        k: [] for k in ("method", "budget", "seed", "index", "p_merger", "predicted")})

    def add(self, name: str, budget: int, seed: int, rows: np.ndarray, p: np.ndarray, thr: float,
            secs: float) -> None:
        met = binary_metrics(self.yi[rows], p, thr)
        self.results.append({"method": name, "budget": budget, "seed": seed, "seconds": round(secs, 3), **met})
        self.pred_rows["method"] += [name] * rows.size
        self.pred_rows["budget"] += [budget] * rows.size
        self.pred_rows["seed"] += [seed] * rows.size
        self.pred_rows["index"] += rows.tolist()
        self.pred_rows["p_merger"] += np.asarray(p, np.float64).tolist()
        self.pred_rows["predicted"] += (np.asarray(p) >= thr).astype(int).tolist()


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
    for m in ("galclip_fusion", "galclip_fusion_morph", "galclip_image", "galclip_image_probe", "galclip_image_tabular",
              "galclip_spectrum", "random_init", "morphology_lr", "asymmetry_only", "cnn_scratch"):
        value = get(m, b100)
        if np.isfinite(value):  # methods this evaluation did not run leave no empty cell
            out[f"{m}@{b100}"] = value
    out["pretraining_gain"] = get("galclip_fusion", b100) - get("random_init", b100)
    # the better fusion head (with or without the statistics)
    heads = [v for v in (get("galclip_fusion", b100), get("galclip_fusion_morph", b100)) if np.isfinite(v)]
    fus = max(heads) if heads else math.nan
    out["fusion_minus_morphology_lr"] = fus - get("morphology_lr", b100)
    zero = get("asymmetry_only", b100)
    if np.isfinite(zero):  # against the zero-label statistic
        out["fusion_minus_asymmetry_only"] = fus - zero
    singles = {m: get(m, bmax) for m in ("galclip_image", "galclip_spectrum", "image_ssl", "cnn_scratch",
                                          "morphology_lr", "tabular_head")}
    singles = {k: v for k, v in singles.items() if np.isfinite(v)}
    if singles:
        best = max(singles, key=singles.get)
        out["best_single_modality"] = best
        out[f"best_single_modality@{bmax}"] = singles[best]
        out["fusion_small_beats_best_single_large"] = bool(np.isfinite(fus) and fus >= singles[best])
    return out
