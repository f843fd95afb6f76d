"""Fixtures for retrieval tests: a tiny random-weight model checkpoint over the tiny dataset."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from galclip.data.dataset import DataConfig
from galclip.data.preprocess import ImagePrep


def tiny_data_config(path: Path) -> DataConfig:
    return DataConfig(path=str(path), image=ImagePrep(size=32))


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_dataset: Path) -> Path:
    """Untrained ``tiny`` model matching the tiny dataset (2 bands, 32 px, 256-pixel spectra)."""
    import torch

    from galclip.models import build_model, get_model_config
    from galclip.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    return save_checkpoint(build_model(cfg), cfg, tmp_path / "ckpt")


def _clustered(n: int, d: int, n_clusters: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors drawn around ``n_clusters`` random centres, and their cluster labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    y = rng.integers(0, n_clusters, n)
    x = centres[y] + spread * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y


@pytest.fixture
def clustered():
    """``clustered(n, d, n_clusters, spread, seed) -> (unit vectors, cluster labels)``."""
    return _clustered
