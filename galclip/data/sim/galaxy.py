"""One simulated galaxy: physical parameters → scene of components → image + fibre spectrum.

Everything about galaxy ``index`` is drawn from ``np.random.default_rng([seed, index])``, so
a galaxy is identical whichever process or shard simulates it.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from galclip.data import schema as S
from galclip.data.sim import calibration as C
from galclip.data.sim import images as I
from galclip.data.sim import population as P
from galclip.data.sim import spectra as X

MERGER_STAGE_NAMES = S.MERGER_STAGES


@dataclasses.dataclass
class SimParams:
    """Knobs of the simulated survey that change a galaxy (kept small; see SimulateConfig)."""

    bands: tuple[str, ...] = ("g", "r", "i", "z")
    image_size: int = 64
    pixel_scale: float = C.PIXEL_SCALE
    merger_fraction: float = 0.12
    projected_fraction: float = 0.08
    stage_weights: tuple[float, float, float] = (0.4, 0.25, 0.35)
    difficulty: float = 1.0
    image_noise: float = 1.0
    spectrum_noise: float = 1.0
    field_density: float = 1.2
    star_density: float = 0.3
    cosmic_rate: float = 0.3
    survey: str = "sdss"

    @property
    def depth(self) -> dict[str, float]:
        """The imaging depth preset (:data:`calibration.SURVEY_PRESETS`)."""
        return C.SURVEY_PRESETS[self.survey]

    @property
    def image_noise_scale(self) -> float:
        """Image noise multiplier: difficulty × ``image_noise`` × the preset's depth."""
        return self.noise_scale * self.image_noise * 10 ** (-0.4 * self.depth["depth_mag"])

    @property
    def feature_scale(self) -> float:
        """Tidal-feature light multiplier: 3× brighter at difficulty 0, 3× fainter at 2."""
        return float(3.0 ** (1.0 - self.difficulty))

    @property
    def noise_scale(self) -> float:
        return float(1.5 ** (self.difficulty - 1.0))


@functools.lru_cache(maxsize=8)
def _weights(bands: tuple[str, ...]) -> np.ndarray:
    return X.band_weights(bands)


