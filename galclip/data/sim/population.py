"""Physical parameters of simulated galaxies: one set per galaxy, from which both the image
and the spectrum are derived.

The draw follows a magnitude-limited SDSS-like survey: redshift from the real survey's
distribution, luminosity from the r-band luminosity function truncated to the survey's
magnitude limits at that redshift, then star formation state, stellar mass, SFR, dust,
metallicity, size and structure from published scaling relations (cited inline).
Interactions change them statistically: mergers raise SFR and AGN incidence, and
post-mergers are more bulge-dominated — never deterministically.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from galclip.data.sim import calibration as C


@functools.lru_cache(maxsize=1)
def _cosmo_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, luminosity distance [cm], arcsec per kpc) on a grid (astropy Flat ΛCDM)."""
    from astropy.cosmology import FlatLambdaCDM

    cosmo = FlatLambdaCDM(H0=C.H0, Om0=C.OM0)
    z = np.linspace(0.001, 1.0, 2000)
    dl = cosmo.luminosity_distance(z).to("cm").value
    asec_per_kpc = cosmo.arcsec_per_kpc_proper(z).value
    return z, dl, asec_per_kpc


def lum_distance_cm(z: float) -> float:
    zz, dl, _ = _cosmo_table()
    return float(np.interp(z, zz, dl))


def arcsec_per_kpc(z: float) -> float:
    zz, _, a = _cosmo_table()
    return float(np.interp(z, zz, a))


def distance_modulus(z: float) -> float:
    return 5 * np.log10(lum_distance_cm(z) / 3.0857e19)


@functools.lru_cache(maxsize=1)
def _lf_grid() -> tuple[np.ndarray, np.ndarray]:
    """Cumulative Schechter luminosity function in absolute magnitude."""
    m = np.linspace(-25.0, -14.0, 2201)
    x = 10 ** (-0.4 * (m - C.LF_MSTAR_R))
    phi = x ** (C.LF_ALPHA + 1) * np.exp(-x)
    cdf = np.cumsum(phi)
    return m, cdf / cdf[-1]


def draw_redshift(rng: np.random.Generator) -> float:
    while True:
        z = rng.gamma(C.Z_GAMMA_SHAPE, C.Z_GAMMA_SCALE)
        if C.Z_MIN <= z <= C.Z_MAX:
            return float(z)


def draw_abs_mag(rng: np.random.Generator, z: float, faint: float = C.MAG_R_FAINT,
                 bright: float = C.MAG_R_BRIGHT) -> float:
    """Absolute r magnitude from the LF, truncated so 14 < m_r < faint at redshift ``z``.

    A mean K-correction of 1.2 z mag is allowed for in the limits.
    """
    m, cdf = _lf_grid()
    dm = distance_modulus(z) + 1.2 * z
    lo, hi = np.interp([bright - dm, faint - dm], m, cdf)
    return float(np.interp(rng.uniform(lo, hi), cdf, m))


@dataclasses.dataclass
class GalaxyParams:
    """Physical parameters of one galaxy (host, companion or remnant)."""

    z: float
    abs_mag_r: float
    quiescent: bool
    log_mstar: float = np.nan
    log_sfr: float = np.nan
    t_index: float = 0.0              # star-formation sequence index: 0 = E ... 3 = Im template
    age_gyr: float = np.nan
    dust_av: float = 0.0              # nebular V-band attenuation (mag)
    metallicity: float = np.nan       # 12 + log(O/H)
    bulge_frac: float = 0.0           # B/T in rest-frame r light
    bulge_n: float = 4.0
    r_eff_kpc: float = np.nan         # light-weighted half-light radius
    r_disk_arcsec: float = np.nan
    r_bulge_arcsec: float = np.nan
    q_disk: float = 1.0
    q_bulge: float = 1.0
    pa_deg: float = 0.0
    agn: bool = False
    log_l_oiii_agn: float = np.nan    # erg/s
    vel_disp: float = np.nan          # stellar σ (km/s)
    knot_frac: float = 0.0            # fraction of disk light in star-forming clumps
    n_knots: int = 0
    post_starburst: float = 0.0

    @property
    def log_ssfr(self) -> float:
        return self.log_sfr - self.log_mstar

    @property
    def r_eff_arcsec(self) -> float:
        return self.r_eff_kpc * arcsec_per_kpc(self.z)


def t_index_from_ssfr(log_ssfr: float) -> float:
    """Map specific SFR to the template sequence (E at sSFR ≲ 10^-12.6, Im at ≳ 10^-9.3 /yr)."""
    return float(np.interp(log_ssfr, [-12.6, -10.8, -10.1, -9.3], [0.0, 1.0, 2.0, 3.0]))


def mass_to_light_r(gr_rest: float) -> float:
    """log10 M/L_r from rest-frame g-r (Bell et al. 2003, diet Salpeter)."""
    return -0.306 + 1.097 * gr_rest


