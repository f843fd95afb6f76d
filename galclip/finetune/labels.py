"""Label columns as the heads see them: reading, class count, merger probability, weights.

Shared by ``finetune`` and ``evaluate`` (and the head training loops), which must agree on
what counts as unknown, how many outputs a head has and how a multi-class head is scored.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import Checkpoint, load_checkpoint, open_dataset
from galclip.errors import ConfigError
from galclip.finetune.metrics import binary_metrics, multiclass_metrics


def labeled_dataset(checkpoint: str, data: DataConfig, label: str) -> tuple[Checkpoint, SurveyDataset, np.ndarray]:
    """The checkpoint, the dataset it reads and the label column: how finetune and evaluate start."""
    ckpt = load_checkpoint(checkpoint)
    dataset = open_dataset(ckpt, data)
    return ckpt, dataset, read_labels(dataset, label)


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
