"""Stamps of a fixed angular size cut from large survey images at catalogue positions.

Real surveys ship calibrated images (one FITS per band and tile, or a band cube) plus a
catalogue of RA/Dec, not cutouts. :class:`StampSource` finds the image that holds each
position, cuts a square of ``size_arcsec`` with :class:`astropy.nddata.Cutout2D` (odd pixel
size, so the object is within half a pixel of the central pixel) and, where a band's WCS
differs from the first band's (other pixel grid, rotation or scale), reprojects that band's
cutout onto the first band's with :func:`reproject.reproject_interp`.

Quality is recorded, not guessed: a stamp partly off the image edge gets flag bit 1, one
with masked (NaN or zero-weight) pixels near its centre gets bit 2; ``on_edge`` /
``on_masked`` decide whether such stamps are kept (flagged) or skipped (reported).
"""
from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from galclip.data.readers.images import FITS_SUFFIXES, ImageRecord
from galclip.errors import ConfigError, InputFileError

FLAG_EDGE = 1
FLAG_MASKED = 2


@dataclasses.dataclass
class StampConfig:
    """Survey images + positions → stamps.

    Attributes:
        images: globs or directories of survey images (FITS with a celestial WCS).
        group_regex: one file per band: regex on the file name with named groups ``tile``
            and ``band`` (e.g. ``(?P<tile>.+)-(?P<band>[grz])\\.fits``); ingest's
            ``image_bands`` gives the band order. Empty: each file is one tile (a band cube
            with ``BANDS``/``BAND<i>`` keywords, or a single band).
        catalog: CSV/FITS catalogue of positions; ``id_column``/``ra_column``/``dec_column``
            name its columns (detected when empty).
        size_arcsec: stamp side (rounded to an odd number of pixels of the first band).
        psf_fwhm: PSF FWHM per band in arcsec; bands not listed use the image header
            (``PSF_FWHM``, ``SEEING``, ``FWHM``), else NaN.
        on_edge, on_masked: ``"flag"`` keeps the stamp with its flag bit, ``"skip"`` drops it.
        centre_radius_arcsec: masked pixels within this radius set the masked flag.
    """

    images: list[str] = dataclasses.field(default_factory=list)
    group_regex: str = ""
    catalog: str = ""
    id_column: str = ""
    ra_column: str = ""
    dec_column: str = ""
    size_arcsec: float = 60.0
    psf_fwhm: dict[str, float] | None = None
    on_edge: str = "flag"
    on_masked: str = "flag"
    centre_radius_arcsec: float = 3.0


@dataclasses.dataclass
class _Tile:
    name: str
    files: tuple[str, ...]  # one per band, or one cube
    bands: tuple[str, ...]
    wcs: Any                # celestial WCS of the first band
    shape: tuple[int, int]