def draw_galaxy(rng: np.random.Generator, z: float, abs_mag_r: float, sfr_boost_dex: float = 0.0,
                agn_boost: float = 1.0, bulge_boost: float = 0.0, gr_rest_of=None) -> GalaxyParams:
    """Draw the intrinsic properties of a galaxy of given redshift and luminosity.

    Args:
        sfr_boost_dex: mean log SFR enhancement (interactions; Ellison et al. 2008, 2013).
        agn_boost: multiplier on the AGN probability (interactions trigger AGN).
        bulge_boost: added to B/T (merger remnants are more bulge-dominated).
        gr_rest_of: callable ``t_index -> rest-frame g-r`` used for the mass-to-light ratio.
    """
    lum = -0.4 * (abs_mag_r - C.M_SUN_R)  # log10 L_r / L_sun
    # quiescent fraction rises with luminosity (Baldry et al. 2006 red fraction vs M_r)
    p_q = 1.0 / (1.0 + np.exp(-(-abs_mag_r - 20.8) / 0.55))
    g = GalaxyParams(z=z, abs_mag_r=abs_mag_r, quiescent=bool(rng.random() < p_q))
    if g.quiescent:
        log_ssfr = rng.normal(-11.9, 0.4)
    else:
        log_ssfr = rng.normal(-10.0, 0.3)
    t0 = t_index_from_ssfr(log_ssfr)
    gr = gr_rest_of(t0) if gr_rest_of else 0.75 - 0.2 * t0
    g.log_mstar = float(lum + mass_to_light_r(gr) + rng.normal(0, 0.05))
    if not g.quiescent:  # star-forming main sequence (Renzini & Peng 2015), 0.3 dex scatter
        g.log_sfr = float(0.76 * g.log_mstar - 7.64 + rng.normal(0, 0.3))
    else:
        g.log_sfr = float(g.log_mstar + log_ssfr)
    g.log_sfr += float(sfr_boost_dex + (rng.normal(0, 0.25) if sfr_boost_dex else 0.0))
    g.t_index = t_index_from_ssfr(g.log_ssfr)
    g.age_gyr = float(10 ** (np.interp(g.t_index, [0, 1, 2, 3], np.log10([10.0, 6.0, 3.0, 1.2])) + rng.normal(0, 0.08)))
    # mass–metallicity relation (Tremonti et al. 2004)
    x = np.clip(g.log_mstar, 8.5, 11.5)
    g.metallicity = float(-1.492 + 1.847 * x - 0.08026 * x**2 + rng.normal(0, 0.1))
    # dust grows with mass in star-forming galaxies (Garn & Best 2010)
    if g.quiescent:
        g.dust_av = float(np.clip(rng.exponential(0.15), 0, 0.8))
    else:
        g.dust_av = float(np.clip(0.9 + 0.6 * (g.log_mstar - 10.0) + rng.normal(0, 0.35), 0.0, 3.0))
    # structure
    if g.quiescent:
        g.bulge_frac = float(np.clip(rng.beta(5, 2) + bulge_boost, 0.2, 1.0))
    else:
        g.bulge_frac = float(np.clip(rng.beta(1.3, 5) + bulge_boost, 0.0, 0.9))
    # quantised to 0.5 so GalSim can reuse its cached Sérsic tables (a 20× speed-up)
    g.bulge_n = float(np.round(np.clip(rng.normal(3.8, 0.6), 2.0, 5.5) * 2) / 2)
    # size–mass relations (Shen et al. 2003), 0.15 dex scatter
    if g.bulge_frac > 0.6:
        log_re = 0.56 * (g.log_mstar - 11.0) + 0.62
    else:
        log_re = 0.18 * (g.log_mstar - 10.5) + 0.60
    re_kpc = 10 ** (log_re + rng.normal(0, 0.15))
    a = arcsec_per_kpc(z)
    r_disk = re_kpc * a
    r_bulge = (re_kpc if g.bulge_frac > 0.85 else re_kpc * rng.uniform(0.15, 0.35)) * a
    g.r_disk_arcsec = float(max(r_disk, 0.25))
    g.r_bulge_arcsec = float(max(r_bulge, 0.15))
    g.r_eff_kpc = float((g.bulge_frac * g.r_bulge_arcsec + (1 - g.bulge_frac) * g.r_disk_arcsec) / a)
    cos_i = rng.uniform(0, 1)
    q0 = 0.15
    g.q_disk = float(np.sqrt(cos_i**2 * (1 - q0**2) + q0**2))
    g.q_bulge = float(rng.uniform(0.55, 1.0))
    g.pa_deg = float(rng.uniform(0, 180))
    # stellar velocity dispersion from mass (Faber–Jackson-like; Zahid et al. 2016)
    g.vel_disp = float(np.clip(10 ** (2.05 + 0.29 * (g.log_mstar - 10.5) + 0.08 * g.bulge_frac + rng.normal(0, 0.06)), 35, 380))
    # AGN incidence rises with mass (Kauffmann et al. 2003), boosted by interactions
    p_agn = agn_boost * 0.12 / (1 + np.exp(-(g.log_mstar - 10.6) / 0.3))
    g.agn = bool(rng.random() < min(p_agn, 0.9))
    if g.agn:
        g.log_l_oiii_agn = float(rng.uniform(39.3, 41.5))
    if not g.quiescent:
        g.knot_frac = float(np.clip(rng.lognormal(np.log(0.12), 0.5) * (g.t_index / 2.0), 0.0, 0.45))
        g.n_knots = int(rng.integers(8, 40))
    return g
