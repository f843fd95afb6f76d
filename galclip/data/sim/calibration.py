"""Fixed numbers that tie the simulated survey to real SDSS data and published relations.

The simulator must run without ``../shared`` (a user's clone has no real data), so the few
distribution parameters it needs were derived ONCE from the real photometric catalogue
``../shared/data/catalogs/kcorrect_sdss_photometry_10k.fits`` (10,000 SDSS galaxies,
kcorrect test data, BSD-3) and are hardcoded here::

    t = Table.read(".../kcorrect_sdss_photometry_10k.fits")
    m = 22.5 - 2.5 log10(MODELFLUX) - EXTINCTION                  # AB, dereddened
    scipy.stats.gamma.fit(Z, floc=0)  -> shape 3.564, scale 0.03062   (mean z 0.109)
    percentiles(Z, [1, 50, 99])       -> 0.021, 0.099, 0.285
    percentiles(r, [1, 50, 99])       -> 14.06, 16.71, 17.92      (main-sample limit 17.77)
    percentiles(g-r, [5, 25, 50, 75, 95]) -> 0.53, 0.77, 0.90, 1.04, 1.34

The rest are published scaling relations, cited where used.
"""
from __future__ import annotations

# -- redshift and magnitude selection (kcorrect_sdss_photometry_10k.fits, see above) ------
Z_GAMMA_SHAPE = 3.564
Z_GAMMA_SCALE = 0.03062
Z_MIN, Z_MAX = 0.01, 0.35
MAG_R_BRIGHT, MAG_R_FAINT = 14.0, 17.77          # SDSS main galaxy sample r_petro < 17.77
#: observed g-r percentiles (5, 25, 50, 75, 95) of the same catalogue, used by tests/benchmarks
GR_PERCENTILES = (0.53, 0.77, 0.90, 1.04, 1.34)

# -- luminosity function (Blanton et al. 2003, r band at z=0.1, converted to h=0.7) -------
LF_MSTAR_R = -21.21
LF_ALPHA = -1.05
M_SUN_R = 4.65                                     # AB absolute magnitude of the Sun, r

# -- cosmology ---------------------------------------------------------------------------
H0, OM0 = 70.0, 0.3

# -- SDSS instrument -----------------------------------------------------------------------
PIXEL_SCALE = 0.396                                # arcsec / pixel
FIBRE_RADIUS = 1.5                                 # arcsec (3" fibres)
SEEING_R_MEDIAN, SEEING_R_SIGMA = 1.35, 0.20       # arcsec FWHM, SDSS DR7 imaging
#: per-band seeing relative to r (atmospheric FWHM ∝ λ^-0.2)
SEEING_BAND_FACTOR = {"u": 1.12, "g": 1.07, "r": 1.0, "i": 0.96, "z": 0.94}
#: photo-electrons per nanomaggy in one SDSS exposure (53.9 s): flux calibration
#: (~0.005 nmgy/DN in r) × CCD gain (~4.7 e-/DN), approximate per band. With the sky
#: below this gives sky-limited noise of ≈0.014/0.024/0.040/0.17 nmgy/pixel in g/r/i/z and
#: 5σ PSF-photometry depths ≈23.6/23.0/22.5/20.9 (the often quoted 22.2/22.2/21.3/20.5 are
#: 95%-completeness limits of the detection pipeline, ~1 mag brighter).
ELECTRONS_PER_NMGY = {"u": 200.0, "g": 1300.0, "r": 1180.0, "i": 800.0, "z": 150.0}
#: sky surface brightness (AB mag / arcsec^2), dark time (SDSS DR7)
SKY_SB = {"u": 22.1, "g": 22.0, "r": 20.9, "i": 20.2, "z": 18.9}
#: galsim share/bandpasses throughput files used for each band. GalSim ships no SDSS
#: curves; LSST ugriz have nearly the same edges (within ~20 nm) and are used instead.
BANDPASS_FILES = {b: f"LSST_{b}.dat" for b in "ugriz"}

# -- spectrograph (SDSS legacy) ------------------------------------------------------------
SPEC_WAVE_MIN, SPEC_WAVE_MAX, SPEC_NPIX = 3800.0, 9200.0, 3840
SIGMA_INSTRUMENT_KMS = 65.0                        # R ≈ 2000

# -- survey depth presets --------------------------------------------------------------------
#: ``depth_mag``: how much fainter (mag/arcsec²) the sky-noise floor is than SDSS — the
#: effective exposure grows by 10^(0.8 depth_mag), the sky σ per pixel drops by 10^(-0.4 depth_mag).
#: ``seeing_r``: median r-band PSF FWHM (arcsec); its log-normal scatter keeps SDSS's relative width.
#:
#: * ``sdss``: SDSS DR7 legacy imaging — 53.9 s drift scans, 1σ surface-brightness limit
#:   ≈ 26.5 r mag/arcsec² on 10"×10" boxes, median seeing 1.35" (Abazajian et al. 2009).
#: * ``deep``: HSC-SSP Wide / DESI Legacy Imaging-like — ≈ 2 mag/arcsec² deeper surface-brightness
#:   limit (28.5–29 r mag/arcsec² on 10" boxes: Aihara et al. 2018 HSC-Wide; Dey et al. 2019 and
#:   Martin et al. 2022 for Legacy Survey and the LSB limits), median seeing ≈ 0.8" (HSC-Wide r
#:   0.7–0.8"; Aihara et al. 2022). At this depth 40–70 % of massive galaxies and most ongoing or
#:   recent mergers show tidal features (Tal et al. 2009; Atkinson, Abraham & Ferguson 2013;
#:   Bílek et al. 2020; Martin et al. 2022), against a few per cent at SDSS depth.
SURVEY_PRESETS = {
    "sdss": {"depth_mag": 0.0, "seeing_r": SEEING_R_MEDIAN},
    "deep": {"depth_mag": 2.0, "seeing_r": 0.8},
}
