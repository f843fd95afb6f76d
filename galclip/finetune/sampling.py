"""Label splits: a fixed held-out test set and stratified label budgets drawn from the rest.

Every method in the evaluation harness sees exactly the same test rows and, for a given
(budget, seed), the same labeled rows — otherwise differences between methods would be
partly differences between samples.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def holdout_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (pool, test) row indices over the rows with a known label (no test rows
    when ``test_fraction`` is 0: every label trains, metrics are then cross-validated)."""
    labels = np.asarray(labels, dtype=np.float64)
    known = np.flatnonzero(np.isfinite(labels))
    if test_fraction <= 0:
        return known, np.zeros(0, dtype=known.dtype)
    y = labels[known].astype(int)
    _, counts = np.unique(y, return_counts=True)
    strat = y if counts.size > 1 and counts.min() >= 2 else None
    pool, test = train_test_split(known, test_size=test_fraction, random_state=seed, stratify=strat)
    return np.sort(pool), np.sort(test)


def stratified_budget(labels: np.ndarray, pool: np.ndarray, budget: int, seed: int,
                      min_per_class: int = 2) -> np.ndarray:
    """Draw ``budget`` rows of ``pool`` with class proportions kept and ≥ ``min_per_class`` each.

    Rare classes get at least ``min_per_class`` rows (if the pool has them) because a
    classifier cannot learn a class it never sees — with 10 labels and 10% mergers a plain
    proportional draw would give a single merger, or none.

    Returns:
        Sorted row indices (a subset of ``pool``); the whole pool when ``budget`` ≥ its size.
    """
    pool = np.asarray(pool)
    y = np.asarray(labels)[pool].astype(int)
    if budget >= pool.size:
        return np.sort(pool)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(np.minimum(counts, min_per_class), np.floor(budget * counts / counts.sum()).astype(int))
    quota = np.minimum(quota, counts)
    # distribute the remainder by largest fractional share, then trim if minimums overshoot
    while quota.sum() < budget:
        room = counts - quota
        frac = budget * counts / counts.sum() - quota
        frac[room <= 0] = -np.inf
        quota[int(np.argmax(frac))] += 1
    while quota.sum() > budget:
        over = quota - np.minimum(counts, min_per_class)
        over_idx = np.flatnonzero(over > 0)
        if over_idx.size == 0:
            break
        quota[over_idx[np.argmax(quota[over_idx])]] -= 1
    chosen = [rng.choice(pool[y == c], size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def cv_folds(y: np.ndarray, max_folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds for out-of-fold validation predictions on a tiny labeled set.

    The number of folds is capped by the rarest class count (each validation fold must hold
    one of each class); with fewer than 2 of a class there is no fold and ``[]`` is returned.
    """
    y = np.asarray(y).astype(int)
    _, counts = np.unique(y, return_counts=True)
    k = min(max_folds, int(counts.min())) if counts.size > 1 else 0
    if k < 2:
        return []
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(y.size), y))
