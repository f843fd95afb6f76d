"""On-disk index directories: FAISS index + id map + every modality's embeddings + manifest.

An index directory holds::

    index.faiss      the FAISS index (faiss.write_index, written atomically)
    index.ivfdata    inverted lists of a sharded/on-disk IVF index (only when built that way)
    embeddings.h5    the embeddings file of :mod:`galclip.embeddings` (the format ``galclip
                     embed`` writes): id map (row i ↔ faiss id i) and the image/spectrum/joint
                     embeddings of every row, so cross-modal queries use the same store
    index.json       manifest: checkpoint sha256, embedding kind, dimension, factory string,
                     count, metric, ...

Every query path goes through :func:`load_index`, which refuses an index built by another
model or for another embedding kind and checks the manifest against the files (count,
dimension) before anything is searched: a stale or mixed-up index would otherwise return
plausible-looking but wrong neighbours.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np

from galclip.embeddings import EmbeddingStore
from galclip.errors import InputFileError
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
EMBEDDINGS_FILE = "embeddings.h5"
MANIFEST_FILE = "index.json"
METRIC = "inner_product"
FORMAT_VERSION = 1


@dataclasses.dataclass
class IndexManifest:
    """What an index directory contains and which model made it.

    Attributes:
        checkpoint_sha256: sha256 of the model's safetensors file ("" for external vectors).
        model_name: registry name of the model ("" if unknown).
        embedding_kind: which embedding the FAISS index holds (image, spectrum or joint).
        dim: vector dimension.
        factory: FAISS factory string the index was built from.
        count: vectors in the FAISS index (rows lacking the indexed modality are left out).
        n_rows: rows in the id map / embeddings store.
        metric: always inner product on L2-normalised vectors (= cosine similarity).
        label_columns: label columns stored with the id map.
        dataset: dataset the embeddings came from (for galleries), may be "".
        checkpoint: checkpoint path used at build time (a hint; the hash is what is checked).
        on_disk: inverted lists live in ``index.ivfdata`` (memory-mapped at load time).
        search_params: search-time parameters applied at load (faiss.ParameterSpace syntax).
        preprocess: the dataset's image/spectrum preprocessing (``DataConfig.image`` /
            ``.spectrum``) when known, so file queries are prepared identically.
    """

    checkpoint_sha256: str
    model_name: str
    embedding_kind: str
    dim: int
    factory: str
    count: int
    n_rows: int
    metric: str = METRIC
    label_columns: list[str] = dataclasses.field(default_factory=list)
    dataset: str = ""
    checkpoint: str = ""
    on_disk: bool = False
    search_params: str = ""
    preprocess: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""
    build_seconds: float = 0.0
    format_version: int = FORMAT_VERSION


def normalise(x: np.ndarray) -> np.ndarray:
    """Contiguous float32 copy with unit rows (faiss.normalize_L2), so inner product = cosine."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim == 1:
        x = x[None]
    faiss.normalize_L2(x)
    return x


def valid_rows(x: np.ndarray) -> np.ndarray:
    """Rows whose embedding exists (a missing modality is stored as a NaN row)."""
    return np.isfinite(x).all(axis=1) & (np.abs(x).sum(axis=1) > 0)


# -- index directories ---------------------------------------------------------------------------

def write_manifest(root: str | Path, manifest: IndexManifest) -> Path:
    """Write ``index.json`` atomically (stamped with the creation time)."""
    if not manifest.created:
        manifest.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return atomic_write_json(Path(root) / MANIFEST_FILE, dataclasses.asdict(manifest))


def read_manifest(root: str | Path) -> IndexManifest:
    """Read ``index.json``; one-line error when missing or malformed."""
    path = Path(root) / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return IndexManifest(**raw)
    except FileNotFoundError:
        raise InputFileError(path, "no index manifest here (is this a galclip index directory?)") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputFileError(path, f"malformed index manifest ({exc.__class__.__name__}: {exc})") from None


