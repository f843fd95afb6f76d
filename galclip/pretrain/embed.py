"""``galclip embed``: embed a dataset with a trained model, vectors keyed by object id.

The model is run by :mod:`galclip.encode` and the file is written in the one embeddings
format of :mod:`galclip.embeddings` (id map, image/spectrum/joint vectors, label columns,
provenance such as the checkpoint hash), which ``galclip index`` reads.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from galclip.data.dataset import DataConfig
from galclip.embeddings import write_embedding_arrays
from galclip.encode import embed_checkpoint

log = logging.getLogger(__name__)


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
    arrays, meta = embed_checkpoint(cfg.checkpoint, cfg.data, cfg.batch_size, cfg.device, cfg.num_workers)
    write_embedding_arrays(out, arrays, meta)
    log.info("wrote %d embeddings (D=%d) to %s", len(arrays["object_id"]), meta["embed_dim"], out)
    return out
