"""The linear head is fitted exactly (scikit-learn logistic regression on its layer's inputs)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from galclip.finetune.head_training import HeadTrainConfig, fit_head
from galclip.finetune.heads import FusionClassifier, HeadConfig


def _paired(n: int = 200, seed: int = 0) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Image and spectrum each carry the class in one direction; a statistic carries it too."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    img, spec, tab = rng.normal(size=(n, 12)), rng.normal(size=(n, 8)), rng.normal(size=(n, 3))
    img[:, 2] += 2.0 * y
    spec[:, 5] += 2.0 * y
    tab[:, 1] += 1.5 * y
    f = {"image": img, "spectrum": spec, "tabular": tab}
    feats = {k: torch.tensor(v, dtype=torch.float32) for k, v in f.items()}
    feats |= {"has_image": torch.ones(n, dtype=torch.bool), "has_spectrum": torch.ones(n, dtype=torch.bool)}
    return feats, y


def _head(tabular: str = "none", n_out: int = 1) -> FusionClassifier:
    return FusionClassifier(HeadConfig(kind="linear", tabular=tabular), {"image": 12, "spectrum": 8}, n_out=n_out,
                            tabular_columns=["a", "b", "c"])


def test_fit_is_the_logistic_regression_on_the_design() -> None:
    feats, y = _paired()
    cfg = HeadTrainConfig(modality_dropout=0.0, class_balance="none", linear_c=0.3, spectrum_scales=(1.0,))
    head = fit_head(_head(), feats, y, cfg)
    x = head.design(feats).numpy()
    want = LogisticRegression(C=0.3, max_iter=5000).fit(x, y).decision_function(x)
    got = head(feats)[:, 0].detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_modality_copies_make_single_modality_inference_work() -> None:
    """Trained on paired rows only, the head still ranks image-only and spectrum-only rows."""
    feats, y = _paired()
    test, yt = _paired(seed=1)
    head = fit_head(_head(), feats, y, HeadTrainConfig(modality_dropout=0.3))
    for hide in ("image", "spectrum"):
        t = dict(test)
        t[f"has_{hide}"] = torch.zeros_like(t[f"has_{hide}"])
        t[hide] = torch.randn_like(t[hide]) * 100  # what sits in an absent slot must not matter
        score = head(t)[:, 0].detach().numpy()
        assert roc_auc_score(yt, score) > 0.8
        # calibrated for partial inputs too: the default threshold still finds the mergers
        assert balanced_accuracy_score(yt, score > 0) > 0.7
    both = roc_auc_score(yt, head(test)[:, 0].detach().numpy())
    assert both > 0.9  # two independent views of the class beat either alone


def test_statistics_enter_the_linear_layer_directly() -> None:
    feats, y = _paired()
    head = _head(tabular="linear")
    assert head.linear_term is None and isinstance(head.tab_encoder, torch.nn.Identity)
    only_tab = {k: v for k, v in feats.items()} | {"has_image": torch.zeros(len(y), dtype=torch.bool),
                                                   "has_spectrum": torch.zeros(len(y), dtype=torch.bool)}
    fit_head(head, only_tab, y, HeadTrainConfig())
    assert roc_auc_score(y, head(only_tab)[:, 0].detach().numpy()) > 0.8
    assert head.head.linear.weight[0, -6:-3].abs().argmax() == 1  # the informative statistic


def test_multiclass_and_missing_class() -> None:
    feats, y = _paired(300)
    y3 = y.copy()
    y3[(y == 0) & (feats["spectrum"][:, 0].numpy() > 0.5)] = 2
    feats["spectrum"][:, 0] *= 3.0
    head = fit_head(_head(n_out=3), feats, y3, HeadTrainConfig(modality_dropout=0.0))
    pred = head(feats).argmax(1).numpy()
    assert (pred == y3).mean() > 0.8
    head4 = fit_head(_head(n_out=4), feats, y3, HeadTrainConfig(modality_dropout=0.0))
    assert (head4(feats).argmax(1).numpy() != 3).all()  # a class never labeled is never predicted
    cfg = dataclasses.replace(HeadTrainConfig(), modality_dropout=0.0)
    one = fit_head(_head(), feats, np.zeros(len(y3), int), cfg)
    assert (torch.sigmoid(one(feats)) < 1e-6).all()


def _noisy_spectrum(informative: bool, n: int = 120, seed: int = 0) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """A wide spectrum block that is pure noise (or carries the class), beside an informative image."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    img, spec = rng.normal(size=(n, 12)), rng.normal(size=(n, 8))
    img[:, 2] += 1.5 * y
    if informative:
        spec[:, 5] += 3.0 * y
    feats = {"image": torch.tensor(img, dtype=torch.float32), "spectrum": torch.tensor(spec, dtype=torch.float32),
             "has_image": torch.ones(n, dtype=torch.bool), "has_spectrum": torch.ones(n, dtype=torch.bool)}
    return feats, y


