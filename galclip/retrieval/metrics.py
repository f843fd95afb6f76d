"""Label-based retrieval quality of an embedding, from pytorch-metric-learning's ``AccuracyCalculator``.

"Are an object's nearest neighbours of its own class?" — precision@1, R-precision and
MAP@R (Musgrave et al. 2020, "A Metric Learning Reality Check"), computed by PML with an
exact FAISS search on the CPU rather than by hand-written ranking code. Rows are compared by
cosine similarity (unit vectors, where L2 order = cosine order).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import numpy as np

#: PML metric name → key reported here
METRICS = {"precision_at_1": "p_at_1", "mean_average_precision_at_r": "map_at_r", "r_precision": "r_precision"}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


@contextlib.contextmanager
def _quiet_pml() -> Iterator[None]:
    """PML logs "running k-nn with k=..." at INFO on every call; stage logs run at INFO."""
    log = logging.getLogger("PML")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def retrieval_accuracy(query: np.ndarray, query_labels: np.ndarray, reference: np.ndarray | None = None,
                       reference_labels: np.ndarray | None = None) -> dict[str, float]:
    """``{"p_at_1", "map_at_r", "r_precision"}`` of ``query`` retrieving same-label rows.

    With ``reference`` None the query set is searched against itself, each query excluding
    itself (PML's ``ref_includes_query``), so a row never counts as its own neighbour. Labels
    are integers (or integer-valued floats); queries whose class has no other member in the
    reference are skipped by PML. The kNN depth is the largest class size, as MAP@R needs.
    """
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    q = _unit(query)
    ql = np.asarray(query_labels, np.float32)
    if reference is None:
        ref, rl = q, ql
    else:
        if reference_labels is None:
            raise ValueError("a reference set needs reference_labels")
        ref, rl = _unit(reference), np.asarray(reference_labels, np.float32)
    calc = AccuracyCalculator(include=tuple(METRICS), k="max_bin_count", device=torch.device("cpu"))
    with _quiet_pml():
        got = calc.get_accuracy(q, ql, ref, rl, ref_includes_query=reference is None)
    return {METRICS[k]: float(v) for k, v in got.items()}
