"""Statistics of flagged morphology fits, replaced by their estimate from the image representation.

statmorph flags the fits it does not trust (``flag`` 1: a warning, such as an irregular or
small segment; 2: a failed step, such as the Petrosian radius or the asymmetry centre). On
real SDSS cutouts a third of the fits are flagged (30 % of gz1_dev, a quarter of its mergers
among them), and a head that fuses the statistics with the representation still weighs those
numbers like good ones. The pretrained representation was trained to regress the same
statistics (validation R² ≈ 0.7), so for a flagged galaxy its estimate is the better number.

The repair is label-free: a ridge regression (scikit-learn) from the standardised image
representation to the standardised statistics, fitted on the *unflagged* rows the scaler was
fitted on, then applied to the flagged rows. It is stored with a head (JSON) so ``galclip
predict`` repairs new galaxies the same way. Only statmorph's own outputs are repaired; the
close-companion counts come from a separate detection that the flag does not describe. The
classical baselines (morphology + logistic regression, asymmetry alone) always read the
measured statistics.

Measured on gz1_dev (30 draws) and the demo survey (8 draws): representation + repaired
statistics gains 0.007–0.014 ROC AUC over representation + measured statistics (README).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from galclip.data.morphology import statmorph_columns

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RepairConfig:
    """How flagged statistics are repaired.

    Attributes:
        enabled: repair the statistics of flagged fits (needs a stored ``flag``/``morph_flag``
            column and the image representation; otherwise the statistics are used as measured).
        min_flag: fits with ``flag`` ≥ this are repaired (statmorph: 1 warning, 2 failed step).
        alpha: ridge strength (on standardised inputs; the gain was flat over 1–100).
    """

    enabled: bool = True
    min_flag: int = 1
    alpha: float = 10.0


@dataclasses.dataclass
class StatisticRepair:
    """A fitted repair: which columns, the representation's scaling and the ridge weights."""

    columns: list[str]
    min_flag: int
    mean: np.ndarray  # (D,) of the representation
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (K, D)
    intercept: np.ndarray  # (K,)

    @classmethod
    def fit(cls, vec: np.ndarray, tab: np.ndarray, names: Sequence[str], flag: np.ndarray | None,
            rows: np.ndarray, cfg: RepairConfig) -> StatisticRepair | None:
        """Fit on the unflagged ``rows`` with complete statistics; None when nothing can be repaired."""
        from sklearn.linear_model import Ridge

        cols = statmorph_columns(names)
        if not cfg.enabled or flag is None or not cols:
            return None
        rows = np.asarray(rows)
        good = rows[(flag[rows] < cfg.min_flag) & np.isfinite(tab[rows][:, cols]).all(1)
                    & np.isfinite(vec[rows]).all(1)]
        if good.size < max(20, vec.shape[1] // 4):
            log.info("statistic repair skipped: %d unflagged fits to learn it from", good.size)
            return None
        mean, scale = vec[good].mean(0), vec[good].std(0) + 1e-8
        ridge = Ridge(alpha=cfg.alpha).fit((vec[good] - mean) / scale, tab[good][:, cols])
        return cls([names[j] for j in cols], cfg.min_flag, mean, scale, ridge.coef_, ridge.intercept_)

    def repaired_rows(self, vec: np.ndarray, flag: np.ndarray) -> np.ndarray:
        """Which rows :meth:`apply` replaces: flagged (``flag`` ≥ min_flag) with a representation."""
        return (np.nan_to_num(flag, nan=0.0) >= self.min_flag) & np.isfinite(vec).all(1)

    def apply(self, vec: np.ndarray, tab: np.ndarray, names: Sequence[str], flag: np.ndarray) -> np.ndarray:
        """``tab`` with the fitted columns of :meth:`repaired_rows` replaced."""
        cols = [list(names).index(c) for c in self.columns]
        bad = np.flatnonzero(self.repaired_rows(vec, flag))
        out = tab.copy()
        if bad.size:
            pred = ((vec[bad] - self.mean) / self.scale) @ self.coef.T + self.intercept
            out[np.ix_(bad, cols)] = pred.astype(out.dtype)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "min_flag": self.min_flag, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatisticRepair:
        return cls(list(d["columns"]), int(d["min_flag"]), np.asarray(d["mean"]), np.asarray(d["scale"]),
                   np.asarray(d["coef"]), np.asarray(d["intercept"]))


def repair_dict(repair: StatisticRepair | None) -> dict[str, Any] | None:
    return None if repair is None else repair.to_dict()
