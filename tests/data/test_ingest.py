"""Ingest: bad file among good ones, pairing, label/tabular joins, morphology, resume, real data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from galclip.data.dataset import SurveyDataset
from galclip.data.ingest import CatalogJoin, IngestConfig, run_ingest
from galclip.data.morphology import MorphologyOptions
from galclip.data.preprocess import crop_and_resize, crop_pixels
from galclip.data.shards import read_manifest
from galclip.errors import ConfigError, InputFileError
from tests.conftest import shared_path
from tests.data.test_readers import make_desi, make_fits_cube, make_jpeg, make_sdss_spec


def _inputs(tmp_path):
    img = tmp_path / "img"
    spec = tmp_path / "spec"
    img.mkdir()
    spec.mkdir()
    for k in range(3):  # FITS cutouts near the DESI targets (ra 150+0.01k, dec 2)
        make_fits_cube(img / f"cut{k}.fits", ra=150.0 + 0.01 * k + 0.2 / 3600, dec=2.0, size=32)
    (img / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    make_desi(spec / "coadd-a.fits", nobj=3, sky_row=2)  # targets 1000, 1001 (+ a sky fibre)
    make_sdss_spec(spec / "spec-0266-51602-0001.fits", ra=200.0, dec=5.0)
    (spec / "spec-trunc.fits").write_bytes((spec / "spec-0266-51602-0001.fits").read_bytes()[:3000])
    return img, spec


def test_ingest_skips_bad_files_pairs_by_position_and_joins(tmp_path, capsys):
    img, spec = _inputs(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("ra,dec,is_merger,kind\n150.0,2.0,1,pair\n150.01,2.0,0,single\n200.0,5.0,0,single\n")
    tab = tmp_path / "tab.csv"
    tab.write_text("objid,mass,note\n1237648720142401611,10.5,x\n")
    cfg = IngestConfig(out=str(tmp_path / "ds"), images=[str(img)], spectra=[str(spec / "*.fits")],
                       image_size=16, n_wave=512, progress=False,
                       labels=CatalogJoin(path=str(labels), columns={"merger": "is_merger", "kind": "kind"}),
                       tabular=CatalogJoin(path=str(tab), by="id"))
    rep = run_ingest(cfg)
    assert {s["file"].split("/")[-1] for s in rep["skipped"]} == {"broken.fits", "spec-trunc.fits"}
    assert all("\n" not in s["reason"] for s in rep["skipped"])
    assert rep["rows"] == 4 and rep["with_image"] == 3 and rep["with_spectrum"] == 3 and rep["paired"] == 2
    assert rep["pairing"] == "position" and rep["labelled"] == 3
    assert rep["joins"]["labels"]["codes"] == {"kind": {"pair": 0, "single": 1}}
    assert "sky fibre" in " ".join(rep["notes"])
    out = capsys.readouterr().out
    assert "4 rows (3 with image, 3 with spectrum, 2 paired, 3 labelled)" in out
    ds = SurveyDataset(str(tmp_path / "ds"))
    ids = list(ds.column("object_id"))
    assert ids == ["cut0", "cut1", "cut2", "1237648720142401611"]
    merger = ds.column("merger")
    assert merger[0] == 1 and merger[1] == 0 and np.isnan(merger[2]) and merger[3] == 0
    assert ds.column("mass")[3] == pytest.approx(10.5) and np.isnan(ds.column("mass")[0])
    assert "note" not in ds.tabular_names  # text columns are not measurements
    man = read_manifest(tmp_path / "ds")
    assert man.bands == ["g", "r", "z"] and man.image_size == 16 and man.n_wave == 512
    item = ds[0]
    assert item["has_image"] and item["has_spectrum"] and item["spectrum"].shape == (512,)
    assert item["ra"] == pytest.approx(150.0)  # fibre position wins over the cutout centre
    assert not ds[2]["has_spectrum"] and not ds[3]["has_image"]
    assert ds.raw_row(0)["image_array"].shape == (3, 16, 16)
    with pytest.raises(ConfigError, match="already holds a dataset"):
        run_ingest(cfg)


def test_ingest_pairs_by_id_with_morphology_and_resume(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for k in range(5):
        make_jpeg(img / f"{1237648720142401611 + k}.jpeg", size=48, seed=k)
    make_sdss_spec(tmp_path / "spec-1.fits", objid=1237648720142401611)
    cfg = IngestConfig(out=str(tmp_path / "ds"), images=[str(img / "*.jpeg")], spectra=[str(tmp_path / "spec-*.fits")],
                       image_size=24, n_wave=256, shard_size=2, morphology=True, progress=False)
    rep = run_ingest(cfg)
    assert rep["pairing"] == "id" and rep["paired"] == 1 and rep["rows"] == 5
    ds = SurveyDataset(str(tmp_path / "ds"))
    assert "morph_gini" in ds.tabular_names and "morph_asymmetry" in ds.tabular_names
    gini = ds.column("morph_gini")
    assert np.isfinite(gini).sum() >= 4 and np.all((gini[np.isfinite(gini)] > 0) & (gini[np.isfinite(gini)] < 1))
    # simulate a kill after the first shard, then resume: same rows, no duplicates
    first = (tmp_path / "ds" / "shard-00000.h5").read_bytes()
    man = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    man["shards"] = man["shards"][:1]
    man["provenance"]["plan_rows_done"] = 2
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(man))
    for f in ("shard-00001.h5", "shard-00002.h5"):
        (tmp_path / "ds" / f).unlink()
    rep2 = run_ingest(IngestConfig(**{**cfg.__dict__, "resume": True}))
    assert rep2["rows"] == 5 and (tmp_path / "ds" / "shard-00000.h5").read_bytes() == first
    assert list(SurveyDataset(str(tmp_path / "ds")).column("object_id")) == list(ds.column("object_id"))
    with pytest.raises(ConfigError, match="changed"):
        run_ingest(IngestConfig(**{**cfg.__dict__, "resume": True, "image_size": 32}))


def test_nothing_usable_is_one_error(tmp_path):
    (tmp_path / "bad.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(InputFileError, match="nothing to ingest"):
        run_ingest(IngestConfig(out=str(tmp_path / "ds"), images=[str(tmp_path / "bad.jpeg")], progress=False))


def test_crop_and_resize_keeps_field_and_masks():
    img = np.ones((1, 40, 60), np.float32)
    img[0, :, :10] = 100  # outside the central square: cropped away
    ivar = np.ones_like(img)
    ivar[0, 20, 30] = 0
    out, iv = crop_and_resize(img, ivar, crop_pixels("", 40), 10)
    assert out.shape == (1, 10, 10) and np.allclose(out, 1.0)
    assert iv[0, 0, 0] == pytest.approx(16.0)  # 4×4 input pixels per output pixel
    assert iv[0, 5, 5] == pytest.approx(15.0)


def test_crop_spec_units_and_crop_then_resize():
    assert crop_pixels("192px", 423) == 192 and crop_pixels(0.5, 400) == 200 and crop_pixels("", 423) == 423
    assert crop_pixels("76arcsec", 423, 0.396) == 192 and crop_pixels("1arcmin", 400, 0.262) == 229
    with pytest.raises(ValueError, match="pixel scale is unknown"):
        crop_pixels("60arcsec", 400)
    with pytest.raises(ValueError, match="expected e.g."):
        crop_pixels("big", 400)
    img = np.zeros((1, 90, 90), np.float32)
    img[0, 30:60, 30:60] = 1.0  # a 30-px galaxy: the 30-px crop resized to 10 px fills the stamp
    out, iv = crop_and_resize(img, np.ones_like(img), 30, 10)
    assert np.allclose(out, 1.0) and iv[0, 0, 0] == pytest.approx(9.0)
    pad, piv = crop_and_resize(img, np.ones_like(img), 120, 12)  # larger than the field: masked border
    assert piv[0, 0, 0] == 0 and piv[0, 6, 6] > 0


def test_ingest_crops_before_resizing_and_measures_native_pixels(tmp_path):
    images = sorted(shared_path("gz1_dev", "images").glob("*.jpeg"))[:4]
    opts = MorphologyOptions(band="r", crop="192px", size=64)
    rep = run_ingest(IngestConfig(out=str(tmp_path / "gz"), images=[str(p) for p in images], image_size=48,
                                  image_crop="0.5", pixel_scale=0.396, morphology=True, morphology_options=opts,
                                  progress=False))
    assert rep["rows"] == 4 and rep["morphology_failed"] == 0
    ds = SurveyDataset(str(tmp_path / "gz"))
    assert ds.raw_row(0)["image_array"].shape == (3, 48, 48)
    assert ds.column("image_scale")[0] == pytest.approx(0.396 * 212 / 48)
    for c in ("morph_multimode", "morph_n_companions", "morph_shape_asymmetry"):
        assert np.isfinite(ds.column(c)).all()
    with pytest.raises(ConfigError, match="not among the bands"):
        run_ingest(IngestConfig(out=str(tmp_path / "g2"), images=[str(images[0])], morphology=True,
                                morphology_options=MorphologyOptions(band="u"), progress=False))


def test_real_gz1_subset(tmp_path):
    images = sorted(shared_path("gz1_dev", "images").glob("*.jpeg"))[:12]
    labels = shared_path("gz1_dev", "labels.csv")
    cfg = IngestConfig(out=str(tmp_path / "gz"), images=[str(p) for p in images], image_bands=["i", "r", "g"],
                       image_size=64, progress=False,
                       labels=CatalogJoin(path=str(labels), by="id", id_column="objid",
                                          columns={"merger": "is_merger", "gz1_class": "gz1_class"}))
    rep = run_ingest(cfg)
    assert rep["rows"] == 12 and rep["labelled"] == 12 and rep["with_spectrum"] == 0
    ds = SurveyDataset(str(tmp_path / "gz"))
    assert ds.label_names == ["merger", "gz1_class"] and ds.n_bands == 3
    assert ds[0]["image"].shape == (3, 64, 64) and not ds[0]["has_spectrum"]


def test_real_spectra_all_surveys(tmp_path):
    files = [str(shared_path("sdss_spectra", "spec-0266-51602-0001.fits")),
             str(shared_path("desi_spectra", "coadd-sv3-dark-26065.fits")),
             str(shared_path("boss_spectra", "spPlate-4055-55359-0020.fits"))]
    rep = run_ingest(IngestConfig(out=str(tmp_path / "sp"), spectra=files, progress=False))
    assert rep["rows"] == 1 + 2 + 20 and rep["with_spectrum"] == 23 and rep["with_image"] == 0
    ds = SurveyDataset(str(tmp_path / "sp"))
    assert ds.spectrum_length == 3840 and ds.n_bands == 0
    for i in (0, 1, 3):
        it = ds[i]
        assert it["has_spectrum"] and (it["spectrum_ivar"] > 0).float().mean() > 0.5


def test_one_file_per_band_grouping(tmp_path):
    from astropy.io import fits

    for oid in ("a1", "b2"):
        for k, b in enumerate("gr"):
            fits.PrimaryHDU(np.full((20, 20), k + 1.0, np.float32)).writeto(tmp_path / f"{oid}_{b}.fits")
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(tmp_path / "c3_g.fits")  # r band missing
    rep = run_ingest(IngestConfig(out=str(tmp_path / "ds"), images=[str(tmp_path / "*.fits")], image_bands=["g", "r"],
                                  image_group_regex=r"(?P<id>.+)_(?P<band>[gr])\.fits$", image_size=12,
                                  image_resize="crop", progress=False))
    assert rep["rows"] == 2 and rep["bands"] == ["g", "r"]
    assert "no file for band r" in rep["skipped"][0]["reason"]
    raw = SurveyDataset(str(tmp_path / "ds")).raw_row(1)
    assert raw["object_id"] == "b2" and raw["image_array"].shape == (2, 12, 12)
    assert raw["image_array"][1].mean() == 2.0


def test_dataset_reader_crops_by_angle_with_the_row_pixel_scale(tmp_path):
    from galclip.data.dataset import DataConfig
    from galclip.data.preprocess import ImagePrep

    img = tmp_path / "img"
    img.mkdir()
    make_fits_cube(img / "cut0.fits", ra=150.0, dec=2.0, size=32)
    run_ingest(IngestConfig(out=str(tmp_path / "ds"), images=[str(img)], image_size=32, progress=False))
    full = SurveyDataset(DataConfig(path=str(tmp_path / "ds"), image=ImagePrep(size=32)))
    scale = float(full.column("image_scale")[0])
    assert np.isfinite(scale)
    prep = ImagePrep(size=8, crop=f"{16 * scale}arcsec", resize_from=8)
    ds = SurveyDataset(DataConfig(path=str(tmp_path / "ds"), image=prep))
    x = ds[0]["image"].numpy()
    ref = full[0]["image"].numpy()  # noise units of the whole stamp; crop 16 px → 2×2 area means
    np.testing.assert_allclose(x, ref[:, 8:24, 8:24].reshape(-1, 8, 2, 8, 2).mean((2, 4)), atol=1e-4)
