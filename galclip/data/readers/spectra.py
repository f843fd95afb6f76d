"""Readers for real optical spectra: SDSS ``spec-*``, DESI ``coadd-*``/``spectra-*``, BOSS ``spPlate-*``.

Every reader returns :class:`SpectrumRecord` objects on the instrument's own wavelength
grid (Å, observed frame, vacuum as delivered); resampling to the dataset grid happens in
ingest. Pixels flagged by the pipeline masks, non-finite pixels and ``ivar <= 0`` all end
with ``ivar = 0`` so that downstream code needs only one notion of "bad pixel".

Multi-object files (DESI, spPlate) may hold fibres without any usable pixel (unassigned
positioners, broken fibres); those objects are skipped with a note, and only a file with
no usable spectrum at all is an error.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from galclip.data.readers.common import _short, header_float, hdu_data, open_fits, table_column
from galclip.errors import InputFileError

#: A spectrum needs at least this many good pixels to be kept.
MIN_GOOD_PIXELS = 50


@dataclasses.dataclass
class SpectrumRecord:
    """One object's spectrum on its native grid.

    Attributes:
        object_id: survey id (SDSS photometric BESTOBJID when present, DESI TARGETID,
            BOSS ``plate-mjd-fiber``).
        wave: wavelengths (Å), increasing.
        flux: flux density, 1e-17 erg/s/cm²/Å (bad pixels are 0).
        ivar: inverse variance (0 = bad pixel).
        ra, dec: degrees, NaN when the file has no plug map.
        z: pipeline redshift, NaN when unknown.
        source: ``"sdss"``, ``"desi"`` or ``"boss"``.
        path: the file it came from.
        spec_id: the spectrum's own id (``plate-mjd-fiber``, DESI TARGETID).
        is_sky: a sky fibre (only returned with ``keep_sky=True``).
        ivar_estimated: ivar was not in the file and was estimated from pixel scatter.
    """

    object_id: str
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    ra: float = float("nan")
    dec: float = float("nan")
    z: float = float("nan")
    source: str = ""
    path: str = ""
    spec_id: str = ""
    is_sky: bool = False
    ivar_estimated: bool = False

    @property
    def n_good(self) -> int:
        return int(np.count_nonzero(self.ivar > 0))

    @property
    def median_snr(self) -> float:
        """Median S/N per pixel over good pixels (used to pick the best of duplicates)."""
        good = self.ivar > 0
        if not good.any():
            return 0.0
        return float(np.median(np.abs(self.flux[good]) * np.sqrt(self.ivar[good])))


def _clean(flux: Any, ivar: Any, bad: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """float32 flux/ivar with every bad pixel at ivar = 0 and flux = 0."""
    flux = np.asarray(flux, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    badm = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    if bad is not None:
        badm |= np.asarray(bad, dtype=bool)
    return np.where(badm, 0.0, flux).astype(np.float32), np.where(badm, 0.0, ivar).astype(np.float32)


def _check_1d(path: Path, name: str, arr: np.ndarray, n: int | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1 or arr.size < 2:
        raise InputFileError(path, f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise InputFileError(path, f"{name} has {arr.size} pixels, expected {n}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputFileError(path, f"{name} is not numeric ({arr.dtype})")
    return arr


def _finite_wave(path: Path, wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float64)
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise InputFileError(path, "wavelength grid has non-finite or non-positive values")
    if np.any(np.diff(wave) <= 0):
        raise InputFileError(path, "wavelength grid is not strictly increasing")
    return wave


def _str_scalar(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    return str(v).strip()


# -- SDSS spec-PLATE-MJD-FIBER.fits ------------------------------------------------------

def read_sdss_spec(path: str | Path) -> SpectrumRecord:
    """SDSS/BOSS single-object ``spec-*.fits`` (HDU1 COADD table, HDU2 SPECOBJ/SPALL row)."""
    path = Path(path)
    with open_fits(path) as hdul:
        coadd = hdu_data(path, hdul, 1, "COADD spectrum table")
        flux = _check_1d(path, "flux", table_column(path, coadd, ("flux",), "HDU1"))
        n = flux.size
        loglam = _check_1d(path, "loglam", table_column(path, coadd, ("loglam",), "HDU1"), n)
        ivar = _check_1d(path, "ivar", table_column(path, coadd, ("ivar",), "HDU1"), n)
        mask = table_column(path, coadd, ("and_mask", "mask"), "HDU1", required=False)
        z = ra = dec = float("nan")
        oid = spec_id = ""
        m = re.match(r"spec-(\d+)-(\d+)-(\d+)", path.name)
        if m:
            spec_id = "-".join(m.groups())
        if len(hdul) > 2:
            info = hdu_data(path, hdul, 2, "SPECOBJ/SPALL table")
            if hasattr(info, "columns") and len(info) > 0:
                zc = table_column(path, info, ("Z",), "HDU2", required=False)
                z = float(zc[0]) if zc is not None else z
                rc = table_column(path, info, ("PLUG_RA",), "HDU2", required=False)
                dc = table_column(path, info, ("PLUG_DEC",), "HDU2", required=False)
                ra = float(rc[0]) if rc is not None else ra
                dec = float(dc[0]) if dc is not None else dec
                for key in ("BESTOBJID", "OBJID", "SPECOBJID"):
                    c = table_column(path, info, (key,), "HDU2", required=False)
                    if c is not None:
                        s = _str_scalar(c[0])
                        if s and s not in ("0", "-1") and not set(s) <= {" ", "0"}:
                            oid = s
                            break
                if not spec_id:
                    pl = [table_column(path, info, (k,), "HDU2", required=False) for k in ("PLATE", "MJD", "FIBERID")]
                    if all(c is not None for c in pl):
                        spec_id = "-".join(str(int(c[0])) for c in pl)
    wave = _finite_wave(path, 10.0 ** np.asarray(loglam, np.float64))
    f, iv = _clean(flux, ivar, None if mask is None else np.asarray(mask) != 0)
    rec = SpectrumRecord(object_id=oid or spec_id or path.stem, wave=wave, flux=f, ivar=iv, ra=ra, dec=dec, z=z,
                         source="sdss", path=str(path), spec_id=spec_id or path.stem)
    if rec.n_good < MIN_GOOD_PIXELS:
        raise InputFileError(path, f"spectrum has only {rec.n_good} good pixels (all masked or NaN)")
    return rec


# -- DESI coadd-*/spectra-*.fits ----------------------------------------------------------

def merge_arms(waves: list[np.ndarray], fluxes: list[np.ndarray], ivars: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge DESI B/R/Z arms (N, L_arm each) onto one linear grid; ivar-weighted in overlaps.

    DESI arms share one 0.8 Å lattice, so pixels are matched exactly; an arm that does
    not sit on the lattice is flux-conservingly resampled onto it instead.
    """
    from galclip.data.preprocess import resample_spectrum

    step = float(np.median(np.diff(waves[0])))
    lo = min(float(w[0]) for w in waves)
    hi = max(float(w[-1]) for w in waves)
    grid = lo + step * np.arange(int(round((hi - lo) / step)) + 1)
    nobj = fluxes[0].shape[0]
    num = np.zeros((nobj, grid.size))
    wsum = np.zeros((nobj, grid.size))
    for w, f, iv in zip(waves, fluxes, ivars):
        idx = np.rint((w - lo) / step).astype(np.int64)
        on_lattice = np.all(np.abs(grid[np.clip(idx, 0, grid.size - 1)] - w) < 1e-3 * step) and idx.min() >= 0
        if on_lattice:
            num[:, idx] += f.astype(np.float64) * iv
            wsum[:, idx] += iv
        else:
            sel = (grid >= w[0]) & (grid <= w[-1])
            for k in range(nobj):
                rf, riv = resample_spectrum(w, f[k], iv[k], grid[sel])
                num[k, sel] += rf * riv
                wsum[k, sel] += riv
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(wsum > 0, num / np.where(wsum > 0, wsum, 1.0), 0.0)
    return grid, flux.astype(np.float32), wsum.astype(np.float32)


