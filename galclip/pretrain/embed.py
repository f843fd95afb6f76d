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

from galclip.data.dataset import DataConfig
from galclip.encode import embed_dataset, load_checkpoint, open_dataset, resolve_device
from galclip.errors import InputFileError
from galclip.utils.io import atomic_path

log = logging.getLogger(__name__)

BASE_KEYS = ("object_id", "ra", "dec", "has_image", "has_spectrum", "image", "spectrum", "joint")


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
    out = Path(cfg.out)
    if out.is_dir() or out.suffix not in (".h5", ".hdf5"):
        out = out / "embeddings.h5"
    ckpt = load_checkpoint(cfg.checkpoint, cfg.device)
    mcfg = ckpt.cfg
    ds = open_dataset(ckpt, cfg.data)
    arrays = embed_dataset(ckpt.model, ds, batch_size=cfg.batch_size, device=resolve_device(cfg.device),
                           num_workers=cfg.num_workers, source=ckpt.path)
    meta = {"checkpoint_sha256": ckpt.sha256, "model_name": mcfg.name,
            "embed_dim": mcfg.embed_dim, "dataset": str(Path(cfg.data.path).resolve()),
            "checkpoint": str(Path(cfg.checkpoint).resolve()), "n_objects": int(len(arrays["object_id"])),
            "label_columns": list(ds.label_names)}
    write_embeddings(out, arrays, meta)
    log.info("wrote %d embeddings (D=%d) to %s", len(arrays["object_id"]), mcfg.embed_dim, out)
    return out
