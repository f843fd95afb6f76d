"""``galclip report``: the plots and the one-file HTML report of a run folder.

A run folder (as written by ``galclip demo``, or assembled by hand from stage outputs)
may hold ``pretrain/`` (Lightning CSV logs, ``metrics.json``), ``embeddings.h5``,
``evaluate/`` (label-budget table and plot), ``candidates/`` (ranked table) and the
``survey`` dataset. Every section is optional: the report shows what the run produced,
so it also works for a partial or real-data run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from galclip.errors import ConfigError  # noqa: E402
from galclip.gallery import Table  # noqa: E402
from galclip.utils.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReportConfig:
    """Report options.

    Attributes:
        run: run folder to report on.
        out: output HTML (default ``<run>/report.html``); PNGs go beside it.
        max_points: objects drawn in the embedding map (random subsample beyond this).
        top_candidates: candidates shown in the HTML gallery.
        projection: ``tsne`` (clusters, slower) or ``pca`` (instant) for the embedding map.
        seed: subsampling / t-SNE seed.
    """

    run: str = ""
    out: str = ""
    max_points: int = 2000
    top_candidates: int = 24
    projection: str = "tsne"
    seed: int = 0


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


_HEADLINE_VAL = ("i2s_top", "s2i_top", "chance_top", "knn_redshift_r2", "knn_merger_bacc", "knn_merger_auc", "knn_merger_stage_bacc",
                 "knn_log_mstar_r2", "knn_g_r_r2")


def training_curves(run: Path, out: Path) -> Path | None:
    """Loss and validation metrics vs step from the Lightning CSV logger (``metrics.csv``)."""
    logs = sorted(run.glob("pretrain/**/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    rows = _read_csv(logs[-1])
    if not rows:
        return None
    keys = [k for k in rows[0] if k not in ("step", "epoch")]
    loss_keys = [k for k in keys if "loss" in k]
    # the headline validation numbers; every probe column is in metrics.json / the CSV log
    val_keys = [k for k in keys if k.startswith("val") and any(t in k for t in _HEADLINE_VAL)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for k in loss_keys:
        pts = [(_float(r.get("step")), _float(r[k])) for r in rows if r.get(k) not in (None, "")]
        if pts:
            x, y = zip(*pts)
            axes[0].plot(x, y, marker="." if len(pts) < 30 else None, label=k)
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss")
    if loss_keys:
        axes[0].legend(fontsize=7)
    series = {k: [(_float(r.get("step")), _float(r[k])) for r in rows if r.get(k) not in (None, "")] for k in val_keys}
    series = {k: v for k, v in series.items() if v}
    if series and max(len(v) for v in series.values()) == 1:  # validated once, at the end: bars
        names = list(series)
        axes[1].barh(range(len(names)), [series[k][0][1] for k in names], color="tab:blue")
        axes[1].set_yticks(range(len(names)), [k.replace("val/", "") for k in names], fontsize=7)
        axes[1].invert_yaxis()
    else:
        for k, pts in series.items():
            x, y = zip(*pts)
            axes[1].plot(x, y, marker=".", label=k.replace("val/", ""))
        axes[1].set_xlabel("step")
        if series:
            axes[1].legend(fontsize=7)
    axes[1].set_title("validation (retrieval top-k, kNN probes)")
    return _save(fig, out / "training_curves.png")


def _project(x: np.ndarray, how: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = PCA(n_components=min(32, x.shape[1], len(x)), random_state=seed).fit_transform(x)
    if how == "tsne" and len(x) > 10:
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed,
                    perplexity=min(30.0, (len(x) - 1) / 3)).fit_transform(x)
    return x[:, :2]


def embedding_map(run: Path, out: Path, cfg: ReportConfig) -> Path | None:
    """2-D map of the joint embeddings coloured by merger stage and by redshift."""
    path = run / "embeddings.h5"
    if not path.exists():
        return None
    from galclip.data.schema import MERGER_STAGES
    from galclip.embeddings import read_embeddings

    arrays, _ = read_embeddings(path)
    emb = np.asarray(arrays["joint"], np.float32)
    ok = np.isfinite(emb).all(axis=1)
    idx = np.flatnonzero(ok)
    rng = np.random.default_rng(cfg.seed)
    if idx.size > cfg.max_points:
        idx = np.sort(rng.choice(idx, cfg.max_points, replace=False))
    if idx.size < 3:
        return None
    xy = _project(emb[idx], cfg.projection, cfg.seed)
    panels = [(c, arrays[c][idx]) for c in ("merger_stage", "merger", "redshift", "z") if c in arrays]
    stage = next((v for c, v in panels if c in ("merger_stage", "merger")), None)
    zval = next((v for c, v in panels if c in ("redshift", "z")), None)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    if stage is not None:
        names = MERGER_STAGES if np.nanmax(stage) > 1 else ("non-merger", "merger")
        for k, name in enumerate(names):
            m = stage == k
            if m.any():
                axes[0].scatter(xy[m, 0], xy[m, 1], s=4 if k == 0 else 8, alpha=0.6, label=name)
        axes[0].legend(markerscale=3, fontsize=8)
    else:
        axes[0].scatter(xy[:, 0], xy[:, 1], s=4)
    axes[0].set_title("joint embedding: merger stage")
    if zval is not None:
        sc = axes[1].scatter(xy[:, 0], xy[:, 1], c=zval, s=4, cmap="viridis")
        fig.colorbar(sc, ax=axes[1], label="redshift")
    axes[1].set_title("joint embedding: redshift")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, out / "embedding_map.png")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _pretrain_table(run: Path) -> Table | None:
    """The headline validation metrics of pretraining (retrieval, kNN probes), one per row."""
    data = _json(run / "pretrain" / "metrics.json")
    run_keys = ("model", "steps", "global_batch", "train_seconds", "pairs_per_second")
    keys = [k for k in run_keys if k in data] + [k for k in data if isinstance(data[k], (int, float))
                                                 and k.removeprefix("val/").startswith(_HEADLINE_VAL)]
    return (["metric", "value"], [[k.removeprefix("val/"), data[k]] for k in keys]) if keys else None


def _finetune_table(run: Path) -> Table | None:
    """Test metrics of the fine-tuned head per input (both modalities, image only, ...)."""
    test = _json(run / "finetune" / "metrics.json").get("test", {})
    cols = ("roc_auc", "pr_auc", "balanced_accuracy", "f1", "n", "n_positive")
    rows = [[name, *(m.get(c, float("nan")) for c in cols)] for name, m in test.items() if isinstance(m, dict)]
    return (["inputs", *cols], rows) if rows else None


def _budget_table(run: Path) -> Table | None:
    """Label-budget evaluation: methods × budgets, ROC AUC mean ± std over seeds."""
    summary = _json(run / "evaluate" / "results.json").get("summary", [])
    if not summary:
        return None
    budgets = sorted({int(r["budget"]) for r in summary})
    cell = {(r["method"], int(r["budget"])): f"{r['roc_auc_mean']:.3f} ± {r['roc_auc_std']:.3f}"
            for r in summary if "roc_auc_mean" in r}
    methods = list(dict.fromkeys(r["method"] for r in summary))
    rows = [[m, *(cell.get((m, b), "") for b in budgets)] for m in methods]
    return (["method (ROC AUC)", *[f"{b} labels" for b in budgets]], rows)


def _key_value_table(data: dict[str, Any], header: list[str], kinds: tuple[type, ...]) -> Table | None:
    rows = [[k, v] for k, v in data.items() if isinstance(v, kinds)]
    return (header, rows) if rows else None


def _headline_table(run: Path) -> Table | None:
    head = _json(run / "evaluate" / "results.json").get("headline", {})
    return _key_value_table(head, ["comparison", "value"], (int, float, str))


def _top_n(item: tuple[str, Any]) -> int:
    """Sort key of ``topN``/``topN_mean`` entries by N (other keys last)."""
    digits = "".join(ch for ch in item[0].split("_")[0] if ch.isdigit())
    return int(digits) if digits else 10**9


def _candidates_table(run: Path) -> Table | None:
    """Precision of the candidate ranking in its top N against the base rate (labelled surveys)."""
    summary = _json(run / "candidates" / "summary.json")
    draws = summary.get("precision_at_draws", {})
    if draws:  # mean ± std over several draws of known mergers
        base = draws.get("base_rate_mean")
        ref = summary.get("zero_label_asymmetry_precision", {})  # ranking by asymmetry, no known mergers
        rows = [[k.removesuffix("_mean"), f"{v:.3f} ± {draws.get(k.replace('_mean', '_std'), 0):.3f}",
                 v / base if base else float("nan"), *([ref.get(k, float("nan"))] if ref else [])]
                for k, v in sorted(draws.items(), key=_top_n) if k.startswith("top") and k.endswith("_mean")]
        header = ["top N", f"precision (mean ± std, {draws.get('draws')} draws of {draws.get('n_known')} mergers)",
                  "× base rate", *(["precision ranking by asymmetry alone (zero labels)"] if ref else [])]
        base_row = ["base rate", f"{base:.3f}", 1.0, *([base] if ref else [])]
        return (header, rows + [base_row]) if rows and base else None
    prec = summary.get("precision_at", {})
    base = prec.get("base_rate")
    rows = [[k, v, v / base if base else float("nan")] for k, v in sorted(prec.items(), key=_top_n) if k.startswith("top")]
    return (["top N", "precision", "× base rate"], rows + [["base rate", base, 1.0]]) if rows and base else None


def _timings_table(run: Path) -> Table | None:
    return _key_value_table(_json(run / "timings.json"), ["stage", "seconds"], (int, float))


def _summary_tables(run: Path) -> dict[str, Table]:
    """The run's metrics as small tables (a missing stage just leaves its table out)."""
    parts = (("Pretraining (validation)", _pretrain_table), ("Fine-tuned head (test split)", _finetune_table),
             ("Label-budget evaluation", _budget_table), ("Headline comparison", _headline_table),
             ("Merger candidates from known mergers (precision)", _candidates_table),
             ("Stage timings", _timings_table))
    return {title: t for title, fn in parts if (t := fn(run)) is not None}


