"""Morphology regression targets: standardisation, masking, and the pretraining term."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from galclip.data.shards import ShardWriter
from galclip.errors import ConfigError
from galclip.pretrain.morph_targets import build_targets, morph_loss, r2_per_target
from galclip.pretrain.train import PretrainConfig, run_pretrain


class _Table:
    def __init__(self, cols: dict[str, np.ndarray]) -> None:
        self.cols = cols
        self.tabular_names = list(cols)

    def column(self, name: str) -> np.ndarray:
        return self.cols[name]


def test_targets_are_robustly_standardised_and_masked():
    rng = np.random.default_rng(0)
    asym = rng.lognormal(-2, 1, 200)
    asym[5] = np.nan
    asym[7] = 1e6  # one absurd measurement is clipped, not allowed to set the scale
    t = build_targets(_Table({"morph_asymmetry": asym, "morph_flag": np.zeros(200), "mass": rng.normal(size=200)}),
                      np.arange(200))
    assert t.names == ["morph_asymmetry"]  # the flag and non-morphology columns are not targets
    z = t.values[:, 0].numpy()
    assert not t.present[5, 0] and z[5] == 0
    assert z[7] == 5.0 and abs(np.median(z[t.present[:, 0].numpy()])) < 0.05
    vals, pres = t.batch(torch.tensor([5, 6]))
    assert vals.shape == (2, 1) and pres.tolist() == [[False], [True]]


def test_flagged_fits_statistics_are_not_regressed_but_their_companions_are():
    rng = np.random.default_rng(1)
    flag = np.r_[np.zeros(60), np.ones(20), np.full(20, 2.0)]
    good = rng.normal(0.1, 0.02, 100)
    good[60:] = 5.0  # what a failed fit reports
    cols = {"morph_asymmetry": good, "morph_n_companions": rng.integers(0, 3, 100).astype(float), "morph_flag": flag}
    every = build_targets(_Table(cols), np.arange(100))
    t = build_targets(_Table(cols), np.arange(100), mask_flag=1)
    assert t.names == ["morph_asymmetry", "morph_n_companions"]
    assert t.present[:, 0].tolist() == [True] * 60 + [False] * 40 and t.present[:, 1].all()
    assert t.center[0] == pytest.approx(0.1, abs=0.01) and every.center[0] == pytest.approx(0.1, abs=0.03)
    assert t.scale[0] < every.scale[0]  # the scale of good fits, not of the failures
    assert build_targets(_Table(cols), np.arange(100), mask_flag=2).present[:, 0].sum() == 80


def test_unknown_column_is_one_config_error():
    with pytest.raises(ConfigError, match="morph_gini"):
        build_targets(_Table({"morph_asymmetry": np.ones(20)}), np.arange(20), ["gini"])
    assert build_targets(_Table({"mass": np.ones(20)}), np.arange(20)) is None


def test_loss_ignores_missing_targets_and_r2_scores_fit():
    pred = torch.tensor([[0.0, 100.0], [1.0, -100.0]])
    target = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    present = torch.tensor([[True, False], [True, False]])
    assert float(morph_loss(pred, target, present)) == 0.0
    t = np.linspace(0, 1, 50)[:, None]
    assert r2_per_target(t, t, np.ones_like(t, bool))[0] == pytest.approx(1.0)
    assert r2_per_target(np.zeros_like(t), t, np.ones_like(t, bool))[0] < 0


def _survey(path, n: int = 64):
    """Image-only survey whose stored 'asymmetry' is the flux of an off-centre blob."""
    rng = np.random.default_rng(1)
    w = ShardWriter(path, ["g", "r"], 32, None, label_columns=["merger"], tabular_columns=["morph_asymmetry"],
                    shard_size=100, provenance={"source": "test"})
    for i in range(n):
        img = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
        img[:, 12:20, 12:20] += 6
        amp = float(rng.uniform(0, 12))
        img[:, 4:9, 22:27] += amp
        w.add(dict(object_id=f"g{i}", ra=1.0, dec=2.0, z=np.nan, image_array=img, image_ivar=np.ones_like(img),
                   has_spectrum=False, merger=int(amp > 6), tabular={"morph_asymmetry": amp}))
    w.close()
    return path


def test_pretraining_learns_the_stored_statistic(tmp_path):
    cfg = PretrainConfig(model="tiny", out=str(tmp_path / "run"), progress=False, seed=0)
    cfg.data.path = str(_survey(tmp_path / "s"))
    cfg.data.image.size = 32
    cfg.train.steps, cfg.train.batch_size, cfg.train.val_fraction = 40, 16, 0.25
    cfg.train.checkpoint_every = 0
    cfg.optim.warmup_steps, cfg.optim.lr = 5, 3e-3
    cfg.loss.ssl_image_weight, cfg.loss.morph_weight = 0.1, 1.0
    m = run_pretrain(cfg)
    assert m["val/morph_r2"] > 0.5  # the pooled features hold the statistic (chance ≈ 0)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["morph_targets"]["columns"] == ["morph_asymmetry"]
