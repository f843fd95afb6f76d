"""The evaluation-method registry: each method states what it needs."""
from __future__ import annotations

import numpy as np

from galclip.finetune.evaluate import EvaluateConfig
from galclip.finetune.methods import ALL_METHODS, METHODS, Bench


def test_methods_declare_their_inputs() -> None:
    feats = {"pretrained": {"has_spectrum": np.zeros(4, bool)}, "random": {"has_spectrum": np.zeros(4, bool)}}
    bench = Bench(EvaluateConfig(), np.zeros(4, int), np.arange(2), feats)
    # image-only data, no tabular statistics, no SSL checkpoint, no cutouts read
    assert [n for n, m in METHODS.items() if m.available(bench)] == ["galclip_image", "galclip_image_metric",
                                                                      "random_init", "galclip_image_probe"]
    bench.features["pretrained"]["has_spectrum"][0] = True
    bench.tab, bench.tab_names, bench.morph_cols = np.zeros((4, 1)), ["gini"], [0]
    assert {n for n, m in METHODS.items() if not m.available(bench)} == {"image_ssl", "image_ssl_morph", "cnn_scratch",
                                                                         "asymmetry_only", "galclip_self_trained"}
    bench.tab_names = ["gini", "asymmetry"]
    assert METHODS["asymmetry_only"].available(bench)
    bench.dataset, bench.checkpoint = object(), "runs/pretrain"  # self-training reads the survey and the weights
    assert METHODS["galclip_self_trained"].available(bench)
    assert ALL_METHODS[0] == "galclip_fusion" and len(ALL_METHODS) == 16


def test_metric_methods_swap_only_the_head_kind() -> None:
    """galclip_image_metric runs the metric head on the pretrained image features, whatever cfg.head.kind says."""
    from galclip.finetune.head_training import HeadTrainConfig

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 12)
    img = rng.normal(size=(24, 8)).astype(np.float32)
    img[:, 0] += 3.0 * y
    feats = {"pretrained": {"image": img, "has_image": np.ones(24, bool), "has_spectrum": np.zeros(24, bool)}}
    cfg = EvaluateConfig(train=HeadTrainConfig(epochs=5, cv_folds=0))
    bench = Bench(cfg, y, np.arange(0, 24, 2), feats)
    (name, rows, p, thr), = METHODS["galclip_image_metric"].run(bench, np.arange(1, 24, 2), seed=0)[1]
    assert name == "galclip_image_metric" and np.array_equal(rows, bench.test) and thr == 0.5
    assert p.shape == (12,) and ((p >= 0) & (p <= 1)).all() and p.std() > 0
    assert cfg.head.kind == "linear"  # the evaluation's own head config is untouched


def test_linear_probe_reads_the_pretrained_image_vector() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 20)
    img = rng.normal(size=(40, 16)).astype(np.float32)
    img[:, 3] += 2.5 * y  # the class lives in one direction of the representation
    feats = {"pretrained": {"image": img, "has_image": np.ones(40, bool), "has_spectrum": np.zeros(40, bool)}}
    bench = Bench(EvaluateConfig(), y, np.arange(0, 40, 2), feats)
    (name, rows, p, thr), = METHODS["galclip_image_probe"].run(bench, np.arange(1, 40, 2), seed=0)[1]
    from sklearn.metrics import roc_auc_score

    assert name == "galclip_image_probe" and np.array_equal(rows, bench.test)
    assert roc_auc_score(y[rows], p) > 0.9 and 0 < thr < 1


def test_headline_lists_only_methods_that_ran() -> None:
    from galclip.finetune.evaluate import _headline

    rows = [{"method": m, "budget": 100, "roc_auc_mean": v}
            for m, v in (("galclip_fusion", 0.80), ("random_init", 0.75), ("morphology_lr", 0.78))]
    head = _headline(rows)
    assert head["galclip_fusion@100"] == 0.80 and "galclip_spectrum@100" not in head and "cnn_scratch@100" not in head
    assert abs(head["pretraining_gain"] - 0.05) < 1e-9 and abs(head["fusion_minus_morphology_lr"] - 0.02) < 1e-9
    assert "fusion_minus_asymmetry_only" not in head
    rows.append({"method": "asymmetry_only", "budget": 100, "roc_auc_mean": 0.83})
    assert abs(_headline(rows)["fusion_minus_asymmetry_only"] + 0.03) < 1e-9


def test_asymmetry_only_ranks_without_labels() -> None:
    """The zero-label reference: its scores are the same whichever rows are labelled (and however)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.2).astype(int)
    asym = rng.normal(size=200) + 1.5 * y
    asym[4] = np.nan  # an unmeasured (test) galaxy ranks last
    tab = np.c_[rng.normal(size=200), asym].astype(np.float32)
    feats = {"pretrained": {"has_spectrum": np.zeros(200, bool)}}
    bench = Bench(EvaluateConfig(), y, np.arange(0, 200, 2), feats, tab=tab, tab_names=["gini", "asymmetry"])
    method = METHODS["asymmetry_only"]
    (name, rows, p, thr), = method.run(bench, np.arange(1, 60, 2), seed=0)[1]
    flipped = Bench(EvaluateConfig(), 1 - y, bench.test, feats, tab=tab, tab_names=bench.tab_names)
    (_, _, p2, thr2), = method.run(flipped, np.arange(61, 200, 2), seed=3)[1]
    assert name == "asymmetry_only" and np.array_equal(rows, bench.test)
    assert np.array_equal(p, p2) and thr != thr2  # labels move the threshold, never the ranking
    assert ((p > 0) & (p <= 1)).all() and p[rows == 4][0] == p.min() < np.delete(p, 2).min()
    assert roc_auc_score(y[rows], p) > 0.8


def test_repaired_statistics_reach_image_heads_but_never_the_classical_baselines() -> None:
    """Bench.repaired_tab (flagged fits' statistics from the representation) feeds heads that read
    the image; morphology + LR and the statistics-only head keep the measured values."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 30)
    img = rng.normal(size=(60, 4)).astype(np.float32)  # the image says nothing...
    measured = rng.normal(size=(60, 2))  # ...nor do the measured statistics...
    repaired = measured.copy()
    repaired[:, 0] += 3.0 * y  # ...only the repaired ones carry the label
    feats = {"pretrained": {"image": img, "has_image": np.ones(60, bool), "has_spectrum": np.zeros(60, bool)}}
    bench = Bench(EvaluateConfig(), y, np.arange(0, 60, 2), feats, measured, ["gini", "asymmetry"], [0, 1],
                  repaired_tab={"pretrained": repaired})
    train = np.arange(1, 60, 2)

    def auc(name: str) -> float:
        _, scored = METHODS[name].run(bench, train, 0)
        _, rows, p, _ = scored[0]
        return roc_auc_score(y[rows], p)

    assert auc("galclip_image_tabular") > 0.9
    assert auc("tabular_head") < 0.8 and auc("morphology_lr") < 0.8
