"""Validation metrics of a joint embedding: cross-modal retrieval and kNN probes (sklearn)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score


def retrieval_ranks(query: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """0-based rank of each query's own row among the keys (cosine similarity)."""
    sim = query @ keys.T
    own = np.diag(sim)[:, None]
    return (sim > own).sum(1)  # number of keys strictly better than the true match


def retrieval_topk(query: np.ndarray, keys: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of queries whose own row ranks within the top k keys (cosine similarity)."""
    rank = retrieval_ranks(query, keys)
    return {k: float((rank < k).mean()) for k in ks}


def rank_summary(rank: np.ndarray) -> dict[str, float]:
    """``top1``, ``top5`` and ``median_rank_frac`` of true-partner ranks within their pool.

    The median rank as a fraction of the pool (0 perfect, ≈ 0.5 chance) is far less noisy
    than top-1 on a pool of a few hundred.
    """
    return {"top1": float((rank < 1).mean()), "top5": float((rank < 5).mean()),
            "median_rank_frac": float(np.median(rank) / rank.size)}


def is_categorical(y: np.ndarray, max_classes: int = 20) -> bool:
    """Integer-valued columns with few distinct values are probed by accuracy, others by R²."""
    vals = np.unique(y)
    return vals.size <= max_classes and np.allclose(vals, np.round(vals))


def knn_probe(emb: np.ndarray, y: np.ndarray, k: int = 10, folds: int = 5, seed: int = 0,
              min_class: int = 15) -> dict[str, float] | None:
    """Cross-validated kNN prediction of ``y`` from embeddings → ``{metric: score}``.

    Two classes are scored by ROC AUC of the neighbour vote (``auc``). Classes are scored by
    balanced accuracy (``bacc``; chance = 1/K whatever the class balance) of the vote
    weighed against each class's frequency, when every class has ``min_class`` members.
    With 1 % mergers plain accuracy is 0.99 for "never a merger", so it is not reported.
    Continuous targets are scored by ``r2``. Rows with NaN embeddings or targets are
    dropped; returns None with too few rows.
    """
    ok = np.isfinite(y) & np.isfinite(emb).all(1)
    emb, y = emb[ok], y[ok]
    if y.size < max(20, 2 * folds) or np.unique(y).size < 2:
        return None
    cv = KFold(folds, shuffle=True, random_state=seed)
    kk = min(k, int(y.size * (folds - 1) / folds) - 1)
    if is_categorical(y):
        yi = y.astype(int)
        proba = cross_val_predict(KNeighborsClassifier(kk), emb, yi, cv=cv, method="predict_proba")
        classes, counts = np.unique(yi, return_counts=True)
        out = {}
        if counts.min() >= min_class:
            # each class's vote share over its frequency: a majority vote never names a class
            # of 12 % among 10 neighbours, so its balanced accuracy sat at chance (0.50 for
            # mergers, 0.20 for five merger stages) whatever the embedding held. A class of a
            # few members is under-represented in its own training folds, which drags this
            # below chance (five classes of 6-120 members, random vectors: 0.17 for 0.20), so
            # it is left out there
            decide = classes[(proba / (counts / counts.sum())).argmax(1)]
            out["bacc"] = float(balanced_accuracy_score(yi, decide))
        if classes.size == 2:
            out["auc"] = float(roc_auc_score(yi == classes[1], proba[:, 1]))
        return out
    pred = cross_val_predict(KNeighborsRegressor(kk, weights="distance"), emb, y, cv=cv)
    return {"r2": float(r2_score(y, pred))}


def label_retrieval(emb: np.ndarray, y: np.ndarray, max_rows: int = 2000, seed: int = 0) -> dict[str, float] | None:
    """Precision@1 and MAP@R of same-class retrieval (PML ``AccuracyCalculator``) for a categorical ``y``.

    Complements the kNN probe: it scores the neighbourhood ranking itself, not a vote. At most
    ``max_rows`` rows (a seeded draw) keep the kNN depth MAP@R needs (the largest class) cheap;
    None for continuous targets or too few rows/classes.
    """
    from galclip.retrieval.metrics import retrieval_accuracy

    ok = np.isfinite(y) & np.isfinite(emb).all(1)
    emb, y = emb[ok], y[ok]
    if y.size < 20 or np.unique(y).size < 2 or not is_categorical(y):
        return None
    if y.size > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(y.size, max_rows, replace=False))
        emb, y = emb[keep], y[keep]
    got = retrieval_accuracy(emb, y.astype(int))
    return {"p_at_1": got["p_at_1"], "map_at_r": got["map_at_r"]}


def embedding_metrics(image: np.ndarray, spectrum: np.ndarray, has_image: np.ndarray, has_spectrum: np.ndarray,
                      targets: dict[str, np.ndarray], image_probe: np.ndarray | None = None) -> dict[str, float]:
    """Retrieval top-1/5 both ways within the pool of paired objects + kNN probes per target
    (categorical targets also get same-class retrieval ``p_at_1`` / ``map_at_r``).

    ``image_probe``: the image vectors the probes read (the representation, which kNN
    labeling and candidate ranking use); default the image embedding itself.
    """
    out: dict[str, float] = {}
    both = has_image & has_spectrum
    if both.sum() >= 2:
        zi, zs = image[both], spectrum[both]
        for name, q, kv in (("i2s", zi, zs), ("s2i", zs, zi)):
            for key, value in rank_summary(retrieval_ranks(q, kv)).items():
                out[f"{name}_{key}"] = value
        out["n_pairs"] = float(both.sum())
        out["chance_top1"] = 1.0 / float(both.sum())
        out["chance_top5"] = min(1.0, 5.0 / float(both.sum()))
    probe_img = image if image_probe is None else image_probe
    for col, y in targets.items():
        for mod, emb, has in (("image", probe_img, has_image), ("spectrum", spectrum, has_spectrum)):
            if not has.any():
                continue
            yc = np.asarray(y, float)[has]
            probes = {**(knn_probe(emb[has], yc) or {}), **(label_retrieval(emb[has], yc) or {})}
            for metric, value in probes.items():
                out[f"knn_{col}_{metric}_{mod}"] = value
    return out
