"""Stamps cut from a synthetic WCS mosaic: centres, a rotated band, edge and masked cases, ingest."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from galclip.data.dataset import SurveyDataset
from galclip.data.ingest import IngestConfig, run_ingest
from galclip.data.stamps import FLAG_EDGE, FLAG_MASKED, StampConfig, StampSource

RA0, DEC0 = 150.0, 2.0


def _wcs(n: int, scale: float, rot_deg: float = 0.0, shift: float = 0.0) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [RA0, DEC0]
    w.wcs.crpix = [n / 2 + 0.5 + shift, n / 2 + 0.5 - shift]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = (scale / 3600.0) * np.array([[-c, s], [s, c]])
    return w


def _sources():
    """(id, ra, dec): three inside at sub-pixel offsets, one at the edge, one on a hole, one off."""
    d = 1 / 3600.0
    return [("a", RA0 + 20.3 * d, DEC0 - 15.7 * d), ("b", RA0 - 30.6 * d, DEC0 + 25.2 * d),
            ("c", RA0 + 5.45 * d, DEC0 + 40.35 * d), ("edge", RA0 - 78.0 * d, DEC0),
            ("hole", RA0 + 40.0 * d, DEC0 + 40.0 * d), ("off", RA0 + 0.2, DEC0)]


def _render(w: WCS, n: int, sources, hole=None) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    img = np.random.default_rng(0).normal(0, 0.01, (n, n))
    for _, ra, dec in sources:
        x, y = w.world_to_pixel_values(ra, dec)
        img += np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 1.5**2)
    if hole is not None:
        x, y = (float(v) for v in w.world_to_pixel_values(*hole))
        img[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = np.nan
    return img.astype(np.float32)


@pytest.fixture
def mosaic(tmp_path):
    src = _sources()
    hole = src[4][1:]
    w_g = _wcs(200, 0.8)
    w_r = _wcs(300, 0.6, rot_deg=30.0, shift=3.3)  # another pixel grid: reprojected onto g's
    for band, w, n in (("g", w_g, 200), ("r", w_r, 300)):
        hdr = w.to_header()
        hdr["FILTER"] = band
        hdr["SEEING"] = 1.1 if band == "g" else 0.9
        fits.PrimaryHDU(_render(w, n, src, hole if band == "g" else None), header=hdr).writeto(
            tmp_path / f"tile1-{band}.fits")
    cat = tmp_path / "positions.csv"
    cat.write_text("objid,ra,dec\n" + "".join(f"{i},{ra:.8f},{dec:.8f}\n" for i, ra, dec in src))
    return StampConfig(images=[str(tmp_path / "tile1-*.fits")], group_regex=r"(?P<tile>.+)-(?P<band>[gr])\.fits",
                       catalog=str(cat), size_arcsec=20.0)


def _centroid(a: np.ndarray) -> tuple[float, float]:
    a = np.where(np.isfinite(a) & (a > 0.05), a, 0.0)
    yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
    return float((a * xx).sum() / a.sum()), float((a * yy).sum() / a.sum())


def test_stamps_are_centred_in_every_band_and_flag_edge_and_masked(mosaic):
    src = StampSource(mosaic, ["g", "r"])
    skipped = []
    plan = {oid: (ra, dec) for oid, ra, dec, _ in src.plan(skipped.append)}
    assert set(plan) == {"a", "b", "c", "edge", "hole"} and not skipped
    assert src.counts["off_images"] == 1 and src.off_images == ["off"]
    for oid in ("a", "b", "c"):
        rec = src.cut(oid)
        n = rec.image.shape[-1]
        assert rec.image.shape == (2, 25, 25) and n % 2 == 1 and rec.flag == 0
        assert rec.pixel_scale == pytest.approx(0.8)
        for b in range(2):  # g cut directly, r reprojected from a rotated 0.6"/px grid
            x, y = _centroid(rec.image[b])
            assert abs(x - (n - 1) / 2) < 0.5 and abs(y - (n - 1) / 2) < 0.5, (oid, b, x, y)
        np.testing.assert_allclose(rec.psf_fwhm, [1.1, 0.9])
    edge = src.cut("edge")
    assert edge.flag == FLAG_EDGE and (edge.ivar[0, :, -1] == 0).all() and (edge.ivar[:, 12, 12] > 0).all()
    hole = src.cut("hole")
    assert hole.flag == FLAG_MASKED and (hole.ivar[0, 12, 12] == 0) and hole.ivar[1, 12, 12] > 0


def test_skip_policy_reports_by_object(mosaic):
    mosaic.on_edge = "skip"
    mosaic.on_masked = "skip"
    src = StampSource(mosaic, ["g", "r"])
    skipped = []
    kept = [oid for oid, *_ in src.plan(skipped.append)]
    assert kept == ["a", "b", "c"]
    reasons = sorted(e.reason for e in skipped)
    assert reasons == ["object edge: stamp falls off the image edge (skipped)",
                       "object hole: stamp has masked pixels at its centre (skipped)"]


def test_ingest_from_survey_images(mosaic, tmp_path):
    rep = run_ingest(IngestConfig(out=str(tmp_path / "ds"), stamps=mosaic, image_bands=["g", "r"], image_size=25,
                                  progress=False))
    assert rep["rows"] == 5 and rep["stamps"]["off_images"] == 1 and rep["stamps"]["flag_edge"] == 1
    ds = SurveyDataset(str(tmp_path / "ds"))
    assert list(ds.column("object_id")) == ["a", "b", "c", "edge", "hole"]
    assert list(ds.column("stamp_flag")) == [0, 0, 0, FLAG_EDGE, FLAG_MASKED]
    np.testing.assert_allclose(ds.column("image_scale"), 0.8)
    np.testing.assert_allclose(ds.column("ra")[0], _sources()[0][1])
    assert ds.raw_row(0)["image_array"].shape == (2, 25, 25)
