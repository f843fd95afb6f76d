"""Features for the fusion heads: encoder outputs (precomputed once) and tabular statistics.

With frozen encoders every head, seed and label budget reuses the same encoder outputs, so
they are computed once per (checkpoint, dataset) and cached as ``.npz`` — the whole
label-budget evaluation then costs a few seconds of head training per row. Morphology
statistics (statmorph, ~0.1 s per galaxy) are cached the same way.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from galclip.data.dataset import SurveyDataset, collate
from galclip.encode import MODALITIES, encode_dataset
from galclip.utils.io import atomic_path

log = logging.getLogger(__name__)


def output_dirs(out: str | Path, cache_dir: str | Path = "") -> tuple[Path, Path]:
    """The stage's output directory (created) and its feature/morphology cache (default ``<out>/cache``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out, Path(cache_dir) if cache_dir else out / "cache"


def _dataset_key(dataset: SurveyDataset) -> str:
    """Identity of a dataset + preprocessing: manifest content, row selection, prep config."""
    from galclip.config import to_dict

    man = Path(dataset.cfg.path) / "manifest.json"
    h = hashlib.sha256(man.read_bytes() if man.exists() else str(dataset.cfg.path).encode())
    h.update(np.ascontiguousarray(dataset.indices).tobytes())
    h.update(json.dumps(to_dict(dataset.cfg.image), sort_keys=True).encode())
    h.update(json.dumps(to_dict(dataset.cfg.spectrum), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring unreadable feature cache (%s)", path, exc)
        return None


def _cache_path(dataset: SurveyDataset, cache_dir: str | Path | None, model_key: str, tokens: bool) -> Path | None:
    if not (cache_dir and model_key):
        return None
    return Path(cache_dir) / f"features_{model_key[:24]}_{_dataset_key(dataset)}{'_tok' if tokens else ''}.npz"


def cached_features(dataset: SurveyDataset, cache_dir: str | Path | None, model_key: str,
                    tokens: bool) -> dict[str, np.ndarray] | None:
    """Features cached earlier for this (weights, dataset, preprocessing), else None."""
    cache = _cache_path(dataset, cache_dir, model_key, tokens)
    if cache is None or not cache.exists():
        return None
    got = _load_npz(cache)
    if got is None or got["image"].shape[0] != len(dataset):
        return None
    log.info("features from cache %s", cache)
    return got


def load_batches(dataset: SurveyDataset, batch_size: int = 64, progress: bool = True) -> list[dict[str, Any]]:
    """Read and preprocess every row once, as collated batches kept in memory.

    Reading HDF5 rows and preparing images/spectra costs far more than a small encoder's
    forward pass; the evaluation harness runs several encoders (pretrained, random init,
    image-only SSL) and the CNN baseline over the same rows, so it reads them only once.
    """
    from tqdm.auto import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)
    return list(tqdm(loader, desc="read", unit="batch", disable=not progress))


def extract_features(model: Any, dataset: SurveyDataset, tokens: bool = False, batch_size: int = 64,
                     cache_dir: str | Path | None = None, model_key: str = "", progress: bool = True,
                     batches: list[dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Frozen-encoder features of every row of ``dataset`` (cached when ``cache_dir`` and ``model_key``).

    Args:
        model: a ``GalClip`` (run in eval mode by :func:`galclip.encode.encode_dataset`).
        tokens: also keep token sequences (needed by the cross-attention head; larger).
        model_key: identity of the weights (checkpoint sha256); no cache without it.
        batches: rows already read by :func:`load_batches` (else read from ``dataset``).

    Returns:
        numpy arrays ``image`` (N,D), ``spectrum`` (N,D), ``has_image``, ``has_spectrum``
        and, with ``tokens``, ``image_tokens`` (N,T,Fi), ``spectrum_tokens`` (N,T,Fs).
    """
    got = cached_features(dataset, cache_dir, model_key, tokens)
    if got is not None:
        return got
    out = encode_dataset(model, dataset, batches, tokens=tokens, batch_size=batch_size, progress=progress)
    cache = _cache_path(dataset, cache_dir, model_key, tokens)
    if cache is not None:
        _save_npz(cache, out)
    return out


def feature_tensors(feats: dict[str, np.ndarray], idx: np.ndarray, tabular: np.ndarray | None = None,
                    keep: Sequence[str] = MODALITIES) -> dict[str, torch.Tensor]:
    """Row subset of precomputed features as tensors (modalities not in ``keep`` marked absent)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in feats.items():
        if k in ("object_id",) or v.ndim == 0:
            continue
        t = torch.from_numpy(np.ascontiguousarray(v[idx]))
        out[k] = t.bool() if v.dtype == bool else t.float()
    for m in MODALITIES:
        if m not in keep and f"has_{m}" in out:
            out[f"has_{m}"] = torch.zeros_like(out[f"has_{m}"])
    if tabular is not None:
        out["tabular"] = torch.from_numpy(np.ascontiguousarray(tabular[idx])).float()
    return out


# --------------------------------------------------------------------------- morphology / tabular

def morphology_features(dataset: SurveyDataset, cache_dir: str | Path | None = None, n_jobs: int = 1,
                        progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Gini/M20/asymmetry/concentration/... for every row (band-summed image), cached.

    Uses ``galclip.data.morphology.morphology_table`` (statmorph). Rows without an image get
    NaN. Stored morphology columns in the dataset (``gini`` or ``morph_gini``...) are reused
    instead of re-measuring.
    """
    from tqdm.auto import tqdm

    from galclip.data.morphology import ALL_COLUMNS, MorphologyOptions, morphology_table, stored_column

    names = [c for c in ALL_COLUMNS if c != "flag"]
    stored = list(dataset.tabular_names)
    found = {c: col for c in names if (col := stored_column(c, stored)) is not None}
    if len(found) >= 4:
        cols = list(found)
        return np.stack([dataset.column(found[c]).astype(np.float64) for c in cols], 1), cols
    cache = Path(cache_dir) / f"morphology_{_dataset_key(dataset)}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        got = _load_npz(cache)
        if got is not None and got["table"].shape[0] == len(dataset):
            return got["table"], [str(c) for c in got["columns"]]
    images, ivars, has = [], [], []
    for i in tqdm(range(len(dataset)), desc="read images", unit="gal", disable=not progress):
        it = dataset[i]
        img = it["image"].numpy()
        iv = it["image_ivar"].numpy()
        images.append(img.sum(0))
        with np.errstate(divide="ignore"):
            var = np.where(iv > 0, 1.0 / np.where(iv > 0, iv, 1.0), 0.0).sum(0)
        ivars.append(np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0))
        has.append(bool(it["has_image"]))
    opts = MorphologyOptions()
    table = morphology_table(np.stack(images), np.stack(ivars), opts, n_jobs=n_jobs, progress=progress)
    table[~np.asarray(has)] = np.nan
    keep = [j for j, c in enumerate(opts.columns()) if c != "flag"]
    names = [opts.columns()[j] for j in keep]
    table = table[:, keep]
    if cache is not None:
        _save_npz(cache, {"table": table, "columns": np.asarray(names)})
    return table, names


def tabular_raw(dataset: SurveyDataset, columns: Sequence[str] | None, morphology: bool,
                cache_dir: str | Path | None = None, n_jobs: int = 1) -> tuple[np.ndarray, list[str]]:
    """Raw (unscaled) tabular matrix: chosen catalogue columns + morphology statistics."""
    mats, names = [], []
    cols = list(dataset.tabular_names) if columns is None else list(columns)
    if morphology:
        m, mn = morphology_features(dataset, cache_dir, n_jobs=n_jobs)
        mats.append(m)
        names += mn
        cols = [c for c in cols if c not in mn and c.removeprefix("morph_") not in mn]
    for c in cols:
        mats.append(dataset.column(c).astype(np.float64)[:, None])
        names.append(c)
    if not mats:
        return np.zeros((len(dataset), 0)), []
    return np.concatenate(mats, 1), names