def run_report(cfg: ReportConfig) -> Path:
    """Write PNG plots and ``report.html`` for ``cfg.run``; returns the HTML path."""
    if not cfg.run:
        raise ConfigError("run is required (a run folder)")
    run = Path(cfg.run)
    if not run.is_dir():
        raise ConfigError(f"{run}: run folder not found")
    html_path = Path(cfg.out) if cfg.out else run / "report.html"
    out = html_path.parent
    figures: dict[str, Path] = {}
    for caption, fn in (("Training curves", lambda: training_curves(run, out)),
                        ("Embedding map (joint space)", lambda: embedding_map(run, out, cfg))):
        try:
            p = fn()
        except Exception as exc:  # a broken optional section must not lose the report
            log.warning("report: %s skipped (%s)", caption, exc)
            p = None
        if p is not None:
            figures[caption] = p
    for png in sorted(run.glob("evaluate/*.png")):
        figures[f"Label budget: {png.stem}"] = png
    items = _candidate_items(run, cfg.top_candidates)
    from galclip.gallery import html_report

    html_report(items, html_path, title=f"galclip run report: {run.name}",
                intro="Plots, metrics and the top merger candidates of this run. Scores are similarities to "
                      "the known mergers used as queries (higher = more merger-like).",
                tables=_summary_tables(run), images=figures)
    log.info("report written to %s", html_path)
    return html_path


def _candidate_items(run: Path, top: int) -> list:
    tables = sorted(run.glob("candidates/*.csv"))
    survey = run / "survey"
    if not tables:
        return []
    rows = _read_csv(tables[0])[:top]
    ids = [r["object_id"] for r in rows]
    scores = [_float(r.get("score")) for r in rows]
    captions = [f"stage {r['merger_stage']}" if "merger_stage" in r else "" for r in rows]
    if (survey / "manifest.json").exists():
        from galclip.gallery import items_from_dataset, known_labels

        captions = known_labels(survey, ids) or captions

        return items_from_dataset(survey, ids, scores=scores, captions=captions)
    from galclip.gallery import GalleryItem

    return [GalleryItem(object_id=i, score=s, rank=k + 1) for k, (i, s) in enumerate(zip(ids, scores))]
