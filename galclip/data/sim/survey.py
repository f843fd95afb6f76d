"""``galclip simulate``: write a simulated SDSS-like paired image+spectrum survey.

The survey is galclip's embedded default dataset. Galaxy ``i`` depends only on
``(seed, i)``, so the output is identical for any ``n_jobs``, and a killed run resumes from
the last complete shard (ShardWriter ``resume``) without duplicating or changing rows.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from galclip.config import to_dict
from galclip.data import schema as S
from galclip.data.morphology import MorphologyOptions
from galclip.data.sim import calibration as C
from galclip.data.sim.galaxy import SimParams, label_columns, simulate_galaxy
from galclip.data.sim.measure import SPECTRAL_COLUMNS, measure_lines
from galclip.errors import ConfigError

log = logging.getLogger(__name__)

#: config keys that may change between a killed run and its resumption
_RESUMABLE_KEYS = {"n", "n_jobs", "progress", "resume", "preview", "preview_per_stage", "out", "chunk_size"}


@dataclasses.dataclass
class SimulateConfig:
    """Simulated survey settings (``configs/simulate.yaml``).

    Attributes:
        out: dataset directory (shards + manifest + ``catalog.csv``), or where
            ``preview.png`` goes with ``preview``.
        n: number of galaxies.
        seed: survey seed; galaxy i uses ``default_rng([seed, i])``.
        bands: image bands (subset of ugriz; 'r' carries the fibre and morphology).
        image_size: cutout size (pixels); pixel_scale: arcsec/pixel (SDSS 0.396).
        merger_fraction: fraction of galaxies in stages 2-4 (binary ``merger`` = 1).
        projected_fraction: fraction of chance projected pairs (stage 1, not mergers).
        stage_weights: relative frequency of major pre-merger, minor merger, post-merger.
        survey: imaging depth preset (:data:`calibration.SURVEY_PRESETS`): ``sdss`` (SDSS legacy
            depth and seeing) or ``deep`` (HSC-Wide / Legacy-Survey-like: ≈2 mag/arcsec² deeper,
            0.8" seeing), where tidal features of most mergers are visible. Spectra stay SDSS-like.
        difficulty: 0 easy (bright tidal features, deep) · 1 SDSS-like default · 2 harder.
        image_noise, spectrum_noise: extra noise multipliers on top of ``difficulty``.
        field_density, star_density: mean unrelated galaxies / stars per cutout.
        cosmic_rate: mean masked cosmic-ray hits per band.
        derived: also write catalogue measurements (line fluxes/EWs, D4000, and with
            ``morphology`` the statmorph statistics of the r-band image) as tabular columns.
        morphology: include the statmorph morphology of the r-band image in ``derived``.
            Off by default: it costs ~0.3 CPU-s per galaxy, ~8× the simulation itself;
            downstream stages compute it on demand for the (few) galaxies they need.
        morph: how it is measured (:class:`MorphologyOptions`); ``morph.size: 32`` with
            ``morph.mid: false`` costs ~0.08 CPU-s per galaxy (the demo's choice).
        n_jobs: worker processes; shard_size: rows per shard; chunk_size: galaxies per task.
        resume: continue an interrupted run in ``out`` (must have the same settings).
        preview: instead of a survey, write ``out/preview.png`` (examples per merger stage).
        preview_per_stage: examples per stage in the preview.
        progress: show a tqdm progress bar.
    """

    out: str = "data/sim"
    n: int = 10000
    seed: int = 0
    bands: list[str] = dataclasses.field(default_factory=lambda: ["g", "r", "i", "z"])
    image_size: int = 64
    pixel_scale: float = C.PIXEL_SCALE
    merger_fraction: float = 0.12
    projected_fraction: float = 0.08
    stage_weights: list[float] = dataclasses.field(default_factory=lambda: [0.4, 0.25, 0.35])
    survey: str = "sdss"
    difficulty: float = 1.0
    image_noise: float = 1.0
    spectrum_noise: float = 1.0
    field_density: float = 1.2
    star_density: float = 0.3
    cosmic_rate: float = 0.3
    derived: bool = True
    morphology: bool = False
    morph: MorphologyOptions = dataclasses.field(default_factory=MorphologyOptions)
    n_jobs: int = 2
    shard_size: int = 1024
    chunk_size: int = 16
    resume: bool = True
    preview: bool = False
    preview_per_stage: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [b for b in self.bands if b not in C.BANDPASS_FILES]
        if bad or not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands must be distinct names from {sorted(C.BANDPASS_FILES)}, got {self.bands}")
        if self.n < 0 or self.image_size < 16 or self.pixel_scale <= 0:
            raise ValueError("need n >= 0, image_size >= 16 and pixel_scale > 0")
        if not (0 <= self.merger_fraction and 0 <= self.projected_fraction and self.merger_fraction + self.projected_fraction <= 1):
            raise ValueError("merger_fraction and projected_fraction must be >= 0 and sum to <= 1")
        if len(self.stage_weights) != 3 or min(self.stage_weights) < 0 or sum(self.stage_weights) <= 0:
            raise ValueError("stage_weights needs 3 non-negative weights (major, minor, post-merger)")
        if self.survey not in C.SURVEY_PRESETS:
            raise ValueError(f"survey must be one of {sorted(C.SURVEY_PRESETS)}, got {self.survey!r}")
        if not 0 <= self.difficulty <= 3:
            raise ValueError("difficulty must be in [0, 3]")
        if self.n_jobs < 1 or self.shard_size < 1 or self.chunk_size < 1:
            raise ValueError("n_jobs, shard_size and chunk_size must be >= 1")

    def sim_params(self) -> SimParams:
        """The settings that shape a galaxy, by name (every :class:`SimParams` field is one of ours)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SimParams)}
        return SimParams(**values | {"bands": tuple(self.bands), "stage_weights": tuple(self.stage_weights)})


