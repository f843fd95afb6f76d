"""Readers for galaxy cutouts: multi-band FITS (one file with a band axis or one file per
band) and colour JPEG/PNG (e.g. SDSS gri composites).

Every reader returns an :class:`ImageRecord` with a (B, H, W) float32 image, a matching
inverse-variance map (0 = masked pixel, ones where the file carries no noise model), band
names and the pixel scale (arcsec/pixel from the WCS or header, NaN when unknown).
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from galclip.data.readers.common import _short, clean_header, header_float, open_fits
from galclip.errors import InputFileError

#: Band names of an SDSS gri colour composite (R, G, B channels ← i, r, g).
SDSS_COLOR_BANDS = ("i", "r", "g")
JPEG_SUFFIXES = {".jpg", ".jpeg", ".png"}
FITS_SUFFIXES = {".fits", ".fit", ".fts", ".fz", ".gz"}
_IVAR_HDU_NAMES = ("IVAR", "INVVAR", "IVARIANCE", "WEIGHT", "WHT")
_BAND_KEYS = ("BAND", "FILTER", "FILTNAM", "FILTER1")


@dataclasses.dataclass
class ImageRecord:
    """One cutout.

    Attributes:
        image: (B, H, W) float32 flux (JPEG: 0..1); masked pixels are 0.
        ivar: (B, H, W) float32 inverse variance; 0 = masked.
        bands: band name per plane.
        pixel_scale: arcsec/pixel, NaN when the file does not say.
        ra, dec: cutout centre from the WCS (degrees), NaN without one.
        object_id: file stem unless the caller sets one.
        path: source file(s), ``;``-separated for one-file-per-band cutouts.
        psf_fwhm: PSF FWHM per band (arcsec), NaN when unknown.
        flag: quality bits of a stamp cut from a survey image (:mod:`galclip.data.stamps`):
            1 = partly off the image edge, 2 = masked pixels near the centre.
    """

    image: np.ndarray
    ivar: np.ndarray
    bands: list[str]
    pixel_scale: float = float("nan")
    ra: float = float("nan")
    dec: float = float("nan")
    object_id: str = ""
    path: str = ""
    psf_fwhm: np.ndarray | float = float("nan")
    flag: int = 0


# -- JPEG / PNG ------------------------------------------------------------------------------

def read_color_image(path: str | Path, bands: Sequence[str] = SDSS_COLOR_BANDS) -> ImageRecord:
    """Colour JPEG/PNG → (3, H, W) in 0..1, channels named ``bands`` (R, G, B order)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found")
    if len(bands) != 3:
        raise InputFileError(path, f"a colour image has 3 channels but {len(bands)} band names were given")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here
                if im.mode not in ("RGB", "RGBA", "P", "L", "CMYK", "YCbCr"):
                    raise InputFileError(path, f"unsupported image mode {im.mode}")
                if im.mode == "L":
                    raise InputFileError(path, "grayscale image, expected 3 colour channels")
                arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    except InputFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputFileError(path, f"unreadable image ({_short(exc)})") from None
    except Exception as exc:  # PIL plug-ins raise assorted errors on corrupt data
        raise InputFileError(path, f"unreadable image ({_short(exc)})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 4:
        raise InputFileError(path, f"unexpected image shape {arr.shape}")
    img = np.ascontiguousarray(arr.transpose(2, 0, 1)) / 255.0
    return ImageRecord(image=img.astype(np.float32), ivar=np.ones_like(img, dtype=np.float32),
                       bands=list(bands), object_id=path.stem, path=str(path))


# -- FITS --------------------------------------------------------------------------------------

def _wcs_info(header: Any) -> tuple[float, float, float]:
    """(pixel scale arcsec/px, ra, dec of the centre) from a header; NaN when absent."""
    scale = float("nan")
    ra = dec = float("nan")
    try:
        from astropy.wcs import WCS
        from astropy.wcs.utils import proj_plane_pixel_scales

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = WCS(header).celestial
            if w.has_celestial and w.naxis == 2:
                scales = proj_plane_pixel_scales(w)
                if np.all(np.isfinite(scales)) and np.all(scales > 0):
                    scale = float(np.mean(scales) * 3600.0)
                nx, ny = header.get("NAXIS1"), header.get("NAXIS2")
                if nx and ny:
                    c = w.pixel_to_world_values((nx - 1) / 2.0, (ny - 1) / 2.0)
                    ra, dec = float(c[0]), float(c[1])
    except Exception:
        pass
    if not np.isfinite(scale):
        for key in ("PIXSCALE", "PIXSCAL1", "SECPIX", "PIXSCAL"):
            v = header_float(header, key)
            if np.isfinite(v) and v > 0:
                scale = v
                break
    return scale, ra, dec


_PSF_KEYS = ("PSF_FWHM", "PSFFWHM", "SEEING", "FWHM")


def _psf_fwhm(header: Any) -> float:
    """PSF FWHM in arcsec from common header keywords; NaN when absent."""
    for key in _PSF_KEYS:
        v = header_float(header, key)
        if np.isfinite(v) and v > 0:
            return v
    return float("nan")


def _header_bands(header: Any, n: int) -> list[str] | None:
    """Band names from ``BAND0..``/``FILTER0..`` or a comma-separated ``BANDS`` keyword."""
    v = header.get("BANDS")
    if isinstance(v, str):
        names = [b.strip() for b in v.replace(";", ",").split(",") if b.strip()]
        if len(names) == n:
            return names
    for key in ("BAND", "FILTER"):
        names = [header.get(f"{key}{i}") for i in range(n)]
        if all(isinstance(x, str) for x in names):
            return [x.strip() for x in names]
        names = [header.get(f"{key}{i + 1}") for i in range(n)]
        if n > 1 and all(isinstance(x, str) for x in names):
            return [x.strip() for x in names]
    if n == 1:
        for key in _BAND_KEYS:
            x = header.get(key)
            if isinstance(x, str) and x.strip():
                return [x.strip()]
    return None


def _select_bands(path: Path, found: list[str] | None, wanted: Sequence[str] | None, n: int) -> tuple[list[str], list[int]]:
    """Resolve band names and the plane order for the caller's ``wanted`` bands."""
    if wanted is None:
        if found is None:
            return [f"band{i}" for i in range(n)], list(range(n))
        return found, list(range(n))
    wanted = list(wanted)
    if found is None:
        if len(wanted) != n:
            raise InputFileError(path, f"file has {n} bands without names but {len(wanted)} bands were requested")
        return wanted, list(range(n))
    low = [b.lower() for b in found]
    missing = [b for b in wanted if b.lower() not in low]
    if missing:
        raise InputFileError(path, f"unknown band {missing[0]!r} (file has {', '.join(found)})")
    return wanted, [low.index(b.lower()) for b in wanted]


def _image_hdu(path: Path, hdul: Any) -> int:
    for i, h in enumerate(hdul):
        if h.is_image and h.header.get("NAXIS", 0) in (2, 3) and h.name.upper() not in _IVAR_HDU_NAMES:
            return i
    raise InputFileError(path, "no 2-D or 3-D image HDU")


def _as_float(path: Path, data: Any, what: str) -> np.ndarray:
    arr = np.asarray(data)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputFileError(path, f"{what} has non-numeric dtype {arr.dtype}")
    return arr.astype(np.float32)


def _read_fits_planes(path: Path) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """(planes (B,H,W), ivar or None, header) of the first image HDU of one FITS file."""
    with open_fits(path) as hdul:
        k = _image_hdu(path, hdul)
        hdu = hdul[k]
        try:
            data = hdu.data
        except Exception as exc:
            raise InputFileError(path, f"image data unreadable, file truncated? ({_short(exc)})") from None
        if data is None:
            raise InputFileError(path, "image HDU is empty")
        img = _as_float(path, data, "image")
        header = clean_header(hdu.header)
        ivar = None
        for name in _IVAR_HDU_NAMES:
            if name in hdul:
                try:
                    ivar = _as_float(path, hdul[name].data, name)
                except InputFileError:
                    raise
                except Exception as exc:
                    raise InputFileError(path, f"{name} HDU unreadable ({_short(exc)})") from None
                break
    if img.ndim == 2:
        img = img[None]
    elif img.ndim == 3 and img.shape[0] > 16 and img.shape[2] <= 16:
        img = np.moveaxis(img, 2, 0)  # (H, W, B) layout
        if ivar is not None and ivar.ndim == 3:
            ivar = np.moveaxis(ivar, 2, 0)
    if img.ndim != 3 or min(img.shape[1:]) < 4:
        raise InputFileError(path, f"unexpected image shape {img.shape}")
    if ivar is not None:
        if ivar.ndim == 2:
            ivar = ivar[None]
        if ivar.shape != img.shape:
            raise InputFileError(path, f"ivar shape {ivar.shape} does not match image shape {img.shape}")
    return img, ivar, header


def _finish(path: Path | str, img: np.ndarray, ivar: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mask non-finite pixels (ivar 0) and reject images with no valid pixel in a band."""
    iv = np.ones_like(img) if ivar is None else np.asarray(ivar, np.float32)
    bad = ~np.isfinite(img) | ~np.isfinite(iv) | (iv < 0)
    iv = np.where(bad, 0.0, iv).astype(np.float32)
    img = np.where(bad, 0.0, img).astype(np.float32)
    empty = [b for b in range(img.shape[0]) if not np.any(iv[b] > 0)]
    if empty:
        raise InputFileError(path, f"band plane {empty[0]} has no valid pixel (all NaN or masked)")
    return img, iv


def read_fits_image(path: str | Path, bands: Sequence[str] | None = None) -> ImageRecord:
    """Multi-band FITS cutout in one file (band axis first, or (H, W, B)), or a 2-D single band.

    Band names come from ``BANDS``/``BAND<i>``/``FILTER<i>`` header keywords; an ``IVAR``
    (or ``INVVAR``/``WEIGHT``) HDU is used as the inverse variance when present.
    """
    path = Path(path)
    img, ivar, header = _read_fits_planes(path)
    names, order = _select_bands(path, _header_bands(header, img.shape[0]), bands, img.shape[0])
    img = img[order]
    ivar = None if ivar is None else ivar[order]
    img, ivar = _finish(path, img, ivar)
    scale, ra, dec = _wcs_info(header)
    return ImageRecord(image=img, ivar=ivar, bands=names, pixel_scale=scale, ra=ra, dec=dec,
                       object_id=path.stem, path=str(path), psf_fwhm=np.full(len(names), _psf_fwhm(header)))


def read_fits_bands(paths: Sequence[str | Path], bands: Sequence[str] | None = None) -> ImageRecord:
    """One FITS file per band → one (B, H, W) cutout; all bands must share the shape.

    ``bands`` names the files' bands in order when their headers do not say (``FILTER``).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputFileError("<none>", "no band files given")
    if bands is not None and len(bands) != len(paths):
        raise InputFileError(paths[0], f"{len(paths)} band files but {len(bands)} band names")
    planes, ivars, names, psf = [], [], [], []
    scale = ra = dec = float("nan")
    for i, p in enumerate(paths):
        img, ivar, header = _read_fits_planes(p)
        if img.shape[0] != 1:
            raise InputFileError(p, f"expected a single-band image, got {img.shape[0]} planes")
        if planes and img.shape != planes[0].shape:
            raise InputFileError(p, f"shape {img.shape[1:]} differs from {paths[0].name} {planes[0].shape[1:]}")
        hb = _header_bands(header, 1)
        name = bands[i] if bands is not None else (hb[0] if hb else None)
        if name is None:
            raise InputFileError(p, "band unknown: no FILTER/BAND keyword and no band names configured")
        planes.append(img)
        ivars.append(np.ones_like(img) if ivar is None else ivar)
        names.append(str(name))
        psf.append(_psf_fwhm(header))
        if i == 0:
            scale, ra, dec = _wcs_info(header)
    if len(set(n.lower() for n in names)) != len(names):
        raise InputFileError(paths[0], f"duplicate band names {names}")
    img, iv = _finish(paths[0], np.concatenate(planes), np.concatenate(ivars))
    return ImageRecord(image=img, ivar=iv, bands=names, pixel_scale=scale, ra=ra, dec=dec,
                       object_id=paths[0].stem, path=";".join(str(p) for p in paths), psf_fwhm=np.asarray(psf))


def read_image(path: str | Path | Sequence[str | Path], bands: Sequence[str] | None = None) -> ImageRecord:
    """Read any supported cutout: a JPEG/PNG, a FITS file, or a list of per-band FITS files.

    ``bands``: for colour images the names of the R, G, B channels (default SDSS ``i, r, g``);
    for FITS the bands to keep, in order (an absent band is an error).
    """
    if isinstance(path, (list, tuple)):
        return read_fits_bands(path, bands) if len(path) > 1 else read_image(path[0], bands)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in JPEG_SUFFIXES:
        return read_color_image(p, bands if bands is not None else SDSS_COLOR_BANDS)
    if suffix in FITS_SUFFIXES:
        return read_fits_image(p, bands)
    raise InputFileError(p, f"unknown image type {suffix or '(no suffix)'} (expected .fits, .jpeg, .jpg or .png)")
