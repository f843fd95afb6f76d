"""Join a catalogue to a dataset (or to another catalogue) by object id or by sky position.

Sky matching uses astropy's :class:`~astropy.coordinates.SkyCoord` (``match_to_catalog_sky``
for the nearest neighbour, ``search_around_sky`` to count ambiguous matches), so the output
says how trustworthy each join is: a dataset row is *ambiguous* when more than one
catalogue source lies within the radius (close pairs are common in merger catalogues).
"""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from galclip.data.readers.catalogs import Catalog, read_catalog
from galclip.errors import ConfigError, InputFileError
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CrossmatchConfig:
    """Cross-match options.

    Attributes:
        data: a galclip dataset directory, or a catalogue file (CSV/FITS) to match against.
        catalog: the catalogue to join (CSV/FITS table).
        out: output directory (``crossmatch.csv`` + ``crossmatch_report.json``).
        by: ``"position"``, ``"id"`` or ``"auto"`` (id when both sides have ids that
            overlap, else position).
        radius_arcsec: match radius for positional matching.
        id_column, ra_column, dec_column: catalogue column names (detected when empty).
        data_id_column, data_ra_column, data_dec_column: same for ``data`` when it is a
            catalogue file (a dataset always uses object_id/ra/dec).
        columns: catalogue columns to copy into the output (default: all).
        keep_unmatched: also write dataset rows without a match (catalogue columns empty).
    """

    data: str = ""
    catalog: str = ""
    out: str = "crossmatch"
    by: str = "auto"
    radius_arcsec: float = 1.5
    id_column: str = ""
    ra_column: str = ""
    dec_column: str = ""
    data_id_column: str = ""
    data_ra_column: str = ""
    data_dec_column: str = ""
    columns: list[str] | None = None
    keep_unmatched: bool = False


@dataclasses.dataclass
class MatchResult:
    """Result of a join: for every data row the matched catalogue row (-1 if none)."""

    index: np.ndarray  # (N,) catalogue row or -1
    separation_arcsec: np.ndarray  # (N,) NaN for id matches / unmatched
    n_within: np.ndarray  # (N,) catalogue sources within the radius (id: rows with that id)
    method: str

    @property
    def matched(self) -> np.ndarray:
        return self.index >= 0

    def counts(self) -> dict[str, int]:
        m = self.matched
        return {
            "rows": int(m.size),
            "matched": int(m.sum()),
            "ambiguous": int((self.n_within > 1).sum()),
            "unmatched": int((~m).sum()),
        }


def match_by_position(ra: np.ndarray, dec: np.ndarray, cat_ra: np.ndarray, cat_dec: np.ndarray,
                      radius_arcsec: float = 1.5) -> MatchResult:
    """Nearest catalogue source within ``radius_arcsec`` of each (ra, dec); NaN rows never match."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    n = len(ra)
    index = np.full(n, -1, np.int64)
    sep = np.full(n, np.nan)
    n_within = np.zeros(n, np.int64)
    ok = np.isfinite(ra) & np.isfinite(dec)
    cok = np.isfinite(cat_ra) & np.isfinite(cat_dec)
    if ok.any() and cok.any():
        cidx = np.nonzero(cok)[0]
        rows = np.nonzero(ok)[0]
        mine = SkyCoord(ra[rows] * u.deg, dec[rows] * u.deg)
        theirs = SkyCoord(cat_ra[cidx] * u.deg, cat_dec[cidx] * u.deg)
        j, d2d, _ = mine.match_to_catalog_sky(theirs)
        d = d2d.to_value(u.arcsec)
        hit = d <= radius_arcsec
        index[rows[hit]] = cidx[j[hit]]
        sep[rows[hit]] = d[hit]
        # first output indexes the search coords (ours), the tree is built on the catalogue
        i_mine, _, _, _ = theirs.search_around_sky(mine, radius_arcsec * u.arcsec)
        np.add.at(n_within, rows[i_mine], 1)
    return MatchResult(index=index, separation_arcsec=sep, n_within=n_within, method="position")


def match_by_id(ids: Sequence[str], cat_ids: Sequence[str]) -> MatchResult:
    """Exact (string) id join; the first catalogue row wins when an id repeats."""
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for k, c in enumerate(cat_ids):
        c = str(c).strip()
        if not c:
            continue
        first.setdefault(c, k)
        count[c] = count.get(c, 0) + 1
    ids = [str(i).strip() for i in ids]
    index = np.asarray([first.get(i, -1) for i in ids], np.int64)
    n_within = np.asarray([count.get(i, 0) for i in ids], np.int64)
    return MatchResult(index=index, separation_arcsec=np.full(len(ids), np.nan), n_within=n_within, method="id")


def _target_rows(cfg: CrossmatchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object_id, ra, dec) of the rows to annotate: a dataset or a catalogue file."""
    path = Path(cfg.data)
    if path.is_dir():
        from galclip.data.dataset import SurveyDataset

        ds = SurveyDataset(str(path))
        return (np.asarray(ds.column("object_id"), dtype=object),
                np.asarray(ds.column("ra"), np.float64), np.asarray(ds.column("dec"), np.float64))
    cat = read_catalog(path, cfg.data_id_column or None, cfg.data_ra_column or None, cfg.data_dec_column or None)
    n = len(cat)
    ids = cat.ids if cat.id_column else np.asarray([str(i) for i in range(n)], dtype=object)
    if cat.ra_column and cat.dec_column:
        ra, dec = cat.coords()
    else:
        ra = dec = np.full(n, np.nan)
    return ids, ra, dec