def read_desi(path: str | Path, keep_sky: bool = False) -> tuple[list[SpectrumRecord], list[str]]:
    """DESI ``coadd-*``/``spectra-*``: one record per usable fibre, plus notes on skipped ones."""
    path = Path(path)
    with open_fits(path) as hdul:
        fm = hdu_data(path, hdul, "FIBERMAP", "fibre map")
        tid = table_column(path, fm, ("TARGETID",), "FIBERMAP")
        tra = table_column(path, fm, ("TARGET_RA",), "FIBERMAP", required=False)
        tdec = table_column(path, fm, ("TARGET_DEC",), "FIBERMAP", required=False)
        otype = table_column(path, fm, ("OBJTYPE",), "FIBERMAP", required=False)
        nobj = len(tid)
        waves, fluxes, ivars = [], [], []
        arms = [a for a in ("B", "R", "Z") if f"{a}_FLUX" in hdul]
        if not arms:
            raise InputFileError(path, "no B_FLUX/R_FLUX/Z_FLUX HDUs (not a DESI spectra file)")
        for a in arms:
            w = _finite_wave(path, _check_1d(path, f"{a}_WAVELENGTH", hdu_data(path, hdul, f"{a}_WAVELENGTH", "arm grid")))
            f = np.asarray(hdu_data(path, hdul, f"{a}_FLUX", "arm flux"))
            iv = np.asarray(hdu_data(path, hdul, f"{a}_IVAR", "arm ivar"))
            if f.ndim == 1:
                f, iv = f[None], iv[None] if iv.ndim == 1 else iv
            if f.shape != (nobj, w.size) or iv.shape != f.shape:
                raise InputFileError(path, f"{a} arm flux/ivar shape {f.shape}/{iv.shape} != ({nobj}, {w.size})")
            bad = None
            if f"{a}_MASK" in hdul:
                mk = np.asarray(hdu_data(path, hdul, f"{a}_MASK", "arm mask"))
                if mk.shape != f.shape:
                    raise InputFileError(path, f"{a}_MASK shape {mk.shape} != {f.shape}")
                bad = mk != 0
            fc, ic = _clean(f, iv, bad)
            waves.append(w)
            fluxes.append(fc)
            ivars.append(ic)
        z_by_id: dict[int, float] = {}
        if "REDSHIFTS" in hdul:
            rz = hdu_data(path, hdul, "REDSHIFTS", "redshifts")
            zt = table_column(path, rz, ("TARGETID",), "REDSHIFTS", required=False)
            zz = table_column(path, rz, ("Z",), "REDSHIFTS", required=False)
            if zt is not None and zz is not None:
                z_by_id = {int(a): float(b) for a, b in zip(zt, zz)}
    grid, flux, ivar = merge_arms(waves, fluxes, ivars)
    records: list[SpectrumRecord] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    for k in range(nobj):
        t = int(tid[k])
        ot = _str_scalar(otype[k]).upper() if otype is not None else ""
        sky = ot == "SKY"
        name = str(t)
        if sky and not keep_sky:
            notes.append(f"{path}: TARGETID {t} is a sky fibre (skipped)")
            continue
        if t < 0 and not keep_sky:
            notes.append(f"{path}: TARGETID {t} is an unassigned fibre (skipped)")
            continue
        n_good = int(np.count_nonzero(ivar[k] > 0))
        if n_good < MIN_GOOD_PIXELS:
            notes.append(f"{path}: TARGETID {t} has only {n_good} good pixels (skipped)")
            continue
        if name in seen:  # spectra-* files hold one row per exposure
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 0
        records.append(SpectrumRecord(
            object_id=name, wave=grid, flux=flux[k], ivar=ivar[k],
            ra=float(tra[k]) if tra is not None else float("nan"),
            dec=float(tdec[k]) if tdec is not None else float("nan"),
            z=z_by_id.get(t, float("nan")), source="desi", path=str(path), spec_id=str(t), is_sky=sky))
    if not records:
        raise InputFileError(path, f"no usable spectrum among {nobj} fibres (all sky, unassigned or masked)")
    return records, notes


