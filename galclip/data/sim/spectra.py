"""Spectral energy distributions of simulated galaxies, shared by their images and spectra.

Every galaxy component (bulge, disk, star-forming knots, tidal debris, companion) gets one
observed-frame spectrum on a fine log-linear grid that contains the SDSS grid exactly.
Broad-band fluxes in the image bands are integrated from these spectra (so colours and
spectra can never disagree) and the fibre spectrum is the aperture-weighted sum of them.

Physics used:
  * continuum: Coleman-Wu-Weedman templates shipped with GalSim (E, Sbc, Scd, Im),
    interpolated along a star-formation sequence index ``t`` (0 = E ... 3 = Im);
  * stellar absorption features (Ca II H&K, G band, Mg b, Na D, Balmer) with age-dependent
    equivalent widths — the low-resolution CWW templates do not resolve them;
  * Calzetti et al. (2000) attenuation; stars see 0.44 of the nebular E(B-V);
  * nebular lines from SFR (Kennicutt 1998), [N II]/Hα from metallicity (Pettini & Pagel
    2004), [O III]/Hβ below the Kauffmann et al. (2003) star-forming locus; narrow AGN lines
    with Seyfert/LINER ratios; Gaussian kinematic broadening plus SDSS resolution.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from galclip.data.sim import calibration as C

C_KMS = 299792.458
C_AA = 2.99792458e18                   # Å/s
PC_CM = 3.0857e18
L_SUN_HALPHA_KENNICUTT = 7.9e-42       # SFR [Msun/yr] = 7.9e-42 L(Hα) [erg/s]

#: log10 wavelength step of the SDSS grid (69 km/s pixels)
LOG_STEP = np.log10(C.SPEC_WAVE_MAX / C.SPEC_WAVE_MIN) / (C.SPEC_NPIX - 1)
#: fine grid extends the SDSS grid to cover the g..z bandpasses; pixel k=0 is 3800 Å
_K0 = int(np.floor(np.log10(3000.0 / C.SPEC_WAVE_MIN) / LOG_STEP))
_K1 = int(np.ceil(np.log10(11000.0 / C.SPEC_WAVE_MIN) / LOG_STEP))
FINE_WAVE = C.SPEC_WAVE_MIN * 10 ** (LOG_STEP * np.arange(_K0, _K1 + 1))
#: slice of FINE_WAVE that is the SDSS spectrum grid (== preprocess.log_grid(3800, 9200, 3840))
SDSS_SLICE = slice(-_K0, -_K0 + C.SPEC_NPIX)
_DLOGLAM = LOG_STEP * np.log(10.0)     # pixel width in ln λ

#: colour calibration of the CWW templates: through the g/r/i filters used here the CWW E
#: template at z=0.1 is ~0.2 mag redder in g-r and r-i than the SDSS red sequence of the
#: calibration catalogue (observed g-r ≈ 0.95, r-i ≈ 0.43); multiplying f_λ by λ^-0.55 fixes most of it.
TEMPLATE_TILT = -0.55
TEMPLATES = ("CWW_E_ext.sed", "CWW_Sbc_ext.sed", "CWW_Scd_ext.sed", "CWW_Im_ext.sed")

#: emission lines: name → rest wavelength (Å, air)
LINES = {
    "oii3726": 3726.03, "oii3729": 3728.82, "hdelta": 4101.74, "hgamma": 4340.47, "hbeta": 4861.33,
    "oiii4959": 4958.91, "oiii5007": 5006.84, "oi6300": 6300.30, "nii6548": 6548.05, "halpha": 6562.80,
    "nii6584": 6583.45, "sii6717": 6716.44, "sii6731": 6730.82,
}
#: stellar absorption features: rest wavelength, EW (Å) for an old (t=0) and a young (t=3) population
ABSORPTION = (
    (3933.7, 9.0, 2.0), (3968.5, 7.0, 1.5),        # Ca II K, H (+Hε)
    (4101.7, 1.2, 4.0), (4340.5, 1.0, 3.5),        # Hδ, Hγ  (A stars: strongest at intermediate age)
    (4304.4, 4.5, 1.0), (5175.0, 4.5, 1.0),        # G band, Mg b
    (5893.0, 3.5, 0.8), (4861.3, 1.5, 3.0), (6562.8, 1.5, 2.5),  # Na D, Hβ, Hα
)


@functools.lru_cache(maxsize=1)
def _template_table() -> tuple[np.ndarray, np.ndarray]:
    """CWW templates on a fine rest-frame grid, each normalised to 1 at 5500 Å."""
    import galsim

    rest = np.geomspace(900.0, 12000.0, 6000)
    rows = []
    for name in TEMPLATES:
        sed = galsim.SED(name, wave_type="Angstrom", flux_type="flambda")
        f = np.asarray(sed(rest / 10.0), dtype=np.float64)  # galsim wavelengths are nm
        f = f * (rest / 5500.0) ** TEMPLATE_TILT
        rows.append(f / np.interp(5500.0, rest, f))
    return rest, np.vstack(rows)


@functools.lru_cache(maxsize=8)
def _bandpass(band: str) -> np.ndarray:
    """Throughput of ``band`` on FINE_WAVE (GalSim-shipped curves, see calibration)."""
    import galsim

    bp = galsim.Bandpass(C.BANDPASS_FILES[band], wave_type="nm")
    w = FINE_WAVE / 10.0
    t = np.zeros_like(w)
    inside = (w >= bp.blue_limit) & (w <= bp.red_limit)
    t[inside] = bp(w[inside])
    return t


def band_weights(bands: tuple[str, ...]) -> np.ndarray:
    """(B, L) weights so that ``weights @ f_lambda`` is the AB flux density f_ν (erg/s/cm²/Hz).

    Photon-counting AB definition: f_ν = ∫ f_λ λ T dλ / ∫ c T / λ dλ.
    """
    dlam = FINE_WAVE * _DLOGLAM
    out = []
    for b in bands:
        t = _bandpass(b)
        out.append(t * FINE_WAVE * dlam / np.sum(C_AA * t / FINE_WAVE * dlam))
    return np.vstack(out)


def fnu_to_nanomaggies(fnu: np.ndarray) -> np.ndarray:
    """AB f_ν (erg/s/cm²/Hz) → nanomaggies (1 nmgy = 3.631e-29 erg/s/cm²/Hz)."""
    return np.asarray(fnu) / 3.631e-29


def nanomaggies_to_mag(nmgy: np.ndarray | float) -> np.ndarray:
    return 22.5 - 2.5 * np.log10(np.maximum(np.asarray(nmgy, dtype=np.float64), 1e-12))


@functools.lru_cache(maxsize=1)
def _calzetti_table() -> tuple[np.ndarray, np.ndarray]:
    w = np.geomspace(500.0, 30000.0, 20000)
    return w, calzetti(w)


def calzetti_fast(wave_rest: np.ndarray) -> np.ndarray:
    """:func:`calzetti` by interpolation in a precomputed table (called per component)."""
    w, k = _calzetti_table()
    return np.interp(wave_rest, w, k)


def calzetti(wave_rest: np.ndarray) -> np.ndarray:
    """Calzetti et al. (2000) k(λ) (R_V = 4.05), λ in Å; extrapolated linearly beyond 2.2 µm."""
    x = 1e4 / np.asarray(wave_rest, dtype=np.float64)  # 1/µm
    blue = 2.659 * (-2.156 + 1.509 * x - 0.198 * x**2 + 0.011 * x**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 * x) + 4.05
    return np.maximum(np.where(wave_rest < 6300.0, blue, red), 0.0)


def continuum_shape(t: float, z: float) -> np.ndarray:
    """Unnormalised rest-frame continuum (template index ``t`` in [0, 3]) on FINE_WAVE/(1+z)."""
    rest, table = _template_table()
    t = float(np.clip(t, 0.0, 3.0))
    i = min(int(t), 2)
    a = t - i
    mix = (1 - a) * table[i] + a * table[i + 1]
    return np.interp(FINE_WAVE / (1 + z), rest, mix)


def gaussian_lines(centres_obs: np.ndarray, fluxes: np.ndarray, sigma_kms: np.ndarray | float) -> np.ndarray:
    """Sum of pixel-integrated Gaussians (flux units × per Å) on FINE_WAVE.

    Args:
        centres_obs: observed-frame line centres (Å).
        fluxes: integrated line fluxes (negative for absorption equivalent flux).
        sigma_kms: velocity dispersion, combined in quadrature with the SDSS resolution.
    """
    centres_obs = np.atleast_1d(np.asarray(centres_obs, np.float64))
    fluxes = np.atleast_1d(np.asarray(fluxes, np.float64))
    sig = np.broadcast_to(np.hypot(np.asarray(sigma_kms, np.float64), C.SIGMA_INSTRUMENT_KMS), centres_obs.shape)
    s_ln = sig / C_KMS
    ln_w = np.log(FINE_WAVE)
    lo = ln_w - 0.5 * _DLOGLAM
    hi = ln_w + 0.5 * _DLOGLAM
    out = np.zeros_like(FINE_WAVE)
    for c, f, s in zip(np.log(centres_obs), fluxes, s_ln):
        j0 = np.searchsorted(ln_w, c - 8 * s)
        j1 = np.searchsorted(ln_w, c + 8 * s)
        if j1 <= j0 or f == 0:
            continue
        frac = 0.5 * (erf((hi[j0:j1] - c) / (np.sqrt(2) * s)) - erf((lo[j0:j1] - c) / (np.sqrt(2) * s)))
        out[j0:j1] += f * frac / (FINE_WAVE[j0:j1] * _DLOGLAM)
    return out


def absorption_factor(t: float, z: float, sigma_kms: float, post_starburst: float = 0.0) -> np.ndarray:
    """Multiplicative stellar absorption (≤ 1) with equivalent widths interpolated in ``t``.

    ``post_starburst`` (0..1) deepens Balmer absorption, as in recently quenched
    (E+A-like) remnants of mergers.
    """
    a = float(np.clip(t, 0, 3)) / 3.0
    cen, ew = [], []
    for lam, ew_old, ew_young in ABSORPTION:
        e = (1 - a) * ew_old + a * ew_young
        if lam in (4101.7, 4340.5, 4861.3):
            e += 5.0 * post_starburst
        cen.append(lam * (1 + z))
        ew.append(e * (1 + z))
    prof = gaussian_lines(np.array(cen), np.array(ew), sigma_kms)  # EW × normalised profile
    return np.clip(1.0 - prof, 0.05, 1.0)


@dataclass
class LineFluxes:
    """Intrinsic (unattenuated) emission-line luminosity ratios relative to Hα."""

    ratios: dict[str, float]

    @staticmethod
    def star_forming(metallicity: float, rng: np.random.Generator) -> "LineFluxes":
        """HII-region ratios for 12+log(O/H) = ``metallicity``."""
        n2 = float(np.clip((metallicity - 8.90) / 0.57 + rng.normal(0, 0.05), -1.8, -0.35))
        o3 = float(np.clip(0.61 / (n2 - 0.05) + 1.3 - abs(rng.normal(0.15, 0.1)), -1.3, 0.9))
        oii = float(np.clip(1.05 - 0.9 * (metallicity - 8.6) + rng.normal(0, 0.1), 0.25, 1.6))
        s2 = 10 ** (-0.55 + rng.normal(0, 0.08))
        hb = 1 / 2.86
        r = {"halpha": 1.0, "hbeta": hb, "hgamma": hb * 0.468, "hdelta": hb * 0.259,
             "nii6584": 10**n2, "nii6548": 10**n2 / 3.0, "oiii5007": hb * 10**o3, "oiii4959": hb * 10**o3 / 2.98,
             "oii3726": oii / 2.3, "oii3729": oii * 1.3 / 2.3, "sii6717": s2 * 1.4 / 2.4, "sii6731": s2 / 2.4,
             "oi6300": 0.03}
        return LineFluxes(r)

    @staticmethod
    def agn(rng: np.random.Generator) -> "LineFluxes":
        """Narrow-line-region ratios: Seyfert 2 (high [O III]/Hβ) or LINER."""
        if rng.random() < 0.6:
            n2, o3 = rng.uniform(-0.25, 0.25), rng.uniform(0.45, 1.05)
        else:
            n2, o3 = rng.uniform(0.0, 0.35), rng.uniform(-0.1, 0.35)
        hb = 1 / 3.1
        r = {"halpha": 1.0, "hbeta": hb, "hgamma": hb * 0.47, "hdelta": hb * 0.26, "nii6584": 10**n2,
             "nii6548": 10**n2 / 3.0, "oiii5007": hb * 10**o3, "oiii4959": hb * 10**o3 / 2.98,
             "oii3726": 0.35, "oii3729": 0.45, "sii6717": 0.35, "sii6731": 0.3, "oi6300": 0.15}
        return LineFluxes(r)


def emission_spectrum(l_halpha: float, ratios: LineFluxes, z: float, d_l_cm: float, ebv_gas: float,
                      sigma_kms: float) -> np.ndarray:
    """Observed emission-line spectrum (erg/s/cm²/Å) of total Hα luminosity ``l_halpha`` (erg/s)."""
    names = list(ratios.ratios)
    rest = np.array([LINES[n] for n in names])
    lum = l_halpha * np.array([ratios.ratios[n] for n in names])
    atten = 10 ** (-0.4 * calzetti_fast(rest) * ebv_gas)
    flux = lum * atten / (4 * np.pi * d_l_cm**2)
    return gaussian_lines(rest * (1 + z), flux, sigma_kms)


def sky_model() -> tuple[np.ndarray, np.ndarray]:
    """Night-sky continuum and emission lines (arbitrary units) on FINE_WAVE.

    Strong lines at their real wavelengths (O I 5577/6300/6364, Na D) plus an OH forest
    approximated by a fixed pseudo-random line list above 6800 Å (fixed seed: it is part
    of the instrument, not of a galaxy).
    """
    return _sky_cached()


@functools.lru_cache(maxsize=1)
def _sky_cached() -> tuple[np.ndarray, np.ndarray]:
    cont = 1.0 + 0.8 * ((FINE_WAVE - 3800.0) / 5400.0) ** 2
    cen = [5577.34, 6300.30, 6363.78, 5889.95, 5895.92, 4358.3, 5460.7]
    amp = [60.0, 25.0, 8.0, 12.0, 10.0, 6.0, 4.0]
    fixed = np.random.default_rng(20260101)
    oh = np.sort(fixed.uniform(6800.0, 9300.0, 140))
    cen += list(oh)
    amp += list(fixed.lognormal(np.log(12.0), 0.8, oh.size) * (1 + (oh - 6800) / 2500))
    lines = gaussian_lines(np.array(cen), np.array(amp), 1.0)
    return cont, lines


def throughput() -> np.ndarray:
    """Relative spectrograph throughput on FINE_WAVE (falls at the blue and red ends)."""
    x = np.log(FINE_WAVE / 6300.0)
    return np.clip(np.exp(-0.5 * (x / 0.42) ** 2) * (1 - 0.85 * np.exp(-((FINE_WAVE - 3700) / 250.0) ** 2)), 0.05, 1)
