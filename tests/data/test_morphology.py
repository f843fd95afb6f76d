"""statmorph morphology: native stamps, pairs kept in one segment, companions, NaN on junk."""
from __future__ import annotations

import numpy as np
import pytest

from galclip.data.morphology import (
    MORPH_COLUMNS, MorphologyOptions, measure_morphology, morph_columns, morphology_stamp, morphology_table,
    segment,
)

BASE = MorphologyOptions(mid=False, companions=False)


def _blob(y, x, cy, cx, amp, scale, q=1.0):
    return amp * np.exp(-np.hypot(x - cx, (y - cy) / q) / scale)


def _galaxy(size=48, second=False, seed=0, sep=9.0, noise=1.0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    img = _blob(y, x, 0, 0, 50, 3.0, 0.7)
    if second:  # an off-centre companion: a merger-like asymmetric light distribution
        img += _blob(y, x, 6 * sep / 9, sep, 30, 2.0)
    return img + rng.normal(0, noise, img.shape)


def test_values_are_physical_and_merger_is_more_asymmetric():
    single = measure_morphology(_galaxy(), np.ones((48, 48)), BASE)
    pair = measure_morphology(_galaxy(second=True), None, BASE)
    assert set(single) == set(MORPH_COLUMNS)
    for d in (single, pair):
        assert 0.2 < d["gini"] < 0.9 and -3.5 < d["m20"] < -0.5
        assert 1.5 < d["concentration"] < 6
    assert pair["asymmetry"] > single["asymmetry"] + 0.05
    assert pair["m20"] > single["m20"]  # bright off-centre knot raises M20


def test_overlapping_pair_stays_one_segment_and_counts_as_companion():
    """Two touching galaxies: one segment (no deblending), and the companion is counted."""
    img = _galaxy(size=96, second=True, sep=12.0, noise=0.5)
    opts = MorphologyOptions(sky_frame=0.15)
    stamp = morphology_stamp(img, None, opts)
    seg, _, label = segment(stamp, opts)
    centre, comp = seg.data[47, 47], seg.data[47 + 8, 47 + 12]
    assert centre == label and comp == label  # the pair shares the central segment
    d = measure_morphology(img, None, opts)
    assert d["n_companions"] >= 1 and 0.1 < d["companion_flux_ratio"] < 1.0
    assert 0 < d["companion_separation"] < opts.companion_radius
    alone = measure_morphology(_galaxy(size=96, noise=0.5), None, opts)
    assert alone["n_companions"] == 0 and alone["companion_flux_ratio"] == 0


def test_stamp_sky_from_outer_frame_crop_and_binning():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:200, :200] - 99.5
    cube = np.stack([_blob(y, x, 0, 0, 40, 6.0) + 7.0 + rng.normal(0, 2.0, (200, 200)) for _ in range(3)])
    opts = MorphologyOptions(band="r", crop="100px", size=50, sky_frame=0.1)
    st = morphology_stamp(cube, np.ones_like(cube), opts, bands=["i", "r", "g"])
    assert st.image.shape == (50, 50) and st.binning == 2 and st.ivar is None  # constant ivar: no noise model
    assert st.sky_sigma == pytest.approx(1.0, rel=0.1)  # 2.0 / 2 after 2x2 binning
    assert abs(np.median(st.image[:3, :3])) < 0.5  # sky level subtracted
    arc = morphology_stamp(cube, None, MorphologyOptions(crop="40arcsec"), pixel_scale=0.4)
    assert arc.image.shape == (100, 100)
    with pytest.raises(ValueError, match="not among the bands"):
        morphology_stamp(cube, None, MorphologyOptions(band="u"), bands=["i", "r", "g"])


@pytest.mark.parametrize("junk", [np.zeros((32, 32)), np.full((32, 32), np.nan), np.ones((4, 4)),
                                  np.ones(10), np.random.default_rng(0).normal(size=(32, 32)), "text"])
def test_failure_gives_nan_not_exception(junk):
    d = measure_morphology(junk, None)
    assert set(d) == set(MorphologyOptions().columns()) and all(isinstance(v, float) for v in d.values())
    if not isinstance(junk, np.ndarray) or junk.ndim != 2 or junk.shape[0] < 8 or not np.isfinite(junk).any() \
            or not junk.any():
        assert np.isnan(d["gini"])


def test_table_shape_options_and_parallel():
    imgs = np.stack([_galaxy(seed=s) for s in range(3)] + [np.zeros((48, 48))])
    serial = morphology_table(imgs, None, BASE, n_jobs=1, progress=False)
    assert serial.shape == (4, len(MORPH_COLUMNS))
    assert np.isnan(serial[3, 0]) and np.isfinite(serial[:3, 0]).all()
    par = morphology_table(imgs, np.ones_like(imgs), BASE, n_jobs=2, progress=False)
    np.testing.assert_allclose(par, serial, equal_nan=True)
    assert morph_columns(mid=True, sersic=True)[-4:] == ("multimode", "intensity", "deviation", "sersic_n")
    opts = MorphologyOptions(sersic=True)
    extra = morphology_table(imgs[:1], None, opts, progress=False)
    assert extra.shape == (1, len(opts.columns())) and np.isfinite(extra[0, -1])


def test_coarse_asymmetry_centre_keeps_the_statistics(monkeypatch):
    """centre_xtol stops statmorph's centre search early: the same statistics, fewer evaluations."""
    import scipy.optimize
    import statmorph.statmorph as sm

    calls: list[float] = []
    fmin = scipy.optimize.fmin

    def counted(*args, **kwargs):
        out = fmin(*args, **kwargs)
        calls.append(kwargs["xtol"])
        return out

    monkeypatch.setattr(scipy.optimize, "fmin", counted)
    img = _galaxy(second=True, seed=3)
    exact = measure_morphology(img, None, BASE.__class__(mid=False, companions=False, centre_xtol=0.0))
    coarse = measure_morphology(img, None, BASE)
    assert BASE.centre_xtol == 1e-3 and calls == [1e-6, 1e-3]  # statmorph's own tolerance, then ours
    assert sm.opt is scipy.optimize  # statmorph's module reference is restored
    for k in ("asymmetry", "shape_asymmetry", "gini", "m20", "concentration"):
        assert abs(coarse[k] - exact[k]) < 0.01, k
