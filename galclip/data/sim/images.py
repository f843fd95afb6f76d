"""Multi-band cutouts rendered with GalSim, plus custom low-surface-brightness structure.

A scene is a list of components, each with a unit-flux shape and a flux per band (from its
own spectrum, see :mod:`galclip.data.sim.spectra`):

* *smooth* components are GalSim profiles (bulge/disk Sérsics, companions, field galaxies,
  offset envelopes); each band draws ``Convolve(Sum(flux_b × profile), PSF_b)`` with GalSim;
* *map* components are pixel maps for structure GalSim has no profile for — curved tidal
  tails and bridges, shells, star-forming clumps placed with :class:`galsim.RandomKnots`,
  foreground stars — built from Gaussian blobs along parametric curves and convolved with the
  same GalSim-drawn PSF of the band.

Noise follows SDSS imaging: sky-dominated Gaussian noise set by the band's 5σ point-source
depth, Poisson noise of the source, masked cosmic rays; fluxes are nanomaggies per pixel.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import galsim
import numpy as np
from scipy.signal import fftconvolve

from galclip.data.sim import calibration as C

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3, maximum_fft_size=4096)


@dataclasses.dataclass
class Component:
    """One light component of a scene.

    Attributes:
        name: role (``bulge``, ``disk``, ``knots``, ``tidal``, ``companion``, ``field``, ``star``).
        owner: ``host``, ``companion`` or ``field`` — which spectrum the light belongs to.
        flux: (B,) nanomaggies per band.
        profile: unit-flux GalSim profile (smooth components) or ``None``.
        pixmap: unit-sum (H, W) map before PSF convolution (map components) or ``None``.
        spectrum: observed f_λ on the fine grid for the whole component (erg/s/cm²/Å).
    """

    name: str
    owner: str
    flux: np.ndarray
    profile: Any = None
    pixmap: np.ndarray | None = None
    spectrum: np.ndarray | None = None


def blobs_map(x: np.ndarray, y: np.ndarray, sigma: np.ndarray, weight: np.ndarray, size: int,
              scale: float) -> np.ndarray:
    """Sum of round Gaussians at (x, y) arcsec from the centre, normalised to unit total flux
    (the part inside the cutout sums to ≤ 1).

    Separable evaluation (``gy.T @ (w·gx)``) keeps a 100-blob tail at ~0.1 ms.
    """
    c = (size - 1) / 2.0
    px = np.asarray(x) / scale + c
    py = np.asarray(y) / scale + c
    s = np.maximum(np.asarray(sigma) / scale, 0.35)
    grid = np.arange(size)
    gx = np.exp(-0.5 * ((grid[None, :] - px[:, None]) / s[:, None]) ** 2)
    gy = np.exp(-0.5 * ((grid[None, :] - py[:, None]) / s[:, None]) ** 2)
    norm = 2 * np.pi * s**2
    m = gy.T @ ((np.asarray(weight) / norm)[:, None] * gx)
    # normalised by the blobs' total weight, not the pixel sum: light that falls outside the
    # cutout (a 50 kpc tail at low redshift) is lost, not squeezed into the frame
    tot = float(np.sum(weight))
    return m / tot if tot > 0 else m


def curve_points(x0: float, y0: float, angle: float, length: float, curvature: float, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points along a curve of constant curvature (rad/arcsec) from (x0, y0)."""
    s = np.linspace(0, length, n)
    theta = angle + curvature * s
    ds = length / max(n - 1, 1)
    x = x0 + np.concatenate([[0.0], np.cumsum(np.cos(theta[:-1]) * ds)])
    y = y0 + np.concatenate([[0.0], np.cumsum(np.sin(theta[:-1]) * ds)])
    return x, y, s


def tail_map(rng: np.random.Generator, x0: float, y0: float, angle: float, length: float, curvature: float,
             width: float, size: int, scale: float) -> np.ndarray:
    """Curved tidal tail: a clumpy stream of stars leaving (x0, y0), slowly widening and fading.

    Observed tails keep a nearly constant surface brightness along most of their length and
    fade only towards the tip (Hibbard & van Gorkom 1996; Mihos 2001), so the light per unit
    length falls by only ~e over the tail; the first fifth overlaps the parent disc and ramps up.
    """
    x, y, s = curve_points(x0, y0, angle, length, curvature, 70)
    frac = s / length
    w = np.exp(-frac / 1.0) * np.clip(frac / 0.2, 0, 1) * rng.lognormal(0, 0.35, s.size)
    sig = width * (0.7 + 0.8 * frac)
    return blobs_map(x, y, sig, w, size, scale)


