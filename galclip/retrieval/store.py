"""On-disk index directories: FAISS index + id map + every modality's embeddings + manifest.

An index directory holds::

    index.faiss      the FAISS index (faiss.write_index, written atomically)
    index.ivfdata    inverted lists of a sharded/on-disk IVF index (only when built that way)
    embeddings.h5    the id map (row i ↔ faiss id i: object_id, ra, dec, has_image,
                     has_spectrum, label columns) and the image/spectrum/joint embeddings of
                     every row, so cross-modal queries can be answered from the same store
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
from typing import Any, Iterator, Mapping, Sequence

import faiss
import h5py
import numpy as np

from galclip.errors import InputFileError
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
EMBEDDINGS_FILE = "embeddings.h5"
MANIFEST_FILE = "index.json"
EMBED_KINDS = ("image", "spectrum", "joint")
METRIC = "inner_product"
FORMAT_VERSION = 1
ID_COLUMNS = ("object_id", "ra", "dec", "has_image", "has_spectrum")


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


# -- embeddings store ------------------------------------------------------------------------

def write_store(path: str | Path, idmap: Mapping[str, np.ndarray], embeddings: Mapping[str, Any],
                labels: Mapping[str, np.ndarray] | None = None, attrs: Mapping[str, Any] | None = None,
                batch_rows: int = 65536, spectrum_lambda: np.ndarray | None = None) -> Path:
    """Write ``embeddings.h5`` atomically, copying embeddings in row batches (bounded memory).

    Args:
        path: output file.
        idmap: ``object_id`` (str), ``ra``, ``dec``, ``has_image``, ``has_spectrum`` (N,).
        embeddings: kind → (N,D) array-like supporting row slicing (ndarray, memmap, h5py).
        labels: optional label columns (N,).
        attrs: provenance stored as HDF5 attributes.
        spectrum_lambda: the dataset's observed wavelength grid (Å), so spectrum-file queries
            can be resampled onto it without the dataset at hand.
    """
    n = len(idmap["object_id"])
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("object_id", data=np.asarray([str(v) for v in idmap["object_id"]], dtype=object),
                              dtype=h5py.string_dtype())
            for key in ("ra", "dec"):
                h5.create_dataset(key, data=np.asarray(idmap.get(key, np.full(n, np.nan)), np.float64))
            for key in ("has_image", "has_spectrum"):
                h5.create_dataset(key, data=np.asarray(idmap.get(key, np.zeros(n, bool)), bool))
            grp = h5.create_group("labels")
            for key, val in (labels or {}).items():
                grp.create_dataset(key, data=np.asarray(val, np.float64))
            emb = h5.create_group("embeddings")
            for kind, arr in embeddings.items():
                if arr is None:
                    continue
                if len(arr) != n:
                    raise ValueError(f"{kind} embeddings have {len(arr)} rows, id map has {n}")
                ds = emb.create_dataset(kind, shape=(n, arr.shape[1]), dtype=np.float32,
                                        chunks=(min(n, 4096) or 1, arr.shape[1]))
                for a in range(0, n, batch_rows):
                    ds[a:a + batch_rows] = np.asarray(arr[a:a + batch_rows], np.float32)
            if spectrum_lambda is not None:
                h5.create_dataset("spectrum_lambda", data=np.asarray(spectrum_lambda, np.float64))
            for key, val in (attrs or {}).items():
                h5.attrs[key] = json.dumps(val, default=str)
    return Path(path)


class EmbeddingStore:
    """Read access to ``embeddings.h5``: the id map in memory, embeddings read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, FileNotFoundError) as exc:
            raise InputFileError(self.path, f"cannot open embeddings store ({exc})") from None
        h5 = self._h5
        missing = [k for k in ID_COLUMNS if k not in h5]
        if missing or "embeddings" not in h5:
            raise InputFileError(self.path, f"not a galclip embeddings store (missing {missing or ['embeddings']})")
        self.object_id = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in h5["object_id"][()]],
                                    dtype=object)
        self.ra = h5["ra"][()]
        self.dec = h5["dec"][()]
        self.has_image = h5["has_image"][()].astype(bool)
        self.has_spectrum = h5["has_spectrum"][()].astype(bool)
        self._row: dict[str, int] | None = None

    def __len__(self) -> int:
        return int(self.object_id.size)

    @property
    def kinds(self) -> list[str]:
        return list(self._h5["embeddings"].keys())

    @property
    def label_columns(self) -> list[str]:
        return list(self._h5["labels"].keys()) if "labels" in self._h5 else []

    @property
    def spectrum_lambda(self) -> np.ndarray | None:
        """The dataset's wavelength grid (Å) when it was stored at build time."""
        return self._h5["spectrum_lambda"][()] if "spectrum_lambda" in self._h5 else None

    def dim(self, kind: str) -> int:
        return int(self._h5["embeddings"][kind].shape[1])

    def label(self, name: str) -> np.ndarray:
        if name not in self.label_columns:
            raise InputFileError(self.path, f"no label column {name!r} (have: {', '.join(self.label_columns) or 'none'})")
        return self._h5["labels"][name][()]

    def embeddings(self, kind: str, rows: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Embeddings of ``kind`` for ``rows`` (all rows when None), float32, NaN = missing."""
        if kind not in self.kinds:
            raise InputFileError(self.path, f"no {kind!r} embeddings stored (have: {', '.join(self.kinds)})")
        ds = self._h5["embeddings"][kind]
        if rows is None:
            return ds[()].astype(np.float32)
        if isinstance(rows, slice):
            return ds[rows].astype(np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return np.zeros((0, ds.shape[1]), np.float32)
        order = np.argsort(rows)  # h5py fancy indexing needs increasing, unique indices
        uniq, inv = np.unique(rows[order], return_inverse=True)
        got = ds[uniq][inv]
        out = np.empty_like(got)
        out[order] = got
        return out.astype(np.float32)

    def iter_batches(self, kind: str, batch_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(start_row, block) pairs over all rows, so a survey never has to fit in memory."""
        ds = self._h5["embeddings"][kind]
        for a in range(0, len(self), batch_rows):
            yield a, ds[a:a + batch_rows].astype(np.float32)

    def rows_of(self, object_ids: Sequence[str], strict: bool = True) -> np.ndarray:
        """Row numbers of ``object_ids`` (-1 for unknown ids unless ``strict``)."""
        if self._row is None:
            self._row = {oid: i for i, oid in enumerate(self.object_id)}
        rows = np.asarray([self._row.get(str(o), -1) for o in object_ids], dtype=np.int64)
        if strict and (rows < 0).any():
            bad = [str(o) for o, r in zip(object_ids, rows) if r < 0]
            raise InputFileError(self.path, f"object id {bad[0]!r} not in the index ({len(bad)} unknown)")
        return rows

    def close(self) -> None:
        try:
            self._h5.close()
        except Exception:  # pragma: no cover
            pass


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