@functools.lru_cache(maxsize=1)
def _rest_gr_table() -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame g-r of the template sequence (for Bell et al. M/L)."""
    w = X.band_weights(("g", "r"))
    t = np.linspace(0, 3, 31)
    gr = []
    for ti in t:
        f = w @ X.continuum_shape(ti, 0.0)
        gr.append(-2.5 * np.log10(f[0] / f[1]))
    return t, np.array(gr)


def rest_gr(t: float) -> float:
    tt, gr = _rest_gr_table()
    return float(np.interp(t, tt, gr))


def draw_stage(rng: np.random.Generator, p: SimParams) -> int:
    """Merger stage 0..4 with the configured merger / projected-pair fractions."""
    u = rng.random()
    if u < p.merger_fraction:
        w = np.asarray(p.stage_weights, float)
        return int(2 + rng.choice(3, p=w / w.sum()))
    if u < p.merger_fraction + p.projected_fraction:
        return 1
    return 0


# -- interactions ----------------------------------------------------------------------------

def draw_pair_separation_kpc(rng: np.random.Generator, stage: int) -> float:
    """Projected separation of an interacting pair (kpc); NaN for stages without a bound companion.

    Visually identified interacting pairs sit at r_p ≲ 30 kpc (Darg et al. 2010; Patton et al.
    2013 find the strongest interaction signatures there); satellites being disrupted in minor
    mergers are closer still.
    """
    if stage == 2:
        return float(rng.uniform(5.0, 30.0))
    if stage == 3:
        return float(rng.uniform(3.0, 20.0))
    return float("nan")


def interaction_boost(stage: int, rp_kpc: float) -> tuple[float, float, float]:
    """(mean Δlog SFR, AGN-probability multiplier, added B/T) of the primary, by merger stage.

    * close pairs: SFR enhanced by ≈0.3 dex at r_p < 20 kpc, decaying with separation
      (Ellison et al. 2008; Scudder et al. 2012; Patton et al. 2013 — modelled as
      0.35 exp(-r_p / 40 kpc)); AGN fraction ×2.5 in the closest pairs (Ellison et al. 2011);
    * minor mergers: weaker, ≈0.1 dex for the primary (Ellison et al. 2008; Scudder et al. 2012);
    * post-mergers: SFR ×≈3 (0.45 dex) and optical AGN excess ×3.75 (Ellison et al. 2013),
      more bulge-dominated remnants.
    """
    if stage == 2:
        return 0.35 * float(np.exp(-rp_kpc / 40.0)), 1.0 + 1.5 * float(np.exp(-rp_kpc / 20.0)), 0.0
    if stage == 3:
        return 0.1, 1.5, 0.0
    if stage == 4:
        return 0.45, 3.75, 0.2
    return 0.0, 1.0, 0.0


def companion_boost(stage: int, rp_kpc: float) -> tuple[float, float, float]:
    """The companion's boost: as the primary in major pairs; the satellite of a minor merger is
    enhanced more strongly than its host (Scudder et al. 2012); projected galaxies are unaffected."""
    if stage == 2:
        return interaction_boost(stage, rp_kpc)
    if stage == 3:
        return 0.2, 1.3, 0.0
    return 0.0, 1.0, 0.0


# -- spectra of components -------------------------------------------------------------------

def stellar_spectrum(t: float, ebv_star: float, z: float, abs_mag_r: float, sigma_kms: float,
                     post_starburst: float = 0.0) -> np.ndarray:
    """Observed f_λ (erg/s/cm²/Å) of a stellar population with rest-frame absolute r mag."""
    rest_wave = X.FINE_WAVE / (1 + z)
    shape_obs = X.continuum_shape(t, z) * 10 ** (-0.4 * X.calzetti_fast(rest_wave) * ebv_star)
    shape_obs *= X.absorption_factor(t, z, sigma_kms, post_starburst)
    shape0 = X.continuum_shape(t, 0.0) * 10 ** (-0.4 * X.calzetti_fast(X.FINE_WAVE) * ebv_star)
    w_r = _weights(("r",))[0]
    target = 3.631e-20 * 10 ** (-0.4 * abs_mag_r)  # f_ν at 10 pc
    scale = target / float(w_r @ shape0)
    d_ratio = (10 * X.PC_CM / P.lum_distance_cm(z)) ** 2
    return shape_obs * scale * d_ratio / (1 + z)


def galaxy_components(g: P.GalaxyParams, owner: str, rng: np.random.Generator, p: SimParams, x0: float, y0: float,
                      tidal_frac: float = 0.0, distort: float = 0.0, lopsided: float = 0.0
                      ) -> tuple[list[I.Component], dict[str, np.ndarray]]:
    """Bulge, disk and clump components of galaxy ``g`` centred at (x0, y0) arcsec.

    ``tidal_frac`` of the disk light is removed here and returned (as a spectrum) for the
    caller to redistribute into tidal structures. ``distort`` is an extra random shear of the
    outer disk, ``lopsided`` an offset of the disk from the bulge in units of its radius.
    """
    w = _weights(p.bands)
    dl = P.lum_distance_cm(g.z)
    ebv_gas = g.dust_av / 4.05
    incl = 1 + 0.6 * (1 - g.q_disk)
    bt = g.bulge_frac
    comps: list[I.Component] = []
    # tidal debris is drawn from the disc and, in remnants, the spheroid alike
    mags = {"bulge": g.abs_mag_r - 2.5 * np.log10(max(bt * (1 - tidal_frac), 1e-4)),
            "disk": g.abs_mag_r - 2.5 * np.log10(max((1 - bt) * (1 - g.knot_frac) * (1 - tidal_frac), 1e-4)),
            "knots": g.abs_mag_r - 2.5 * np.log10(max((1 - bt) * g.knot_frac, 1e-6)),
            "tidal": g.abs_mag_r - 2.5 * np.log10(max(((1 - bt) * (1 - g.knot_frac) + bt) * tidal_frac, 1e-6))}
    t_disk = min(3.0, g.t_index + 0.6 * bt)
    t_bulge = 0.3 * g.t_index
    sig_gas = 45.0 + 0.25 * g.vel_disp
    # nebular lines: SF lines split between diffuse disk and clumps; AGN lines nuclear
    l_ha = 10 ** g.log_sfr / X.L_SUN_HALPHA_KENNICUTT
    sf_ratios = X.LineFluxes.star_forming(g.metallicity, rng)
    f_knot_lines = min(0.7, 2.5 * g.knot_frac)
    spec = {}
    if bt > 0.005:
        spec["bulge"] = stellar_spectrum(t_bulge, 0.44 * 0.3 * ebv_gas, g.z, mags["bulge"], g.vel_disp, g.post_starburst)
        if g.agn:
            agn_ratios = X.LineFluxes.agn(rng)
            l_ha_agn = 10 ** g.log_l_oiii_agn / agn_ratios.ratios["oiii5007"]
            spec["bulge"] = spec["bulge"] + X.emission_spectrum(l_ha_agn, agn_ratios, g.z, dl, 0.5 * ebv_gas,
                                                                rng.uniform(150, 350))
    if bt < 0.995:
        disk = stellar_spectrum(t_disk, 0.44 * ebv_gas * incl, g.z, mags["disk"], 0.6 * g.vel_disp, g.post_starburst)
        lines = X.emission_spectrum(l_ha, sf_ratios, g.z, dl, ebv_gas * incl, sig_gas)
        spec["disk"] = disk + lines * (1 - f_knot_lines) * (1 - 0.5 * tidal_frac)
        if g.knot_frac > 0 and g.n_knots:
            spec["knots"] = stellar_spectrum(3.0, 0.3 * ebv_gas, g.z, mags["knots"], 40.0) + lines * f_knot_lines
    if tidal_frac > 0:
        spec["tidal"] = stellar_spectrum(t_disk, 0.2 * ebv_gas, g.z, mags["tidal"], 0.5 * g.vel_disp)
        if "disk" in spec:
            spec["tidal"] = spec["tidal"] + lines * 0.5 * tidal_frac
    pa = g.pa_deg
    g1, g2 = (rng.normal(0, distort, 2) if distort else (0.0, 0.0))
    if "bulge" in spec:
        prof = I.sersic(g.bulge_n, g.r_bulge_arcsec, g.q_bulge, pa + rng.normal(0, 10), x0, y0)
        comps.append(I.Component("bulge", owner, w @ spec["bulge"], profile=prof, spectrum=spec["bulge"]))
    if "disk" in spec:
        ang = rng.uniform(0, 2 * np.pi)
        off = lopsided * g.r_disk_arcsec
        prof = I.sersic(1.0, g.r_disk_arcsec, g.q_disk, pa, x0 + off * np.cos(ang), y0 + off * np.sin(ang), g1, g2)
        comps.append(I.Component("disk", owner, w @ spec["disk"], profile=prof, spectrum=spec["disk"]))
    if "knots" in spec:
        pm = I.knots_map(rng, g.n_knots, g.r_disk_arcsec, g.q_disk, pa, x0, y0, p.image_size, p.pixel_scale)
        comps.append(I.Component("knots", owner, w @ spec["knots"], pixmap=pm, spectrum=spec["knots"]))
    for c in comps:
        c.flux = X.fnu_to_nanomaggies(c.flux)
    return comps, {"tidal": spec.get("tidal")}


def _tidal_components(kind: str, rng: np.random.Generator, p: SimParams, spectrum: np.ndarray, owner: str,
                      g: P.GalaxyParams, x0: float, y0: float, partner: tuple[float, float] | None) -> list[I.Component]:
    """Tidal structure maps for one galaxy; total light = ``spectrum`` split over the pieces."""
    if spectrum is None:
        return []
    w = _weights(p.bands)
    kpc = P.arcsec_per_kpc(g.z)                   # tidal debris has physical sizes of 10-50 kpc
    r = max(g.r_eff_kpc, 2.0) * kpc
    maps: list[np.ndarray] = []
    size, sc = p.image_size, p.pixel_scale
    if kind == "major":
        for _ in range(int(rng.integers(1, 3))):
            length = rng.uniform(15.0, 50.0) * kpc   # 10-50 kpc tails (Hibbard & van Gorkom 1996)
            maps.append(I.tail_map(rng, x0, y0, rng.uniform(0, 2 * np.pi), length, rng.choice([-1, 1]) *
                                   rng.uniform(0.6, 2.2) / length, rng.uniform(1.0, 2.5) * kpc, size, sc))
        if partner is not None and rng.random() < 0.6:
            maps.append(I.bridge_map(rng, x0, y0, partner[0], partner[1], rng.uniform(-0.35, 0.35),
                                     rng.uniform(1.0, 3.0) * kpc, size, sc))
    elif kind == "minor":
        # a stream wrapping partly round the host, stripped from the satellite
        ang0 = np.arctan2(y0 - (partner[1] if partner else 0), x0 - (partner[0] if partner else 0)) + np.pi / 2
        length = rng.uniform(15.0, 50.0) * kpc
        maps.append(I.tail_map(rng, x0, y0, ang0, length, rng.choice([-1, 1]) * rng.uniform(1.0, 2.5) / length,
                               rng.uniform(0.8, 2.0) * kpc, size, sc))
    elif kind == "post":
        if rng.random() < 0.2 + 0.6 * g.bulge_frac:  # shells mostly around early-type remnants
            maps.append(I.shells_map(rng, x0, y0, max(r * 1.5, rng.uniform(5.0, 12.0) * kpc), int(rng.integers(2, 5)),
                                     rng.uniform(0, 2 * np.pi), size, sc))
        for _ in range(int(rng.integers(0, 3))):
            length = rng.uniform(10.0, 35.0) * kpc
            maps.append(I.tail_map(rng, x0, y0, rng.uniform(0, 2 * np.pi), length, rng.choice([-1, 1]) *
                                   rng.uniform(0.5, 1.5) / length, rng.uniform(2.0, 5.0) * kpc, size, sc))
        if not maps or rng.random() < 0.5:  # asymmetric, disturbed outer envelope (plume)
            ang = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(3.0, 8.0) * kpc
            n = 25
            xs = x0 + d * np.cos(ang) * np.linspace(0.3, 1.2, n) + rng.normal(0, 0.6 * d / 3, n)
            ys = y0 + d * np.sin(ang) * np.linspace(0.3, 1.2, n) + rng.normal(0, 0.6 * d / 3, n)
            maps.append(I.blobs_map(xs, ys, np.full(n, rng.uniform(2.0, 4.0) * kpc), np.ones(n), size, sc))
    if not maps:
        return []
    share = rng.dirichlet(np.full(len(maps), 2.0))
    out = []
    for m, s in zip(maps, share):
        out.append(I.Component("tidal", owner, X.fnu_to_nanomaggies(w @ spectrum) * s, pixmap=m, spectrum=spectrum * s))
    return out


def _planck(temp: float) -> np.ndarray:
    lam_cm = X.FINE_WAVE * 1e-8
    return 1.0 / (lam_cm**5 * (np.exp(1.4388 / (lam_cm * temp)) - 1.0))


def _scaled_to_r(spec: np.ndarray, mag_r: float, p: SimParams) -> np.ndarray:
    w_r = _weights(("r",))[0]
    return spec * (3.631e-29 * 10 ** (-0.4 * (mag_r - 22.5))) / float(w_r @ spec)


def contaminants(rng: np.random.Generator, p: SimParams) -> list[I.Component]:
    """Unrelated field galaxies and foreground stars in the cutout (all merger stages)."""
    w = _weights(p.bands)
    half = p.image_size * p.pixel_scale / 2
    comps = []
    for _ in range(rng.poisson(p.field_density)):
        zf = float(np.clip(rng.gamma(2.5, 0.12), 0.02, 1.2))
        mag = 19.0 + 4.5 * rng.power(2.5)   # steep faint counts
        x, y = rng.uniform(-half, half, 2)
        if np.hypot(x, y) < 2.5:
            x, y = x + np.sign(x or 1) * 2.5, y
        spec = _scaled_to_r(X.continuum_shape(rng.uniform(0, 3), zf) * 10 ** (-0.4 * X.calzetti_fast(X.FINE_WAVE / (1 + zf)) * rng.uniform(0, 0.2)), mag, p)
        n = float(rng.choice([1.0, 1.0, 2.0, 4.0]))
        prof = I.sersic(n, rng.uniform(0.3, 1.3), rng.uniform(0.3, 1.0), rng.uniform(0, 180), x, y)
        comps.append(I.Component("field", "field", X.fnu_to_nanomaggies(w @ spec), profile=prof, spectrum=spec))
    for _ in range(rng.poisson(p.star_density)):
        mag = 15.0 + 7.0 * rng.power(1.6)
        x, y = rng.uniform(-half, half, 2)
        if np.hypot(x, y) < 3.0:
            x, y = x + np.sign(x or 1) * 3.0, y
        spec = _scaled_to_r(_planck(rng.uniform(3300, 7500)), mag, p)
        pm = I.blobs_map(np.array([x]), np.array([y]), np.array([0.05]), np.array([1.0]), p.image_size, p.pixel_scale)
        comps.append(I.Component("star", "field", X.fnu_to_nanomaggies(w @ spec), pixmap=pm, spectrum=spec))
    return comps


# -- the galaxy ------------------------------------------------------------------------------

def simulate_galaxy(seed: int, index: int, p: SimParams, stage: int | None = None) -> dict[str, Any]:
    """Simulate galaxy ``index`` of the survey with ``seed``: returns a ShardWriter row.

    The row holds the image, ivar, fibre spectrum and every physical parameter as labels;
    ``_model`` (noiseless image) and ``_fibre_model`` are added for tests and previews and
    are not written to shards.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    if stage is None:
        stage = draw_stage(rng, p)
    else:
        draw_stage(rng, p)  # keep the random stream aligned
    z = P.draw_redshift(rng)
    mag = P.draw_abs_mag(rng, z)
    rp_kpc = draw_pair_separation_kpc(rng, stage)
    host = P.draw_galaxy(rng, z, mag, *interaction_boost(stage, rp_kpc), gr_rest_of=rest_gr)
    if stage == 4 and rng.random() < 0.35:
        host.post_starburst = float(rng.uniform(0.2, 1.0))
    fs = p.feature_scale
    # tidal debris carries a few per cent of a galaxy's light, up to ~20 % in major-merger
    # tails (Hibbard & van Gorkom 1996; Ji, Peirani & Yi 2014; Martin et al. 2022): median
    # 7 % / 4 % / 6 % of the disc for major / minor / post-mergers, log-normal 0.8 dex (e-fold) scatter
    tidal_median = {2: 0.07, 3: 0.04, 4: 0.06}.get(stage, 0.0)
    tidal_frac = float(np.clip(tidal_median * fs * rng.lognormal(0, 0.8), 0, 0.35)) if tidal_median else 0.0
    distort = {2: 0.10, 3: 0.04, 4: 0.08}.get(stage, 0.015) * min(fs, 2.0)
    lopsided = {2: 0.25, 3: 0.1, 4: 0.3}.get(stage, 0.05) * rng.uniform(0, 1)
    x0, y0 = rng.uniform(-0.5, 0.5, 2) * p.pixel_scale
    comps, extra = galaxy_components(host, "host", rng, p, x0, y0, tidal_frac, distort, lopsided)
    comp_g: P.GalaxyParams | None = None
    sep = np.nan
    mass_ratio = np.nan
    partner = None
    if stage in (1, 2, 3):
        if stage == 1:
            while True:
                z2 = P.draw_redshift(rng)
                if abs(z2 - z) > 0.02:
                    break
            m_app = (mag + P.distance_modulus(z)) + rng.uniform(-0.3, 2.5)
            mag2 = m_app - P.distance_modulus(z2)
            sep = rng.uniform(2.5, 11.0)
        else:
            z2 = float(z + rng.normal(0, 200.0) / X.C_KMS * (1 + z))
            lo, hi = (0.25, 1.0) if stage == 2 else (0.08, 0.25)
            mass_ratio = float(rng.uniform(lo, hi))
            mag2 = mag - 2.5 * np.log10(mass_ratio) * rng.uniform(0.8, 1.1)
            half = p.image_size * p.pixel_scale / 2
            sep = float(np.clip(rp_kpc * P.arcsec_per_kpc(z), 1.5, 0.85 * half))
        b2 = companion_boost(stage, rp_kpc)
        comp_g = P.draw_galaxy(rng, float(z2), float(mag2), *b2, gr_rest_of=rest_gr)
        ang = rng.uniform(0, 2 * np.pi)
        partner = (x0 + sep * np.cos(ang), y0 + sep * np.sin(ang))
        ctf = tidal_frac * rng.uniform(0.3, 1.0) if stage == 2 else 0.0
        c2, extra2 = galaxy_components(comp_g, "companion", rng, p, partner[0], partner[1], ctf,
                                       distort if stage == 2 else 0.0, lopsided if stage == 2 else 0.0)
        comps += c2
        if stage == 2:
            comps += _tidal_components("major", rng, p, extra2["tidal"], "companion", comp_g, partner[0], partner[1], (x0, y0))
    if stage == 4:
        mass_ratio = float(rng.uniform(0.2, 1.0))
        if rng.random() < 0.25:  # second nucleus not yet coalesced
            off = rng.uniform(0.6, 1.6)
            a = rng.uniform(0, 2 * np.pi)
            nuc = comps[0].spectrum * rng.uniform(0.1, 0.3)
            comps.append(I.Component("bulge", "host", X.fnu_to_nanomaggies(_weights(p.bands) @ nuc),
                                     profile=I.sersic(2.5, 0.3, 0.8, 0, x0 + off * np.cos(a), y0 + off * np.sin(a)),
                                     spectrum=nuc))
    if stage in (2, 3, 4):
        kind = {2: "major", 3: "minor", 4: "post"}[stage]
        comps += _tidal_components(kind, rng, p, extra["tidal"], "host", host, x0, y0, partner)
    comps += contaminants(rng, p)

    seeing_r = draw_seeing(rng, p.depth["seeing_r"])
    psf = np.array([seeing_r * C.SEEING_BAND_FACTOR.get(b, 1.0) for b in p.bands])
    fibre_band = p.bands.index("r") if "r" in p.bands else len(p.bands) // 2
    model, fracs = I.render(comps, psf, p.image_size, p.pixel_scale, fibre_band)
    image, ivar = I.add_noise(rng, model, p.bands, psf, p.pixel_scale, p.image_noise_scale, p.cosmic_rate)

    fibre_fine = sum(fracs[i] * c.spectrum for i, c in enumerate(comps) if c.spectrum is not None)
    fibre_model = fibre_fine[X.SDSS_SLICE] / 1e-17
    flux, ivar_s, mask = observe_spectrum(rng, fibre_fine, p.noise_scale * p.spectrum_noise)

    host_flux = sum(c.flux for c in comps if c.owner == "host")
    mags = X.nanomaggies_to_mag(host_flux)
    ra, dec = sky_position(rng)
    row: dict[str, Any] = {
        S.OBJECT_ID: f"sim{index:09d}", S.RA: ra, S.DEC: dec, S.Z: z,
        S.HAS_IMAGE: True, S.IMAGE: image, S.IMAGE_IVAR: ivar, S.IMAGE_SCALE: p.pixel_scale, S.IMAGE_PSF: psf,
        S.HAS_SPECTRUM: True, S.SPEC_FLUX: flux, S.SPEC_IVAR: ivar_s, S.SPEC_MASK: mask,
        "redshift": z, "merger": int(S.MERGER_STAGE_IS_MERGER[stage]), "merger_stage": stage,
        "log_mstar": host.log_mstar, "log_sfr": host.log_sfr, "log_ssfr": host.log_ssfr, "age_gyr": host.age_gyr,
        "dust_av": host.dust_av, "metallicity": host.metallicity, "bulge_frac": host.bulge_frac,
        "sersic_n_bulge": host.bulge_n, "r_eff_arcsec": host.r_eff_arcsec, "r_eff_kpc": host.r_eff_kpc,
        "axis_ratio": host.q_disk if host.bulge_frac < 0.5 else host.q_bulge, "position_angle": host.pa_deg,
        "agn": int(host.agn), "vel_disp": host.vel_disp, "abs_mag_r": host.abs_mag_r, "quiescent": int(host.quiescent),
        "sf_template_index": host.t_index, "post_starburst": host.post_starburst,
        "mass_ratio": mass_ratio, "companion_sep_arcsec": sep, "companion_sep_kpc": rp_kpc,
        "companion_z": comp_g.z if comp_g is not None else np.nan,
        "companion_log_mstar": comp_g.log_mstar if comp_g is not None else np.nan,
        "tidal_frac": tidal_frac, "psf_fwhm_r": seeing_r,
        "n_contaminants": sum(1 for c in comps if c.owner == "field"),
        "fibre_mag_r": float(X.nanomaggies_to_mag(sum(fracs[i] * c.flux[fibre_band] for i, c in enumerate(comps)))),
        "_model": model, "_fibre_model": fibre_model,
    }
    for b, m in zip(p.bands, mags):
        row[f"mag_{b}"] = float(m)
    if "g" in p.bands and "r" in p.bands:
        row["g_r"] = float(mags[p.bands.index("g")] - mags[p.bands.index("r")])
    return row