def bridge_map(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float, bend: float,
               width: float, size: int, scale: float) -> np.ndarray:
    """Curved bridge of debris between two galaxies (quadratic Bézier)."""
    t = np.linspace(0.15, 0.85, 50)
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    nx, ny = -(y1 - y0), (x1 - x0)
    cx, cy = mx + bend * nx, my + bend * ny
    x = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
    y = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
    w = rng.lognormal(0, 0.3, t.size) * (1 - 0.6 * np.abs(t - 0.5))
    return blobs_map(x, y, np.full(t.size, width), w, size, scale)


def shells_map(rng: np.random.Generator, x0: float, y0: float, r_inner: float, n_shells: int, axis: float,
               size: int, scale: float) -> np.ndarray:
    """Interleaved shells on alternating sides of a remnant (radial-merger signature).

    Each shell is an arc with a sharp outer edge: blobs on the arc plus fainter ones
    just inside it.
    """
    xs, ys, ss, ws = [], [], [], []
    for k in range(n_shells):
        r = r_inner * (1.45 ** k) * rng.uniform(0.9, 1.1)
        side = axis + (np.pi if k % 2 else 0.0)
        span = rng.uniform(0.6, 1.1)
        phi = side + np.linspace(-span, span, 40)
        for dr, wt in ((0.0, 1.0), (-0.08 * r, 0.6), (-0.18 * r, 0.3)):
            xs.append(x0 + (r + dr) * np.cos(phi))
            ys.append(y0 + (r + dr) * np.sin(phi))
            ss.append(np.full(phi.size, max(0.04 * r, 0.25)))
            ws.append(wt * np.cos(0.5 * np.pi * (phi - side) / (span * 1.05)) * 0.85 ** k)
    return blobs_map(np.concatenate(xs), np.concatenate(ys), np.concatenate(ss), np.concatenate(ws), size, scale)


def knots_map(rng: np.random.Generator, n: int, hlr: float, q: float, pa_deg: float, x0: float, y0: float,
              size: int, scale: float) -> np.ndarray:
    """Star-forming clumps: random-walk positions from :class:`galsim.RandomKnots`, sheared like the disk."""
    knots = galsim.RandomKnots(n, half_light_radius=hlr, flux=1.0, rng=galsim.BaseDeviate(int(rng.integers(1, 2**31))))
    pts = np.asarray(knots.points)
    x, y = pts[:, 0], pts[:, 1] * q
    pa = np.deg2rad(pa_deg)
    xr = x * np.cos(pa) - y * np.sin(pa) + x0
    yr = x * np.sin(pa) + y * np.cos(pa) + y0
    w = rng.lognormal(0, 0.6, n)
    return blobs_map(xr, yr, np.full(n, 0.15), w, size, scale)


def sersic(n: float, hlr: float, q: float, pa_deg: float, dx: float = 0.0, dy: float = 0.0,
           g1: float = 0.0, g2: float = 0.0) -> galsim.GSObject:
    """Unit-flux sheared, rotated and offset Sérsic profile (arcsec)."""
    prof = _unit_sersic(round(float(np.clip(n, 0.5, 6.0)) * 2) / 2).dilate(float(hlr))
    prof = prof.shear(q=float(np.clip(q, 0.1, 1.0)), beta=float(pa_deg) * galsim.degrees)
    if g1 or g2:
        prof = prof.shear(g1=float(g1), g2=float(g2))
    return prof.shift(float(dx), float(dy)) if (dx or dy) else prof


@functools.lru_cache(maxsize=32)
def _unit_sersic(n: float) -> galsim.GSObject:
    """Half-light-radius-1 Sérsic prototype; transformed copies reuse its cached k-space tables."""
    prof = galsim.Sersic(n=n, half_light_radius=1.0, gsparams=GSPARAMS)
    _ = prof.maxk, prof.stepk
    return prof


def psf_profile(fwhm: float) -> galsim.GSObject:
    """SDSS-like PSF: Moffat core with β = 3.5 (extended wings)."""
    return _unit_moffat().dilate(float(fwhm))


@functools.lru_cache(maxsize=1)
def _unit_moffat() -> galsim.GSObject:
    prof = galsim.Moffat(beta=3.5, fwhm=1.0, gsparams=GSPARAMS)
    _ = prof.maxk, prof.stepk
    return prof


