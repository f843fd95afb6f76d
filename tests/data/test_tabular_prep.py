"""Catalogue-column preprocessing: robust scaling, log/clip, missing values, JSON round trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from galclip.data.tabular import TabularPrepConfig, TabularPreprocessor, dataset_table
from galclip.errors import ConfigError, InputFileError

COLS = ["flux_ha", "d4000", "gini", "survey"]


def _table(rng: np.random.Generator, n: int = 500) -> np.ndarray:
    flux = 10 ** rng.normal(1.0, 1.2, n)  # positive, huge dynamic range → auto log
    d4000 = rng.normal(1.5, 0.2, n)  # narrow range → linear
    gini = rng.uniform(0.3, 0.7, n)
    survey = rng.integers(0, 3, n).astype(float)
    return np.stack([flux, d4000, gini, survey], axis=1)


def _prep(**kw) -> TabularPreprocessor:
    return TabularPreprocessor(TabularPrepConfig(categorical={"survey": 3}, **kw))


def test_auto_log_and_robust_standardisation(rng):
    x = _table(rng)
    prep = _prep().fit(x, COLS)
    assert prep.log_columns == ["flux_ha"]
    z = prep.transform(x, COLS)
    assert z.dtype == np.float32 and z.shape == x.shape
    # robust standardisation: median 0, IQR-sigma 1 on the training data
    for j in range(3):
        q1, med, q3 = np.percentile(z[:, j], [25, 50, 75])
        assert abs(med) < 1e-5 and abs((q3 - q1) / 1.349 - 1) < 1e-3
    np.testing.assert_allclose(z[:, 3], x[:, 3])  # categorical codes pass through
    # the log is really applied: standardised log flux is linear in log10(flux)
    st = prep.stats["flux_ha"]
    np.testing.assert_allclose(z[:, 0], (np.log10(x[:, 0]) - st.center) / st.scale, rtol=1e-5, atol=1e-5)


def test_auto_log_needs_positive_wide_and_right_skewed(rng):
    n = 400
    cols = ["flux", "uniform", "with_zero", "narrow"]
    x = np.stack([10 ** rng.normal(1, 0.5, n),  # lognormal, p95/p5 ~ 45 → log
                  rng.uniform(1, 50, n),  # wide but symmetric in linear space → no log
                  np.r_[0.0, 10 ** rng.normal(1, 0.5, n - 1)],  # one zero → not positive-definite
                  rng.normal(100, 5, n)], axis=1)  # positive but narrow → no log
    assert TabularPreprocessor().fit(x, cols).log_columns == ["flux"]


def test_asinh_for_signed_heavy_tailed_columns(rng):
    n = 1000
    noise = rng.normal(0, 2, n)
    line = np.where(rng.random(n) < 0.5, 10 ** rng.normal(1.5, 0.6, n), 0.0) + noise  # emitters + noise
    cols = ["line_flux", "m20", "asym"]
    m20 = -1.8 + np.where(rng.random(n) < 0.1, rng.exponential(0.5, n), rng.normal(0, 0.1, n))  # < 0, tailed
    x = np.stack([line, m20, rng.normal(0.05, 0.05, n)], axis=1)  # asym: ± but Gaussian
    prep = TabularPreprocessor().fit(x, cols)
    assert prep.asinh_columns == ["line_flux"] and prep.log_columns == []
    st = prep.stats["line_flux"]
    z = prep.transform(x, cols)
    np.testing.assert_allclose(z[:, 0], np.clip((np.arcsinh(line / st.asinh) - st.center) / st.scale, -10, 10),
                               rtol=1e-5, atol=1e-5)
    # the transform compresses the bright tail: nothing needs clipping, unlike plain scaling
    plain = TabularPreprocessor(TabularPrepConfig(asinh_columns=[])).fit(x, cols).transform(x, cols)
    assert np.abs(z[:, 0]).max() < 10 and (np.abs(plain[:, 0]) >= 10).sum() > 10
    np.testing.assert_allclose(prep.inverse_transform(z)[:, 0], line, rtol=1e-4, atol=1e-4)
    # configured lists win over auto-detection, and a column cannot be both
    forced = TabularPreprocessor(TabularPrepConfig(asinh_columns=["asym"])).fit(x, cols)
    assert forced.asinh_columns == ["asym"]
    with pytest.raises(ConfigError, match="more than one"):
        TabularPrepConfig(log_columns=["a"], asinh_columns=["a"])


def test_configured_log_columns_override_auto(rng):
    x = _table(rng)
    prep = _prep(log_columns=["d4000"]).fit(x, COLS)
    assert prep.log_columns == ["d4000"]  # flux_ha not logged when the list is given
    prep = _prep(auto_log=False).fit(x, COLS)
    assert prep.log_columns == []


def test_outliers_do_not_move_the_scale_and_are_clipped(rng):
    x = _table(rng)
    x_bad = x.copy()
    x_bad[:5, 1] = 1e6  # absurd but finite D4000 values
    a = _prep().fit(x, COLS).stats["d4000"]
    b = _prep().fit(x_bad, COLS).stats["d4000"]
    assert abs(a.center - b.center) < 0.01 and abs(a.scale / b.scale - 1) < 0.05
    z = _prep(clip=5.0).fit(x_bad, COLS).transform(x_bad, COLS)
    assert np.all(z[:5, 1] == 5.0) and np.nanmax(np.abs(z[:, :3])) <= 5.0


def test_missing_kinds_become_nan(rng):
    x = _table(rng)
    prep = _prep(valid_range={"gini": [0.0, 1.0]}).fit(x, COLS)
    y = x[:7].copy()
    y[0, 0] = np.nan
    y[1, 1] = -9999.0  # sentinel
    y[2, 1] = np.inf
    y[3, 2] = 1.7  # outside valid range
    y[4, 3] = 7  # unknown category
    y[5, 3] = 1.5  # non-integer code
    y[6, 1] = 1e35  # absurd
    z = prep.transform(y, COLS)
    expect = {(0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (6, 1)}
    got = {tuple(ij) for ij in np.argwhere(np.isnan(z))}
    assert got == expect


def test_nonpositive_flux_in_log_column_is_floored_not_nan(rng):
    x = _table(rng)
    prep = _prep().fit(x, COLS)
    y = x[:2].copy()
    y[0, 0] = -3.0  # a non-detection
    y[1, 0] = 0.0
    z = prep.transform(y, COLS)
    floor_z = (np.log10(prep.stats["flux_ha"].floor) - prep.stats["flux_ha"].center) / prep.stats["flux_ha"].scale
    np.testing.assert_allclose(z[:, 0], np.clip(floor_z, -10, 10), rtol=1e-5)
    assert np.isfinite(z).all()


def test_fit_ignores_missing_and_all_missing_column(rng):
    x = _table(rng)
    x[::3, 1] = np.nan
    x[:, 2] = -9999.0  # never measured in training
    prep = _prep().fit(x, COLS)
    assert prep.stats["gini"].n_fit == 0 and prep.stats["d4000"].missing_frac == pytest.approx(1 / 3, abs=0.01)
    z = prep.transform(_table(rng, 10), COLS)
    assert np.isnan(z[:, 2]).all() and np.isfinite(z[:, [0, 1, 3]]).all()


def test_column_order_by_name(rng):
    x = _table(rng)
    prep = _prep().fit(x, COLS)
    perm = [2, 0, 3, 1]
    a = prep.transform(x, COLS)
    b = prep.transform(x[:, perm], [COLS[i] for i in perm])
    np.testing.assert_array_equal(a, b)  # output always in fitted order


def test_unknown_and_missing_columns_are_one_line_errors(rng):
    x = _table(rng)
    prep = _prep().fit(x, COLS)
    with pytest.raises(ConfigError, match="missing tabular column 'gini'"):
        prep.transform(x[:, [0, 1, 3]], ["flux_ha", "d4000", "survey"])
    z = prep.transform(x[:, [0, 1, 3]], ["flux_ha", "d4000", "survey"], allow_absent=True)
    assert np.isnan(z[:, 2]).all()
    with pytest.raises(InputFileError, match=r"^cat.fits: missing tabular column") as exc:
        prep.transform(x[:, :2], ["flux_ha", "d4000"], source="cat.fits")
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="2 names"):
        prep.transform(x, COLS[:2])
    with pytest.raises(ConfigError, match="not among"):
        TabularPreprocessor(TabularPrepConfig(log_columns=["sfr"])).fit(x, COLS)
    with pytest.raises(ConfigError, match="not fitted"):
        TabularPreprocessor().transform(x, COLS)
    with pytest.raises(ConfigError, match="duplicate"):
        _prep().fit(x, ["flux_ha", "flux_ha", "gini", "survey"])


def test_save_load_roundtrip_identical(rng, tmp_path):
    x = _table(rng)
    x[::4, 0] = np.nan
    prep = _prep(valid_range={"gini": [0, 1]}, clip=6.0, asinh_columns=["d4000"]).fit(x, COLS)
    path = prep.save(tmp_path / "prep.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    json.loads(text)
    again = TabularPreprocessor.load(path)
    assert again.columns == prep.columns and again.categorical == {"survey": 3}
    test = _table(np.random.default_rng(9), 50)
    test[0, 2] = 3.0
    np.testing.assert_array_equal(again.transform(test, COLS), prep.transform(test, COLS))
    again2 = TabularPreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    np.testing.assert_array_equal(again2.transform(test, COLS), prep.transform(test, COLS))


def test_load_rejects_bad_files(tmp_path, rng):
    with pytest.raises(InputFileError, match="not found"):
        TabularPreprocessor.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputFileError, match="bad.json: cannot read"):
        TabularPreprocessor.load(bad)
    d = _prep().fit(_table(rng), COLS).to_dict()
    d["stats"]["d4000"]["scale"] = 0.0
    bad.write_text(json.dumps(d))
    with pytest.raises(InputFileError, match="bad statistics for 'd4000'"):
        TabularPreprocessor.load(bad)
    d = _prep().fit(_table(rng), COLS).to_dict()
    del d["stats"]["gini"]
    bad.write_text(json.dumps(d))
    with pytest.raises(InputFileError, match="do not match"):
        TabularPreprocessor.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputFileError, match="not a galclip tabular"):
        TabularPreprocessor.load(bad)


def test_inverse_transform_recovers_physical_units(rng):
    x = _table(rng)
    prep = _prep().fit(x, COLS)
    back = prep.inverse_transform(prep.transform(x, COLS))
    np.testing.assert_allclose(back[:, :3], x[:, :3], rtol=1e-4)


def test_bad_config_values():
    with pytest.raises(ConfigError):
        TabularPrepConfig(clip=0)
    with pytest.raises(ConfigError):
        TabularPrepConfig(valid_range={"a": [1, 0]})
    with pytest.raises(ConfigError):
        TabularPrepConfig(categorical={"a": 2}, log_columns=["a"])


def test_dataset_table_reads_tabular_group(tmp_path):
    from galclip.data.dataset import SurveyDataset
    from galclip.data.shards import ShardWriter

    w = ShardWriter(tmp_path / "ds", [], 0, None, tabular_columns=["d4000", "gini"], shard_size=4)
    for i in range(10):
        w.add(dict(object_id=f"o{i}", ra=0.0, dec=0.0, z=0.1, tabular={"d4000": 1.0 + i, "gini": None if i % 2 else 0.5}))
    w.close()
    ds = SurveyDataset(tmp_path / "ds")
    x, names = dataset_table(ds.subset(range(2, 8)))
    assert names == ["d4000", "gini"] and x.shape == (6, 2)
    np.testing.assert_allclose(x[:, 0], np.arange(3.0, 9.0))
    assert np.isnan(x[1::2, 1]).all()
    with pytest.raises(InputFileError, match="missing tabular column 'sersic_n'"):
        dataset_table(ds, ["sersic_n"])
    prep = TabularPreprocessor().fit(x, names)
    item = ds[3]
    z = prep.transform_tensor(item["tabular"][None], ds.tabular_names)
    assert z.shape == (1, 2)


@pytest.mark.shared
def test_real_sdss_photometry_catalogue():
    """Real SDSS/GALEX catalogue: fluxes auto-logged, -99 sentinels missing, all finite after."""
    from astropy.table import Table

    path = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "catalogs" / "kcorrect_sdss_photometry_10k.fits"
    if not path.exists():  # same rule as conftest.shared_path (import-mode independent)
        pytest.skip(f"real survey data not available: {path}")
    t = Table.read(path)
    flux = np.asarray(t["MODELFLUX"], np.float64)
    cols = ["flux_u", "flux_g", "flux_r", "flux_i", "flux_z", "z", "nuv"]
    x = np.column_stack([flux, np.asarray(t["Z"], np.float64), np.asarray(t["NUV_FLUX_AUTO"], np.float64)])
    prep = TabularPreprocessor().fit(x[:8000], cols)
    # g..z are positive-definite, wide and skewed; u has noisy negative fluxes; NUV has 0 = undetected
    assert {"flux_g", "flux_r", "flux_i", "flux_z"} <= set(prep.log_columns)
    assert "flux_u" not in prep.log_columns and "nuv" not in prep.log_columns
    assert "flux_u" in prep.asinh_columns  # noisy u fluxes: signed and heavy-tailed
    z = prep.transform(x[8000:], cols)
    nuv_sentinel = x[8000:, 6] == -99.0
    assert nuv_sentinel.any() and np.isnan(z[nuv_sentinel, 6]).all()
    assert np.isfinite(z[:, :6]).all() and np.nanmax(np.abs(z)) <= 10.0
    med = np.median(z[:, 1:5], axis=0)
    assert np.all(np.abs(med) < 0.1)  # held-out rows land on the training scale
