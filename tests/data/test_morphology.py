"""statmorph morphology: sane values on synthetic galaxies, NaN (never an exception) on junk."""
from __future__ import annotations

import numpy as np
import pytest

from galclip.data.morphology import MORPH_COLUMNS, measure_morphology, morph_columns, morphology_table


def _galaxy(size=48, second=False, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    img = 50 * np.exp(-np.hypot(x, y / 0.7) / 3.0)
    if second:  # an off-centre companion: a merger-like asymmetric light distribution
        img += 30 * np.exp(-np.hypot(x - 9, y - 6) / 2.0)
    return img + rng.normal(0, 1.0, img.shape)


def test_values_are_physical_and_merger_is_more_asymmetric():
    single = measure_morphology(_galaxy(), np.ones((48, 48)))
    pair = measure_morphology(_galaxy(second=True), None)
    assert set(single) == set(MORPH_COLUMNS)
    for d in (single, pair):
        assert 0.2 < d["gini"] < 0.9 and -3.5 < d["m20"] < -0.5
        assert 1.5 < d["concentration"] < 6
    assert pair["asymmetry"] > single["asymmetry"] + 0.05
    assert pair["m20"] > single["m20"]  # bright off-centre knot raises M20


@pytest.mark.parametrize("junk", [np.zeros((32, 32)), np.full((32, 32), np.nan), np.ones((4, 4)),
                                  np.ones(10), np.random.default_rng(0).normal(size=(32, 32)), "text"])
def test_failure_gives_nan_not_exception(junk):
    d = measure_morphology(junk, None)
    assert set(d) == set(MORPH_COLUMNS) and all(isinstance(v, float) for v in d.values())
    if not isinstance(junk, np.ndarray) or junk.ndim != 2 or junk.shape[0] < 8 or not np.isfinite(junk).any() \
            or not junk.any():
        assert np.isnan(d["gini"])


def test_table_shape_options_and_parallel():
    imgs = np.stack([_galaxy(seed=s) for s in range(3)] + [np.zeros((48, 48))])
    serial = morphology_table(imgs, None, n_jobs=1, progress=False)
    assert serial.shape == (4, len(MORPH_COLUMNS))
    assert np.isnan(serial[3, 0]) and np.isfinite(serial[:3, 0]).all()
    par = morphology_table(imgs, np.ones_like(imgs), n_jobs=2, progress=False)
    np.testing.assert_allclose(par, serial, equal_nan=True)
    assert morph_columns(mid=True, sersic=True)[-4:] == ("multimode", "intensity", "deviation", "sersic_n")
    extra = morphology_table(imgs[:1], None, mid=True, sersic=True, progress=False)
    assert extra.shape == (1, len(MORPH_COLUMNS) + 4) and np.isfinite(extra[0, -1])
