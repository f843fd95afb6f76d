"""Simulated survey: determinism, n_jobs independence, resume, round-trip, preview."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.data.preprocess import ImagePrep
from galclip.data.shards import read_manifest
from galclip.data.sim.galaxy import SimParams, draw_stage
from galclip.data.sim.survey import SimulateConfig, run_simulate, simulate_rows
from galclip.errors import ConfigError


def _cfg(out: Path, **kw) -> SimulateConfig:
    base = dict(out=str(out), n=6, seed=3, image_size=32, shard_size=4, chunk_size=2, n_jobs=1,
                derived=True, morphology=False, progress=False)
    base.update(kw)
    return SimulateConfig(**base)


def _read_all(root: Path) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {}
    for sh in read_manifest(root).shards:
        with h5py.File(root / sh.path, "r") as h5:
            for k in (S.OBJECT_ID, S.IMAGE, S.SPEC_FLUX, "merger_stage", "log_mstar"):
                v = h5[k].asstr()[:] if k == S.OBJECT_ID else h5[k][:]
                cols.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in cols.items()}


def test_same_seed_same_galaxies_and_seed_matters():
    cfg = _cfg(Path("unused"), image_size=32)
    a = simulate_rows(cfg, 0, 2)
    b = simulate_rows(cfg, 0, 2)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra[S.IMAGE], rb[S.IMAGE])
        np.testing.assert_array_equal(ra[S.SPEC_FLUX], rb[S.SPEC_FLUX])
        assert ra["tabular"].keys() == rb["tabular"].keys()
    c = simulate_rows(_cfg(Path("unused"), seed=4), 0, 1)
    assert not np.allclose(a[0][S.SPEC_FLUX], c[0][S.SPEC_FLUX])
    # galaxy i does not depend on which chunk produced it
    np.testing.assert_array_equal(simulate_rows(cfg, 1, 2)[0][S.IMAGE], a[1][S.IMAGE])


def test_output_independent_of_n_jobs(tmp_path):
    run_simulate(_cfg(tmp_path / "one", n_jobs=1))
    run_simulate(_cfg(tmp_path / "two", n_jobs=2))
    one, two = _read_all(tmp_path / "one"), _read_all(tmp_path / "two")
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])
    assert len(one[S.OBJECT_ID]) == 6


def test_resume_completes_without_duplicates(tmp_path):
    full = tmp_path / "full"
    run_simulate(_cfg(full, n=8))
    part = tmp_path / "part"
    run_simulate(_cfg(part, n=4))          # "killed" after the first shard
    assert read_manifest(part).n_rows == 4
    run_simulate(_cfg(part, n=8))          # re-run completes it
    a, b = _read_all(full), _read_all(part)
    assert len(set(b[S.OBJECT_ID])) == len(b[S.OBJECT_ID]) == 8
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(ConfigError, match="different settings"):
        run_simulate(_cfg(part, n=10, difficulty=2.0))


def test_roundtrip_through_survey_dataset(tmp_path):
    root = run_simulate(_cfg(tmp_path / "ds", n=5))
    ds = SurveyDataset(DataConfig(path=str(root), image=ImagePrep(size=32)))
    assert len(ds) == 5 and ds.n_bands == 4 and ds.spectrum_length == 3840
    for name in ("merger", "merger_stage", "redshift", "log_mstar", "mag_r", "g_r", "agn", "mass_ratio"):
        assert name in ds.label_names
    item = ds[2]
    assert item["image"].shape == (4, 32, 32)
    assert item["spectrum"].shape == (3840,)
    assert np.isfinite(item["image"].numpy()).all()
    z = ds.column("z")
    np.testing.assert_allclose(z, ds.column("redshift"), rtol=1e-6)
    assert ((z > 0.005) & (z < 0.4)).all()
    assert "halpha_ew" in ds.tabular_names and "d4000" in ds.tabular_names
    assert np.isfinite(ds.column("d4000")).mean() > 0.5
    cat = (root / "catalog.csv").read_text().splitlines()
    assert len(cat) == 6 and cat[0].startswith("object_id,ra,dec,z")


def test_merger_fraction_matches_config():
    p = SimParams(merger_fraction=0.12, projected_fraction=0.08)
    stages = np.array([draw_stage(np.random.default_rng([0, i]), p) for i in range(4000)])
    frac = np.isin(stages, (2, 3, 4)).mean()
    assert abs(frac - 0.12) < 3 * np.sqrt(0.12 * 0.88 / 4000)
    assert abs((stages == 1).mean() - 0.08) < 0.015
    assert set(stages) == {0, 1, 2, 3, 4}


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        SimulateConfig(bands=["g", "q"])
    with pytest.raises(ValueError):
        SimulateConfig(merger_fraction=0.9, projected_fraction=0.2)
    run_simulate(_cfg(tmp_path / "x", n=2))
    with pytest.raises(ConfigError, match="resume"):
        run_simulate(_cfg(tmp_path / "x", n=2, resume=False))


def test_preview_png(tmp_path):
    path = run_simulate(_cfg(tmp_path / "prev", preview=True, preview_per_stage=1))
    assert path.name == "preview.png" and path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_a_crash_mid_run(tmp_path, monkeypatch):
    import galclip.data.sim.survey as survey

    real = survey.simulate_rows
    calls = {"n": 0}

    def flaky(cfg, a, b, keep_models=False):
        calls["n"] += 1
        if calls["n"] == 4:                # dies while the second shard is being filled
            raise KeyboardInterrupt
        return real(cfg, a, b, keep_models)

    monkeypatch.setattr(survey, "simulate_rows", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_simulate(_cfg(tmp_path / "crash", n=8))
    assert read_manifest(tmp_path / "crash").n_rows == 4     # first shard kept, partial one lost
    monkeypatch.setattr(survey, "simulate_rows", real)
    run_simulate(_cfg(tmp_path / "crash", n=8))
    run_simulate(_cfg(tmp_path / "clean", n=8))
    a, b = _read_all(tmp_path / "crash"), _read_all(tmp_path / "clean")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