def tabular_columns(cfg: SimulateConfig) -> list[str]:
    """Derived catalogue columns written for ``cfg`` (empty when ``derived`` is off)."""
    if not cfg.derived:
        return []
    cols = list(SPECTRAL_COLUMNS)
    if cfg.morphology:
        cols += [f"morph_{c}" for c in cfg.morph.columns()]
    return cols


def derive_tabular(row: dict[str, Any], cfg: SimulateConfig, wave: np.ndarray) -> dict[str, float]:
    """Measurements an observer would make on this galaxy's noisy data."""
    tab = measure_lines(wave, row[S.SPEC_FLUX], row[S.SPEC_IVAR], float(row[S.Z]))
    if cfg.morphology:
        from galclip.data.morphology import measure_morphology

        b = cfg.bands.index("r") if "r" in cfg.bands else len(cfg.bands) // 2
        m = measure_morphology(row[S.IMAGE][b], row[S.IMAGE_IVAR][b], cfg.morph)
        tab.update({f"morph_{k}": v for k, v in m.items()})
    return tab


def simulate_rows(cfg: SimulateConfig, start: int, stop: int, keep_models: bool = False) -> list[dict[str, Any]]:
    """Rows for galaxies ``start..stop-1`` (the unit of work of one process)."""
    from galclip.data.preprocess import log_grid

    p = cfg.sim_params()
    wave = log_grid(C.SPEC_WAVE_MIN, C.SPEC_WAVE_MAX, C.SPEC_NPIX)
    rows = []
    for i in range(start, stop):
        row = simulate_galaxy(cfg.seed, i, p)
        if cfg.derived:
            row["tabular"] = derive_tabular(row, cfg, wave)
        if not keep_models:
            row.pop("_model", None)
            row.pop("_fibre_model", None)
        rows.append(row)
    return rows


