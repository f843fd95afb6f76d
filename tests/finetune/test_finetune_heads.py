"""Fusion heads: output shapes and exact missing-modality behaviour."""
from __future__ import annotations

import pytest
import torch

from galclip.finetune.heads import FusionClassifier, HeadConfig, modality_dropout

N, D, T, FI, FS, K = 6, 16, 5, 12, 10, 4
COLS = [f"c{i}" for i in range(K)]


def _feats(has_image: torch.Tensor, has_spectrum: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(N, D, generator=g), "spectrum": torch.randn(N, D, generator=g),
        "image_tokens": torch.randn(N, T, FI, generator=g), "spectrum_tokens": torch.randn(N, T + 2, FS, generator=g),
        "has_image": has_image, "has_spectrum": has_spectrum, "tabular": torch.randn(N, K, generator=g),
    }


def _head(kind: str, tabular: str = "none", n_out: int = 1) -> FusionClassifier:
    torch.manual_seed(0)
    h = FusionClassifier(HeadConfig(kind=kind, hidden=16, n_heads=2, dropout=0.0, tabular=tabular),
                         {"image": D, "spectrum": D}, n_out=n_out, tabular_columns=COLS,
                         token_dims={"image": FI, "spectrum": FS})
    return h.eval()


KINDS = ["late", "linear", "gated", "cross_attention"]
ALL = torch.ones(N, dtype=torch.bool)
NONE = torch.zeros(N, dtype=torch.bool)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tabular", ["none", "linear", "encoder"])
@pytest.mark.parametrize("n_out", [1, 5])
def test_shapes_all_presence_patterns(kind: str, tabular: str, n_out: int) -> None:
    h = _head(kind, tabular, n_out)
    for hi, hs in [(ALL, ALL), (ALL, NONE), (NONE, ALL)]:
        out = h(_feats(hi, hs))
        assert out.shape == (N, n_out)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", KINDS)
def test_absent_modality_values_are_ignored(kind: str) -> None:
    """Image-only inference must not depend on whatever sits in the spectrum slots (and vice versa)."""
    h = _head(kind)
    for present, absent in [("image", "spectrum"), ("spectrum", "image")]:
        f = _feats(ALL if present == "image" else NONE, ALL if present == "spectrum" else NONE)
        a = h(f)
        g = dict(f)
        g[absent] = torch.randn(N, D) * 100
        g[f"{absent}_tokens"] = torch.randn_like(f[f"{absent}_tokens"]) * 100
        torch.testing.assert_close(h(g), a)
        # while the present modality does matter
        g = dict(f)
        g[present] = torch.randn(N, D)
        g[f"{present}_tokens"] = torch.randn_like(f[f"{present}_tokens"])
        assert not torch.allclose(h(g), a)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_are_independent_with_mixed_presence(kind: str) -> None:
    """A row's output is the same whether its neighbours have a spectrum or not."""
    h = _head(kind)
    mixed = torch.tensor([True, False, True, False, True, False])
    out_mixed = h(_feats(ALL, mixed))
    out_all = h(_feats(ALL, ALL))
    out_none = h(_feats(ALL, NONE))
    torch.testing.assert_close(out_mixed[mixed], out_all[mixed])
    torch.testing.assert_close(out_mixed[~mixed], out_none[~mixed])


def test_gated_weights_only_on_present_modalities() -> None:
    h = _head("gated")
    h(_feats(ALL, torch.tensor([True, False] * 3)))
    w = h.head.last_gates
    assert torch.allclose(w.sum(1), torch.ones(N))
    assert (w[1::2, 1] == 0).all() and (w[1::2, 0] == 1).all()


def test_tabular_only_head_and_linear_term_matter() -> None:
    h = FusionClassifier(HeadConfig(tabular="linear"), {}, n_out=1, tabular_columns=COLS).eval()
    f = {"tabular": torch.randn(N, K), "has_image": ALL}
    out = h(f)
    assert out.shape == (N, 1)
    f2 = {"tabular": f["tabular"] + 1.0}
    assert not torch.allclose(h(f2), out)
    with pytest.raises(ValueError):
        FusionClassifier(HeadConfig(tabular="none"), {}, n_out=1)({"tabular": torch.randn(N, K)})


def test_modality_dropout_never_removes_everything() -> None:
    f = _feats(ALL, torch.tensor([True, True, True, False, True, True]))
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        d = modality_dropout(f, 0.9, g)
        assert (d["has_image"] | d["has_spectrum"]).all()
        assert not (d["has_spectrum"] & ~f["has_spectrum"]).any()
    dropped = modality_dropout(f, 1.0, torch.Generator().manual_seed(0))
    assert (dropped["has_image"] ^ dropped["has_spectrum"])[f["has_spectrum"]].all()


def test_linear_only_heads_ignore_embeddings_and_auto_selection_runs() -> None:
    """term_selection: the linear-only variant is the classical model; auto picks by OOF AUC."""
    import numpy as np

    from galclip.finetune.head_training import HeadTrainConfig, fit_with_threshold, linear_only, predict

    def factory() -> FusionClassifier:
        return FusionClassifier(HeadConfig(kind="late", hidden=8, dropout=0.0, tabular="linear"),
                                {"image": D}, n_out=1, tabular_columns=COLS)

    g = torch.Generator().manual_seed(1)
    n = 40
    feats = {"image": torch.randn(n, D, generator=g), "has_image": torch.ones(n, dtype=torch.bool),
             "tabular": torch.randn(n, K, generator=g)}
    y = (feats["tabular"][:, 0] > 0).numpy().astype(int)
    head = linear_only(factory)()
    feats2 = dict(feats, image=feats["image"] + 5.0)
    assert torch.allclose(head(feats), head(feats2))  # embeddings cannot move the output
    cfg = HeadTrainConfig(epochs=20, cv_folds=2, term_selection="auto")
    head, thr, oof = fit_with_threshold(factory, feats, y, cfg)
    assert oof is not None and np.isfinite(oof).all() and 0 <= thr <= 1
    assert predict(head, feats).shape == (n,)
