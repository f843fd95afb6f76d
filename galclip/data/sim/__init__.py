"""galclip's simulated SDSS-like survey: paired multi-band images and fibre spectra of galaxies
with known physical parameters and merger stages (the embedded default dataset).

Modules: :mod:`calibration` (numbers from real SDSS data and the literature),
:mod:`population` (physical parameters), :mod:`spectra` (SEDs, lines, dust, sky),
:mod:`images` (GalSim rendering, tidal structures, noise), :mod:`galaxy` (one galaxy),
:mod:`measure` (derived catalogue measurements), :mod:`survey` (``galclip simulate``),
:mod:`preview` (PNG of examples per merger stage).
"""