def _work(args: tuple[SimulateConfig, int, int]) -> list[dict[str, Any]]:
    cfg, a, b = args
    return simulate_rows(cfg, a, b)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _chunks(start: int, stop: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(start, stop, size):
        yield a, min(stop, a + size)


def _provenance(cfg: SimulateConfig) -> dict[str, Any]:
    d = to_dict(cfg)
    return {"source": "galclip simulator (galclip.data.sim)", "sim_config": {k: v for k, v in d.items() if k not in _RESUMABLE_KEYS},
            "calibration": "z, r-mag, g-r summaries of SDSS kcorrect_sdss_photometry_10k.fits (hardcoded)",
            "templates": "GalSim CWW_{E,Sbc,Scd,Im}_ext SEDs; LSST ugriz throughputs as SDSS proxies",
            "merger_stages": list(S.MERGER_STAGES)}


def _check_resume(cfg: SimulateConfig, out: Path) -> None:
    from galclip.data.shards import read_manifest

    if not (out / S.MANIFEST_NAME).exists():
        return
    if not cfg.resume:
        raise ConfigError(f"{out} already holds a dataset; use resume=true to continue it or choose another --out")
    old = read_manifest(out).provenance.get("sim_config")
    new = _provenance(cfg)["sim_config"]
    if old is None:
        raise ConfigError(f"{out} holds a dataset that was not made by galclip simulate; choose another --out")
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ConfigError(f"{out} was simulated with different settings ({', '.join(diff)}); "
                          "resume needs identical settings — choose another --out")


def run_simulate(cfg: SimulateConfig) -> Path:
    """Simulate ``cfg.n`` galaxies into ``cfg.out`` (or write a preview PNG); returns the path."""
    from tqdm.auto import tqdm

    from galclip.data.preprocess import log_grid
    from galclip.data.shards import ShardWriter

    out = Path(cfg.out)
    if cfg.preview:
        from galclip.data.sim.preview import write_preview

        path = write_preview(cfg, out / "preview.png")
        log.info("wrote %s", path)
        return path
    _check_resume(cfg, out)
    wave = log_grid(C.SPEC_WAVE_MIN, C.SPEC_WAVE_MAX, C.SPEC_NPIX)
    writer = ShardWriter(out, cfg.bands, cfg.image_size, wave, label_columns=label_columns(tuple(cfg.bands)),
                         tabular_columns=tabular_columns(cfg), shard_size=cfg.shard_size,
                         provenance=_provenance(cfg), resume=cfg.resume)
    start = writer.rows_written
    if start > cfg.n:
        raise ConfigError(f"{out} already holds {start} galaxies, more than n={cfg.n}")
    if start:
        log.info("resuming %s after %d galaxies already on disk", out, start)
    t0 = time.perf_counter()
    tasks = [(cfg, a, b) for a, b in _chunks(start, cfg.n, cfg.chunk_size)]
    bar = tqdm(total=cfg.n, initial=start, desc="simulate", unit="gal", disable=not cfg.progress)
    if cfg.n_jobs > 1 and len(tasks) > 1:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
        with ctx.Pool(cfg.n_jobs, initializer=_init_worker) as pool:
            for rows in pool.imap(_work, tasks):
                writer.extend(rows)
                bar.update(len(rows))
    else:
        for t in tasks:
            rows = _work(t)
            writer.extend(rows)
            bar.update(len(rows))
    bar.close()
    manifest = writer.close()
    dt = time.perf_counter() - t0
    if cfg.n > start:
        log.info("simulated %d galaxies in %.1f s (%.1f gal/s)", cfg.n - start, dt, (cfg.n - start) / max(dt, 1e-9))
    write_catalog(out)
    log.info("dataset %s: %d galaxies in %d shards", out, manifest.n_rows, len(manifest.shards))
    return out


def write_catalog(root: Path) -> Path:
    """``catalog.csv``: object_id, ra, dec, z, every label and tabular column (for astronomers)."""
    import h5py
    from astropy.table import Table, vstack

    from galclip.data.shards import read_manifest
    from galclip.utils.io import atomic_path

    man = read_manifest(root)
    tables = []
    for sh in man.shards:
        with h5py.File(root / sh.path, "r") as h5:
            cols = {S.OBJECT_ID: h5[S.OBJECT_ID].asstr()[:], S.RA: h5[S.RA][:], S.DEC: h5[S.DEC][:], S.Z: h5[S.Z][:]}
            cols.update({c: h5[c][:] for c in man.label_columns})
            cols.update({c: h5[S.TABULAR_GROUP][c][:] for c in man.tabular_columns})
            tables.append(Table(cols))
    path = root / "catalog.csv"
    with atomic_path(path) as tmp:
        (vstack(tables) if tables else Table()).write(tmp, format="ascii.csv", overwrite=True)
    return path