@functools.lru_cache(maxsize=8)
def _plane(path: str, index: int) -> tuple[np.ndarray, np.ndarray | None, Any, float]:
    """(image plane, ivar plane or None, celestial WCS, PSF FWHM) of one band; memory-mapped."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from galclip.data.readers.images import _psf_fwhm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=True)
            k = next(i for i, h in enumerate(hdul) if h.is_image and h.header.get("NAXIS", 0) in (2, 3))
            hdr = hdul[k].header
            data = np.asarray(hdul[k].data, np.float32)
            ivar = None
            for name in ("IVAR", "INVVAR", "WEIGHT"):
                if name in hdul:
                    ivar = np.asarray(hdul[name].data, np.float32)
                    break
            wcs = WCS(hdr).celestial
    except StopIteration:
        raise InputFileError(path, "no 2-D or 3-D image HDU") from None
    except Exception as exc:
        raise InputFileError(path, f"unreadable survey image ({type(exc).__name__}: {exc})") from None
    if not wcs.has_celestial:
        raise InputFileError(path, "no celestial WCS (stamps need RA/Dec → pixel)")
    if data.ndim == 3:
        data = data[index]
        ivar = None if ivar is None else ivar[index]
    return data, ivar, wcs, _psf_fwhm(hdr)


class StampSource:
    """Finds, cuts and flags stamps for every catalogue position on the survey images."""

    def __init__(self, cfg: StampConfig, bands: Sequence[str] | None) -> None:
        if cfg.on_edge not in ("flag", "skip") or cfg.on_masked not in ("flag", "skip"):
            raise ConfigError("stamps.on_edge and stamps.on_masked must be flag or skip")
        if not cfg.catalog:
            raise ConfigError("stamps.catalog (the positions to cut) is required")
        if not cfg.size_arcsec > 0:
            raise ConfigError("stamps.size_arcsec must be > 0")
        self.cfg = cfg
        self.tiles = _tiles(cfg, bands)
        if not self.tiles:
            raise ConfigError(f"stamps.images: no survey image found in {cfg.images}")
        self.bands = list(self.tiles[0].bands)
        self._where: dict[str, tuple[int, float, float]] = {}
        self.counts = {"positions": 0, "off_images": 0, "flag_edge": 0, "flag_masked": 0, "skipped": 0}
        self.off_images: list[str] = []

    def plan(self, skip: Callable[[InputFileError], None]) -> Iterator[tuple[str, float, float, tuple[str, ...]]]:
        """(object_id, ra, dec, files) of each position to ingest; off-image and skipped
        stamps are counted (and skipped ones reported through ``skip``)."""
        from galclip.data.readers.catalogs import read_catalog

        c = self.cfg
        cat = read_catalog(c.catalog, c.id_column or None, c.ra_column or None, c.dec_column or None)
        if cat.ra_column is None or cat.dec_column is None:
            raise InputFileError(c.catalog, "no RA/Dec columns found (set stamps.ra_column / dec_column)")
        ra = np.asarray(cat.table[cat.ra_column], np.float64)
        dec = np.asarray(cat.table[cat.dec_column], np.float64)
        ids = ([str(v) for v in cat.table[cat.id_column]] if cat.id_column
               else [f"{a:.6f}{d:+.6f}" for a, d in zip(ra, dec)])
        for oid, a, d in zip(ids, ra, dec):
            self.counts["positions"] += 1
            t = self._tile_of(a, d)
            if t is None:
                self.counts["off_images"] += 1
                self.off_images.append(oid)
                continue
            self._where[oid] = (t, float(a), float(d))
            rec = self.cut(oid)
            reason = self._skip_reason(rec.flag)
            if reason:
                self.counts["skipped"] += 1
                skip(InputFileError(self.tiles[t].files[0], f"object {oid}: stamp {reason} (skipped)"))
                continue
            self.counts["flag_edge"] += bool(rec.flag & FLAG_EDGE)
            self.counts["flag_masked"] += bool(rec.flag & FLAG_MASKED)
            yield oid, float(a), float(d), self.tiles[t].files

    def _skip_reason(self, flag: int) -> str:
        if flag & FLAG_EDGE and self.cfg.on_edge == "skip":
            return "falls off the image edge"
        if flag & FLAG_MASKED and self.cfg.on_masked == "skip":
            return "has masked pixels at its centre"
        return ""

    def _tile_of(self, ra: float, dec: float) -> int | None:
        """First tile whose pixel grid contains the position."""
        if not (np.isfinite(ra) and np.isfinite(dec)):
            return None
        for k, t in enumerate(self.tiles):
            x, y = t.wcs.world_to_pixel_values(ra, dec)
            if -0.5 <= x < t.shape[1] - 0.5 and -0.5 <= y < t.shape[0] - 0.5:
                return k
        return None

    def cut(self, object_id: str) -> ImageRecord:
        """The (B, S, S) stamp of a planned object, its ivar (0 = masked or off-image) and flag."""
        t_index, ra, dec = self._where[object_id]
        tile = self.tiles[t_index]
        ref = _cutout(tile, 0, ra, dec, self.cfg.size_arcsec, None)
        planes, ivars, psf = [ref[0]], [ref[1]], [ref[3]]
        for b in range(1, len(tile.bands)):
            img, iv, _, p, _ = _cutout(tile, b, ra, dec, self.cfg.size_arcsec, ref[2])
            planes.append(img)
            ivars.append(iv)
            psf.append(p)
        img = np.stack(planes)
        ivar = np.stack(ivars)
        bad = ~np.isfinite(img) | ~np.isfinite(ivar) | (ivar <= 0)
        img, ivar = np.where(bad, 0.0, img).astype(np.float32), np.where(bad, 0.0, ivar).astype(np.float32)
        scale = _pixel_scale(ref[2])
        flag = self._flag(ref[4], bad, scale)
        psf_arr = np.asarray([(self.cfg.psf_fwhm or {}).get(b, p) for b, p in zip(tile.bands, psf)], np.float32)
        return ImageRecord(image=img, ivar=ivar, bands=list(tile.bands), pixel_scale=scale, ra=ra, dec=dec,
                           object_id=object_id, path=";".join(tile.files), psf_fwhm=psf_arr, flag=flag)

    def _flag(self, off_edge: np.ndarray, bad: np.ndarray, scale: float) -> int:
        n = bad.shape[-1]
        yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
        centre = np.hypot(xx, yy) * scale <= self.cfg.centre_radius_arcsec
        masked_centre = bool((bad.any(0) & centre & ~off_edge).any())
        return (FLAG_EDGE if off_edge.any() else 0) | (FLAG_MASKED if masked_centre else 0)

    def summary(self) -> dict[str, Any]:
        """Counts for the ingest report (positions, off the images, flagged, skipped)."""
        return {**self.counts, "size_arcsec": self.cfg.size_arcsec, "tiles": len(self.tiles),
                "off_image_examples": self.off_images[:10]}


def _pixel_scale(wcs: Any) -> float:
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)


def _cutout(tile: _Tile, band: int, ra: float, dec: float, size_arcsec: float,
            target: Any) -> tuple[np.ndarray, np.ndarray, Any, float, np.ndarray]:
    """(image, ivar, cutout WCS, psf, off-edge mask) of one band, on ``target``'s grid if given.

    The first band defines the grid (``target=None``): an odd number of pixels centred on
    the pixel holding the position. Other bands are cut directly when their WCS equals the
    first band's, else cut 50 % larger and reprojected onto the first band's stamp grid.
    """
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D
    import astropy.units as u

    path, index = (tile.files[band], 0) if len(tile.files) > 1 else (tile.files[0], band)
    data, ivar, wcs, psf = _plane(path, index)
    pos = SkyCoord(ra * u.deg, dec * u.deg)
    n = int(round(size_arcsec / _pixel_scale(wcs))) // 2 * 2 + 1
    if target is not None and wcs.wcs.compare(tile.wcs.wcs, tolerance=1e-9):
        target = None  # same pixel grid as the first band: cut directly
    grow = 1.0 if target is None else 1.5
    m = int(np.ceil(n * grow)) // 2 * 2 + 1
    cut = Cutout2D(data, pos, (m, m), wcs=wcs, mode="partial", fill_value=np.nan)
    iv = (np.ones_like(cut.data) if ivar is None
          else Cutout2D(ivar, pos, (m, m), wcs=wcs, mode="partial", fill_value=0.0).data)
    off = np.ones(cut.shape, bool)  # pixels beyond the image edge (without a full-image mask per cut)
    off[cut.slices_cutout] = False
    if target is None:
        return cut.data.astype(np.float32), iv.astype(np.float32), cut.wcs, psf, off
    from reproject import reproject_interp

    shape = target.array_shape
    img, cover = reproject_interp((cut.data, cut.wcs), target, shape_out=shape)
    iv_r, _ = reproject_interp((np.where(np.isfinite(iv), iv, 0.0), cut.wcs), target, shape_out=shape)
    iv_r = np.where(cover > 0, iv_r, 0.0)
    return img.astype(np.float32), iv_r.astype(np.float32), target, psf, cover <= 0


def _tiles(cfg: StampConfig, bands: Sequence[str] | None) -> list[_Tile]:
    """Group the survey image files into tiles with their band order and reference WCS."""
    from galclip.data.ingest import expand_inputs

    files = expand_inputs(cfg.images, FITS_SUFFIXES)
    groups: dict[str, dict[str, str]] = {}
    if cfg.group_regex:
        try:
            rx = re.compile(cfg.group_regex)
        except re.error as exc:
            raise ConfigError(f"stamps.group_regex: {exc}") from None
        if not {"tile", "band"} <= set(rx.groupindex) or not bands:
            raise ConfigError("stamps.group_regex needs groups (?P<tile>...) and (?P<band>...) and image_bands")
        for f in files:
            mt = rx.search(Path(f).name)
            if mt:
                groups.setdefault(mt.group("tile"), {})[mt.group("band")] = f
    tiles = []
    if cfg.group_regex:
        for name in sorted(groups):
            g = groups[name]
            missing = [b for b in bands or [] if b not in g]
            if missing:
                raise InputFileError(next(iter(g.values())), f"tile {name}: no file for band {missing[0]}")
            tiles.append(_tile(name, tuple(g[b] for b in bands or []), tuple(bands or [])))
    else:
        tiles = [_tile(Path(f).stem, (f,), None if bands is None else tuple(bands)) for f in files]
    return tiles


def _tile(name: str, files: tuple[str, ...], bands: tuple[str, ...] | None) -> _Tile:
    from astropy.io import fits

    from galclip.data.readers.images import _header_bands

    data, _, wcs, _ = _plane(files[0], 0)
    if len(files) == 1:
        with fits.open(files[0], memmap=True) as hdul:
            hdu = next(h for h in hdul if h.is_image and h.header.get("NAXIS", 0) in (2, 3))
            nb = hdu.header["NAXIS3"] if hdu.header["NAXIS"] == 3 else 1
            found = _header_bands(hdu.header, nb)
        if bands is None:
            bands = tuple(found) if found else tuple(f"band{i}" for i in range(nb))
        elif len(bands) != nb:
            raise InputFileError(files[0], f"{nb} bands in the file but {len(bands)} image_bands configured")
    return _Tile(name=name, files=files, bands=tuple(bands or ()), wcs=wcs, shape=tuple(data.shape[-2:]))
