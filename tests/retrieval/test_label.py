"""Few-shot labeling: kNN / prototypes on synthetic clusters, determinism, the label stage, the shots curve."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from galclip.errors import InputFileError
from galclip.retrieval.fewshot import fewshot_curve, knn_proba, prototype_proba, summarise_curve
from galclip.retrieval.index import build_index_dir
from galclip.retrieval.label import LabelConfig, run_label


@pytest.mark.parametrize("fn", [knn_proba, prototype_proba])
def test_classifiers_recover_clusters(clustered, fn):
    x, y = clustered(600, 16, 3, 0.4, seed=3)
    sup = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(3)])
    test = np.setdiff1d(np.arange(600), sup)
    proba = fn(x[sup], y[sup], x[test], 3)
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-9)
    assert (proba.argmax(1) == y[test]).mean() > 0.95


def test_knn_weights_favour_closer_examples():
    support = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]], np.float32)
    y = np.array([0, 1, 1])
    q = np.array([[1.0, 0.05]], np.float32)
    # one very similar example beats two loosely similar ones (similarity-weighted vote)
    assert knn_proba(support, y, q, 2, k=3, temperature=0.1)[0].argmax() == 0
    # with a huge temperature it degrades to a plain majority vote
    assert knn_proba(support, y, q, 2, k=3, temperature=100.0)[0].argmax() == 1


def _store(tmp_path, clustered, labels_as_str=False):
    x, y = clustered(400, 16, 3, 0.5, seed=5)
    n = len(x)
    idmap = dict(object_id=np.array([f"o{i}" for i in range(n)], dtype=object), ra=np.arange(n) * 0.1,
                 dec=np.zeros(n), has_image=np.ones(n, bool), has_spectrum=np.zeros(n, bool))
    out = build_index_dir(tmp_path / "idx", idmap, {"image": x}, "image", labels={"cls": y.astype(float)})
    return out, x, y


@pytest.mark.parametrize("method", ["knn", "prototype"])
def test_label_stage_is_deterministic_and_accurate(tmp_path, clustered, method):
    idx, x, y = _store(tmp_path, clustered)
    cfg = dict(index=str(idx), label_column="cls", shots=5, method=method)
    t1 = run_label(LabelConfig(out=str(tmp_path / "a"), **cfg))
    t2 = run_label(LabelConfig(out=str(tmp_path / "b"), **cfg))
    assert len(t1) == 400 - 15
    for col in t1.colnames:
        np.testing.assert_array_equal(np.asarray(t1[col]), np.asarray(t2[col]))
    assert (tmp_path / "a" / "labels.csv").read_bytes() == (tmp_path / "b" / "labels.csv").read_bytes()
    rows = [int(o[1:]) for o in t1["object_id"]]
    assert (np.asarray(t1["cls_pred"]) == y[rows]).mean() > 0.9
    assert np.all((t1["confidence"] >= 1 / 3 - 1e-9) & (t1["confidence"] <= 1 + 1e-9))
    assert {"p_0.0", "p_1.0", "p_2.0"} <= set(t1.colnames)
    import json

    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["balanced_accuracy_vs_stored_labels"] > 0.9 and len(summary["base_rates"]) == 3


def test_label_summary_binary_rare_class_has_auc(tmp_path, clustered):
    import json

    x, y = clustered(400, 16, 2, 0.5, seed=6)
    n = len(x)
    idmap = dict(object_id=np.array([f"o{i}" for i in range(n)], dtype=object), ra=np.zeros(n), dec=np.zeros(n),
                 has_image=np.ones(n, bool), has_spectrum=np.zeros(n, bool))
    idx = build_index_dir(tmp_path / "idx", idmap, {"image": x}, "image", labels={"m": y.astype(float)})
    run_label(LabelConfig(index=str(idx), out=str(tmp_path / "o"), label_column="m", shots=5))
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {"balanced_accuracy_vs_stored_labels", "roc_auc_vs_stored_labels", "base_rates"} <= set(s)
    assert s["roc_auc_vs_stored_labels"] > 0.9


def test_label_from_csv_with_string_classes(tmp_path, clustered):
    idx, x, y = _store(tmp_path, clustered)
    names = np.array(["spiral", "elliptical", "merger"])
    sup = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(3)])
    Table({"object_id": [f"o{i}" for i in sup] + ["not_in_index"], "gz_class": list(names[y[sup]]) + ["spiral"]}).write(
        tmp_path / "labeled.csv", format="ascii.csv")
    Table({"object_id": [f"o{i}" for i in range(100, 140)]}).write(tmp_path / "targets.csv", format="ascii.csv")
    t = run_label(LabelConfig(index=str(idx), out=str(tmp_path / "o"), labeled=str(tmp_path / "labeled.csv"),
                              label_column="gz_class", targets=str(tmp_path / "targets.csv")))
    assert len(t) == 40 and set(t["gz_class_pred"]) <= set(names)
    assert (np.asarray(t["gz_class_pred"]) == names[y[100:140]]).mean() > 0.9
    with pytest.raises(InputFileError, match="no 'morph' column"):
        run_label(LabelConfig(index=str(idx), out=str(tmp_path / "p"), labeled=str(tmp_path / "labeled.csv"),
                              label_column="morph"))


def test_fewshot_curve_table(clustered):
    x, y = clustered(800, 16, 4, 1.2, seed=7)
    rows = fewshot_curve(x, y, shots=(1, 5, 25), seeds=(0, 1, 2))
    assert len(rows) == 3 * 3 * 2
    assert {r["n_test"] for r in rows} == {800 - 4 * 25}  # same test set for every shot count
    assert rows == fewshot_curve(x, y, shots=(1, 5, 25), seeds=(0, 1, 2))  # deterministic
    summ = {(s["method"], s["shots"]): s["accuracy_mean"] for s in summarise_curve(rows)}
    for m in ("knn", "prototype"):
        assert summ[(m, 25)] > summ[(m, 1)] and summ[(m, 25)] > 0.8