def test_spectrum_scale_is_chosen_out_of_fold_and_folded_into_the_weights() -> None:
    """A useless spectrum block is switched off; a useful one keeps its full weight."""
    cfg = HeadTrainConfig(modality_dropout=0.0, class_balance="none", spectrum_scales=(1.0, 0.0))
    feats, y = _noisy_spectrum(informative=False)
    head = fit_head(_head(), feats, y, cfg)
    spec_w = head.head.linear.weight[0, head.head.columns("spectrum")]
    assert torch.all(spec_w == 0)
    x = head.design(feats).numpy()
    x[:, head.head.columns("spectrum")] = 0.0  # scale 0: the fit without the spectrum block
    want = LogisticRegression(C=cfg.linear_c, max_iter=5000).fit(x, y).decision_function(x)
    np.testing.assert_allclose(head(feats)[:, 0].detach().numpy(), want, atol=1e-3)
    feats, y = _noisy_spectrum(informative=True)
    head = fit_head(_head(), feats, y, cfg)
    spec_w = head.head.linear.weight[0, head.head.columns("spectrum")]
    assert spec_w.abs().argmax() == 5 and spec_w[5] > 0.1


def test_spectrum_scales_must_be_given_and_non_negative() -> None:
    for bad in ((), (1.0, -0.5)):
        with pytest.raises(ValueError, match="spectrum_scales"):
            HeadTrainConfig(spectrum_scales=bad)


def test_fit_with_threshold_chooses_the_spectrum_scale_once_on_all_labeled_rows() -> None:
    """The fold fits (threshold only) reuse the full fit's scale: same head, fewer fits."""
    from galclip.finetune import head_training

    cfg = HeadTrainConfig(modality_dropout=0.0, class_balance="none", spectrum_scales=(1.0, 0.0))
    feats, y = _noisy_spectrum(informative=False)
    assert head_training.fix_spectrum_scale(_head(), feats, y, cfg).spectrum_scales == (0.0,)
    assert head_training.fix_spectrum_scale(_head(), feats, y, dataclasses.replace(cfg, spectrum_scales=(1.0,))) \
        .spectrum_scales == (1.0,)
    calls = []
    choose = head_training._choose_scale
    head_training._choose_scale = lambda *a: calls.append(a[-1].spectrum_scales) or choose(*a)
    try:
        head, thr, oof = head_training.fit_with_threshold(_head, feats, y, cfg)
    finally:
        head_training._choose_scale = choose
    assert calls[0] == (1.0, 0.0) and all(c == (0.0,) for c in calls[1:]) and len(calls) == 1 + cfg.cv_folds + 1
    assert oof is not None and np.isfinite(oof).all() and 0.0 < thr < 1.0
    direct = fit_head(_head(), feats, y, cfg)
    torch.testing.assert_close(head.head.linear.weight, direct.head.linear.weight)
