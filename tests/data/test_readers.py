"""Readers: small generated FITS/JPEG/CSV files, the real survey files, and bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galclip.data.readers import read_catalog, read_image, read_spectra, read_spectrum_file
from galclip.data.readers.spectra import merge_arms
from galclip.errors import InputFileError
from tests.conftest import shared_path


# -- generators (also used by the ingest / fuzz tests) ----------------------------------------

def make_fits_cube(path: Path, bands=("g", "r", "z"), size=24, scale_arcsec=0.262, ra=150.0, dec=2.0,
                   with_ivar=True, nan_pixel=True) -> Path:
    rng = np.random.default_rng(0)
    data = rng.normal(0, 1, (len(bands), size, size)).astype(np.float32)
    data[:, size // 2 - 2:size // 2 + 2, size // 2 - 2:size // 2 + 2] += 20
    if nan_pixel:
        data[0, 0, 0] = np.nan
    hdr = fits.Header()
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN", "DEC--TAN"
    hdr["CRVAL1"], hdr["CRVAL2"] = ra, dec
    hdr["CRPIX1"] = hdr["CRPIX2"] = (size + 1) / 2.0
    hdr["CDELT1"], hdr["CDELT2"] = -scale_arcsec / 3600, scale_arcsec / 3600
    hdr["CUNIT1"] = hdr["CUNIT2"] = "deg"
    hdr["BANDS"] = ",".join(bands)
    hdus = [fits.PrimaryHDU(data, hdr)]
    if with_ivar:
        hdus.append(fits.ImageHDU(np.full_like(data, 4.0), name="IVAR"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def make_jpeg(path: Path, size=40, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.uniform(0, 40, (size, size, 3))).astype(np.uint8)
    arr[size // 2 - 4:size // 2 + 4, size // 2 - 4:size // 2 + 4] = [250, 120, 30]
    Image.fromarray(arr, "RGB").save(path, quality=95)
    return path


def make_sdss_spec(path: Path, n=500, z=0.1, ra=10.0, dec=-1.0, objid=1237648720142401611, mask_frac=0.1,
                   all_nan=False) -> Path:
    rng = np.random.default_rng(1)
    loglam = np.log10(3800) + 1e-4 * np.arange(n)
    flux = 5 + rng.normal(0, 0.5, n)
    if all_nan:
        flux[:] = np.nan
    ivar = np.full(n, 4.0)
    and_mask = np.zeros(n, np.int32)
    and_mask[: int(mask_frac * n)] = 1
    coadd = fits.BinTableHDU(Table({"flux": flux.astype(np.float32), "loglam": loglam.astype(np.float32),
                                    "ivar": ivar.astype(np.float32), "and_mask": and_mask}), name="COADD")
    specobj = fits.BinTableHDU(Table({"Z": [z], "PLUG_RA": [ra], "PLUG_DEC": [dec], "BESTOBJID": [str(objid)],
                                      "PLATE": [266], "MJD": [51602], "FIBERID": [1]}), name="SPECOBJ")
    fits.HDUList([fits.PrimaryHDU(), coadd, specobj]).writeto(path, overwrite=True)
    return path


def make_desi(path: Path, nobj=3, sky_row=2) -> Path:
    rng = np.random.default_rng(2)
    arms = {"B": np.arange(3600, 5800.1, 0.8), "R": np.arange(5760, 7620.1, 0.8), "Z": np.arange(7520, 9824.1, 0.8)}
    fm = Table({"TARGETID": np.arange(nobj, dtype=np.int64) + 1000, "TARGET_RA": 150 + 0.01 * np.arange(nobj),
                "TARGET_DEC": np.full(nobj, 2.0), "OBJTYPE": ["TGT" if i != sky_row else "SKY" for i in range(nobj)]})
    hdus = [fits.PrimaryHDU(), fits.BinTableHDU(fm, name="FIBERMAP")]
    for a, w in arms.items():
        flux = (3 + rng.normal(0, 0.1, (nobj, w.size))).astype(np.float32)
        ivar = np.full((nobj, w.size), 100.0 if a != "R" else 25.0, np.float32)
        mask = np.zeros((nobj, w.size), np.int32)
        mask[0, :10] = 1
        hdus += [fits.ImageHDU(w, name=f"{a}_WAVELENGTH"), fits.ImageHDU(flux, name=f"{a}_FLUX"),
                 fits.ImageHDU(ivar, name=f"{a}_IVAR"), fits.ImageHDU(mask, name=f"{a}_MASK")]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def make_spplate(path: Path, nfib=4, npix=300) -> Path:
    rng = np.random.default_rng(3)
    flux = (2 + rng.normal(0, 0.3, (nfib, npix))).astype(np.float32)
    hdr = fits.Header()
    hdr["COEFF0"], hdr["COEFF1"], hdr["PLATEID"], hdr["MJD"] = 3.58, 1e-4, 4055, 55359
    fits.HDUList([fits.PrimaryHDU(flux, hdr)]).writeto(path, overwrite=True)
    return path


# -- images ----------------------------------------------------------------------------------

def test_fits_cube_bands_wcs_and_nan_mask(tmp_path):
    rec = read_image(make_fits_cube(tmp_path / "cube.fits"))
    assert rec.image.shape == (3, 24, 24) and rec.image.dtype == np.float32
    assert rec.bands == ["g", "r", "z"]
    assert rec.pixel_scale == pytest.approx(0.262, rel=1e-4)
    assert rec.ra == pytest.approx(150.0, abs=1e-3) and rec.dec == pytest.approx(2.0, abs=1e-3)
    assert rec.ivar[0, 0, 0] == 0 and rec.image[0, 0, 0] == 0  # NaN pixel masked
    assert rec.ivar[1, 0, 0] == 4.0
    sel = read_image(tmp_path / "cube.fits", bands=["z", "g"])
    assert sel.bands == ["z", "g"]
    np.testing.assert_array_equal(sel.image[0], rec.image[2])


def test_fits_unknown_band_and_no_wcs(tmp_path):
    make_fits_cube(tmp_path / "cube.fits")
    with pytest.raises(InputFileError, match="unknown band 'y'"):
        read_image(tmp_path / "cube.fits", bands=["g", "y"])
    fits.PrimaryHDU(np.ones((2, 16, 16), np.float32)).writeto(tmp_path / "plain.fits")
    rec = read_image(tmp_path / "plain.fits")
    assert np.isnan(rec.pixel_scale) and rec.bands == ["band0", "band1"]
    with pytest.raises(InputFileError, match="without names"):
        read_image(tmp_path / "plain.fits", bands=["g", "r", "i"])


def test_one_fits_file_per_band(tmp_path):
    paths = []
    for b in "gri":
        h = fits.Header()
        h["FILTER"] = b
        p = tmp_path / f"obj_{b}.fits"
        fits.PrimaryHDU(np.full((16, 16), "gri".index(b) + 1.0, np.float32), h).writeto(p)
        paths.append(p)
    rec = read_image(paths)
    assert rec.bands == ["g", "r", "i"] and rec.image.shape == (3, 16, 16)
    assert rec.image[2].mean() == 3.0
    fits.PrimaryHDU(np.ones((8, 8), np.float32)).writeto(tmp_path / "small_i.fits")
    with pytest.raises(InputFileError, match="shape"):
        read_image([paths[0], tmp_path / "small_i.fits"], bands=["g", "i"])


def test_jpeg_color(tmp_path):
    rec = read_image(make_jpeg(tmp_path / "gal.jpeg"))
    assert rec.image.shape == (3, 40, 40) and rec.bands == ["i", "r", "g"]
    assert 0 <= rec.image.min() and rec.image.max() <= 1.0
    assert rec.image[0, 20, 20] == pytest.approx(250 / 255, abs=0.05)  # R channel = i band
    assert np.all(rec.ivar == 1) and np.isnan(rec.pixel_scale)
    assert rec.object_id == "gal"


def test_real_gz1_jpeg():
    path = next(iter(sorted(shared_path("gz1_dev", "images").glob("*.jpeg"))))
    rec = read_image(path)
    assert rec.image.shape == (3, 423, 423) and rec.bands == ["i", "r", "g"]
    assert rec.image.max() > 0.3  # a galaxy is there


# -- spectra -----------------------------------------------------------------------------------

def test_sdss_spec_masks_and_metadata(tmp_path):
    rec = read_spectra(make_sdss_spec(tmp_path / "spec-0266-51602-0001.fits"))[0]
    assert rec.object_id == "1237648720142401611" and rec.spec_id == "0266-51602-0001"
    assert rec.z == pytest.approx(0.1) and rec.ra == 10.0 and rec.dec == -1.0
    assert rec.wave[0] == pytest.approx(3800, rel=1e-5)
    assert np.all(rec.ivar[:50] == 0) and np.all(rec.ivar[50:] == 4.0)  # and_mask → ivar 0


def test_desi_arms_merged_ivar_weighted_and_sky_skipped(tmp_path):
    recs, notes = read_spectrum_file(make_desi(tmp_path / "coadd-test.fits"))
    assert [r.object_id for r in recs] == ["1000", "1001"]
    assert any("sky fibre" in n for n in notes)
    r = recs[1]
    assert r.wave[0] == pytest.approx(3600) and r.wave[-1] == pytest.approx(9824)
    assert np.allclose(np.diff(r.wave), 0.8)
    i = np.searchsorted(r.wave, 5780.0)  # B/R overlap: ivar adds up
    assert r.ivar[i] == pytest.approx(125.0)
    assert np.all(recs[0].ivar[:10] == 0)  # MASK → ivar 0
    kept = read_spectra(tmp_path / "coadd-test.fits", keep_sky=True)
    assert len(kept) == 3 and kept[2].is_sky


def test_merge_arms_weighting():
    w1, w2 = np.arange(10.0), np.arange(5.0, 15.0)
    f1, f2 = np.full((1, 10), 1.0), np.full((1, 10), 4.0)
    grid, flux, ivar = merge_arms([w1, w2], [f1, f2], [np.full((1, 10), 3.0), np.full((1, 10), 1.0)])
    assert grid.size == 15
    assert flux[0, 7] == pytest.approx((1 * 3 + 4 * 1) / 4) and ivar[0, 7] == 4.0
    assert flux[0, 0] == 1.0 and flux[0, 14] == 4.0


def test_spplate_ids_and_loglam(tmp_path):
    recs = read_spectra(make_spplate(tmp_path / "spPlate-4055-55359.fits"))
    assert [r.object_id for r in recs] == [f"4055-55359-{k:04d}" for k in range(1, 5)]
    assert recs[0].wave[0] == pytest.approx(10**3.58) and recs[0].wave.size == 300
    assert np.isnan(recs[0].ra) and recs[0].ivar_estimated
    assert 5 < np.median(recs[0].ivar) < 25  # noise sigma 0.3 → ivar ≈ 11


@pytest.mark.parametrize("pattern,n_min", [("sdss_spectra/spec-*.fits", 12), ("desi_spectra/*.fits", 4),
                                           ("boss_spectra/spPlate-*.fits", 1)])
def test_real_spectra(pattern, n_min):
    folder, glob = pattern.split("/")
    files = sorted(shared_path(folder).glob(glob))
    assert len(files) >= n_min
    for f in files:
        recs, _ = read_spectrum_file(f)
        assert recs, f
        for r in recs:
            assert r.wave.ndim == 1 and r.flux.shape == r.wave.shape == r.ivar.shape
            assert np.all(np.diff(r.wave) > 0) and 3400 < r.wave[0] < 3900 and r.wave[-1] > 9000
            assert r.n_good >= 50 and np.all(np.isfinite(r.flux))
            if folder != "boss_spectra":
                assert np.isfinite(r.ra) and np.isfinite(r.dec)


# -- catalogues --------------------------------------------------------------------------------

def test_catalog_detection_and_configured_names(tmp_path):
    p = tmp_path / "cat.csv"
    p.write_text("OBJID,RA,Dec,mass\n11,10.5,-1.0,10.1\n12,10.6,-1.1,9.5\n")
    cat = read_catalog(p)
    assert (cat.id_column, cat.ra_column, cat.dec_column) == ("OBJID", "RA", "Dec")
    assert list(cat.ids) == ["11", "12"]
    ra, dec = cat.coords()
    assert ra.dtype == np.float64 and dec[1] == -1.1
    t = Table({"name": ["a", "b"], "alpha": [1.0, 2.0], "delta": [3.0, 4.0], "vec": np.ones((2, 3))})
    t.write(tmp_path / "cat.fits")
    cat = read_catalog(tmp_path / "cat.fits", ra_column="alpha", dec_column="delta")
    assert cat.id_column == "name" and cat.coords()[0][1] == 2.0
    assert {"vec_0", "vec_1", "vec_2"} <= set(cat.table.colnames)
    with pytest.raises(InputFileError, match="missing ra column 'RAJ'"):
        read_catalog(tmp_path / "cat.fits", ra_column="RAJ")
    with pytest.raises(InputFileError, match="no ra column"):
        read_catalog(tmp_path / "cat.fits", require=("radec",))


def test_real_catalogs():
    cat = read_catalog(shared_path("catalogs", "darg2010_gz1_mergers.csv"), require=("radec",))
    assert len(cat) == 2984 and cat.id_column == "iauname"
    labels = read_catalog(shared_path("gz1_dev", "labels.csv"))
    assert labels.id_column == "objid" and labels.ra_column is None
    assert int(np.sum(labels.numeric_column("is_merger"))) == 40


# -- bad input: one line naming the file ---------------------------------------------------------

def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good_spec = make_sdss_spec(tmp_path / "spec-good.fits")
    trunc = tmp_path / "spec-trunc.fits"
    trunc.write_bytes(good_spec.read_bytes()[:4000])
    notfits = tmp_path / "spec-text.fits"
    notfits.write_text("hello, I am not FITS\n" * 10)
    nan_spec = make_sdss_spec(tmp_path / "spec-nan.fits", all_nan=True)
    wrong = tmp_path / "spec-wronghdu.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones(10))]).writeto(wrong)
    jpeg = make_jpeg(tmp_path / "good.jpeg")
    tjpeg = tmp_path / "trunc.jpeg"
    tjpeg.write_bytes(jpeg.read_bytes()[:300])
    cube = make_fits_cube(tmp_path / "cube.fits")
    tcube = tmp_path / "cube_trunc.fits"
    tcube.write_bytes(cube.read_bytes()[:5000])
    allnan = tmp_path / "allnan.fits"
    fits.PrimaryHDU(np.full((2, 8, 8), np.nan, np.float32)).writeto(allnan)
    onedim = tmp_path / "onedim.fits"
    fits.PrimaryHDU(np.ones(30, np.float32)).writeto(onedim)
    badcsv = tmp_path / "bad.csv"
    badcsv.write_text("a,b\n1,2,3,4\n\x00\x01")
    return {
        "truncated spectrum": (trunc, "spectrum"), "non-FITS spectrum": (notfits, "spectrum"),
        "all-NaN spectrum": (nan_spec, "spectrum"), "wrong HDUs": (wrong, "spectrum"),
        "truncated jpeg": (tjpeg, "image"), "truncated FITS image": (tcube, "image"),
        "all-NaN image": (allnan, "image"), "1-D image": (onedim, "image"),
        "bad csv": (badcsv, "catalog"), "missing file": (tmp_path / "nope.fits", "spectrum"),
        "unknown suffix": (tmp_path / "x.tiff", "image"),
    }


def test_bad_inputs_raise_one_line_input_file_error(tmp_path):
    readers = {"spectrum": read_spectra, "image": read_image, "catalog": read_catalog}
    (tmp_path / "x.tiff").write_bytes(b"II*\x00")
    for what, (path, kind) in _bad_files(tmp_path).items():
        with pytest.raises(InputFileError) as info:
            readers[kind](path)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(path)), (what, msg)
        assert len(info.value.reason) > 5, what