def label_columns(bands: tuple[str, ...]) -> list[str]:
    """Label/parameter columns written for a survey with these bands."""
    cols = ["redshift", "merger", "merger_stage", "log_mstar", "log_sfr", "log_ssfr", "age_gyr", "dust_av",
            "metallicity", "bulge_frac", "sersic_n_bulge", "r_eff_arcsec", "r_eff_kpc", "axis_ratio", "position_angle",
            "agn", "vel_disp", "abs_mag_r", "quiescent", "sf_template_index", "post_starburst", "mass_ratio",
            "companion_sep_arcsec", "companion_sep_kpc", "companion_z", "companion_log_mstar", "tidal_frac", "psf_fwhm_r",
            "n_contaminants", "fibre_mag_r"]
    cols += [f"mag_{b}" for b in bands]
    if "g" in bands and "r" in bands:
        cols.append("g_r")
    return cols


def draw_seeing(rng: np.random.Generator, median: float) -> float:
    """r-band PSF FWHM: log-normal around the preset's median with SDSS's relative scatter."""
    lo, hi = 0.85 / C.SEEING_R_MEDIAN, 2.4 / C.SEEING_R_MEDIAN
    return float(np.clip(rng.lognormal(np.log(median), C.SEEING_R_SIGMA / C.SEEING_R_MEDIAN), lo * median, hi * median))


