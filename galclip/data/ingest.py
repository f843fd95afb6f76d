"""Build a galclip dataset from real survey files: cutouts, spectra and catalogues.

Two passes keep memory bounded whatever the number of files:

1. **Scan**: every image and spectrum file is read once to validate it and record only
   its metadata (id, RA/Dec, z, S/N). Bad files are skipped and reported; duplicate
   spectra of one object keep the highest-S/N one. Images and spectra of the same object
   are paired by id or by sky position, and label / tabular catalogues are joined to the
   resulting rows (by id or position, see :mod:`galclip.data.crossmatch`).
2. **Write**: the plan is walked in shard-sized chunks; files are re-read, spectra are
   resampled flux-conservingly onto the common grid, images are area-resampled to the
   configured size (the full field of view is kept), optional statmorph morphology is
   measured, and rows go to :class:`~galclip.data.shards.ShardWriter` (atomic shards).

The plan is deterministic (sorted inputs), so ``resume=true`` continues a killed ingest
after its last finished shard; a changed plan refuses to resume.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from galclip.config import to_dict
from galclip.data import schema as S
from galclip.data.crossmatch import MatchResult, crossmatch, match_by_position
from galclip.data.morphology import MorphologyOptions, Stamp, band_index, measure_stamps, morphology_stamp
from galclip.data.preprocess import log_grid, resample_spectrum, stored_cutout
from galclip.data.readers.catalogs import Catalog, read_catalog
from galclip.data.readers.images import FITS_SUFFIXES, JPEG_SUFFIXES, ImageRecord, read_fits_bands, read_image
from galclip.data.readers.spectra import SpectrumRecord, read_spectrum_file
from galclip.data.shards import ShardWriter, read_manifest
from galclip.data.stamps import StampConfig, StampSource
from galclip.errors import ConfigError, GalclipError, InputFileError
from galclip.utils.io import atomic_write_json

log = logging.getLogger(__name__)

REPORT_NAME = "ingest_report.json"


@dataclasses.dataclass
class CatalogJoin:
    """A catalogue joined to the ingested rows.

    Attributes:
        path: CSV/FITS table.
        by: ``"id"``, ``"position"`` or ``"auto"`` (id when ids overlap, else position).
        id_column, ra_column, dec_column: catalogue columns (detected when empty).
        radius_arcsec: positional match radius.
        columns: ``{output_name: catalogue_column}``; ``None`` = every column except the
            id/ra/dec ones (labels) or every numeric one (tabular). Text label columns
            become integer codes (the code table is saved in the dataset provenance).
    """

    path: str = ""
    by: str = "auto"
    id_column: str = ""
    ra_column: str = ""
    dec_column: str = ""
    radius_arcsec: float = 1.5
    columns: dict[str, str] | None = None


@dataclasses.dataclass
class IngestConfig:
    """Ingest options (see ``configs/ingest.yaml``).

    Attributes:
        out: dataset directory.
        images: globs or directories of cutouts (.fits/.jpeg/.jpg/.png).
        image_bands: JPEG: names of the R, G, B channels (default SDSS ``i, r, g``);
            FITS: the bands to keep, in order.
        image_group_regex: one FITS file per band: a regex on the file name with named
            groups ``id`` and ``band`` (e.g. ``(?P<id>.+)_(?P<band>[ugriz])\\.fits$``);
            ``image_bands`` then gives the band order.
        image_size: stored cutout size (pixels).
        image_crop: centre crop of the native cutout before resizing: ``"192px"``,
            ``"76arcsec"`` (needs a pixel scale), a fraction of the field (``0.45``), or
            ``""`` for the whole field. Cropping first keeps the galaxy large in the stored
            image instead of shrinking the whole field.
        image_resize: ``"area"`` antialiased (box-filter) resampling of the cropped square to
            ``image_size``; ``"crop"`` centre-crops/pads to ``image_size`` without resampling.
        pixel_scale: arcsec/pixel of cutouts whose files do not say (JPEG/PNG; e.g. 0.396
            for SDSS, 0.262 for Legacy Survey); NaN = unknown. A file's WCS wins.
        stamps: cut stamps from large survey images (with WCS) at catalogue positions
            instead of reading cutouts (see :class:`galclip.data.stamps.StampConfig`).
        spectra: globs or directories of spectrum files (SDSS spec, DESI coadd/spectra, BOSS spPlate).
        keep_sky: keep DESI sky fibres (skipped by default).
        wave_min, wave_max, n_wave: common log-λ grid (Å) the spectra are resampled onto.
        min_good_fraction: a resampled spectrum needs this fraction of good grid pixels.
        pair_by: pair images and spectra by ``"id"``, ``"position"``, ``"auto"`` or ``"none"``.
        pair_radius_arcsec: positional pairing radius.
        labels: label catalogue (numeric label columns of the dataset).
        tabular: catalogue measurements stored as the tabular modality.
        morphology: measure statmorph morphology into tabular ``morph_*`` columns, on the
            native pixels (not the resized network input).
        morphology_options: band, native crop, binning, sky frame, segmentation, MID,
            companions (:class:`galclip.data.morphology.MorphologyOptions`).
        morphology_n_jobs: processes for statmorph.
        shard_size: rows per shard.
        resume: continue a killed ingest into ``out``.
        overwrite: replace an existing dataset in ``out``.
        progress: tqdm progress bars.
    """

    out: str = "dataset"
    images: list[str] = dataclasses.field(default_factory=list)
    image_bands: list[str] | None = None
    image_group_regex: str = ""
    image_size: int = 64
    image_crop: str = ""
    image_resize: str = "area"
    pixel_scale: float = float("nan")
    stamps: StampConfig | None = None
    spectra: list[str] = dataclasses.field(default_factory=list)
    keep_sky: bool = False
    wave_min: float = 3800.0
    wave_max: float = 9200.0
    n_wave: int = 3840
    min_good_fraction: float = 0.1
    pair_by: str = "auto"
    pair_radius_arcsec: float = 1.5
    labels: CatalogJoin | None = None
    tabular: CatalogJoin | None = None
    morphology: bool = False
    morphology_options: MorphologyOptions = dataclasses.field(default_factory=MorphologyOptions)
    morphology_n_jobs: int = 1
    shard_size: int = 1024
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


# -- plan --------------------------------------------------------------------------------

@dataclasses.dataclass
class _ImageMeta:
    files: tuple[str, ...]
    object_id: str
    ra: float
    dec: float
    bands: tuple[str, ...]


@dataclasses.dataclass
class _SpecMeta:
    path: str
    index: int  # record position in the file (multi-object files)
    object_id: str
    ra: float
    dec: float
    z: float
    snr: float
    source: str


@dataclasses.dataclass
class _Row:
    object_id: str
    ra: float
    dec: float
    z: float
    image: _ImageMeta | None
    spectrum: _SpecMeta | None
    labels: dict[str, float] = dataclasses.field(default_factory=dict)
    tabular: dict[str, float] = dataclasses.field(default_factory=dict)


class _Report:
    """Collects skipped files and notes; written as ``ingest_report.json``."""

    def __init__(self) -> None:
        self.skipped: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.duplicates: list[str] = []

    def skip(self, exc: InputFileError | GalclipError, path: str | None = None) -> None:
        p = getattr(exc, "path", path or "")
        reason = getattr(exc, "reason", str(exc))
        self.skipped.append({"file": str(p), "reason": reason})
        log.warning("skipped %s: %s", p, reason)


def expand_inputs(patterns: Sequence[str], suffixes: set[str] | None = None) -> list[str]:
    """Sorted, de-duplicated files from globs and directories (directories: every file with
    a known suffix, recursively)."""
    out: list[str] = []
    for pat in patterns:
        p = Path(os.path.expanduser(pat))
        if p.is_dir():
            found = [str(f) for f in sorted(p.rglob("*")) if f.is_file()
                     and (suffixes is None or _suffix(f) in suffixes)]
        else:
            found = sorted(glob.glob(os.path.expanduser(pat), recursive=True))
            found = [f for f in found if Path(f).is_file()]
        if not found:
            log.warning("no files match %s", pat)
        out.extend(found)
    seen: set[str] = set()
    uniq = []
    for f in out:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            uniq.append(f)
    return uniq


def _suffix(p: Path) -> str:
    s = p.suffix.lower()
    if s == ".gz" and len(p.suffixes) > 1:
        return p.suffixes[-2].lower()
    return s


def _image_units(cfg: IngestConfig, files: list[str], report: _Report) -> list[tuple[str, tuple[str, ...]]]:
    """(object_id, files) per cutout; one-file-per-band groups are assembled by regex."""
    if not cfg.image_group_regex:
        return [(Path(f).stem, (f,)) for f in files]
    try:
        rx = re.compile(cfg.image_group_regex)
    except re.error as exc:
        raise ConfigError(f"image_group_regex: {exc}") from None
    if not {"id", "band"} <= set(rx.groupindex):
        raise ConfigError("image_group_regex needs named groups (?P<id>...) and (?P<band>...)")
    if not cfg.image_bands:
        raise ConfigError("image_group_regex needs image_bands (the band order)")
    groups: dict[str, dict[str, str]] = {}
    for f in files:
        m = rx.search(Path(f).name)
        if not m:
            report.skip(InputFileError(f, "file name does not match image_group_regex"))
            continue
        groups.setdefault(m.group("id"), {})[m.group("band")] = f
    units = []
    for oid in sorted(groups):
        g = groups[oid]
        missing = [b for b in cfg.image_bands if b not in g]
        if missing:
            report.skip(InputFileError(next(iter(g.values())), f"object {oid}: no file for band {missing[0]}"))
            continue
        units.append((oid, tuple(g[b] for b in cfg.image_bands)))
    return units


def _read_unit(files: tuple[str, ...], cfg: IngestConfig) -> ImageRecord:
    if len(files) > 1:
        return read_fits_bands(list(files), cfg.image_bands)
    return read_image(files[0], cfg.image_bands)


def _scan_images(cfg: IngestConfig, report: _Report) -> tuple[list[_ImageMeta], tuple[str, ...]]:
    from tqdm.auto import tqdm

    files = expand_inputs(cfg.images, JPEG_SUFFIXES | FITS_SUFFIXES)
    units = _image_units(cfg, files, report)
    metas: list[_ImageMeta] = []
    bands: tuple[str, ...] | None = None
    seen: set[str] = set()
    for oid, unit in tqdm(units, desc="scan images", unit="file", disable=not cfg.progress):
        try:
            rec = _read_unit(unit, cfg)
        except InputFileError as exc:
            report.skip(exc)
            continue
        b = tuple(rec.bands)
        if bands is None:
            bands = b
        elif b != bands:
            report.skip(InputFileError(unit[0], f"bands {list(b)} differ from the dataset's {list(bands)}"))
            continue
        if oid in seen:
            report.duplicates.append(f"image {oid}: {unit[0]} ignored (duplicate id)")
            continue
        seen.add(oid)
        metas.append(_ImageMeta(files=unit, object_id=oid, ra=rec.ra, dec=rec.dec, bands=b))
    return metas, bands or ()


def _scan_spectra(cfg: IngestConfig, report: _Report) -> list[_SpecMeta]:
    from tqdm.auto import tqdm

    files = expand_inputs(cfg.spectra, FITS_SUFFIXES)
    best: dict[str, _SpecMeta] = {}
    order: list[str] = []
    grid = _grid(cfg)
    for f in tqdm(files, desc="scan spectra", unit="file", disable=not cfg.progress):
        try:
            recs, notes = read_spectrum_file(f, keep_sky=cfg.keep_sky)
        except InputFileError as exc:
            report.skip(exc)
            continue
        report.notes.extend(notes)
        for k, r in enumerate(recs):
            if r.wave[-1] <= grid[0] or r.wave[0] >= grid[-1]:
                report.notes.append(f"{f}: {r.object_id} does not overlap the {grid[0]:.0f}-{grid[-1]:.0f} Å grid (skipped)")
                continue
            m = _SpecMeta(path=f, index=k, object_id=r.object_id, ra=r.ra, dec=r.dec, z=r.z,
                          snr=r.median_snr, source=r.source)
            old = best.get(r.object_id)
            if old is None:
                best[r.object_id] = m
                order.append(r.object_id)
            else:
                keep, drop = (m, old) if m.snr > old.snr else (old, m)
                best[r.object_id] = keep
                report.duplicates.append(f"spectrum {r.object_id}: kept {keep.path} (S/N {keep.snr:.1f}), "
                                         f"dropped {drop.path} (S/N {drop.snr:.1f})")
    return [best[o] for o in order]


def _pair(cfg: IngestConfig, images: list[_ImageMeta], spectra: list[_SpecMeta]) -> tuple[list[_Row], str]:
    """Union of image and spectrum objects, pairing the same object once."""
    method = cfg.pair_by
    if method not in ("auto", "id", "position", "none"):
        raise ConfigError(f"pair_by must be auto, id, position or none, got {method!r}")
    pairs: dict[int, int] = {}  # image index -> spectrum index
    if images and spectra and method != "none":
        if method == "auto":
            ids = {m.object_id for m in images} & {s.object_id for s in spectra}
            method = "id" if ids else "position"
        if method == "id":
            sidx = {s.object_id: j for j, s in enumerate(spectra)}
            pairs = {i: sidx[m.object_id] for i, m in enumerate(images) if m.object_id in sidx}
        else:
            res = match_by_position(np.asarray([m.ra for m in images]), np.asarray([m.dec for m in images]),
                                    np.asarray([s.ra for s in spectra]), np.asarray([s.dec for s in spectra]),
                                    cfg.pair_radius_arcsec)
            used: set[int] = set()
            order = np.argsort(np.where(res.matched, res.separation_arcsec, np.inf))
            for i in order:  # closest pairs first; one spectrum pairs with one image
                j = int(res.index[i])
                if j >= 0 and j not in used:
                    pairs[int(i)] = j
                    used.add(j)
    rows: list[_Row] = []
    paired_spec = set(pairs.values())
    for i, m in enumerate(images):
        s = spectra[pairs[i]] if i in pairs else None
        ra, dec = (s.ra, s.dec) if s is not None and np.isfinite(s.ra) else (m.ra, m.dec)
        rows.append(_Row(object_id=m.object_id, ra=ra, dec=dec, z=s.z if s else float("nan"), image=m, spectrum=s))
    for j, s in enumerate(spectra):
        if j not in paired_spec:
            rows.append(_Row(object_id=s.object_id, ra=s.ra, dec=s.dec, z=s.z, image=None, spectrum=s))
    return rows, method if images and spectra else "none"


def _encode(values: np.ndarray) -> tuple[np.ndarray, dict[str, int] | None]:
    """Numeric column as float64; text columns → integer codes (sorted categories)."""
    try:
        arr = np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan)
        return np.asarray(arr, np.float64), None
    except (TypeError, ValueError):
        pass
    txt = [("" if np.ma.is_masked(v) else (v.decode() if isinstance(v, bytes) else str(v)).strip()) for v in values]
    cats = sorted({t for t in txt if t})
    codes = {c: k for k, c in enumerate(cats)}
    return np.asarray([codes[t] if t else np.nan for t in txt], np.float64), codes


def _join(rows: list[_Row], join: CatalogJoin, kind: str, report: _Report) -> tuple[list[str], dict[str, Any]]:
    """Join a catalogue onto ``rows`` (in place); returns (column names, join summary)."""
    cat: Catalog = read_catalog(join.path, join.id_column or None, join.ra_column or None, join.dec_column or None)
    keys = {cat.id_column, cat.ra_column, cat.dec_column} - {None}
    if join.columns is not None:
        mapping = dict(join.columns)
    else:
        mapping = {c: c for c in cat.table.colnames if c not in keys}
    missing = [c for c in mapping.values() if c not in cat.table.colnames]
    if missing:
        raise InputFileError(join.path, f"missing column {missing[0]} (has {', '.join(cat.table.colnames)})")
    ids = np.asarray([r.object_id for r in rows], dtype=object)
    ra = np.asarray([r.ra for r in rows], np.float64)
    dec = np.asarray([r.dec for r in rows], np.float64)
    res: MatchResult = crossmatch(ids, ra, dec, cat, join.by, join.radius_arcsec)
    codes: dict[str, dict[str, int]] = {}
    names: list[str] = []
    for out_name, col in mapping.items():
        vals, code = _encode(cat.table[col])
        if code is not None:
            if kind == "tabular" and join.columns is None:
                continue  # text columns are not measurements
            codes[out_name] = code
        names.append(out_name)
        for i, r in enumerate(rows):
            j = int(res.index[i])
            v = float(vals[j]) if j >= 0 else float("nan")
            (r.labels if kind == "labels" else r.tabular)[out_name] = v
    summary = {"catalog": join.path, "method": res.method, **res.counts(), "codes": codes}
    if summary["ambiguous"]:
        report.notes.append(f"{join.path}: {summary['ambiguous']} rows have >1 {kind} match within the radius (nearest kept)")
    return names, summary


def _grid(cfg: IngestConfig) -> np.ndarray:
    if not (0 < cfg.wave_min < cfg.wave_max) or cfg.n_wave < 16:
        raise ConfigError("need 0 < wave_min < wave_max and n_wave >= 16")
    return log_grid(cfg.wave_min, cfg.wave_max, cfg.n_wave)


def _plan_hash(rows: list[_Row], cfg: IngestConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in to_dict(cfg).items() if k not in ("resume", "overwrite", "progress", "out",
                                                                             "morphology_n_jobs")},
                        sort_keys=True, default=str).encode())
    for r in rows:
        h.update(f"{r.object_id}|{r.image.files if r.image else ''}|{r.spectrum.path if r.spectrum else ''}\n".encode())
    return h.hexdigest()[:16]


# -- write -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _cached_spectra(path: str, keep_sky: bool) -> tuple[SpectrumRecord, ...]:
    """Multi-object files are read once per run of consecutive rows, not once per fibre."""
    return tuple(read_spectrum_file(path, keep_sky=keep_sky)[0])


def _image_columns(meta: _ImageMeta, cfg: IngestConfig, stamps: StampSource | None) -> dict[str, Any]:
    """Stored image columns of one object: native read, centre crop, resize; plus the
    native-pixel morphology stamp (kept only until morphology is measured)."""
    rec = stamps.cut(meta.object_id) if stamps is not None else _read_unit(meta.files, cfg)
    scale = rec.pixel_scale if np.isfinite(rec.pixel_scale) else float(cfg.pixel_scale)
    try:
        img, iv, stored_scale = stored_cutout(rec.image, rec.ivar, cfg.image_size, cfg.image_crop, cfg.image_resize,
                                              scale)
    except ValueError as exc:
        raise ConfigError(f"{rec.path}: image_crop: {exc}") from None
    out = {S.IMAGE: img, S.IMAGE_IVAR: iv, S.HAS_IMAGE: True, S.IMAGE_PSF: rec.psf_fwhm, S.IMAGE_SCALE: stored_scale}
    if stamps is not None:
        out["stamp_flag"] = float(rec.flag)
    if cfg.morphology:
        try:
            out[_STAMP_KEY] = morphology_stamp(rec.image, rec.ivar, cfg.morphology_options, rec.bands, scale)
        except ValueError as exc:
            raise ConfigError(f"{rec.path}: morphology: {exc}") from None
    return out


_STAMP_KEY = "_morphology_stamp"


def _materialise(row: _Row, cfg: IngestConfig, grid: np.ndarray | None, report: _Report,
                 stamps: StampSource | None = None) -> dict[str, Any] | None:
    out: dict[str, Any] = {S.OBJECT_ID: row.object_id, S.RA: row.ra, S.DEC: row.dec, S.Z: row.z,
                           S.HAS_IMAGE: False, S.HAS_SPECTRUM: False}
    if row.image is not None:
        try:
            out.update(_image_columns(row.image, cfg, stamps))
        except InputFileError as exc:
            report.skip(exc)
    if row.spectrum is not None and grid is not None:
        try:
            recs = _cached_spectra(row.spectrum.path, cfg.keep_sky)
            r = recs[row.spectrum.index]
            flux, ivar = resample_spectrum(r.wave, r.flux, r.ivar, grid)
            good = ivar > 0
            if good.mean() < cfg.min_good_fraction:
                report.notes.append(f"{r.path}: {r.object_id} has only {good.mean():.0%} good pixels on the grid (spectrum dropped)")
            else:
                out.update({S.SPEC_FLUX: flux, S.SPEC_IVAR: ivar, S.SPEC_MASK: ~good, S.HAS_SPECTRUM: True})
        except (InputFileError, IndexError) as exc:
            report.skip(exc if isinstance(exc, InputFileError) else InputFileError(row.spectrum.path, "file changed during ingest"))
    if not out[S.HAS_IMAGE] and not out[S.HAS_SPECTRUM]:
        return None
    out.update(row.labels)
    out["tabular"] = dict(row.tabular)
    return out


def _check_morphology_band(opts: MorphologyOptions, bands: Sequence[str]) -> None:
    if opts.band:
        try:
            band_index(opts.band, bands)
        except ValueError as exc:
            raise ConfigError(f"morphology_options: {exc}") from None


def _stamp_metas(stamps: StampSource, report: _Report) -> tuple[list[_ImageMeta], tuple[str, ...]]:
    """One image object per catalogue position that falls on the survey images."""
    metas = []
    for oid, ra, dec, files in stamps.plan(report.skip):
        metas.append(_ImageMeta(files=files, object_id=oid, ra=ra, dec=dec, bands=tuple(stamps.bands)))
    return metas, tuple(stamps.bands)


def _add_morphology(chunk: list[dict[str, Any]], cfg: IngestConfig) -> int:
    """statmorph columns ``morph_*`` into each row's tabular dict; returns #failures."""
    idx = [i for i, r in enumerate(chunk) if r[S.HAS_IMAGE]]
    stamps: list[Stamp | None] = [chunk[i].pop(_STAMP_KEY, None) for i in idx]
    if not idx:
        return 0
    opts = cfg.morphology_options
    table = measure_stamps(stamps, opts, n_jobs=cfg.morphology_n_jobs, progress=cfg.progress)
    for k, i in enumerate(idx):
        chunk[i]["tabular"].update({f"morph_{c}": float(table[k, n]) for n, c in enumerate(opts.columns())})
    return int(np.isnan(table[:, 0]).sum())


