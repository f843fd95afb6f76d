"""retrieval_accuracy: PML AccuracyCalculator's precision@1 / MAP@R / R-precision on numpy arrays."""
from __future__ import annotations

import numpy as np
import pytest

from galclip.retrieval.metrics import retrieval_accuracy


def _clusters(n_per: int, n_classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per)
    x = rng.normal(scale=spread, size=(y.size, 16)).astype(np.float32)
    x[np.arange(y.size), y] += 1.0  # class c sits on axis c
    return x, y


def test_separated_clusters_retrieve_perfectly() -> None:
    x, y = _clusters(40, 3, 0.05, seed=0)
    got = retrieval_accuracy(x, y)
    assert set(got) == {"p_at_1", "map_at_r", "r_precision"}
    assert got == {"p_at_1": 1.0, "map_at_r": 1.0, "r_precision": 1.0}
    # a separate reference set (queries are not in it): the same answer, with float64 input too
    xr, yr = _clusters(30, 3, 0.05, seed=1)
    assert retrieval_accuracy(x.astype(np.float64), y, xr, yr)["p_at_1"] == 1.0


def test_random_labels_are_near_chance() -> None:
    x, y = _clusters(100, 2, 0.05, seed=0)
    shuffled = np.random.default_rng(1).permutation(y)
    got = retrieval_accuracy(x, shuffled)
    assert abs(got["p_at_1"] - 0.5) < 0.1 and abs(got["r_precision"] - 0.5) < 0.1
    assert got["map_at_r"] < 0.5


def test_each_query_is_excluded_from_its_own_neighbours() -> None:
    """Self-retrieval would make every singleton-free query a hit; with it excluded, a query's
    nearest neighbour is the other class's row placed right next to it."""
    x = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    assert retrieval_accuracy(x, y)["p_at_1"] == 0.0
    with pytest.raises(ValueError, match="reference_labels"):
        retrieval_accuracy(x, y, x)
