"""Physical consistency of the simulated galaxies (colours, lines, redshift, sizes, fibre)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from galclip.data import schema as S
from galclip.data.preprocess import log_grid
from galclip.data.sim import images as I
from galclip.data.sim import population as P
from galclip.data.sim import spectra as X
from galclip.data.sim.galaxy import SimParams, galaxy_components, rest_gr
from galclip.data.sim.survey import SimulateConfig, simulate_rows


@pytest.fixture(scope="module")
def sample():
    cfg = SimulateConfig(n=48, seed=11, image_size=32, derived=True, morphology=False, progress=False)
    return simulate_rows(cfg, 0, 48, keep_models=True)


def test_fine_grid_contains_the_sdss_grid():
    np.testing.assert_allclose(X.FINE_WAVE[X.SDSS_SLICE], log_grid(3800, 9200, 3840), rtol=1e-10)


def test_bluer_galaxies_have_stronger_emission_lines(sample):
    gr = np.array([r["g_r"] for r in sample])
    ew = np.array([r["tabular"]["halpha_ew"] for r in sample])
    ok = np.isfinite(ew)
    assert ok.sum() > 30
    rho = spearmanr(gr[ok], ew[ok]).statistic
    assert rho < -0.3, rho
    blue = gr[ok] < np.median(gr[ok])
    assert np.median(ew[ok][blue]) > np.median(ew[ok][~blue]) + 3.0


def test_halpha_sits_at_redshifted_wavelength(sample):
    wave = log_grid(3800, 9200, 3840)
    sf = [r for r in sample if r["log_ssfr"] > -10.5 and 6563 * (1 + r["z"]) < 9100]
    assert sf, "sample has star-forming galaxies"
    for r in sf[:5]:
        expect = 6562.8 * (1 + r["z"])
        win = np.abs(wave - expect) < 25
        cont = np.median(r["_fibre_model"][win])
        peak = wave[win][np.argmax(r["_fibre_model"][win] - cont)]
        assert abs(peak - expect) < 2.5 * (expect / 1e4 * 2.3), (peak, expect)
        # and the noisy spectrum shows it too
        f = np.where(r[S.SPEC_IVAR] > 0, r[S.SPEC_FLUX], np.nan)
        assert np.nanmax(f[win]) > np.nanmedian(f[win]) + 3 / np.sqrt(np.median(r[S.SPEC_IVAR][win]))


def test_emission_line_flux_is_conserved():
    z, dl = 0.1, P.lum_distance_cm(0.1)
    ratios = X.LineFluxes({"halpha": 1.0})
    spec = X.emission_spectrum(1e41, ratios, z, dl, 0.0, 80.0)
    dlam = X.FINE_WAVE * X._DLOGLAM
    np.testing.assert_allclose(np.sum(spec * dlam), 1e41 / (4 * np.pi * dl**2), rtol=1e-3)
    assert abs(X.FINE_WAVE[np.argmax(spec)] - 6562.8 * 1.1) < 2.0


def test_redshift_shrinks_apparent_size():
    p = SimParams(image_size=48)
    radii, sizes = [], []
    for z in (0.04, 0.15):
        g = P.draw_galaxy(np.random.default_rng(5), z, -21.5, gr_rest_of=rest_gr)
        comps, _ = galaxy_components(g, "host", np.random.default_rng(6), p, 0.0, 0.0)
        model, _ = I.render(comps, np.array([1.2] * 4), p.image_size, p.pixel_scale, 1)
        img = model[1]
        yy, xx = np.mgrid[:48, :48] - 23.5
        radii.append(np.sqrt(np.sum(img * (xx**2 + yy**2)) / img.sum()))
        sizes.append((g.r_eff_kpc, g.r_eff_arcsec))
    assert sizes[0][0] == pytest.approx(sizes[1][0])                  # same physical size
    assert sizes[1][1] / sizes[0][1] == pytest.approx(P.arcsec_per_kpc(0.15) / P.arcsec_per_kpc(0.04), rel=1e-6)
    assert radii[1] < 0.75 * radii[0]


def test_image_colours_follow_the_spectrum(sample):
    # observed g-r from the image photometry agrees with the catalogue value (same SEDs)
    for r in sample[:10]:
        m = r["_model"]
        assert m[0].sum() > 0 and m[1].sum() > 0
    gr = np.array([r["g_r"] for r in sample])
    q = np.array([r["quiescent"] for r in sample]).astype(bool)
    assert gr[q].mean() > gr[~q].mean() + 0.2                         # red sequence vs blue cloud
    assert 0.5 < np.median(gr) < 1.1                                  # SDSS-like (calibration: 0.90)


def test_sample_is_magnitude_limited_and_sdss_like(sample):
    mag = np.array([r["mag_r"] for r in sample])
    z = np.array([r["z"] for r in sample])
    assert np.all((mag > 13.0) & (mag < 18.3))
    assert 0.05 < np.median(z) < 0.16
    ivar = np.concatenate([r[S.SPEC_IVAR] for r in sample])
    mask = np.concatenate([r[S.SPEC_MASK] for r in sample])
    assert np.all(ivar[mask] == 0) and 0 < mask.mean() < 0.1


def test_interactions_raise_sfr_and_agn_statistically_not_deterministically():
    def draw(boost, agn):
        out = [P.draw_galaxy(np.random.default_rng([9, i]), 0.1, -21.0, boost, agn, gr_rest_of=rest_gr) for i in range(600)]
        return np.array([g.log_sfr for g in out]), np.array([g.agn for g in out])

    sfr0, agn0 = draw(0.0, 1.0)
    sfr1, agn1 = draw(0.25, 2.0)
    assert 0.1 < np.median(sfr1) - np.median(sfr0) < 0.45
    assert agn1.mean() > agn0.mean()
    # distributions overlap: SFR alone cannot identify a merger
    assert np.mean(sfr1 < np.median(sfr0)) > 0.25


def test_fibre_spectrum_and_image_agree_on_colour(sample):
    """Synthetic g-r of the fibre spectrum = g-r of the image light inside the 3" fibre."""
    w = X.band_weights(("g", "r"))[:, X.SDSS_SLICE]
    size = sample[0]["_model"].shape[-1]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    ap = np.hypot(xx, yy) * 0.396 <= 1.5
    diffs = []
    for r in sample[:15]:
        f = w @ (r["_fibre_model"] * 1e-17)
        gr_spec = -2.5 * np.log10(f[0] / f[1])
        gr_img = -2.5 * np.log10(r["_model"][0][ap].sum() / r["_model"][1][ap].sum())
        diffs.append(gr_spec - gr_img)
    assert np.median(np.abs(diffs)) < 0.1, diffs
