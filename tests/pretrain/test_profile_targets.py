"""Structure profiles: invariances, what they respond to, and the pretraining term."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galclip.data.shards import ShardWriter
from galclip.pretrain.profile_targets import ProfileStandardizer, profile_names, structure_profiles
from galclip.pretrain.train import PretrainConfig, run_pretrain


def _galaxy(size: int = 32, blob: float = 0.0) -> torch.Tensor:
    """(1, 2, H, W) round centred galaxy, optionally with an off-centre companion."""
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    img = 5 * torch.exp(-(xx**2 + yy**2) / 8.0)
    img = img + blob * torch.exp(-((xx - 9) ** 2 + (yy - 4) ** 2) / 2.0)
    return img.expand(1, 2, size, size).clone()


def _stat(p: torch.Tensor, name: str, k: int) -> float:
    return float(p[0, profile_names(8).index(f"{name}_{k}")])


def test_profiles_are_invariant_under_the_augmentation_group():
    x = _galaxy(blob=3.0) + 0.1 * torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    p = structure_profiles(x)
    assert p.shape == (1, 32) and len(profile_names(8)) == 32
    for t in (torch.rot90(x, 1, (2, 3)), torch.rot90(x, 3, (2, 3)), x.flip(2), x.flip(3)):
        assert torch.allclose(structure_profiles(t), p, atol=1e-4)


def test_a_companion_shows_in_its_annulus_not_in_the_core():
    smooth, pair = structure_profiles(_galaxy()), structure_profiles(_galaxy(blob=3.0))
    # the companion sits ~9.8 px out: annulus 6 of 8 log-spaced annuli up to 16 px
    k = 6
    assert _stat(smooth, "a1", k) < 0.05 and _stat(pair, "a1", k) > 0.3
    assert _stat(smooth, "resid", k) < 0.05 and _stat(pair, "resid", k) > 0.5
    assert _stat(pair, "a1", 0) == pytest.approx(_stat(smooth, "a1", 0), abs=0.02)
    assert float(smooth[0, 0::4].sum()) <= 1.0 + 1e-5  # light fractions within the outer circle


def test_standardizer_first_batch_sets_scale_and_clips():
    s = ProfileStandardizer(3, clip=5.0)
    t = torch.tensor([[1.0, 10.0, 0.0], [3.0, 30.0, 0.0]])
    s.update(t)
    z = s(t)
    assert torch.allclose(z[:, :2], torch.tensor([[-0.7071, -0.7071], [0.7071, 0.7071]]), atol=1e-3)
    assert float(s(torch.tensor([[100.0, 20.0, 0.0]]))[0, 0]) == 5.0  # clipped
    s.update(t + 1)
    assert float(s.mean[0]) == pytest.approx(2.02)  # then an exponential average


def _survey(path, n: int = 64):
    """Image-only survey without any catalogue: profiles are the only target."""
    rng = np.random.default_rng(1)
    w = ShardWriter(path, ["g", "r"], 32, None, label_columns=["merger"], shard_size=100,
                    provenance={"source": "test"})
    for i in range(n):
        amp = float(rng.uniform(0, 12))
        img = (_galaxy(blob=amp)[0].numpy() * 3 + rng.normal(0, 1, (2, 32, 32))).astype(np.float32)
        w.add(dict(object_id=f"g{i}", ra=1.0, dec=2.0, z=np.nan, image_array=img, image_ivar=np.ones_like(img),
                   has_spectrum=False, merger=int(amp > 6)))
    w.close()
    return path


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_pretraining_has_the_profile_term_only_when_asked(tmp_path, weight):
    cfg = PretrainConfig(model="tiny", out=str(tmp_path / "run"), progress=False, seed=0)
    cfg.data.path = str(_survey(tmp_path / "s"))
    cfg.data.image.size = 32
    cfg.train.steps, cfg.train.batch_size, cfg.train.val_fraction, cfg.train.log_every = 6, 16, 0.25, 1
    cfg.train.checkpoint_every = 0
    cfg.loss.ssl_image_weight, cfg.loss.morph_weight, cfg.loss.profile_weight = 0.1, 0.0, weight
    m = run_pretrain(cfg)
    logged = (tmp_path / "run" / "logs").rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    assert ("train/profile" in header) == bool(weight)
    assert ("val/profile_r2/a1" in m) == bool(weight)


def test_profile_term_trains_the_image_tower():
    """A few optimiser steps on one batch cut the profile loss: the gradient reaches the tower."""
    from galclip.models.galclip import build_model
    from galclip.pretrain.augment import AugmentConfig
    from galclip.pretrain.module import LossConfig, OptimConfig, PretrainModule
    from galclip.pretrain.train import resolve_model_config

    torch.manual_seed(0)
    mcfg = resolve_model_config(PretrainConfig(model="tiny"), n_bands=2, image_size=32, spectrum_length=64)
    loss = LossConfig(clip_weight=0.0, morph_weight=0.0, profile_weight=1.0)
    module = PretrainModule(build_model(mcfg), loss, OptimConfig(), AugmentConfig(image_noise=0.0, psf_sigma=0.0),
                            total_steps=10, use_spectra=False)
    gen = torch.Generator().manual_seed(0)
    amps = torch.linspace(0, 12, 32)
    image = torch.cat([_galaxy(blob=float(a)) * 3 for a in amps]) + torch.randn(32, 2, 32, 32, generator=gen)
    batch = {"image": image, "image_ivar": torch.ones_like(image), "has_image": torch.ones(32, dtype=torch.bool),
             "has_spectrum": torch.zeros(32, dtype=torch.bool), "index": torch.arange(32)}
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        total, parts = module.compute_loss(batch, torch.Generator().manual_seed(1))
        first = parts["profile"] if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert set(parts) == {"profile"} and parts["profile"] < 0.6 * first
    grads = [p.grad for p in module.model.image_encoder.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) > 0
