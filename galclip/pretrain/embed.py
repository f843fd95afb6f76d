"""Embed a dataset with a trained model and store the vectors keyed by object id.

The HDF5 file holds one row per object: ``object_id``, ``ra``, ``dec``, ``has_image``,
``has_spectrum``, unit vectors ``image``, ``spectrum`` and ``joint`` (NaN rows where a
modality is missing) and every label column, plus provenance in the ``meta`` attribute
(checkpoint hash, model name, embedding dimension, dataset path) so a later index or
search can refuse embeddings from a different model.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from galclip.data.dataset import DataConfig, SurveyDataset, collate
from galclip.errors import ConfigError, InputFileError
from galclip.models.checkpoint import checkpoint_hash, data_config_for, load_model
from galclip.models.galclip import GalClip
from galclip.models.tabular import TabularAsSpectrum, is_tabular_model, second_tower_inputs
from galclip.utils.io import atomic_path

log = logging.getLogger(__name__)

BASE_KEYS = ("object_id", "ra", "dec", "has_image", "has_spectrum", "image", "spectrum", "joint")


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_compatible(model: GalClip, dataset: Any) -> None:
    """Refuse a dataset whose bands / spectrum length differ from the model's."""
    cfg = model.cfg
    n_bands = getattr(dataset, "n_bands", cfg.n_bands)
    if n_bands and n_bands != cfg.n_bands:
        raise ConfigError(f"dataset has {n_bands} image bands, model {cfg.name!r} was trained on {cfg.n_bands}")
    dcfg = getattr(dataset, "cfg", None)
    size = getattr(getattr(dcfg, "image", None), "size", cfg.image_size)
    if n_bands and size != cfg.image_size:
        raise ConfigError(f"dataset cutouts are {size} px (data.image.size), model {cfg.name!r} expects "
                          f"{cfg.image_size} px")
    n_spec = getattr(dataset, "spectrum_length", 0)
    if cfg.spectrum.kind == "tabular":  # second tower reads catalogue columns, not spectra
        names = set(getattr(dataset, "tabular_names", []))
        missing = [c for c in cfg.spectrum.options.get("columns", []) if c not in names]
        if missing:
            raise ConfigError(f"model {cfg.name!r} needs tabular column {missing[0]!r}, absent from the dataset")
    elif n_spec and n_spec != cfg.spectrum_length:
        raise ConfigError(f"dataset spectra have {n_spec} pixels, model {cfg.name!r} expects {cfg.spectrum_length} "
                          "(use the same data.spectrum settings as in pretraining)")


