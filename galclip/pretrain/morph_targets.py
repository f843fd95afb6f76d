"""Label-free morphology targets: the stored statmorph columns as auxiliary regression targets.

Contrastive objectives learn what two views (or an image and its spectrum) share: colour,
size, redshift. Mergers differ from other galaxies in asymmetric, low-surface-brightness
light, which none of those objectives asks for. Ingest already measures the classical
statistics that see it (asymmetry, shape/outer asymmetry, Gini, M20, MID, companions;
:mod:`galclip.data.morphology`, the one morphology implementation), so pretraining
regresses them from the image tower's pooled features: the embedding then carries
merger-relevant structure by construction, and the network is free to learn more.

Targets are robustly standardised (median / IQR of the training rows, clipped to ±5) so
heavy-tailed statistics such as asymmetry do not dominate; NaN (a failed measurement) is
masked out of the loss, and so (``mask_flag``) are the statistics of fits statmorph flagged:
a third of real SDSS cutouts fail a step (flag 2), and regressing their numbers teaches noise.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from galclip.data.morphology import morphology_flag, statmorph_columns
from galclip.errors import ConfigError

PREFIX = "morph_"
SKIP = ("morph_flag",)


@dataclasses.dataclass
class MorphTargets:
    """Standardised morphology targets of every dataset row (row = global dataset index)."""

    names: list[str]
    values: Tensor  # (N_rows, K) float32, 0 where missing
    present: Tensor  # (N_rows, K) bool
    center: np.ndarray
    scale: np.ndarray

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Targets and mask of a batch's rows (``batch["index"]``)."""
        i = index.long().cpu()
        return self.values[i], self.present[i]

    def summary(self) -> dict[str, Any]:
        """JSON-able record (for ``config.yaml``/``metrics.json``) of what was regressed."""
        return {"columns": self.names, "center": [round(float(c), 6) for c in self.center],
                "scale": [round(float(s), 6) for s in self.scale],
                "present_fraction": round(float(self.present.float().mean()), 4)}


def stored_columns(dataset: Any, wanted: Sequence[str] = ()) -> list[str]:
    """The dataset's stored morphology columns (all ``morph_*`` but the flag, or ``wanted``)."""
    names = list(getattr(dataset, "tabular_names", []))
    have = [c for c in names if c.startswith(PREFIX) and c not in SKIP]
    if not wanted:
        return have
    cols = [c if c.startswith(PREFIX) else PREFIX + c for c in wanted]
    missing = [c for c in cols if c not in names]
    if missing:
        raise ConfigError(f"loss.morph_columns: {missing[0]!r} is not stored in the dataset "
                          "(ingest with morphology: true)")
    return cols


def build_targets(dataset: Any, train_rows: np.ndarray, wanted: Sequence[str] = (),
                  clip: float = 5.0, mask_flag: int = 0) -> MorphTargets | None:
    """Targets for every row of ``dataset``, standardised on ``train_rows``; None without columns.

    ``mask_flag`` > 0: statmorph's own statistics of rows whose stored ``morph_flag`` is at
    least this are missing (the close-companion counts, a separate detection, are kept)."""
    names = stored_columns(dataset, wanted)
    if not names:
        return None
    raw = np.stack([np.asarray(dataset.column(c), np.float64) for c in names], 1)
    raw[~np.isfinite(raw)] = np.nan
    flag = morphology_flag(dataset) if mask_flag > 0 else None
    if flag is not None:
        raw[np.ix_(np.nan_to_num(flag, nan=0.0) >= mask_flag, statmorph_columns(names))] = np.nan
    ref = raw[np.asarray(train_rows, np.int64)]
    keep = np.isfinite(ref).sum(0) >= max(10, 0.05 * len(ref))  # a column that almost never measures teaches nothing
    names, raw, ref = [n for n, k in zip(names, keep) if k], raw[:, keep], ref[:, keep]
    if not names:
        return None
    center = np.nanmedian(ref, 0)
    iqr = np.nanpercentile(ref, 75, 0) - np.nanpercentile(ref, 25, 0)
    std = np.nanstd(ref, 0)
    scale = np.where(iqr > 0, iqr / 1.349, np.where(std > 0, std, 1.0))  # IQR → σ for a Gaussian
    z = np.clip((raw - center) / scale, -clip, clip)
    present = np.isfinite(z)
    return MorphTargets(names, torch.from_numpy(np.nan_to_num(z).astype(np.float32)), torch.from_numpy(present),
                        center, scale)


def morph_loss(pred: Tensor, target: Tensor, present: Tensor) -> Tensor:
    """Masked smooth-L1 over measured statistics (robust to the odd bad measurement)."""
    m = present.to(pred.dtype)
    err = F.smooth_l1_loss(pred, target.to(pred.dtype), reduction="none") * m
    return err.sum() / m.sum().clamp_min(1.0)


def r2_per_target(pred: np.ndarray, target: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Coefficient of determination of each regressed statistic on held-out rows."""
    out = np.full(pred.shape[1], np.nan)
    for j in range(pred.shape[1]):
        ok = present[:, j]
        if ok.sum() >= 5:
            t, p = target[ok, j], pred[ok, j]
            var = ((t - t.mean()) ** 2).sum()
            out[j] = 1.0 - ((t - p) ** 2).sum() / var if var > 0 else np.nan
    return out