# -- BOSS spPlate-PLATE-MJD.fits ------------------------------------------------------------

def _estimate_ivar(flux: np.ndarray) -> np.ndarray:
    """Per-fibre constant ivar from the robust scatter of neighbouring-pixel differences.

    Used only when a file ships no ivar HDU; difference scatter tracks the noise rather
    than the continuum shape.
    """
    d = np.diff(flux, axis=-1)
    mad = np.median(np.abs(d - np.median(d, axis=-1, keepdims=True)), axis=-1)
    sigma = 1.4826 * mad / np.sqrt(2.0)
    with np.errstate(divide="ignore"):
        iv = np.where(sigma > 0, 1.0 / sigma**2, 0.0)
    return np.broadcast_to(iv[:, None], flux.shape).copy()


def read_spplate(path: str | Path) -> tuple[list[SpectrumRecord], list[str]]:
    """BOSS/SDSS ``spPlate``: flux image (fibre × pixel), log-λ from COEFF0/COEFF1.

    HDU1 (ivar) and HDU2/3 (and-mask) are used when present; the plug map (HDU5) gives
    RA/Dec. Without them ivar is estimated from pixel scatter and RA/Dec are NaN.
    Object ids are ``plate-mjd-fiber`` (fibre = row + 1).
    """
    path = Path(path)
    with open_fits(path) as hdul:
        hdr = hdul[0].header
        flux = np.asarray(hdu_data(path, hdul, 0, "flux image"))
        if flux.ndim != 2:
            raise InputFileError(path, f"spPlate flux must be 2-D (fibre, pixel), got shape {flux.shape}")
        if flux.shape[0] == 0 or flux.shape[1] < MIN_GOOD_PIXELS:
            raise InputFileError(path, f"spPlate flux image too small {flux.shape}")
        c0, c1 = header_float(hdr, "COEFF0"), header_float(hdr, "COEFF1")
        if not (np.isfinite(c0) and np.isfinite(c1) and c1 > 0):
            raise InputFileError(path, "missing COEFF0/COEFF1 log-lambda keywords")
        ivar = None
        estimated = False
        if len(hdul) > 1 and getattr(hdul[1], "data", None) is not None and np.shape(hdul[1].data) == flux.shape:
            ivar = np.asarray(hdul[1].data)
        else:
            ivar = _estimate_ivar(np.nan_to_num(np.asarray(flux, np.float64)))
            estimated = True
        mask = None
        if len(hdul) > 2 and getattr(hdul[2], "data", None) is not None and np.shape(hdul[2].data) == flux.shape:
            mask = np.asarray(hdul[2].data) != 0
        ra = dec = None
        objtype = None
        if len(hdul) > 5 and hasattr(hdul[5], "columns"):
            pm = hdul[5].data
            ra = table_column(path, pm, ("RA",), "plug map", required=False)
            dec = table_column(path, pm, ("DEC",), "plug map", required=False)
            objtype = table_column(path, pm, ("OBJTYPE",), "plug map", required=False)
        plate = int(header_float(hdr, "PLATEID", -1))
        mjd = int(header_float(hdr, "MJD", -1))
    if plate < 0 or mjd < 0:
        m = re.match(r"spPlate-(\d+)-(\d+)", path.name)
        if m:
            plate, mjd = int(m.group(1)), int(m.group(2))
    npix = flux.shape[1]
    with np.errstate(over="ignore"):  # absurd COEFF0/COEFF1 overflow to inf, refused by _finite_wave
        wave = _finite_wave(path, 10.0 ** (c0 + c1 * np.arange(npix)))
    f, iv = _clean(flux, ivar, mask)
    records: list[SpectrumRecord] = []
    notes: list[str] = []
    for k in range(flux.shape[0]):
        sid = f"{plate:04d}-{mjd}-{k + 1:04d}"
        if objtype is not None and _str_scalar(objtype[k]).upper() == "SKY":
            notes.append(f"{path}: fibre {k + 1} is a sky fibre (skipped)")
            continue
        n_good = int(np.count_nonzero(iv[k] > 0))
        if n_good < MIN_GOOD_PIXELS:
            notes.append(f"{path}: fibre {k + 1} has only {n_good} good pixels (skipped)")
            continue
        records.append(SpectrumRecord(
            object_id=sid, wave=wave, flux=f[k], ivar=iv[k],
            ra=float(ra[k]) if ra is not None else float("nan"),
            dec=float(dec[k]) if dec is not None else float("nan"),
            source="boss", path=str(path), spec_id=sid, ivar_estimated=estimated))
    if not records:
        raise InputFileError(path, f"no usable spectrum among {flux.shape[0]} fibres")
    return records, notes