def _joint(img: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Normalised mean of the present modalities (NaN where neither is present)."""
    stack = np.stack([img, spec])
    present = np.isfinite(stack).all(-1, keepdims=True)
    total = np.where(present, stack, 0).sum(0)
    count = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.linalg.norm(total, axis=-1, keepdims=True)
        out = total / norm
    return np.where((count > 0) & (norm > 0), out, np.nan).astype(np.float32)


@torch.no_grad()
def embed_dataset(model: GalClip, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                  num_workers: int = 0, progress: bool = True) -> dict[str, np.ndarray]:
    """Embed every item of a galclip dataset.

    Returns arrays keyed by ``object_id``, ``ra``, ``dec``, ``has_image``, ``has_spectrum``,
    ``image``/``spectrum``/``joint`` (N, D) float32 unit vectors (NaN rows for a missing
    modality) and one array per label column (``dataset.label_names``). For a model whose
    second tower is tabular (``spectrum.kind: tabular``) the ``spectrum`` vectors embed the
    catalogue row and ``has_spectrum`` means "has at least one catalogue value".
    """
    check_compatible(model, dataset)
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    labels = list(getattr(dataset, "label_names", []))
    n_spec = getattr(dataset, "spectrum_length", model.cfg.spectrum_length)
    n_bands = getattr(dataset, "n_bands", model.cfg.n_bands)
    tabular = list(getattr(dataset, "tabular_names", [])) if is_tabular_model(model) else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    cols: dict[str, list[Any]] = {k: [] for k in ("object_id", "ra", "dec", "has_image", "has_spectrum",
                                                  "image", "spectrum", "labels")}
    D = model.embed_dim
    for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress):
        n = len(batch["object_id"])
        hi = batch["has_image"].bool() & (n_bands > 0)
        # second modality: spectra, or catalogue columns for a tabular second tower
        x2, iv2, scale2, present = second_tower_inputs(model, batch, tabular)
        hs = present.bool() & (tabular is not None or n_spec > 0)
        img = torch.full((n, D), float("nan"))
        spec = torch.full((n, D), float("nan"))
        if hi.any():
            img[hi] = model.encode_image(batch["image"][hi].to(device)).float().cpu()
        if hs.any():
            spec[hs] = model.encode_spectrum(x2[hs].to(device), iv2[hs].to(device) if iv2 is not None else None,
                                             scale2[hs].to(device) if scale2 is not None else None).float().cpu()
        cols["object_id"].extend(batch["object_id"])
        cols["ra"].append(batch["ra"].double().numpy())
        cols["dec"].append(batch["dec"].double().numpy())
        cols["has_image"].append(hi.numpy())
        cols["has_spectrum"].append(hs.numpy())
        cols["image"].append(img.numpy())
        cols["spectrum"].append(spec.numpy())
        cols["labels"].append(batch["labels"].numpy().reshape(n, len(labels)))
    model.train(was_training)
    out: dict[str, np.ndarray] = {"object_id": np.asarray(cols["object_id"], dtype=object)}
    if not cols["ra"]:
        empty = np.zeros((0, D), np.float32)
        out.update(ra=np.zeros(0), dec=np.zeros(0), has_image=np.zeros(0, bool), has_spectrum=np.zeros(0, bool),
                   image=empty, spectrum=empty, joint=empty)
        out.update({name: np.zeros(0, np.float32) for name in labels})
        return out
    for k in ("ra", "dec", "has_image", "has_spectrum", "image", "spectrum"):
        out[k] = np.concatenate(cols[k])
    out["joint"] = _joint(out["image"], out["spectrum"])
    lab = np.concatenate(cols["labels"])
    for j, name in enumerate(labels):
        if name not in out:
            out[name] = lab[:, j]
    return out


def write_embeddings(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Atomically write embedding arrays + JSON ``meta`` to one HDF5 file."""
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            for key, arr in arrays.items():
                arr = np.asarray(arr)
                if arr.dtype == object or arr.dtype.kind in "US":
                    h5.create_dataset(key, data=np.asarray([str(v) for v in arr], dtype=object),
                                      dtype=h5py.string_dtype("utf-8"))
                else:
                    h5.create_dataset(key, data=arr)
            h5.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
            h5.attrs["format"] = "galclip-embeddings"
    return path


def read_embeddings(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`write_embeddings` → ``(arrays, meta)``."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != "galclip-embeddings":
                raise InputFileError(path, "not a galclip embeddings file")
            meta = json.loads(h5.attrs["meta"])
            arrays = {}
            for key in h5.keys():
                data = h5[key][()]
                if h5[key].dtype.kind == "O":
                    data = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in data], dtype=object)
                arrays[key] = data
    except FileNotFoundError:
        raise InputFileError(path, "embeddings file not found") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read embeddings ({exc})") from None
    return arrays, meta


@dataclasses.dataclass
class EmbedConfig:
    """``galclip embed``: write embeddings of a dataset.

    Attributes:
        data: dataset to embed (use the same preprocessing as in pretraining).
        checkpoint: model directory (``model.safetensors`` + ``model.json``).
        out: output HDF5 file (``.h5``); a directory gets ``embeddings.h5`` inside.
        batch_size: objects per forward pass.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        num_workers: DataLoader workers.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: str = ""
    out: str = "embeddings.h5"
    batch_size: int = 256
    device: str = "auto"
    num_workers: int = 0


def run_embed(cfg: EmbedConfig) -> Path:
    """Load the checkpoint, embed ``cfg.data`` and write the HDF5 file; returns its path."""
    if not cfg.checkpoint:
        raise ConfigError("checkpoint is required (a directory with model.safetensors + model.json)")
    if not cfg.data.path:
        raise ConfigError("data.path is required")
    out = Path(cfg.out)
    if out.is_dir() or out.suffix not in (".h5", ".hdf5"):
        out = out / "embeddings.h5"
    device = resolve_device(cfg.device)
    model, mcfg = load_model(cfg.checkpoint, map_location=device)
    ds = SurveyDataset(data_config_for(cfg.checkpoint, cfg.data))
    if mcfg.spectrum.kind == "tabular":  # catalogue tower: its prepared columns fill the spectrum slot
        ds = TabularAsSpectrum(ds, mcfg)
    arrays = embed_dataset(model, ds, batch_size=cfg.batch_size, device=device, num_workers=cfg.num_workers)
    meta = {"checkpoint_sha256": checkpoint_hash(cfg.checkpoint), "model_name": mcfg.name,
            "embed_dim": mcfg.embed_dim, "dataset": str(Path(cfg.data.path).resolve()),
            "checkpoint": str(Path(cfg.checkpoint).resolve()), "n_objects": int(len(arrays["object_id"])),
            "label_columns": list(ds.label_names)}
    write_embeddings(out, arrays, meta)
    log.info("wrote %d embeddings (D=%d) to %s", len(arrays["object_id"]), mcfg.embed_dim, out)
    return out
