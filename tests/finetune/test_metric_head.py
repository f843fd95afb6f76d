"""Metric-learning head (head.kind: metric): separates few-label classes, saves, refuses bad names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from galclip.config import load_config
from galclip.errors import ConfigError
from galclip.finetune.head_io import head_factory, load_head, save_head
from galclip.finetune.head_training import HeadTrainConfig, fit_with_threshold, predict
from galclip.finetune.heads import FusionClassifier, HeadConfig
from galclip.finetune.metric_head import make_loss, make_miner

D = 32
TRAIN = HeadTrainConfig(epochs=60, cv_folds=2)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny full-batch steps: a second intra-op thread only adds sync overhead (8x on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes 4σ apart along one axis, plus a nuisance axis 4x wider than the noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    x = rng.normal(size=(y.size, D)).astype(np.float32)
    x[:, 0] += np.where(y == 1, 2.0, -2.0)
    x[:, 1] *= 4.0
    return x, y


def _feats(x: np.ndarray, tab: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    out = {"image": torch.from_numpy(x), "has_image": torch.ones(len(x), dtype=torch.bool)}
    if tab is not None:
        out["tabular"] = torch.from_numpy(tab.astype(np.float32))
    return out


def _fit(cfg: HeadConfig, x: np.ndarray, y: np.ndarray, tab_names: list[str] = (), tab: np.ndarray | None = None):
    feats = {"image": x, "has_image": np.ones(len(x), bool)}
    factory = head_factory(cfg, feats, ["image"], 1, list(tab_names), seed=0)
    return fit_with_threshold(factory, _feats(x, tab), y, TRAIN, seed=0)


@pytest.mark.parametrize("loss,miner,classifier", [("supcon", "multi_similarity", "prototype"),
                                                   ("triplet", "triplet", "knn"),
                                                   ("multi_similarity", "none", "prototype")])
def test_metric_head_separates_few_label_blobs(loss: str, miner: str, classifier: str) -> None:
    x, y = _blobs(10, seed=0)
    xt, yt = _blobs(200, seed=1)
    cfg = HeadConfig(kind="metric", metric_loss=loss, miner=miner, metric_classifier=classifier, hidden=32)
    head, thr, oof = _fit(cfg, x, y)
    p = predict(head, _feats(xt))
    assert p.shape == (400,) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(yt, p) > 0.9
    assert 0 <= thr <= 1 and oof is not None and np.isfinite(oof).all()
    # the labels, not the features alone, make the space: labels that split each blob in half
    # (independent of the class) give chance on the held-out rows
    head_bad, _, _ = _fit(cfg, x, np.tile([0, 1], 10))
    assert abs(roc_auc_score(yt, predict(head_bad, _feats(xt))) - 0.5) < 0.2


def test_metric_head_round_trips_through_head_io(tmp_path: Path) -> None:
    from galclip.config import to_dict

    x, y = _blobs(10, seed=0)
    tab = np.random.default_rng(5).normal(size=(len(x), 3))
    cfg = HeadConfig(kind="metric", tabular="linear", metric_classifier="knn", hidden=16)
    head, thr, _ = _fit(cfg, x, y, ["a", "b", "c"], tab)
    assert head.linear_term is None and head.head.support.shape == (20, cfg.metric_dim)
    save_head(head, tmp_path, {"head": to_dict(cfg), "n_out": 1, "embed_dims": {"image": D},
                               "tabular_columns": ["a", "b", "c"], "threshold": thr})
    again, meta = load_head(tmp_path)
    xt, _ = _blobs(30, seed=2)
    tt = np.random.default_rng(6).normal(size=(len(xt), 3))
    np.testing.assert_array_equal(predict(again, _feats(xt, tt)), predict(head, _feats(xt, tt)))
    assert meta["threshold"] == thr and not (tmp_path / "head.pt").exists()


def test_bad_metric_names_are_one_line_config_errors() -> None:
    from galclip.finetune.train import FinetuneConfig

    for key, bad in (("head.metric_loss", "ArcFaceLoss"), ("head.miner", "hardest"),
                     ("head.metric_classifier", "svm")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
            load_config(FinetuneConfig, None, [f"{key}={bad}"])
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="metric_loss"):
        make_loss("contrastive", 0.1)
    with pytest.raises(ConfigError, match="miner"):
        make_miner("batch_hard")
    with pytest.raises(ValueError, match="metric_k"):
        HeadConfig(kind="metric", metric_k=0)
    with pytest.raises(ConfigError, match="unfreeze_blocks"):
        load_config(FinetuneConfig, None, ["head.kind=metric", "unfreeze_blocks=1"])


def test_other_head_kinds_have_no_metric_embedding() -> None:
    h = FusionClassifier(HeadConfig(kind="late"), {"image": D})
    with pytest.raises(ValueError, match="no metric embedding"):
        h.embed(_feats(np.zeros((2, D), np.float32)))


def test_multiclass_metric_head_gives_class_probabilities() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 8)
    x = rng.normal(scale=0.3, size=(24, D)).astype(np.float32)
    x[np.arange(24), y] += 2.0
    feats = {"image": x, "has_image": np.ones(24, bool)}
    factory = head_factory(HeadConfig(kind="metric", hidden=16), feats, ["image"], 3, [], seed=0)
    head, thr, oof = fit_with_threshold(factory, _feats(x), y, HeadTrainConfig(epochs=30, cv_folds=2), seed=0)
    xt = rng.normal(scale=0.3, size=(30, D)).astype(np.float32)
    yt = np.repeat([0, 1, 2], 10)
    xt[np.arange(30), yt] += 2.0
    p = predict(head, _feats(xt))
    assert np.isnan(thr) and oof.shape == (24, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p.argmax(1) == yt).mean() > 0.8


def test_tabular_statistics_feed_the_metric_space() -> None:
    """Class signal only in the statistics, as a shift shared by every column (which a row-wise
    normalisation of the statistics would erase); the image features are pure noise."""
    rng = np.random.default_rng(0)

    def draw(n_per: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.repeat([0, 1], n_per)
        tab = rng.normal(size=(y.size, 4)) + np.where(y == 1, 1.0, -1.0)[:, None]
        return rng.normal(size=(y.size, D)).astype(np.float32), tab, y

    x, tab, y = draw(10)
    head, _, _ = _fit(HeadConfig(kind="metric", tabular="linear", hidden=16), x, y, ["a", "b", "c", "d"], tab)
    xt, tt, yt = draw(100)
    assert roc_auc_score(yt, predict(head, _feats(xt, tt))) > 0.9