# -- dispatch -------------------------------------------------------------------------------

def detect_format(path: str | Path) -> str:
    """``"sdss"``, ``"desi"`` or ``"boss"`` from the HDU layout (file names can lie)."""
    path = Path(path)
    with open_fits(path) as hdul:
        names = {h.name.upper() for h in hdul}
        if "FIBERMAP" in names and any(f"{a}_FLUX" in names for a in "BRZ"):
            return "desi"
        if len(hdul) > 1 and hasattr(hdul[1], "columns"):
            cols = {c.lower() for c in hdul[1].columns.names}
            if {"flux", "loglam"} <= cols:
                return "sdss"
        hdr = hdul[0].header
        if hdr.get("NAXIS", 0) == 2 and "COEFF0" in hdr and "COEFF1" in hdr:
            return "boss"
    raise InputFileError(path, "unrecognised or truncated spectrum file (expected SDSS spec-*, DESI coadd/spectra or BOSS spPlate)")


def read_spectrum_file(path: str | Path, keep_sky: bool = False) -> tuple[list[SpectrumRecord], list[str]]:
    """Read any supported spectrum file → (records, notes on skipped objects)."""
    fmt = detect_format(path)
    try:
        if fmt == "sdss":
            return [read_sdss_spec(path)], []
        if fmt == "desi":
            return read_desi(path, keep_sky=keep_sky)
        return read_spplate(path)
    except InputFileError:
        raise
    except Exception as exc:  # last line of defence: malformed-but-parseable files
        raise InputFileError(path, f"cannot read spectrum ({_short(exc)})") from None


def read_spectra(path: str | Path, keep_sky: bool = False) -> list[SpectrumRecord]:
    """Convenience: the records of :func:`read_spectrum_file`."""
    return read_spectrum_file(path, keep_sky=keep_sky)[0]
