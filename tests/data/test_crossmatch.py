"""Cross-match counts (matched / ambiguous / unmatched) by position and by id, CSV + report."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from galclip.data.crossmatch import CrossmatchConfig, match_by_id, match_by_position, run_crossmatch
from galclip.data.shards import ShardWriter
from tests.conftest import shared_path

ARCSEC = 1 / 3600


def test_position_counts():
    ra = np.array([10.0, 20.0, 30.0, 40.0, np.nan])
    dec = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
    # row0: one source 0.5"; row1: two sources within 1.5" (ambiguous); row2: 3" away; row3: none
    cra = np.array([10.0 + 0.5 * ARCSEC, 20.0 + 0.3 * ARCSEC, 20.0 - 1.0 * ARCSEC, 30.0 + 3 * ARCSEC])
    cdec = np.zeros(4)
    res = match_by_position(ra, dec, cra, cdec, 1.5)
    assert res.counts() == {"rows": 5, "matched": 2, "ambiguous": 1, "unmatched": 3}
    assert list(res.index) == [0, 1, -1, -1, -1]  # nearest wins for the ambiguous row
    assert res.separation_arcsec[0] == pytest.approx(0.5, abs=1e-3)
    assert list(res.n_within) == [1, 2, 0, 0, 0]


def test_id_counts():
    res = match_by_id(["a", "b", "c"], ["b", "a", "a", "x"])
    assert list(res.index) == [1, 0, -1]
    assert res.counts() == {"rows": 3, "matched": 2, "ambiguous": 1, "unmatched": 1}


def test_run_crossmatch_on_dataset(tmp_path):
    w = ShardWriter(tmp_path / "ds", [], 0, np.linspace(4000, 9000, 16), shard_size=2)
    for i in range(5):
        w.add(dict(object_id=f"g{i}", ra=100.0 + i, dec=10.0, spectrum_flux=np.ones(16), spectrum_ivar=np.ones(16)))
    w.close()
    cat = tmp_path / "cat.csv"
    cat.write_text("name,RA,DEC,kind\nm1,100.0001,10.0,merger\nm2,102.0,10.00002,pair\nfar,150,0,none\n")
    rep = run_crossmatch(CrossmatchConfig(data=str(tmp_path / "ds"), catalog=str(cat), out=str(tmp_path / "xm")))
    assert (rep["method"], rep["matched"], rep["unmatched"], rep["ambiguous"]) == ("position", 2, 3, 0)
    rows = list(csv.DictReader(open(tmp_path / "xm" / "crossmatch.csv")))
    assert [r["object_id"] for r in rows] == ["g0", "g2"] and rows[1]["kind"] == "pair"
    assert float(rows[0]["separation_arcsec"]) == pytest.approx(0.3545, abs=0.01)
    assert json.loads((tmp_path / "xm" / "crossmatch_report.json").read_text())["catalog_rows_matched"] == 2
    rep = run_crossmatch(CrossmatchConfig(data=str(tmp_path / "ds"), catalog=str(cat), out=str(tmp_path / "xm2"),
                                          radius_arcsec=0.1, keep_unmatched=True))
    assert rep["matched"] == 1 and rep["csv_rows"] == 5


def test_real_darg_against_sdss_photometry(tmp_path):
    darg = shared_path("catalogs", "darg2010_gz1_mergers.csv")
    kc = shared_path("catalogs", "kcorrect_sdss_photometry_10k.fits")
    rep = run_crossmatch(CrossmatchConfig(data=str(kc), catalog=str(darg), out=str(tmp_path / "xm")))
    assert rep["method"] == "position" and rep["rows"] == 10000
    assert rep["matched"] == 53 and rep["median_separation_arcsec"] < 1.0


def test_positional_match_without_positions_is_an_error(tmp_path):
    from galclip.errors import ConfigError

    w = ShardWriter(tmp_path / "ds", [], 0, np.linspace(4000, 9000, 16))
    w.add(dict(object_id="a", spectrum_flux=np.ones(16), spectrum_ivar=np.ones(16)))
    w.close()
    cat = tmp_path / "cat.csv"
    cat.write_text("name,ra,dec\nb,1,2\n")
    with pytest.raises(ConfigError, match="none of the data rows has RA/Dec"):
        run_crossmatch(CrossmatchConfig(data=str(tmp_path / "ds"), catalog=str(cat), by="position",
                                        out=str(tmp_path / "xm")))
    rep = run_crossmatch(CrossmatchConfig(data=str(tmp_path / "ds"), catalog=str(cat), out=str(tmp_path / "xm")))
    assert rep["matched"] == 0 and "impossible" in rep["warning"]
