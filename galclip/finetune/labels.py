"""Label columns as the heads see them: reading, class count, merger probability, weights.

Shared by ``finetune`` and ``evaluate`` (and the head training loops), which must agree on
what counts as unknown, how many outputs a head has and how a multi-class head is scored.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import Checkpoint, load_checkpoint, open_dataset
from galclip.errors import ConfigError, InputFileError
from galclip.finetune.metrics import binary_metrics, multiclass_metrics

log = logging.getLogger(__name__)


def labeled_dataset(checkpoint: str, data: DataConfig, label: str,
                    labels_file: str = "") -> tuple[Checkpoint, SurveyDataset, np.ndarray]:
    """The checkpoint, the dataset it reads and the label column: how finetune and evaluate start.

    ``labels_file`` (CSV/FITS with ``object_id`` and a ``label`` column) replaces the
    dataset's own label column: an astronomer's few labels, marked after ingest.
    """
    ckpt = load_checkpoint(checkpoint)
    dataset = open_dataset(ckpt, data)
    y = labels_from_file(dataset, labels_file, label) if labels_file else read_labels(dataset, label)
    return ckpt, dataset, y


def labels_from_file(dataset: SurveyDataset, path: str, label: str) -> np.ndarray:
    """Labels for the dataset rows from a table keyed by ``object_id`` (NaN for rows not in it).

    Ids the dataset does not have are reported by name (a warning; an error when none match).
    """
    from galclip.data.readers.catalogs import read_catalog

    cat = read_catalog(path, None, None, None)
    if cat.id_column is None:
        raise InputFileError(path, "no object_id column (the labels are matched to the dataset by object_id)")
    if label not in cat.table.colnames:
        raise InputFileError(path, f"no {label!r} column (has {', '.join(cat.table.colnames)})")
    try:
        values = np.asarray(cat.table[label], np.float64)
    except (TypeError, ValueError):
        raise InputFileError(path, f"column {label!r} must be numeric (1 = merger, 0 = not)") from None
    ids = [str(v).strip() for v in cat.table[cat.id_column]]
    row = {oid: i for i, oid in enumerate(dataset.column(S.OBJECT_ID).astype(str))}
    unknown = [i for i in ids if i not in row]
    if len(unknown) == len(ids):
        raise InputFileError(path, f"none of its {len(ids)} object ids is in dataset {dataset.cfg.path} "
                                   f"(e.g. {unknown[0]!r})")
    if unknown:
        log.warning("%s: %d ids not in the dataset, ignored: %s%s", path, len(unknown), ", ".join(unknown[:20]),
                    " ..." if len(unknown) > 20 else "")
    y = np.full(len(dataset), np.nan)
    for oid, v in zip(ids, values):
        if oid in row and np.isfinite(v) and v >= 0:
            y[row[oid]] = v
    return y


def read_labels(dataset: SurveyDataset, label: str) -> np.ndarray:
    """Label column as float (NaN = unknown; negative codes are treated as unknown)."""
    if label not in dataset.label_names and label not in dataset.manifest.label_columns:
        raise ConfigError(f"label column {label!r} not in dataset {dataset.cfg.path} "
                          f"(has: {', '.join(dataset.manifest.label_columns) or 'none'})")
    y = dataset.column(label).astype(np.float64)
    y[~np.isfinite(y) | (y < 0)] = np.nan
    return y


def n_classes(y: np.ndarray, label: str) -> int:
    """1 logit for binary labels, C for multi-class (merger_stage uses the simulator's stages)."""
    known = y[np.isfinite(y)].astype(int)
    if label == "merger_stage":
        return max(len(S.MERGER_STAGES), int(known.max(initial=0)) + 1)
    k = int(known.max(initial=1)) + 1
    return 1 if k <= 2 else k


def merger_probability(prob: np.ndarray, label: str) -> np.ndarray:
    """p(merger) from a head's output: the probability itself, or the merger stages' sum."""
    if prob.ndim == 1:
        return prob
    if label == "merger_stage":
        is_m = np.zeros(prob.shape[1], bool)
        is_m[: len(S.MERGER_STAGE_IS_MERGER)] = np.asarray(S.MERGER_STAGE_IS_MERGER, bool)
        return prob[:, is_m].sum(1)
    return 1.0 - prob[:, 0]


def evaluate_predictions(y: np.ndarray, prob: np.ndarray, threshold: float, label: str) -> dict[str, Any]:
    """Binary merger metrics (plus multi-class metrics when the head is multi-class)."""
    if prob.ndim == 1:
        return binary_metrics(y, prob, threshold)
    out = {f"stage_{k}": v for k, v in multiclass_metrics(y, prob).items()}
    if label == "merger_stage":
        ybin = np.asarray(S.MERGER_STAGE_IS_MERGER)[y.astype(int)]
        out.update(binary_metrics(ybin, merger_probability(prob, label), 0.5))
    return out


def class_weights(y: np.ndarray, n_out: int) -> torch.Tensor:
    """Loss weights ∝ 1/class frequency (absent classes 0), so few mergers still count."""
    k = max(n_out, 2)
    counts = np.bincount(y.astype(int), minlength=k).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)