def crossmatch(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, cat: Catalog, by: str = "auto",
               radius_arcsec: float = 1.5) -> MatchResult:
    """Choose the join (id or position) and run it."""
    if by not in ("auto", "id", "position"):
        raise ConfigError(f"crossmatch.by must be auto, id or position, got {by!r}")
    if by == "auto":
        use_id = False
        if cat.id_column is not None:
            overlap = len(set(map(str, ids)) & set(cat.ids.tolist()))
            use_id = overlap > 0
        have_pos = cat.ra_column is not None and np.isfinite(ra).any()
        by = "id" if use_id or not have_pos else "position"
    if by == "id":
        return match_by_id(list(ids), cat.ids.tolist())
    if cat.ra_column is None or cat.dec_column is None:
        raise InputFileError(cat.path, "positional match needs ra/dec columns (set ra_column, dec_column)")
    if not np.isfinite(ra).any():
        raise ConfigError("positional match impossible: none of the data rows has RA/Dec (match by id instead)")
    cra, cdec = cat.coords()
    return match_by_position(ra, dec, cra, cdec, radius_arcsec)


def run_crossmatch(cfg: CrossmatchConfig) -> dict[str, Any]:
    """Join ``cfg.catalog`` to ``cfg.data``; write ``crossmatch.csv`` and a JSON report.

    The CSV has one row per matched data row (all rows with ``keep_unmatched``):
    ``object_id, ra, dec, <catalogue columns>, separation_arcsec, n_within``.
    """
    if not cfg.data or not cfg.catalog:
        raise ConfigError("crossmatch needs data=<dataset dir or catalogue> and catalog=<file>")
    if cfg.radius_arcsec <= 0:
        raise ConfigError("radius_arcsec must be > 0")
    cat = read_catalog(cfg.catalog, cfg.id_column or None, cfg.ra_column or None, cfg.dec_column or None)
    ids, ra, dec = _target_rows(cfg)
    res = crossmatch(ids, ra, dec, cat, cfg.by, cfg.radius_arcsec)
    cols = list(cfg.columns) if cfg.columns is not None else list(cat.table.colnames)
    missing = [c for c in cols if c not in cat.table.colnames]
    if missing:
        raise InputFileError(cfg.catalog, f"missing column {missing[0]} (has {', '.join(cat.table.colnames)})")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    header = ["object_id", "ra", "dec"] + [f"cat_{c}" if c in ("object_id", "ra", "dec") else c for c in cols] \
        + ["separation_arcsec", "n_within"]
    n_written = 0
    with atomic_path(out / "crossmatch.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for i in range(len(ids)):
                j = int(res.index[i])
                if j < 0 and not cfg.keep_unmatched:
                    continue
                vals = [_fmt(cat.table[c][j]) if j >= 0 else "" for c in cols]
                w.writerow([ids[i], _fmt(ra[i]), _fmt(dec[i]), *vals, _fmt(res.separation_arcsec[i]), int(res.n_within[i])])
                n_written += 1
    counts = res.counts()
    matched_cat = res.index[res.index >= 0]
    report = {
        "data": str(cfg.data), "catalog": str(cfg.catalog), "method": res.method,
        "radius_arcsec": cfg.radius_arcsec if res.method == "position" else None,
        "catalog_rows": len(cat), "catalog_rows_matched": int(np.unique(matched_cat).size),
        "rows_with_position": int((np.isfinite(ra) & np.isfinite(dec)).sum()),
        **counts, "csv_rows": n_written,
        "median_separation_arcsec": float(np.nanmedian(res.separation_arcsec)) if res.method == "position" and counts["matched"] else None,
    }
    if counts["matched"] == 0:
        if res.method == "id" and not np.isfinite(ra).any():
            report["warning"] = "no object ids in common and the data rows have no RA/Dec: a positional match is impossible"
        elif res.method == "id":
            report["warning"] = "no object ids in common"
        else:
            report["warning"] = f"no catalogue source within {cfg.radius_arcsec} arcsec of any row"
        print(f"crossmatch: warning: {report['warning']}")
    atomic_write_json(out / "crossmatch_report.json", report)
    print(f"crossmatch ({res.method}): {counts['rows']} rows, {counts['matched']} matched, "
          f"{counts['ambiguous']} ambiguous, {counts['unmatched']} unmatched → {out / 'crossmatch.csv'}")
    return report


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    if np.ma.is_masked(v):
        return ""
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else repr(float(v))
    if isinstance(v, np.generic):
        return str(v.item())
    return str(v)
