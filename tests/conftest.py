"""Shared fixtures: tiny datasets made on the fly, and paths to the optional real data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, skipping the test when it is absent (a user's clone)."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real survey data not available: {p}")
    return p


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A 24-row paired dataset (2 bands, 32 px, 256-pixel spectra) with merger labels."""
    from galclip.data.preprocess import log_grid
    from galclip.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    wave = log_grid(3800, 9200, 256)
    w = ShardWriter(tmp_path / "tiny", ["g", "r"], 32, wave, label_columns=["merger", "merger_stage", "redshift"],
                    shard_size=10, provenance={"source": "test"})
    for i in range(24):
        z = 0.05 + 0.01 * i
        img = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
        img[:, 12:20, 12:20] += 5 + i % 3
        flux = 5 + np.sin(wave / (300 + 10 * i)) + rng.normal(0, 0.2, wave.size)
        w.add(dict(object_id=f"obj{i:03d}", ra=150.0 + i * 0.01, dec=2.0, z=z, image_array=img,
                   image_ivar=np.ones_like(img), spectrum_flux=flux, spectrum_ivar=np.full(wave.size, 25.0),
                   has_spectrum=i % 5 != 4, merger=int(i % 4 == 0), merger_stage=i % 5, redshift=z))
    w.close()
    return tmp_path / "tiny"


@pytest.fixture
def tabular_survey(tmp_path: Path) -> Path:
    """A 32-row image + catalogue survey (2 bands, 32 px; ``mass`` tracks the image, one ``sfr`` NaN), no spectra."""
    from galclip.data.shards import ShardWriter

    rng = np.random.default_rng(0)
    w = ShardWriter(tmp_path / "tab", ["g", "r"], 32, None, label_columns=["merger"],
                    tabular_columns=["mass", "sfr"], shard_size=50, provenance={"source": "test"})
    for i in range(32):
        img = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
        img[:, 12:20, 12:20] += i % 5
        w.add(dict(object_id=f"t{i}", ra=1.0, dec=2.0, z=0.1, image_array=img, image_ivar=np.ones_like(img),
                   has_spectrum=False, merger=i % 2,
                   tabular={"mass": 10 + i % 5 + rng.normal(0, 0.1), "sfr": np.nan if i == 3 else rng.normal()}))
    w.close()
    return tmp_path / "tab"
