"""Preprocessing shared by every data source, so real and simulated galaxies look alike.

Images are put in *noise units* per band (background median removed, divided by a robust
noise estimate) and only then stretched with ``arcsinh`` — the stretch is applied on the
batch after augmentation (:func:`arcsinh_stretch`) so augmentations can redraw noise in a
linear space. Spectra are resampled flux-conservingly onto a common grid, optionally
shifted to the rest frame, and divided by an ivar-weighted median so the encoder sees shape,
not distance.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass
class ImagePrep:
    """Image preprocessing options.

    Attributes:
        size: output cutout size (pixels); larger inputs are centre-cropped, smaller padded.
        crop: centre crop of the stored cutout applied first: ``"96px"``, ``"40arcsec"``
            (uses the row's pixel scale), a fraction (``0.5``) or ``""`` for none. With
            ``resize_from = size`` the crop is then resampled to the output size.
        resize_from: if > 0, resample the (cropped) cutout to this size (area average) — for
            inputs much larger than ``size`` such as 423-px JPEGs, so the field of view is kept.
        softening: arcsinh softening in noise units (larger = more linear).
        clip: clip stretched values to ``±clip``.
    """

    size: int = 64
    crop: str = ""
    resize_from: int = 0
    softening: float = 3.0
    clip: float = 10.0


@dataclasses.dataclass
class SpectrumPrep:
    """Spectrum preprocessing options.

    Attributes:
        rest_frame: shift to the rest frame when ``z`` is known (grid then covers
            ``rest_wave_min..rest_wave_max``). Off by default: the contrastive model should
            learn redshift from the data.
        rest_wave_min, rest_wave_max, n_rest: rest-frame grid (log-linear).
        downsample: average this many adjacent pixels (ivar-weighted) to cut compute.
        clip: clip normalised flux to ``±clip``.
        flux_calibrated: the spectra are in physical flux units (1e-17 erg/s/cm²/Å), so
            the normalisation is a brightness the model may use. Set false for spectra that
            are continuum-normalised or not flux calibrated: their scale is then reported as
            unknown (NaN) and models use their learned "unknown" state.
    """

    rest_frame: bool = False
    rest_wave_min: float = 3000.0
    rest_wave_max: float = 8000.0
    n_rest: int = 2048
    downsample: int = 1
    clip: float = 50.0
    flux_calibrated: bool = True


def robust_band_scale(image: np.ndarray, ivar: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put each band of ``image`` (B,H,W) in noise units.

    Returns ``(scaled, scaled_ivar, valid)``; NaN/inf or ivar == 0 pixels become 0 and are
    marked invalid. The noise is the MAD of the valid pixels, which is dominated by the
    sky in a galaxy cutout.
    """
    image = np.asarray(image, dtype=np.float32)
    valid = np.isfinite(image)
    if ivar is not None:
        ivar = np.asarray(ivar, dtype=np.float32)
        valid &= np.isfinite(ivar) & (ivar > 0)
    out = np.zeros_like(image)
    out_ivar = np.zeros_like(image)
    for b in range(image.shape[0]):
        v = image[b][valid[b]]
        if v.size < 4:
            valid[b] = False
            continue
        med = np.median(v)
        sigma = MAD_TO_SIGMA * np.median(np.abs(v - med))
        if not np.isfinite(sigma) or sigma <= 0:
            sigma = float(np.std(v)) or 1.0
        out[b] = np.where(valid[b], (image[b] - med) / sigma, 0.0)
        if ivar is not None:
            out_ivar[b] = np.where(valid[b], ivar[b] * sigma**2, 0.0)
        else:
            out_ivar[b] = valid[b].astype(np.float32)
    return out, out_ivar, valid


def crop_or_pad(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop or zero-pad the last two axes to ``size``×``size``."""
    h, w = image.shape[-2:]
    out = np.zeros(image.shape[:-2] + (size, size), dtype=image.dtype)
    sy, sx = max(0, (h - size) // 2), max(0, (w - size) // 2)
    dy, dx = max(0, (size - h) // 2), max(0, (size - w) // 2)
    ch, cw = min(size, h), min(size, w)
    out[..., dy:dy + ch, dx:dx + cw] = image[..., sy:sy + ch, sx:sx + cw]
    return out


def crop_pixels(spec: str | float | int | None, field: int, pixel_scale: float = float("nan")) -> int:
    """Side in pixels of a centre crop given as pixels, arcsec or a fraction of the field.

    ``spec``: ``"192px"`` or an integer > 1 (pixels), ``"76arcsec"`` / ``'76"'`` / ``"1.3arcmin"``
    (needs ``pixel_scale`` in arcsec/px), a number in (0, 1] (fraction of ``field``), or
    ``""``/0/``None`` for the whole field. Raises ``ValueError`` (one line, the reason) on
    anything else, or on an angular size without a pixel scale.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return int(field)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        value, unit = float(spec), ""
    else:
        text = str(spec).strip().lower().replace(" ", "")
        for unit in ("arcsec", "arcmin", "px", '"', "'", ""):
            if text.endswith(unit):
                break
        try:
            value = float(text[:len(text) - len(unit)] if unit else text)
        except ValueError:
            raise ValueError(f"crop {spec!r}: expected e.g. '192px', '76arcsec' or a fraction like 0.45") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"crop {spec!r} must be a non-negative size")
    if value == 0:
        return int(field)
    if unit in ("arcsec", '"', "arcmin", "'"):
        if not (np.isfinite(pixel_scale) and pixel_scale > 0):
            raise ValueError(f"crop {spec!r} is an angle but the pixel scale is unknown "
                             "(set the pixel scale, or give the crop in px or as a fraction)")
        arcsec = value * (60.0 if unit in ("arcmin", "'") else 1.0)
        return max(1, int(round(arcsec / pixel_scale)))
    if unit == "" and value <= 1.0:
        return max(1, int(round(value * field)))
    return max(1, int(round(value)))


def resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average resample (B,H,W) → (B,size,size); keeps surface brightness."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    return F.interpolate(t, size=(size, size), mode="area")[0].numpy()


def crop_and_resize(image: np.ndarray, ivar: np.ndarray, crop: int, size: int,
                    mode: str = "area") -> tuple[np.ndarray, np.ndarray]:
    """(B,H,W) → centre crop of ``crop`` px → (B,size,size) by antialiased area resampling.

    ``mode="crop"`` skips the resampling (centre crop/pad to ``size``). Area resampling
    averages the valid pixels only (a masked pixel does not drag its neighbours to zero)
    and scales ivar by the number of input pixels per output pixel; pixels beyond the
    field get ivar 0.
    """
    if mode == "crop":
        return crop_or_pad(image, size), crop_or_pad(ivar, size)
    if mode != "area":
        raise ValueError(f"image_resize must be area or crop, got {mode!r}")
    image, ivar = crop_or_pad(image, crop), crop_or_pad(ivar, crop)
    if crop == size:
        return image.astype(np.float32), ivar.astype(np.float32)
    valid = (ivar > 0).astype(np.float32)
    num = resize_area(image * valid, size)
    frac = resize_area(valid, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        img = np.where(frac > 0, num / np.where(frac > 0, frac, 1.0), 0.0)
    iv = resize_area(ivar, size) * (crop / size) ** 2
    iv = np.where(frac > 0.5, iv, 0.0)
    return img.astype(np.float32), iv.astype(np.float32)


def stored_cutout(image: np.ndarray, ivar: np.ndarray, size: int, crop: str = "", mode: str = "area",
                  pixel_scale: float = float("nan")) -> tuple[np.ndarray, np.ndarray, float]:
    """A native cutout as a dataset stores it: centre crop (``crop`` spec), then resize.

    One function for ingest and for query files, so a query is prepared exactly like the
    indexed galaxies. Returns ``(image, ivar, stored pixel scale)`` (arcsec/px after the
    resize; NaN when ``pixel_scale`` is); raises ``ValueError`` on a bad crop spec or an
    angular crop without a pixel scale.
    """
    n = crop_pixels(crop, min(image.shape[-2:]), pixel_scale)
    img, iv = crop_and_resize(image, ivar, n, size, mode)
    return img, iv, pixel_scale * n / size if mode == "area" else pixel_scale


def prepare_image(image: np.ndarray, ivar: np.ndarray | None, cfg: ImagePrep,
                  pixel_scale: float = float("nan")) -> tuple[np.ndarray, np.ndarray]:
    """Noise-unit scaling, centre crop, resize, crop/pad; returns ``(image, ivar)`` at ``cfg.size``."""
    scaled, sivar, valid = robust_band_scale(image, ivar)
    if cfg.crop:
        n = crop_pixels(cfg.crop, min(scaled.shape[-2:]), pixel_scale)
        scaled, sivar = crop_or_pad(scaled, n), crop_or_pad(sivar, n)
    if cfg.resize_from and scaled.shape[-1] != cfg.resize_from:
        factor = (scaled.shape[-1] / cfg.resize_from) ** 2
        scaled = resize_area(scaled, cfg.resize_from)
        sivar = resize_area(sivar, cfg.resize_from) * factor  # averaging n pixels: ivar × n
    scaled = crop_or_pad(scaled, cfg.size)
    sivar = crop_or_pad(sivar, cfg.size)
    return scaled, sivar


def arcsinh_stretch(x: torch.Tensor, softening: float = 3.0, clip: float = 10.0) -> torch.Tensor:
    """Batch arcsinh stretch of noise-unit images: linear near the sky, log on bright cores."""
    return torch.clamp(torch.asinh(x / softening), -clip, clip)


# -- spectra -------------------------------------------------------------------------------

def log_grid(wave_min: float, wave_max: float, n: int) -> np.ndarray:
    """Log-linear wavelength grid (pixel centres), as SDSS/BOSS use."""
    return np.logspace(np.log10(wave_min), np.log10(wave_max), n)


def _edges(centres: np.ndarray) -> np.ndarray:
    mid = 0.5 * (centres[1:] + centres[:-1])
    first = centres[0] - (mid[0] - centres[0])
    last = centres[-1] + (centres[-1] - mid[-1])
    return np.concatenate([[first], mid, [last]])


def resample_spectrum(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, new_wave: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flux-conserving rebin of a flux density onto ``new_wave`` (pixel centres).

    Each output pixel gets the overlap-weighted mean of the input flux densities, so the
    integrated flux over any range is preserved. Output ivar propagates the input
    variances; output pixels with no valid input coverage get ivar = 0 (masked).
    """
    wave = np.asarray(wave, np.float64)
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    order = np.argsort(wave)
    wave, flux, ivar = wave[order], flux[order], ivar[order]
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    flux = np.where(good, flux, 0.0)
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    e_in = _edges(wave)
    e_out = _edges(np.asarray(new_wave, np.float64))
    # cumulative integrals of flux, variance-weight and coverage at the input edges
    width = np.diff(e_in)
    cum_f = np.concatenate([[0.0], np.cumsum(flux * width)])
    cum_c = np.concatenate([[0.0], np.cumsum(good * width)])
    # variance density var_i*width_i integrates to var_i*width_i*overlap_i ≈ var_i*overlap_i^2
    cum_v = np.concatenate([[0.0], np.cumsum(var * width**2)])
    f_at = np.interp(e_out, e_in, cum_f)
    c_at = np.interp(e_out, e_in, cum_c)
    v_at = np.interp(e_out, e_in, cum_v)
    cover = np.diff(c_at)
    out_w = np.diff(e_out)
    with np.errstate(invalid="ignore", divide="ignore"):
        new_flux = np.where(cover > 0, np.diff(f_at) / cover, 0.0)
        # variance of an overlap-weighted mean: sum(var_i overlap_i^2) / cover^2
        new_var = np.where(cover > 0, np.diff(v_at) / np.maximum(cover, 1e-30) ** 2, 0.0)
        frac = cover / out_w
        new_ivar = np.where((frac > 0.5) & (new_var > 0), 1.0 / new_var, 0.0)
    inside = (e_out[1:] > e_in[0]) & (e_out[:-1] < e_in[-1])
    new_ivar = np.where(inside, new_ivar, 0.0)
    new_flux = np.where(new_ivar > 0, new_flux, 0.0)
    return new_flux.astype(np.float32), new_ivar.astype(np.float32)


def normalise_spectrum(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Divide by the ivar-weighted median flux of good pixels; returns ``(flux, ivar, norm)``.

    Using a weighted median keeps a few sky-line residuals or cosmic rays from setting the
    scale. A spectrum with no positive signal is returned unscaled (norm = 1).
    """
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    if good.sum() < 4:
        return np.where(good, flux, 0).astype(np.float32), np.where(good, ivar, 0).astype(np.float32), 1.0
    f, w = flux[good], ivar[good]
    order = np.argsort(f)
    cw = np.cumsum(w[order])
    norm = float(f[order][np.searchsorted(cw, 0.5 * cw[-1])])
    if not np.isfinite(norm) or abs(norm) < 1e-12:
        norm = float(np.sqrt(np.mean(f**2))) or 1.0
    norm = abs(norm)
    return (np.where(good, flux / norm, 0)).astype(np.float32), (np.where(good, ivar * norm**2, 0)).astype(np.float32), norm


def downsample_spectrum(flux: np.ndarray, ivar: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Ivar-weighted average of ``factor`` adjacent pixels (drops the ragged tail)."""
    if factor <= 1:
        return flux, ivar
    n = (flux.shape[-1] // factor) * factor
    f = flux[..., :n].reshape(*flux.shape[:-1], -1, factor)
    w = ivar[..., :n].reshape(*ivar.shape[:-1], -1, factor)
    wsum = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(wsum > 0, (f * w).sum(-1) / wsum, 0.0)
    return out.astype(np.float32), wsum.astype(np.float32)


def prepare_spectrum(
    wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, z: float, cfg: SpectrumPrep
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mask bad pixels, optionally de-redshift, downsample, normalise.

    Returns ``(flux, ivar, log_scale)``: ``log_scale`` is log10 of the normalisation in the
    input flux unit (1e-17 erg/s/cm²/Å in galclip surveys), i.e. the apparent brightness the
    normalisation removed; NaN when the spectrum has no positive signal to set a scale.
    """
    flux = np.asarray(flux, np.float32)
    ivar = np.asarray(ivar, np.float32)
    bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    flux = np.where(bad, 0, flux)
    ivar = np.where(bad, 0, ivar)
    if cfg.rest_frame and np.isfinite(z):
        rest = log_grid(cfg.rest_wave_min, cfg.rest_wave_max, cfg.n_rest)
        # f_lambda in the rest frame: λ_rest = λ_obs/(1+z), f_rest = f_obs (1+z)
        flux, ivar = resample_spectrum(np.asarray(wave) / (1 + z), flux * (1 + z), ivar / (1 + z) ** 2, rest)
    flux, ivar = downsample_spectrum(flux, ivar, cfg.downsample)
    flux, ivar, norm = normalise_spectrum(flux, ivar)
    flux = np.clip(flux, -cfg.clip, cfg.clip)
    return flux, ivar, _log_scale(norm, ivar) if cfg.flux_calibrated else float("nan")


def _log_scale(norm: float, ivar: np.ndarray) -> float:
    """log10 of a normalisation; NaN when too few good pixels set it (it is then a placeholder)."""
    if norm <= 0 or not np.isfinite(norm) or int((ivar > 0).sum()) < 4:
        return float("nan")
    return float(np.log10(norm))
