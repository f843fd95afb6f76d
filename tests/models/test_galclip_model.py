"""GalClip model API, registry and safetensors checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from galclip.errors import ConfigError, InputFileError
from galclip.models import (GalClip, ModelConfig, build_model, checkpoint_hash, get_model_config, list_models,
                            load_model, register_tower, save_checkpoint, TOWERS)


def _tiny(**kw) -> ModelConfig:
    return get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=100, **kw)


def test_shapes_and_unit_norm():
    torch.manual_seed(0)
    m = build_model(_tiny())
    img, flux, ivar = torch.randn(3, 2, 32, 32), torch.randn(3, 100), torch.ones(3, 100)
    zi, zs, scale = m(img, flux, ivar)
    assert zi.shape == zs.shape == (3, m.embed_dim)
    assert torch.allclose(zi.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(zs.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert m.image_features(img).shape == (3, m.image_encoder.num_features)
    assert m.spectrum_features(flux, ivar).shape == (3, m.spectrum_encoder.num_features)
    assert m.image_tokens(img).shape[::2] == (3, m.image_encoder.num_features)
    assert m.spectrum_tokens(flux, ivar).shape[::2] == (3, m.spectrum_encoder.num_features)
    assert not torch.allclose(m.encode_image(img, normalize=False).norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_logit_scale_is_clamped():
    m = build_model(_tiny(max_logit_scale=50.0))
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert m.scale().item() == pytest.approx(50.0)


@pytest.mark.parametrize("kind", ["conv1d", "transformer"])
def test_bad_pixels_do_not_leak(kind):
    """Values at ivar = 0 pixels must not change the spectrum embedding."""
    torch.manual_seed(0)
    m = build_model(get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=100,
                                     spectrum=dict(kind=kind, width=32, depth=2, heads=2))).eval()
    flux, ivar = torch.randn(2, 100), torch.ones(2, 100)
    ivar[:, 40:60] = 0
    flux2 = flux.clone()
    flux2[:, 40:60] = 1e6
    flux2[0, 45] = float("nan")
    with torch.no_grad():
        a, b = m.encode_spectrum(flux, ivar), m.encode_spectrum(flux2, ivar)
        allbad = m.encode_spectrum(flux, torch.zeros_like(ivar))
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.isfinite(allbad).all()


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_and_loads_by_name_or_path(name):
    from galclip.models.config import PRESET_DIR

    cfg = get_model_config(name)
    yaml_cfg = get_model_config(str(PRESET_DIR / f"{name}.yaml"))  # a copied preset, passed by path
    assert yaml_cfg == cfg and cfg.name == name
    if name in ("base", "base-resnet"):
        return  # GPU-sized: construction alone costs seconds; covered by the same code paths
    m = build_model(get_model_config(name, n_bands=3, spectrum_length=300))
    zi, zs, _ = m(torch.randn(2, 3, 64, 64), torch.randn(2, 300), torch.ones(2, 300))
    assert zi.shape == zs.shape == (2, cfg.embed_dim)


def test_unknown_model_and_kind():
    assert list_models() == ["base", "base-resnet", "compact", "small", "small-cnn", "small-conv", "tiny"]  # package data found
    with pytest.raises(ConfigError, match="unknown model"):
        get_model_config("nope")
    with pytest.raises(ConfigError, match="unknown spectrum.kind"):
        build_model(_tiny(spectrum=dict(kind="nope")))


def test_register_custom_tower():
    class Mean(torch.nn.Module):
        num_features = 4

        def __init__(self, cfg):
            super().__init__()
            self.lin = torch.nn.Linear(1, 4)

        def tokens(self, x, ivar):
            return self.lin(x[..., None])

        def forward(self, x, ivar):
            return self.tokens(x, ivar).mean(1)

    register_tower("test-mean")(Mean)
    try:
        m = build_model(_tiny(spectrum=dict(kind="test-mean")))
        assert m.encode_spectrum(torch.randn(2, 100), torch.ones(2, 100)).shape == (2, 32)
    finally:
        TOWERS.pop("test-mean")


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny()
    m = build_model(cfg).eval()
    save_checkpoint(m, cfg, tmp_path / "ck", extra={"step": 3})
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {"model.safetensors", "model.json"}
    m2, cfg2 = load_model(tmp_path / "ck")
    assert cfg2 == cfg and isinstance(m2, GalClip)
    img, flux, ivar = torch.randn(2, 2, 32, 32), torch.randn(2, 100), torch.ones(2, 100)
    with torch.no_grad():
        assert torch.equal(m.encode_image(img), m2.encode_image(img))
        assert torch.equal(m.encode_spectrum(flux, ivar), m2.encode_spectrum(flux, ivar))
    h = checkpoint_hash(tmp_path / "ck")
    assert h == checkpoint_hash(tmp_path / "ck" / "model.safetensors") and len(h) == 64
    meta = json.loads((tmp_path / "ck" / "model.json").read_text())
    assert meta["weights_sha256"] == h and meta["extra"] == {"step": 3}


def test_checkpoint_refuses_mismatch_and_garbage(tmp_path):
    cfg = _tiny()
    save_checkpoint(build_model(cfg), cfg, tmp_path / "a")
    other = get_model_config("tiny", n_bands=3, image_size=32, spectrum_length=100)
    save_checkpoint(build_model(other), other, tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").replace(tmp_path / "b" / "model.safetensors")
    with pytest.raises(InputFileError, match="shape mismatch"):
        load_model(tmp_path / "b")
    with pytest.raises(InputFileError, match="model.json"):
        load_model(tmp_path / "missing")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "model.json").write_text((tmp_path / "b" / "model.json").read_text())
    (tmp_path / "c" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputFileError, match="safetensors"):
        load_model(tmp_path / "c")


def test_refuses_to_save_nan(tmp_path):
    cfg = _tiny()
    m = build_model(cfg)
    with torch.no_grad():
        m.image_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        save_checkpoint(m, cfg, tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_checkpoint_carries_preprocessing(tmp_path):
    """Stages that embed with a checkpoint reuse the preprocessing it was trained with."""
    import dataclasses as dc

    from galclip.data.dataset import DataConfig
    from galclip.data.preprocess import ImagePrep, SpectrumPrep
    from galclip.models.checkpoint import data_config_for

    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=128)
    prep = {"image": dc.asdict(ImagePrep(size=32, softening=5.0)), "spectrum": dc.asdict(SpectrumPrep(downsample=2))}
    save_checkpoint(build_model(cfg), cfg, tmp_path / "c", extra={"preprocessing": prep})
    got = data_config_for(tmp_path / "c", DataConfig(path="x"))
    assert got.image.size == 32 and got.image.softening == 5.0 and got.spectrum.downsample == 2
    kept = data_config_for(tmp_path / "c", DataConfig(path="x", prep_from_checkpoint=False))
    assert kept.image.size == 64 and kept.spectrum.downsample == 1
    # flux calibration is a property of the new data, not of the model's preprocessing
    uncal = DataConfig(path="x")
    uncal.spectrum.flux_calibrated = False
    got = data_config_for(tmp_path / "c", uncal)
    assert got.spectrum.downsample == 2 and got.spectrum.flux_calibrated is False


def test_flux_scale_input_changes_spectrum_embedding_and_has_an_unknown_state():
    torch.manual_seed(0)
    m = build_model(_tiny()).eval()
    assert m.flux_scale is not None  # on by default
    flux, ivar = torch.randn(4, 100), torch.ones(4, 100)
    with torch.no_grad():
        bright = m.encode_spectrum(flux, ivar, torch.full((4,), 2.0))
        faint = m.encode_spectrum(flux, ivar, torch.full((4,), 0.0))
        unknown = m.encode_spectrum(flux, ivar, torch.full((4,), float("nan")))
        nothing = m.encode_spectrum(flux, ivar)
        mixed = m.encode_spectrum(flux, ivar, torch.tensor([2.0, float("nan"), 2.0, float("nan")]))
    assert (bright - faint).abs().max() > 1e-3  # the brightness reaches the embedding
    assert torch.isfinite(unknown).all() and torch.equal(unknown, nothing)
    torch.testing.assert_close(mixed[::2], bright[::2])
    torch.testing.assert_close(mixed[1::2], unknown[1::2])
    off = build_model(_tiny(spectrum=dict(kind="conv1d", width=32, depth=3, use_flux_scale=False)))
    assert off.flux_scale is None


def test_checkpoint_from_before_the_new_spectrum_options_loads_as_it_was_made(tmp_path):
    """model.json files without use_flux_scale/norm_groups rebuild the architecture they came from."""
    cfg = _tiny(spectrum=dict(kind="conv1d", width=32, depth=3, use_flux_scale=False, norm_groups=8))
    torch.manual_seed(0)
    old = build_model(cfg).eval()
    save_checkpoint(old, cfg, tmp_path / "old")
    meta_path = tmp_path / "old" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key in ("use_flux_scale", "norm_groups"):
        del meta["model_config"]["spectrum"][key]
    meta_path.write_text(json.dumps(meta))
    again, cfg2 = load_model(tmp_path / "old")
    assert cfg2.spectrum.norm_groups == 8 and not cfg2.spectrum.use_flux_scale
    flux, ivar = torch.randn(2, 100), torch.ones(2, 100)
    with torch.no_grad():
        assert torch.equal(again.encode_spectrum(flux, ivar), old.encode_spectrum(flux, ivar))


def test_image_representation_is_standardised_pca_of_running_statistics():
    from galclip.models.galclip import FeatureStandardizer

    torch.manual_seed(0)
    m = build_model(_tiny()).eval()
    img = torch.randn(64, 2, 32, 32) * 3 + 1
    assert torch.allclose(m.image_representation(img).norm(dim=-1), torch.ones(64), atol=1e-5)
    st = FeatureStandardizer(6, n_components=2)
    assert st.width == 6  # no statistics yet: the plain features
    g = torch.Generator().manual_seed(0)
    signal = torch.randn(512, 1, generator=g)
    feats = torch.cat([signal * 5 + 3, signal * -2, torch.randn(512, 4, generator=g) * 0.1], 1) * 10
    for _ in range(200):  # the exponential average converges to the batch statistics
        st.update(feats)
    assert st.width == 2
    assert torch.allclose(st.mean, feats.mean(0), atol=1e-3) and torch.allclose(st.var, feats.var(0), rtol=1e-3)
    z = st(feats)
    # the first component is the shared signal (both correlated channels, standardised alike)
    assert abs(torch.corrcoef(torch.stack([z[:, 0], signal[:, 0]]))[0, 1]) > 0.99
    assert z[:, 0].var() == pytest.approx(2.0, rel=0.05)  # two standardised channels in one direction
    single = m.image_representation(img[:1])  # a batch of one is treated like any other
    assert torch.allclose(single, m.image_representation(img)[:1], atol=1e-5)


def test_checkpoint_from_before_the_standardiser_loads_with_identity_statistics(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    old = build_model(_tiny()).eval()
    save_checkpoint(old, _tiny(), tmp_path / "old")
    path = tmp_path / "old" / "model.safetensors"
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("image_standardizer.")}
    save_file(state, str(path))
    again, _ = load_model(tmp_path / "old")
    img = torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        raw = torch.nn.functional.normalize(old.image_features(img), dim=-1)
        assert torch.allclose(again.image_representation(img), raw, atol=1e-5)


def test_residual_input_channels_show_asymmetric_light_and_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = get_model_config("small-cnn", n_bands=2, image_size=32, spectrum_length=100)
    cfg.image.residual = True
    m = build_model(cfg).eval()
    yy, xx = torch.meshgrid(torch.arange(32) - 15.5, torch.arange(32) - 15.5, indexing="ij")
    round_gal = (20 * torch.exp(-(xx**2 + yy**2) / 20)).expand(1, 2, 32, 32)
    x = m.image_encoder.inputs(round_gal)
    assert x.shape == (1, 4, 32, 32) and float(x[:, 2:].abs().max()) < 1e-5  # symmetric: no residual
    tail = round_gal.clone()
    tail[..., 3:6, 20:28] += 5.0
    assert float(m.image_encoder.inputs(tail)[:, 2:].abs().max()) > 0.5
    save_checkpoint(m, cfg, tmp_path / "ck")
    m2, cfg2 = load_model(tmp_path / "ck")
    assert cfg2.image.residual and m2.image_encoder.residual
    with torch.no_grad():
        assert torch.equal(m.image_features(tail), m2.image_features(tail))


def test_representation_from_several_stages_keeps_the_projection_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = get_model_config("small-cnn", n_bands=2, image_size=32, spectrum_length=100)
    cfg.image.representation_stages = 1
    one = build_model(cfg).eval()
    cfg.image.representation_stages = 3
    torch.manual_seed(0)
    m = build_model(cfg).eval()
    img = torch.randn(8, 2, 32, 32) * 3
    with torch.no_grad():
        f, r = m.image_pooled(img)
        f1, r1 = one.image_pooled(img)
    assert torch.equal(f, f1) and torch.equal(r1, f1)  # same weights: same projection input
    widths = [i["num_chs"] for i in m.image_encoder.backbone.feature_info[-3:]]
    assert r.shape == (8, sum(widths)) and m.image_standardizer.mean.shape == (sum(widths),)
    # the last block of the representation is the final pooled features; the others are earlier stages
    assert torch.equal(r[:, -widths[-1]:], f) and not torch.allclose(r[:, :widths[0]], f[:, :widths[0]])
    m.image_standardizer.update(r)
    assert m.image_representation(img).shape == (8, 64)
    save_checkpoint(m, cfg, tmp_path / "ck")
    m2, cfg2 = load_model(tmp_path / "ck")
    assert cfg2.image.representation_stages == 3
    with torch.no_grad():
        assert torch.allclose(m2.image_representation(img), m.image_representation(img), atol=1e-6)
    cfg.image.representation_stages = 0
    with pytest.raises(ConfigError, match="representation_stages"):
        build_model(cfg)


def test_representation_components_set_its_width_and_survive_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = get_model_config("small-cnn", n_bands=2, image_size=32, spectrum_length=100)
    cfg.image.representation_components = 16
    m = build_model(cfg).eval()
    img = torch.randn(40, 2, 32, 32) * 3
    with torch.no_grad():
        m.image_standardizer.update(m.image_pooled(img)[1])
        rep = m.image_representation(img)
    assert rep.shape == (40, 16) and m.representation_dim == 16
    save_checkpoint(m, cfg, tmp_path / "ck")
    m2, cfg2 = load_model(tmp_path / "ck")
    assert cfg2.image.representation_components == 16
    with torch.no_grad():
        assert torch.allclose(m2.image_representation(img), rep, atol=1e-6)
    cfg.image.representation_components = 0
    with pytest.raises(ConfigError, match="representation_components"):
        build_model(cfg)


def test_standardizer_fit_gives_the_exact_statistics_of_its_rows():
    """``fit`` (the random-init baseline's read-out) = standardised PCA of exactly these rows."""
    from galclip.models.galclip import FeatureStandardizer

    g = torch.Generator().manual_seed(1)
    signal = torch.randn(300, 1, generator=g)
    feats = torch.cat([signal * 5 + 3, signal * -2, torch.randn(300, 4, generator=g) * 0.1], 1) * 10
    st = FeatureStandardizer(6, n_components=2)
    st.fit(feats)
    assert st.width == 2 and int(st.count) == 1
    assert torch.allclose(st.mean, feats.mean(0)) and torch.allclose(st.var, feats.var(0))
    z = (feats - feats.mean(0)) / feats.std(0)
    want = torch.linalg.eigh(z.T @ z / 300).eigenvalues.flip(0)[:2]
    assert torch.allclose(st(feats).var(0) * 299 / 300, want, rtol=1e-3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        st.fit(feats[:1])


def test_eval_views_make_the_tower_invariant_to_flips_and_rotations():
    import torch

    from galclip.models import build_model, get_model_config
    from galclip.models.towers import dihedral

    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    model = build_model(cfg).eval()
    x = torch.randn(3, 2, 32, 32)
    assert len({tuple(dihedral(x, k)[0, 0, :2, :2].flatten().tolist()) for k in range(8)}) == 8  # 8 distinct views
    plain = model.image_encoder.pooled(x)[0]
    assert not torch.allclose(plain, model.image_encoder.pooled(torch.rot90(x, 1, (-2, -1)))[0], atol=1e-4)
    model.image_encoder.eval_views = 8
    with torch.no_grad():
        a, b = model.image_encoder.pooled(x), model.image_encoder.pooled(torch.flip(torch.rot90(x, 1, (-2, -1)), (-1,)))
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.image_encoder(x), a[0])
    model.train()  # training sees one view: the flips/rotations are the noise there
    assert not torch.allclose(model.image_encoder.pooled(x)[0], a[0], atol=1e-4)
