"""Few-shot classification in the embedding space: similarity-weighted kNN and class prototypes.

Pure array code (embeddings (N,D) + labels), deterministic: neighbours come from an exact
FAISS inner-product search and ties are broken by class order, so the same inputs always
give the same labels and confidences. :func:`fewshot_curve` measures accuracy against the
number of labelled examples per class — the evaluation harness and benchmarks call it.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import faiss
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from galclip.retrieval.store import normalise, valid_rows

log = logging.getLogger(__name__)

METHODS = ("knn", "prototype")


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def knn_proba(support: np.ndarray, support_y: np.ndarray, queries: np.ndarray, n_classes: int,
              k: int = 10, temperature: float = 0.1) -> np.ndarray:
    """Class probabilities from the ``k`` most similar labelled examples.

    Each neighbour votes for its class with weight ``exp(cos / temperature)`` (as in
    weighted-kNN evaluation of self-supervised features, Wu et al. 2018), so a very similar
    example outweighs several loosely similar ones; votes are normalised to sum to one.

    Args:
        support: (S,D) labelled embeddings.
        support_y: (S,) integer class indices in ``[0, n_classes)``.
        queries: (Q,D) embeddings to classify.
        n_classes: number of classes.
        k: neighbours (capped at S).
        temperature: softness of the similarity weighting.
    """
    s = normalise(support)
    q = normalise(queries)
    kk = int(min(k, len(s)))
    index = faiss.IndexFlatIP(s.shape[1])
    index.add(s)
    sims, nn = index.search(q, kk)
    w = np.exp((sims.astype(np.float64) - 1.0) / temperature)  # shift by max cos=1 for stability
    votes = np.zeros((len(q), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(q)), kk), support_y[nn].ravel()), w.ravel())
    total = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, total, out=np.full_like(votes, 1.0 / n_classes), where=total > 0)


def prototype_proba(support: np.ndarray, support_y: np.ndarray, queries: np.ndarray, n_classes: int,
                    temperature: float = 0.1) -> np.ndarray:
    """Class probabilities from cosine similarity to each class's mean embedding (prototype).

    Prototypical-network style (Snell et al. 2017): robust with 1-5 shots, where kNN is
    dominated by single examples. Classes without any example get probability 0.
    """
    s = normalise(support)
    q = normalise(queries)
    protos = np.zeros((n_classes, s.shape[1]), np.float32)
    present = np.zeros(n_classes, bool)
    for c in range(n_classes):
        sel = support_y == c
        if sel.any():
            protos[c] = s[sel].mean(axis=0)
            present[c] = True
    protos[present] = normalise(protos[present])
    logits = (q @ protos.T).astype(np.float64) / temperature
    logits[:, ~present] = -np.inf
    return _softmax(logits)


def predict_proba(support: np.ndarray, support_y: np.ndarray, queries: np.ndarray, n_classes: int,
                  method: str = "knn", k: int = 10, temperature: float = 0.1) -> np.ndarray:
    """Dispatch to :func:`knn_proba` or :func:`prototype_proba`."""
    if method == "knn":
        return knn_proba(support, support_y, queries, n_classes, k, temperature)
    if method == "prototype":
        return prototype_proba(support, support_y, queries, n_classes, temperature)
    raise ValueError(f"unknown few-shot method {method!r} (one of {METHODS})")


def encode_labels(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Label values (numbers or strings) → (class values sorted, integer codes)."""
    classes, codes = np.unique(np.asarray(values), return_inverse=True)
    return classes, codes.astype(np.int64)


def fewshot_curve(embeddings: np.ndarray, labels: np.ndarray, shots: Sequence[int] = (1, 5, 10, 25),
                  seeds: Sequence[int] = (0, 1, 2, 3, 4), methods: Sequence[str] = METHODS, k: int = 10,
                  temperature: float = 0.1) -> list[dict[str, Any]]:
    """Few-shot accuracy versus shots per class, over random draws of the labelled set.

    For each seed, every class's objects are shuffled; the first ``max(shots)`` of each
    class form the pool the labelled examples are drawn from (the first ``s`` for ``s``
    shots) and all other objects are the test set — identical for every shot count, so the
    curve compares like with like. Rows with NaN labels or embeddings are ignored; classes
    with fewer than ``max(shots) + 1`` members use at most all-but-one member as examples.

    Args:
        embeddings: (N,D) vectors (any scale; normalised here).
        labels: (N,) class labels (numbers or strings; NaN = unknown).
        shots: labelled examples per class.
        seeds: random draws.
        methods: ``knn`` and/or ``prototype``.
        k, temperature: see :func:`knn_proba`.

    Returns:
        One dict per (method, shots, seed): ``method, shots, seed, n_support, n_test,
        accuracy, balanced_accuracy``.
    """
    x = np.asarray(embeddings, np.float32)
    y = np.asarray(labels)
    keep = valid_rows(x)
    if y.dtype.kind in "fc":
        keep &= np.isfinite(y)
    x, y = x[keep], y[keep]
    classes, codes = encode_labels(y)
    counts = np.bincount(codes, minlength=len(classes))
    usable = counts >= 2
    if usable.sum() < 2:
        raise ValueError("few-shot evaluation needs at least two classes with two or more members")
    if not usable.all():
        log.warning("ignoring classes with a single member: %s", list(classes[~usable]))
    max_shot = max(shots)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        pools, test = [], []
        for c in np.flatnonzero(usable):
            idx = rng.permutation(np.flatnonzero(codes == c))
            cut = min(max_shot, len(idx) - 1)
            pools.append(idx[:cut])
            test.append(idx[cut:])
        test_idx = np.concatenate(test)
        for s in shots:
            sup = np.concatenate([p[:s] for p in pools])
            for method in methods:
                proba = predict_proba(x[sup], codes[sup], x[test_idx], len(classes), method, k, temperature)
                pred = proba.argmax(axis=1)
                rows.append(dict(method=method, shots=int(s), seed=int(seed), n_support=int(sup.size),
                                 n_test=int(test_idx.size),
                                 accuracy=float(accuracy_score(codes[test_idx], pred)),
                                 balanced_accuracy=float(balanced_accuracy_score(codes[test_idx], pred))))
    return rows


def summarise_curve(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of each (method, shots) in a :func:`fewshot_curve` table."""
    out = []
    keys = sorted({(r["method"], r["shots"]) for r in rows}, key=lambda t: (t[0], t[1]))
    for method, s in keys:
        sel = [r for r in rows if r["method"] == method and r["shots"] == s]
        acc = np.array([r["accuracy"] for r in sel])
        bal = np.array([r["balanced_accuracy"] for r in sel])
        out.append(dict(method=method, shots=s, n_seeds=len(sel), accuracy_mean=float(acc.mean()),
                        accuracy_std=float(acc.std()), balanced_accuracy_mean=float(bal.mean()),
                        balanced_accuracy_std=float(bal.std())))
    return out
