"""``galclip label``: label new objects from a handful of labelled examples.

The labelled examples come from a CSV/FITS table (``object_id`` + label column) or from a
label column stored in the index (optionally a few drawn per class, for demonstrations).
Every other object (or the ids in ``targets``) gets a predicted label and a confidence
(the winning class's probability). Deterministic: same inputs, same output.

Outputs in ``out/``: ``labels.csv`` / ``labels.fits`` and ``summary.json``.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.table import Table

from galclip.embeddings import EmbeddingStore, QueryKind, morphology_kind
from galclip.errors import ConfigError
from galclip.retrieval.fewshot import encode_labels, predict_proba
from galclip.retrieval.store import load_index, valid_rows
from galclip.tables import read_objects, write_table
from galclip.utils.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LabelConfig:
    """Options of ``galclip label``.

    Attributes:
        index: index directory (its stored embeddings are used; no model run needed).
        out: output directory.
        labeled: CSV/FITS table with ``object_id`` and ``label_column`` ("" = use the label
            column stored in the index).
        label_column: the label to propagate (any column: merger, merger_stage, gz1_class...).
        shots: with ``labeled`` empty, draw this many labelled examples per class from the
            stored column (0 = use every stored label).
        targets: CSV/FITS table of ``object_id`` to label ("" = every object not labelled).
        kind: embedding to compare ("" = the image representation ``image_features``,
            which carries morphology; the index's kind for files written before it).
        method: ``knn`` (similarity-weighted vote) or ``prototype`` (nearest class mean).
        k: neighbours for ``knn``.
        temperature: softness of the similarity weighting.
        seed: seed for drawing ``shots``.
        formats: table formats.
    """

    index: str = ""
    out: str = "runs/label"
    labeled: str = ""
    label_column: str = "merger"
    shots: int = 0
    targets: str = ""
    kind: QueryKind = ""
    method: Literal["knn", "prototype"] = "knn"
    k: int = 10
    temperature: float = 0.1
    seed: int = 0
    formats: list[str] = dataclasses.field(default_factory=lambda: ["csv", "fits"])


def label_objects(store: EmbeddingStore, kind: str, support_rows: np.ndarray, support_values: np.ndarray,
                  target_rows: np.ndarray, label_column: str, method: str = "knn", k: int = 10,
                  temperature: float = 0.1) -> Table:
    """Predict ``label_column`` for ``target_rows`` of a store from labelled ``support_rows``.

    Returns a table keyed by object_id with ``<label>_pred``, ``confidence`` and one
    ``p_<class>`` column per class. Targets without an embedding of ``kind`` get no
    prediction (confidence NaN) rather than a made-up one.
    """
    sx = store.embeddings(kind, support_rows)
    ok = valid_rows(sx)
    if not ok.all():
        log.warning("%d labelled objects have no %s embedding and are ignored", int((~ok).sum()), kind)
    sx, sv = sx[ok], np.asarray(support_values)[ok]
    classes, codes = encode_labels(sv)
    if len(classes) < 2:
        raise ConfigError(f"need labelled examples of at least two {label_column} classes (got {list(classes)})")
    tx = store.embeddings(kind, target_rows)
    has = valid_rows(tx)
    proba = np.full((len(target_rows), len(classes)), np.nan)
    if has.any():
        proba[has] = predict_proba(sx, codes, tx[has], len(classes), method, k, temperature)
    best = np.where(has, np.nan_to_num(proba, nan=-1).argmax(axis=1), 0)
    table = Table({"object_id": store.object_id[target_rows].astype(str), "ra": store.ra[target_rows],
                   "dec": store.dec[target_rows]})
    pred = classes[best]
    if pred.dtype.kind in "fiu":
        pred = np.where(has, pred.astype(np.float64), np.nan)
    else:
        pred = np.where(has, pred.astype(str), "")
    table[f"{label_column}_pred"] = pred
    table["confidence"] = np.where(has, proba.max(axis=1, initial=-1, where=~np.isnan(proba)), np.nan)
    for j, c in enumerate(classes):
        table[f"p_{c}"] = proba[:, j]
    table.meta.update(METHOD=method, K=k, TEMP=temperature, NSUPPORT=int(len(sv)))  # FITS-safe keys
    return table


def _support(store: EmbeddingStore, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Rows and label values of the labelled examples."""
    if cfg.labeled:
        ids, values = read_objects(cfg.labeled, cfg.label_column)
        rows = store.rows_of(ids, strict=False)
        if (rows < 0).any():
            log.warning("%s: %d labelled ids are not in the index and are ignored", cfg.labeled, int((rows < 0).sum()))
        return rows[rows >= 0], np.asarray(values)[rows >= 0]
    values = store.label(cfg.label_column)
    rows = np.flatnonzero(np.isfinite(values))
    if cfg.shots > 0:
        rng = np.random.default_rng(cfg.seed)
        picked = [rng.permutation(rows[values[rows] == c])[:cfg.shots] for c in np.unique(values[rows])]
        rows = np.sort(np.concatenate(picked))
    return rows, values[rows]


def run_label(cfg: LabelConfig) -> Table:
    """CLI stage: few-shot label the targets, write the table and a summary."""
    if not cfg.index:
        raise ConfigError("give index=... (a directory from `galclip index`)")
    loaded = load_index(cfg.index, mmap=True)  # only the store is needed: do not read the index into RAM
    store = loaded.store
    kind = cfg.kind or morphology_kind(store.kinds, loaded.manifest.embedding_kind)
    sup_rows, sup_vals = _support(store, cfg)
    if cfg.targets:
        ids, _ = read_objects(cfg.targets)
        tgt = store.rows_of(ids)
    else:
        tgt = np.setdiff1d(np.arange(len(store)), sup_rows)
    table = label_objects(store, kind, sup_rows, sup_vals, tgt, cfg.label_column, cfg.method, cfg.k, cfg.temperature)
    out = Path(cfg.out)
    write_table(table, out / "labels", cfg.formats)
    summary: dict[str, Any] = dict(index=str(loaded.root), kind=kind, method=cfg.method, k=cfg.k,
                                   label_column=cfg.label_column, n_labeled=int(len(sup_rows)),
                                   n_targets=int(len(tgt)),
                                   labeled_per_class={str(c): int(n) for c, n in zip(*np.unique(sup_vals, return_counts=True))})
    pred = np.asarray(table[f"{cfg.label_column}_pred"])
    if cfg.label_column in store.label_columns and pred.dtype.kind == "f":  # simulated surveys: how well it did
        truth = store.label(cfg.label_column)[tgt]
        ok = np.isfinite(truth) & np.isfinite(pred)
        if ok.any():
            summary.update(_scores(truth[ok], pred[ok], table, ok))
    atomic_write_json(out / "summary.json", summary)
    log.info("labelled %d objects from %d examples -> %s", len(tgt), len(sup_rows), out)
    return table


def _scores(truth: np.ndarray, pred: np.ndarray, table: Any, ok: np.ndarray) -> dict[str, float]:
    """Agreement with stored labels, honest for rare classes: balanced accuracy, the base
    rate of each class, and (two classes) ROC AUC of the probability of the positive class."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    out = {"accuracy_vs_stored_labels": float((truth == pred).mean()),
           "balanced_accuracy_vs_stored_labels": float(balanced_accuracy_score(truth, pred)),
           "base_rates": {str(c): float((truth == c).mean()) for c in np.unique(truth)}}
    classes = np.unique(truth)
    p_pos = f"p_{classes[-1]}"
    if classes.size == 2 and p_pos in table.colnames:
        score = np.nan_to_num(np.asarray(table[p_pos], np.float64)[ok], nan=0.0)
        out["roc_auc_vs_stored_labels"] = float(roc_auc_score(truth == classes[1], score))
    return out
