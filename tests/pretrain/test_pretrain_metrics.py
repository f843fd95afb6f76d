"""Retrieval top-k and kNN probes used for validation."""
from __future__ import annotations

import numpy as np

from galclip.pretrain.metrics import embedding_metrics, knn_probe, label_retrieval, retrieval_topk


def test_retrieval_topk_exact():
    keys = np.eye(4)
    assert retrieval_topk(keys, keys, (1, 5)) == {1: 1.0, 5: 1.0}
    shifted = np.roll(keys, 1, axis=0)  # every query's best key is the wrong row
    r = retrieval_topk(shifted, keys, (1, 2))
    assert r[1] == 0.0 and r[2] == 1.0  # true match tied with the other zeros → rank 1


def test_knn_probe_regression_and_classification():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(200, 3))
    assert knn_probe(emb, emb[:, 0] * 2 + 1)["r2"] > 0.8
    assert knn_probe(emb, rng.normal(size=200))["r2"] < 0.2
    res = knn_probe(emb, (emb[:, 1] > 0).astype(float))
    assert set(res) == {"bacc", "auc"} and res["bacc"] > 0.85 and res["auc"] > 0.9
    assert knn_probe(emb[:5], np.arange(5.0)) is None


def test_knn_probe_is_honest_for_a_rare_class():
    """1 % positives unrelated to the embedding: plain accuracy would be 0.99; bacc and AUC say chance."""
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(1000, 4))
    y = np.zeros(1000)
    y[rng.choice(1000, 10, replace=False)] = 1
    res = knn_probe(emb, y)
    assert "bacc" not in res and 0.3 < res["auc"] < 0.7  # 10 members: too few for a recall
    y[rng.choice(np.flatnonzero(y == 0), 40, replace=False)] = 1
    res = knn_probe(emb, y)
    assert abs(res["bacc"] - 0.5) < 0.1 and 0.3 < res["auc"] < 0.7


def test_knn_probe_balanced_accuracy_sees_a_rare_class_the_embedding_holds():
    """12 % positives shifted along one axis: a majority vote of 10 neighbours rarely names
    them (balanced accuracy near chance); weighing votes by class frequency does."""
    rng = np.random.default_rng(3)
    y = (rng.random(1500) < 0.12).astype(float)
    emb = rng.normal(size=(1500, 3))
    emb[:, 0] += 1.5 * y
    res = knn_probe(emb, y)
    assert res["bacc"] > 0.7 and res["auc"] > 0.75


def test_embedding_metrics_handles_missing_modalities():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 8))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    has_s = np.ones(50, bool)
    has_s[::5] = False
    spec = np.where(has_s[:, None], z, np.nan)
    m = embedding_metrics(z, spec, np.ones(50, bool), has_s, {"y": z[:, 0]})
    assert m["i2s_top1"] == 1.0 and m["s2i_top5"] == 1.0 and m["n_pairs"] == 40
    assert m["chance_top1"] == 1 / 40 and m["i2s_median_rank_frac"] == 0.0
    shuffled = embedding_metrics(z, z[rng.permutation(50)], np.ones(50, bool), np.ones(50, bool), {})
    assert 0.25 < shuffled["s2i_median_rank_frac"] < 0.75  # unrelated pairs: about half the pool
    assert "knn_y_r2_image" in m and "knn_y_r2_spectrum" in m


def test_categorical_targets_get_label_retrieval_scores():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(300, 4))
    y = (emb[:, 0] > 0).astype(float)
    good = label_retrieval(emb, y)
    assert set(good) == {"p_at_1", "map_at_r"} and good["p_at_1"] > 0.85
    assert 0.35 < label_retrieval(emb, rng.permutation(y))["p_at_1"] < 0.65
    assert label_retrieval(emb, emb[:, 0]) is None  # continuous targets: R² probe only
    small = label_retrieval(emb, y, max_rows=50)
    assert small is not None and small != good  # a 50-row draw, not all rows
    m = embedding_metrics(emb, emb, np.ones(300, bool), np.zeros(300, bool), {"merger": y})
    assert m["knn_merger_p_at_1_image"] == good["p_at_1"] and "knn_merger_map_at_r_image" in m
    assert "knn_merger_bacc_image" in m and "knn_merger_p_at_1_spectrum" not in m


def test_probes_read_the_representation_retrieval_the_embedding():
    """kNN probes score the vectors downstream stages use; cross-modal retrieval the CLIP space."""
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(200, 6))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rep = rng.normal(size=(200, 6))
    y = (rep[:, 0] > 0).astype(float)  # the class lives in the representation only
    m = embedding_metrics(emb, emb, np.ones(200, bool), np.ones(200, bool), {"merger": y}, image_probe=rep)
    plain = embedding_metrics(emb, emb, np.ones(200, bool), np.ones(200, bool), {"merger": y})
    assert m["knn_merger_auc_image"] > 0.85 and plain["knn_merger_auc_image"] < 0.7
    assert m["i2s_top1"] == plain["i2s_top1"] == 1.0
    assert m["knn_merger_auc_spectrum"] == plain["knn_merger_auc_spectrum"]
