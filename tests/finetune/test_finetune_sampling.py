"""Label budgets, test split, thresholds and metrics."""
from __future__ import annotations

import numpy as np
import pytest

from galclip.finetune.metrics import binary_metrics, choose_threshold, expected_calibration_error, summarise
from galclip.finetune.sampling import cv_folds, stratified_budget, holdout_split


def _labels(n: int = 1000, rate: float = 0.1, seed: int = 0) -> np.ndarray:
    y = (np.random.default_rng(seed).random(n) < rate).astype(float)
    y[::37] = np.nan  # unknown labels are never drawn
    return y


@pytest.mark.parametrize("budget", [4, 10, 30, 100, 300])
def test_budget_is_stratified_with_minimum_per_class(budget: int) -> None:
    y = _labels()
    pool, test = holdout_split(y, 0.3, seed=0)
    assert not set(pool) & set(test)
    assert np.isfinite(y[pool]).all() and np.isfinite(y[test]).all()
    idx = stratified_budget(y, pool, budget, seed=1)
    assert idx.size == budget and np.unique(idx).size == budget
    assert set(idx) <= set(pool)
    n_pos = int(y[idx].sum())
    assert n_pos >= 2 and budget - n_pos >= 2
    rate = y[pool].mean()
    assert abs(n_pos - max(2, budget * rate)) <= max(2, 0.2 * budget * rate) + 1


def test_budget_deterministic_and_seed_dependent() -> None:
    y = _labels()
    pool, _ = holdout_split(y, 0.3)
    a = stratified_budget(y, pool, 50, seed=3)
    assert np.array_equal(a, stratified_budget(y, pool, 50, seed=3))
    assert not np.array_equal(a, stratified_budget(y, pool, 50, seed=4))
    assert np.array_equal(stratified_budget(y, pool, 10**6, seed=0), pool)


def test_test_split_is_stratified() -> None:
    y = _labels(2000)
    pool, test = holdout_split(y, 0.25, seed=0)
    assert abs(y[test].mean() - y[pool].mean()) < 0.02
    assert abs(test.size / (pool.size + test.size) - 0.25) < 0.01


def test_cv_folds_capped_by_rarest_class() -> None:
    assert cv_folds(np.array([0] * 20 + [1] * 2), 5) and len(cv_folds(np.array([0] * 20 + [1] * 2), 5)) == 2
    assert cv_folds(np.array([0] * 20 + [1]), 5) == []
    for tr, va in cv_folds(np.array([0] * 30 + [1] * 6), 3):
        assert np.unique(np.array([0] * 30 + [1] * 6)[va]).size == 2


def test_threshold_maximises_f1() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 0, 1])
    p = np.array([0.05, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.9])
    t = choose_threshold(y, p, "f1")
    assert 0.25 < t <= 0.3  # everything from 0.3 up → F1 = 6/7, the best available
    pred = (p >= t).astype(int)
    from sklearn.metrics import f1_score
    best = max(f1_score(y, (p >= c).astype(int)) for c in np.linspace(0, 1, 41))
    assert f1_score(y, pred) == pytest.approx(best)
    assert choose_threshold(np.zeros(5), np.random.rand(5)) == 0.5
    assert choose_threshold(y, p, "balanced_accuracy") <= 0.3 + 1e-9
    with pytest.raises(ValueError):
        choose_threshold(y, p, "nope")


def test_metrics_and_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)  # perfectly calibrated
    assert expected_calibration_error(y, p) < 0.03
    assert expected_calibration_error(y, np.clip(p * 0.3, 0, 1)) > 0.2
    m = binary_metrics(y, p, 0.5)
    assert 0.7 < m["roc_auc"] < 0.9 and m["n"] == 5000
    assert binary_metrics(np.ones(4), np.full(4, 0.7))["roc_auc"] != binary_metrics(np.ones(4), np.full(4, 0.7))["roc_auc"]
    s = summarise([{"f1": 0.5}, {"f1": 0.7}, {"f1": np.nan}], ("f1",))
    assert s["f1_mean"] == pytest.approx(0.6) and s["f1_std"] == pytest.approx(0.1)
