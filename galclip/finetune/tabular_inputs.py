"""Tabular inputs for the heads: catalogue columns + classical morphology, standardised.

Classical morphology (Gini, M20, asymmetry, concentration, ...) + logistic regression is
the strong few-label merger baseline on real images; the heads take the same statistics
as an input so that galclip can only add to it. The scaling is the tabular team's
:class:`~galclip.data.tabular.TabularPreprocessor` (robust, NaN = missing, JSON-saved).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from galclip.data.dataset import SurveyDataset
from galclip.data.tabular import TabularPrepConfig, TabularPreprocessor
from galclip.finetune.features import tabular_raw
from galclip.finetune.repair import RepairConfig, StatisticRepair


@dataclasses.dataclass
class TabularInputConfig:
    """Which tabular features feed the head (used when ``head.tabular`` is not ``none``).

    Attributes:
        columns: stored catalogue columns (``tabular/<name>`` of the dataset); None = all.
        morphology: add Gini/M20/asymmetry/concentration/... measured with statmorph (cached).
        prep: cleaning/standardisation of the columns.
        repair: statistics of flagged statmorph fits replaced by their estimate from the image
            representation (``galclip.finetune.repair``; heads on pretrained features only).
    """

    columns: list[str] | None = None
    morphology: bool = True
    prep: TabularPrepConfig = dataclasses.field(default_factory=TabularPrepConfig)
    repair: RepairConfig = dataclasses.field(default_factory=RepairConfig)


def build_tabular(dataset: SurveyDataset, cfg: TabularInputConfig, fit_rows: np.ndarray,
                  cache_dir: str | Path | None = None, n_jobs: int = 1,
                  ) -> tuple[np.ndarray, list[str], TabularPreprocessor | None]:
    """Standardised tabular matrix (N, K) (NaN = missing), its column names and the fitted scaler.

    The scaler is fitted on ``fit_rows`` only (never the test rows); it uses no labels.
    """
    raw, names = tabular_raw(dataset, cfg.columns, cfg.morphology, cache_dir, n_jobs=n_jobs)
    if not names:
        return np.zeros((len(dataset), 0), np.float32), [], None
    # drop columns that are entirely missing on the fitting rows (nothing to learn from)
    ok = [j for j in range(len(names)) if np.isfinite(raw[fit_rows, j]).any()]
    raw, names = raw[:, ok], [names[j] for j in ok]
    prep_cfg = dataclasses.replace(cfg.prep, columns=None)
    prep = TabularPreprocessor(prep_cfg).fit(raw[fit_rows], names)
    return prep.transform(raw, names).astype(np.float32), names, prep


def prep_to_dict(prep: TabularPreprocessor | None) -> dict[str, Any] | None:
    return None if prep is None else prep.to_dict()


def repaired_tabular(cfg: TabularInputConfig, tab: np.ndarray, names: list[str], representation: np.ndarray,
                     flag: np.ndarray | None, fit_rows: np.ndarray) -> tuple[np.ndarray, StatisticRepair | None]:
    """``tab`` with flagged fits' statistics (``flag``: :func:`morphology_flag` of the dataset)
    estimated from ``representation`` (fitted label-free on ``fit_rows``), and the fitted repair
    (None: nothing repaired, ``tab`` returned as is)."""
    repair = StatisticRepair.fit(representation, tab, names, flag, fit_rows, cfg.repair) if cfg.morphology else None
    if repair is None or flag is None:
        return tab, None
    return repair.apply(representation, tab, names, flag), repair


def image_blind(tab: np.ndarray, names: list[str]) -> np.ndarray:
    """``tab`` as an object without an image has it: its morphology statistics (measured on the
    image) missing, its catalogue columns kept. Spectrum-only inference reads this, or it would
    score the image through its statistics."""
    from galclip.data.morphology import morphology_columns

    out = np.array(tab, copy=True)
    out[:, morphology_columns(names)] = np.nan
    return out
