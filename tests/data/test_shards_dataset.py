"""Shard round trip, dataset items, missing modalities and the preprocessing maths."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset, collate
from galclip.data.preprocess import (arcsinh_stretch, log_grid, normalise_spectrum, resample_spectrum,
                                     robust_band_scale)
from galclip.data.shards import ShardWriter, read_manifest
from galclip.errors import InputFileError


def test_shard_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    wave = log_grid(4000, 9000, 64)
    rows = []
    w = ShardWriter(tmp_path / "ds", ["g", "r"], 16, wave, label_columns=["merger"], tabular_columns=["mass"],
                    shard_size=4)
    for i in range(10):
        row = dict(object_id=f"id{i}", ra=10.0 + i, dec=-5.0, z=0.1 * i,
                   image_array=rng.normal(size=(2, 16, 16)).astype(np.float32),
                   image_ivar=rng.uniform(1, 2, (2, 16, 16)).astype(np.float32),
                   spectrum_flux=rng.normal(size=64).astype(np.float32),
                   spectrum_ivar=np.full(64, 3.0, np.float32), merger=i % 2, tabular={"mass": 10 + i})
        if i == 3:
            row.pop("spectrum_flux")
            row.pop("spectrum_ivar")
        rows.append(row)
        w.add(row)
    man = w.close()
    assert man.n_rows == 10 and [s.n_rows for s in man.shards] == [4, 4, 2]
    assert read_manifest(tmp_path / "ds").bands == ["g", "r"]
    with h5py.File(tmp_path / "ds" / "shard-00000.h5") as h5:
        np.testing.assert_array_equal(h5[S.IMAGE][1], rows[1]["image_array"])
        np.testing.assert_array_equal(h5[S.SPEC_FLUX][2], rows[2]["spectrum_flux"])
        assert not h5[S.HAS_SPECTRUM][3] and h5[S.HAS_SPECTRUM][2]
        np.testing.assert_allclose(h5[S.SPEC_LAMBDA][()], wave)
    ds = SurveyDataset(str(tmp_path / "ds"))
    np.testing.assert_array_equal(ds.column("object_id"), [f"id{i}" for i in range(10)])
    np.testing.assert_array_equal(ds.column("mass"), np.arange(10, 20, dtype=np.float32))
    raw = ds.raw_row(9)
    np.testing.assert_array_equal(raw[S.IMAGE_IVAR], rows[9]["image_ivar"])


def test_dataset_items_and_missing_modalities(tiny_dataset):
    ds = SurveyDataset(DataConfig(path=str(tiny_dataset)))
    assert len(ds) == 24 and ds.n_bands == 2 and ds.spectrum_length == 256
    assert ds.label_names == ["merger", "merger_stage", "redshift"]
    it = ds[4]  # i % 5 == 4: no spectrum
    assert it["has_image"] and not it["has_spectrum"]
    assert it["image"].shape == (2, 64, 64)  # 32-px cutout padded to the configured size
    assert torch.all(it["spectrum"] == 0) and torch.all(it["spectrum_ivar"] == 0)
    assert np.isnan(it["spectrum_scale"])  # no spectrum, no flux scale
    it = ds[0]
    assert it["has_spectrum"] and it["labels"][0] == 1.0 and it["object_id"] == "obj000"
    # the brightness the normalisation removed: log10 of the median flux (≈ 5e-17 here)
    assert abs(it["spectrum_scale"] - np.log10(5.0)) < 0.05
    uncal = DataConfig(path=str(tiny_dataset))
    uncal.spectrum.flux_calibrated = False
    assert np.isnan(SurveyDataset(uncal)[0]["spectrum_scale"])
    batch = collate([ds[i] for i in range(6)])
    assert batch["image"].shape == (6, 2, 64, 64) and batch["has_spectrum"].dtype == torch.bool
    assert batch["object_id"][5] == "obj005"
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub[0]["object_id"] == "obj003"
    np.testing.assert_array_equal(sub.column("object_id"), ["obj003", "obj001"])


def test_missing_manifest_is_one_line_error(tmp_path):
    with pytest.raises(InputFileError, match="no galclip manifest"):
        SurveyDataset(str(tmp_path))


def _edges(c):
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


@pytest.mark.parametrize("new_n", [100, 1000, 3000])
def test_resample_spectrum_conserves_integrated_flux(new_n):
    """Every output pixel fully inside the input range carries exactly the input flux it covers."""
    rng = np.random.default_rng(1)
    wave = np.geomspace(4000, 8000, 1500)
    flux = 5 + np.sin(wave / 50) + rng.normal(0, 0.3, wave.size)
    ivar = np.full(wave.size, 10.0)
    e_in = _edges(wave)
    cum = np.concatenate([[0.0], np.cumsum(flux * np.diff(e_in))])  # exact integral of the step function
    new = np.linspace(4100, 7900, new_n)
    f2, iv2 = resample_spectrum(wave, flux, ivar, new)
    e_out = _edges(new)
    expected = np.diff(np.interp(e_out, e_in, cum))
    got = f2.astype(np.float64) * np.diff(e_out)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.sum(got) == pytest.approx(np.interp(e_out[-1], e_in, cum) - np.interp(e_out[0], e_in, cum), rel=1e-6)
    assert np.all(iv2 > 0)
    if new_n < 1500:  # binning down: ivar grows by ~ the number of merged pixels
        ratio = np.median(np.diff(e_out) / np.interp(new, wave, np.diff(e_in)))
        assert np.median(iv2) == pytest.approx(10.0 * ratio, rel=0.1)


def test_resample_masks_and_outside_coverage():
    wave = np.linspace(5000, 6000, 200)
    flux = np.ones(200)
    ivar = np.ones(200)
    ivar[50:80] = 0
    f2, iv2 = resample_spectrum(wave, flux, ivar, np.linspace(4000, 7000, 300))
    new = np.linspace(4000, 7000, 300)
    assert np.all(iv2[new < 4990] == 0) and np.all(iv2[new > 6010] == 0)
    gap = (new > 5260) & (new < 5390)
    assert np.all(iv2[gap] == 0) and np.all(f2[gap] == 0)
    ok = iv2 > 0
    np.testing.assert_allclose(f2[ok], 1.0, rtol=1e-5)


def test_arcsinh_and_robust_scaling_masks_nan():
    x = torch.tensor([0.0, 3.0, -3.0, 1e6])
    y = arcsinh_stretch(x, softening=3.0, clip=10.0)
    assert y[0] == 0 and y[1] == pytest.approx(np.arcsinh(1.0)) and y[2] == -y[1] and y[3] == 10.0
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (1, 32, 32)).astype(np.float32)
    img[0, :4, :4] = np.nan
    scaled, ivar, valid = robust_band_scale(img)
    assert not valid[0, 0, 0] and scaled[0, 0, 0] == 0 and ivar[0, 0, 0] == 0
    assert np.all(np.isfinite(scaled))
    assert abs(np.median(scaled[valid])) < 0.2 and 0.8 < np.std(scaled[valid]) < 1.2  # noise units
    f, iv, norm = normalise_spectrum(np.array([np.nan, 2, 2, 2, 2, 100.0]), np.ones(6))
    assert norm == 2.0 and f[0] == 0 and iv[0] == 0