def write_faiss(index: faiss.Index, path: str | Path) -> Path:
    """``faiss.write_index`` through a temporary file renamed into place."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return Path(path)


@dataclasses.dataclass
class LoadedIndex:
    """An index directory ready to query."""

    root: Path
    manifest: IndexManifest
    index: faiss.Index
    store: EmbeddingStore

    def search(self, queries: np.ndarray, k: int, exclude_rows: Sequence[int] | None = None,
               batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, rows) for (Q,D) queries; rows are id-map rows, -1 = none.

        Queries are L2-normalised here so scores are cosine similarities. ``exclude_rows``
        (one per query, e.g. the query object itself) is dropped from its own result.
        """
        q = normalise(queries)
        if q.shape[1] != self.manifest.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.manifest.dim}")
        extra = 1 if exclude_rows is not None else 0
        kk = min(k + extra, max(1, self.index.ntotal))
        scores = np.full((len(q), k), -np.inf, np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        for a in range(0, len(q), batch):
            d, i = self.index.search(q[a:a + batch], kk)
            for j in range(len(d)):
                keep = i[j] >= 0
                if exclude_rows is not None:
                    keep &= i[j] != exclude_rows[a + j]
                dj, ij = d[j][keep][:k], i[j][keep][:k]
                scores[a + j, :len(dj)] = dj
                rows[a + j, :len(ij)] = ij
        return scores, rows


def load_index(root: str | Path, checkpoint_sha256: str | None = None, embedding_kind: str | None = None,
               mmap: bool = False) -> LoadedIndex:
    """Open an index directory, refusing a mismatched model/embedding kind or inconsistent files.

    Args:
        root: index directory.
        checkpoint_sha256: if given, the index must have been built with this checkpoint.
        embedding_kind: if given, the index must hold this embedding kind.
        mmap: memory-map the index file (``faiss.IO_FLAG_MMAP``) instead of reading it into RAM.
    """
    root = Path(root)
    man = read_manifest(root)
    if checkpoint_sha256 is not None and man.checkpoint_sha256 and checkpoint_sha256 != man.checkpoint_sha256:
        raise InputFileError(root, f"index was built with another model (checkpoint sha256 "
                                   f"{man.checkpoint_sha256[:12]}…, this model {checkpoint_sha256[:12]}…); rebuild it with `galclip index`")
    if embedding_kind is not None and embedding_kind != man.embedding_kind:
        raise InputFileError(root, f"index holds {man.embedding_kind!r} embeddings, not {embedding_kind!r}")
    if man.metric != METRIC:
        raise InputFileError(root, f"unsupported metric {man.metric!r} (expected {METRIC})")
    path = root / INDEX_FILE
    if not path.exists():
        raise InputFileError(path, "index file missing")
    flags = 0
    if man.on_disk:
        flags |= faiss.IO_FLAG_ONDISK_SAME_DIR
    elif mmap:
        flags |= faiss.IO_FLAG_MMAP
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise InputFileError(path, f"cannot read FAISS index ({str(exc).splitlines()[0][:200]})") from None
    if index.ntotal != man.count:
        raise InputFileError(path, f"index holds {index.ntotal} vectors but the manifest says {man.count} (stale or partial index)")
    if index.d != man.dim:
        raise InputFileError(path, f"index dimension {index.d} != manifest dimension {man.dim}")
    if man.search_params:
        from galclip.retrieval.build import apply_search_params

        apply_search_params(index, man.search_params)
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise InputFileError(path, "index does not use the inner-product metric")
    store = EmbeddingStore(root / EMBEDDINGS_FILE)
    if len(store) != man.n_rows:
        raise InputFileError(store.path, f"id map has {len(store)} rows but the manifest says {man.n_rows}")
    if man.embedding_kind in store.kinds and store.dim(man.embedding_kind) != man.dim:
        raise InputFileError(store.path, f"stored {man.embedding_kind} embeddings have dimension "
                                         f"{store.dim(man.embedding_kind)}, manifest says {man.dim}")
    return LoadedIndex(root, man, index, store)