def sky_position(rng: np.random.Generator, ra0: float = 180.0, dec0: float = 30.0, half_deg: float = 10.0) -> tuple[float, float]:
    """Uniform position on the sphere inside a 20°×20° patch (SDSS-like northern cap)."""
    s0, s1 = np.sin(np.deg2rad(dec0 - half_deg)), np.sin(np.deg2rad(dec0 + half_deg))
    dec = float(np.rad2deg(np.arcsin(rng.uniform(s0, s1))))
    ra = float((ra0 + rng.uniform(-half_deg, half_deg) / np.cos(np.deg2rad(dec0))) % 360.0)
    return ra, dec


def observe_spectrum(rng: np.random.Generator, fibre_fine: np.ndarray, noise_scale: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fibre f_λ → SDSS-grid flux (1e-17 erg/s/cm²/Å), ivar and bad-pixel mask.

    Noise: sky continuum + sky lines over the throughput, plus source shot noise. Sky-line
    subtraction residuals (amplitude and wavelength-shift terms) are added *without* being
    in the ivar, as in real reductions; line cores of the brightest sky lines, and random
    runs of bad columns, are masked.
    """
    sl = X.SDSS_SLICE
    f = fibre_fine[sl] / 1e-17
    sky_c, sky_l = (a[sl] for a in X.sky_model())
    thr = X.throughput()[sl]
    sigma0 = 0.55 * noise_scale
    var = sigma0**2 * (sky_c + 0.25 * sky_l) / thr**2 + np.maximum(f, 0) / (25.0 * thr)
    sig = np.sqrt(var)
    resid = sigma0 * (rng.normal(0, 0.04) * sky_l + rng.normal(0, 0.3) * np.gradient(sky_l)) / thr
    flux = f + resid + rng.normal(0, 1, f.size) * sig
    ivar = 1.0 / var
    mask = np.zeros(f.size, bool)
    mask |= (sky_l > 25.0) & (rng.random() < 0.5)
    for _ in range(rng.poisson(0.4)):
        j = int(rng.integers(0, f.size))
        mask[j:j + int(rng.integers(3, 40))] = True
    hits = rng.integers(0, f.size, rng.poisson(2))  # cosmic rays
    flux[hits] += sig[hits] * rng.uniform(10, 50, hits.size)
    mask[hits] = True
    ivar = np.where(mask, 0.0, ivar)
    return flux.astype(np.float32), ivar.astype(np.float32), mask
