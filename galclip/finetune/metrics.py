"""Classification metrics and decision thresholds for rare-class (merger) problems.

Mergers are ~10% of a survey, so accuracy alone is misleading: we report balanced
accuracy, precision/recall/F1 at a threshold chosen on *validation* predictions, plus the
threshold-free ROC AUC / PR AUC and the expected calibration error (torchmetrics).
"""
from __future__ import annotations

import math
import numpy as np
import torch
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error

METRIC_NAMES = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "ece")

THRESHOLD_METRICS = ("f1", "balanced_accuracy", "accuracy", "mcc")


def _curve_scores(tp: np.ndarray, fp: np.ndarray, pos: int, neg: int, metric: str) -> np.ndarray:
    """Metric at every threshold from true/false positive counts (vectorised)."""
    fn, tn = pos - tp, neg - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "f1":
            s = 2 * tp / (2 * tp + fp + fn)
        elif metric == "balanced_accuracy":
            s = 0.5 * (tp / pos + tn / neg)
        elif metric == "accuracy":
            s = (tp + tn) / (pos + neg)
        else:  # mcc
            s = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.nan_to_num(s, nan=0.0)


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, metric: str = "f1") -> float:
    """Threshold on ``prob`` maximising ``metric`` on validation labels.

    Every distinct validation probability is a candidate cut, all scored at once from
    :func:`sklearn.metrics.roc_curve` counts; the returned threshold is the midpoint between
    the chosen cut and the next lower probability, so it does not sit on a validation point.
    Ties go to the threshold closest to 0.5. With a single class in ``y_true`` nothing can
    be learned and 0.5 is returned.
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold metric {metric!r} not in {sorted(THRESHOLD_METRICS)}")
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=np.float64)
    ok = np.isfinite(p)
    y, p = y[ok], p[ok]
    if y.size == 0 or np.unique(y).size < 2:
        return 0.5
    pos, neg = int(y.sum()), int((1 - y).sum())
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    thr, tp, fp = thr[1:], tpr[1:] * pos, fpr[1:] * neg  # first point is "predict nothing"
    scores = _curve_scores(tp, fp, pos, neg, metric)
    u = np.unique(p)
    lower = u[np.clip(np.searchsorted(u, thr) - 1, 0, None)]
    cands = np.where(lower < thr, (thr + lower) / 2, thr - 1e-6)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error (equal-width bins, L1) via torchmetrics."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(binary_calibration_error(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y),
                                          n_bins=n_bins, norm="l1"))


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for a binary problem (NaN when undefined)."""
    y = np.asarray(y_true).astype(int)
    p = np.clip(np.nan_to_num(np.asarray(prob, dtype=np.float64), nan=0.5), 0.0, 1.0)
    pred = (p >= threshold).astype(int)
    two = np.unique(y).size == 2
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)) if two else math.nan,
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if two else math.nan,
        "pr_auc": float(skm.average_precision_score(y, p)) if two else math.nan,
        "ece": expected_calibration_error(y, p),
        "threshold": float(threshold),
        "n": int(y.size),
        "n_positive": int(y.sum()),
    }
    return out


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Macro metrics for the multi-class merger-stage problem (argmax decisions)."""
    y = np.asarray(y_true).astype(int)
    pred = prob.argmax(1)
    labels = np.arange(prob.shape[1])
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
    }
    try:
        out["roc_auc_ovr"] = float(skm.roc_auc_score(y, prob, multi_class="ovr", labels=labels))
    except ValueError:
        out["roc_auc_ovr"] = math.nan
    return out


def summarise(rows: list[dict[str, float]], keys: tuple[str, ...] = METRIC_NAMES) -> dict[str, float]:
    """Mean and std over seeds (``<key>_mean``, ``<key>_std``), ignoring NaNs."""
    out: dict[str, float] = {"n_seeds": len(rows)}
    for k in keys:
        vals = np.array([r.get(k, np.nan) for r in rows], dtype=np.float64)
        fin = vals[np.isfinite(vals)]
        out[f"{k}_mean"] = float(fin.mean()) if fin.size else math.nan
        out[f"{k}_std"] = float(fin.std()) if fin.size else math.nan
    return out