def render(components: list[Component], psf_fwhm: np.ndarray, size: int, scale: float,
           fibre_band: int) -> tuple[np.ndarray, dict[int, float]]:
    """Noiseless (B, H, W) scene in nanomaggies/pixel, and the fibre fraction of each component.

    Fibre fractions (light inside the 3" fibre in band ``fibre_band``, after seeing) are
    computed per component so that bulge, disk, clumps, tidal debris, companion and
    contaminants each enter the fibre spectrum with their own weight.
    """
    nb = len(psf_fwhm)
    out = np.zeros((nb, size, size))
    fracs: dict[int, float] = {}
    smooth = [i for i, cp in enumerate(components) if cp.profile is not None]
    maps = [i for i, cp in enumerate(components) if cp.pixmap is not None]
    for b in range(nb):
        psf = psf_profile(psf_fwhm[b])
        if smooth:
            prof = galsim.Sum([components[i].profile * float(components[i].flux[b]) for i in smooth])
            out[b] += galsim.Convolve(prof, psf).drawImage(nx=size, ny=size, scale=scale).array
        if maps:
            kern = psf.drawImage(nx=25, ny=25, scale=scale).array
            total = sum(components[i].flux[b] * components[i].pixmap for i in maps)
            out[b] += fftconvolve(total, kern, mode="same")
        if b == fibre_band:
            kfib = _fibre_weight(psf, scale, size)
            for i in smooth:
                im = components[i].profile.drawImage(nx=size, ny=size, scale=scale, method="no_pixel").array
                fracs[i] = float(np.sum(im * kfib))
            for i in maps:
                fracs[i] = float(np.sum(components[i].pixmap * kfib))
    return out, fracs


def _fibre_weight(psf: galsim.GSObject, scale: float, size: int) -> np.ndarray:
    """K(x) = fraction of a point source at pixel x that falls in the centred fibre."""
    aperture = galsim.TopHat(radius=C.FIBRE_RADIUS, gsparams=GSPARAMS)
    # surface brightness of PSF⊗disk (per arcsec²) × disk area = fibre fraction of a point source
    k = galsim.Convolve(aperture, psf).drawImage(nx=size, ny=size, scale=scale, method="sb").array
    return k * np.pi * C.FIBRE_RADIUS**2


def sky_sigma(band: str, scale: float, noise_scale: float) -> tuple[float, float]:
    """(σ per pixel in nanomaggies, e⁻ per nanomaggy) of a sky-limited SDSS exposure.

    ``noise_scale`` > 1 mimics a shallower survey: the effective exposure is divided by
    ``noise_scale²`` (same sky brightness, fewer electrons), which raises sky and source
    shot noise together.
    """
    gain = C.ELECTRONS_PER_NMGY[band] / noise_scale**2
    sky = 10 ** (-0.4 * (C.SKY_SB[band] - 22.5)) * scale**2
    return float(np.sqrt(sky * gain) / gain), float(gain)


def add_noise(rng: np.random.Generator, model: np.ndarray, bands: tuple[str, ...], psf_fwhm: np.ndarray,
              scale: float, noise_scale: float, cosmic_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky + shot noise and masked cosmic rays; returns ``(image, ivar)`` in nanomaggies."""
    img = np.empty_like(model, dtype=np.float32)
    ivar = np.empty_like(model, dtype=np.float32)
    size = model.shape[-1]
    for b, band in enumerate(bands):
        sigma, gain = sky_sigma(band, scale, noise_scale)
        var = sigma**2 + np.maximum(model[b], 0) / gain
        # residual sky-subtraction error: a faint plane across the cutout
        gy, gx = (np.mgrid[:size, :size] - (size - 1) / 2.0) / size
        plane = sigma * (rng.normal(0, 0.05) + rng.normal(0, 0.08) * gx + rng.normal(0, 0.08) * gy)
        img[b] = model[b] + plane + rng.normal(0.0, 1.0, model[b].shape) * np.sqrt(var)
        ivar[b] = 1.0 / var
        for _ in range(rng.poisson(cosmic_rate)):
            y, x = rng.integers(0, size, 2)
            length = int(rng.integers(1, 5))
            ang = rng.uniform(0, np.pi)
            for k in range(length):
                yk = int(np.clip(y + round(k * np.sin(ang)), 0, size - 1))
                xk = int(np.clip(x + round(k * np.cos(ang)), 0, size - 1))
                img[b, yk, xk] += sigma * rng.uniform(10, 60)
                ivar[b, yk, xk] = 0.0
    return img, ivar