def _prepare_out(cfg: IngestConfig) -> Path:
    out = Path(cfg.out)
    if (out / S.MANIFEST_NAME).exists() and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"{out} already holds a dataset; use resume=true to continue it or overwrite=true")
    if cfg.overwrite and out.exists():
        for f in list(out.glob("shard-*.h5")) + [out / S.MANIFEST_NAME, out / REPORT_NAME]:
            if f.exists():
                f.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_ingest(cfg: IngestConfig) -> dict[str, Any]:
    """Build the dataset described by ``cfg``; returns (and writes) the ingest report."""
    from tqdm.auto import tqdm

    t0 = time.time()
    if not cfg.images and not cfg.spectra and cfg.stamps is None:
        raise ConfigError("ingest needs images, stamps and/or spectra inputs")
    if cfg.images and cfg.stamps is not None:
        raise ConfigError("give either images (cutout files) or stamps (survey images + positions), not both")
    if cfg.image_size < 8:
        raise ConfigError("image_size must be >= 8")
    if cfg.image_resize not in ("area", "crop"):
        raise ConfigError(f"image_resize must be area or crop, got {cfg.image_resize!r}")
    out = _prepare_out(cfg)
    _cached_spectra.cache_clear()  # files may have changed since an earlier ingest in this process
    report = _Report()
    stamps = StampSource(cfg.stamps, cfg.image_bands) if cfg.stamps is not None else None
    if stamps is not None:
        images, bands = _stamp_metas(stamps, report)
    else:
        images, bands = _scan_images(cfg, report) if cfg.images else ([], ())
    if cfg.morphology and images:
        _check_morphology_band(cfg.morphology_options, bands)
    spectra = _scan_spectra(cfg, report) if cfg.spectra else []
    rows, pair_method = _pair(cfg, images, spectra)
    if not rows:
        raise InputFileError(cfg.out, f"nothing to ingest: every input was skipped ({len(report.skipped)} files)")
    label_cols: list[str] = []
    tab_cols: list[str] = []
    joins: dict[str, Any] = {}
    if cfg.labels is not None and cfg.labels.path:
        label_cols, joins["labels"] = _join(rows, cfg.labels, "labels", report)
        clash = set(label_cols) & set(S.CORE_COLUMNS)
        if clash:
            raise ConfigError(f"label column {sorted(clash)[0]!r} clashes with a core column; rename it in labels.columns")
    if cfg.tabular is not None and cfg.tabular.path:
        tab_cols, joins["tabular"] = _join(rows, cfg.tabular, "tabular", report)
    if stamps is not None:
        label_cols.append("stamp_flag")
    if cfg.morphology and images:
        tab_cols += [f"morph_{c}" for c in cfg.morphology_options.columns()]
    grid = _grid(cfg) if spectra else None
    plan_hash = _plan_hash(rows, cfg)
    provenance = {"source": "galclip ingest", "config": to_dict(cfg), "plan_hash": plan_hash,
                  "pairing": pair_method, "label_codes": {k: v["codes"] for k, v in joins.items() if v.get("codes")}}
    start = 0
    if cfg.resume and (out / S.MANIFEST_NAME).exists():
        old = read_manifest(out)
        if old.provenance.get("plan_hash") != plan_hash:
            raise ConfigError(f"{out}: inputs or config changed since the interrupted ingest; use overwrite=true")
        provenance["created"] = old.provenance.get("created")
        start = int(old.provenance.get("plan_rows_done", old.n_rows))
    writer = ShardWriter(out, list(bands) if images else [], cfg.image_size if images else 0, grid,
                         label_columns=label_cols, tabular_columns=tab_cols, shard_size=cfg.shard_size,
                         provenance=provenance, resume=cfg.resume)
    morph_failed = 0
    bar = tqdm(total=len(rows), initial=start, desc="ingest", unit="row", disable=not cfg.progress)
    pos = start
    while pos < len(rows):
        chunk: list[dict[str, Any]] = []
        # one chunk = one shard: plan rows are consumed until a shard's worth is materialised
        while pos < len(rows) and len(chunk) < cfg.shard_size:
            r = _materialise(rows[pos], cfg, grid, report, stamps)
            pos += 1
            bar.update(1)
            if r is not None:
                chunk.append(r)
        if cfg.morphology and chunk:
            morph_failed += _add_morphology(chunk, cfg)
        writer.provenance["plan_rows_done"] = pos
        writer.extend(chunk)
        writer.flush()
    bar.close()
    _cached_spectra.cache_clear()
    man = writer.close()
    summary = _summarise(out, [c for c in label_cols if c != "stamp_flag"])
    report_obj = {
        "out": str(out), "rows": man.n_rows, **summary, "pairing": pair_method,
        "inputs": {"image_objects": len(images), "spectra": len(spectra)},
        "joins": joins, "bands": list(bands), "image_size": cfg.image_size if images else 0,
        "n_wave": 0 if grid is None else int(grid.size),
        "morphology_failed": morph_failed if cfg.morphology else None,
        "stamps": stamps.summary() if stamps is not None else None,
        "skipped": report.skipped, "notes": report.notes, "duplicates": report.duplicates,
        "seconds": round(time.time() - t0, 2),
    }
    atomic_write_json(out / REPORT_NAME, report_obj)
    labelled = summary["labelled"]
    print(f"ingest → {out}: {man.n_rows} rows ({summary['with_image']} with image, "
          f"{summary['with_spectrum']} with spectrum, {summary['paired']} paired, {labelled} labelled); "
          f"{len(report.skipped)} files skipped (see {out / REPORT_NAME})")
    for name, n in summary["label_positives"].items():
        print(f"  label {name}: {n} rows with value > 0")
    return report_obj


def _summarise(out: Path, label_cols: list[str]) -> dict[str, Any]:
    """Counts read back from the written shards (what a user will actually get)."""
    import h5py

    man = read_manifest(out)
    has_i = has_s = paired = labelled = 0
    pos: dict[str, int] = {c: 0 for c in label_cols}
    for s in man.shards:
        with h5py.File(out / s.path, "r") as h5:
            hi = h5[S.HAS_IMAGE][()]
            hs = h5[S.HAS_SPECTRUM][()]
            has_i += int(hi.sum())
            has_s += int(hs.sum())
            paired += int((hi & hs).sum())
            if label_cols:
                lab = np.stack([h5[c][()] for c in label_cols], 1)
                labelled += int(np.isfinite(lab).any(1).sum())
                for k, c in enumerate(label_cols):
                    pos[c] += int((np.nan_to_num(lab[:, k]) > 0).sum())
    return {"with_image": has_i, "with_spectrum": has_s, "paired": paired, "labelled": labelled, "label_positives": pos}
