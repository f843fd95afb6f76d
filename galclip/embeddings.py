"""The one on-disk format for embeddings keyed by object id, and its reader/writer.

``galclip embed`` writes it, ``galclip index`` reads it and stores the same file inside the
index directory, so a vector means the same thing wherever it is read. One HDF5 file::

    object_id, ra, dec, has_image, has_spectrum   id map, one row per object
    embeddings/{image,spectrum,joint}              (N, D) float32, NaN rows = modality missing
    embeddings/image_features                      (N, k) the image representation: standardised
                                                   pooled image-tower features on their leading
                                                   principal components, re-centred on this survey
                                                   (unit norm); what carries morphology; label and
                                                   candidates use it
    labels/<column>                                label columns (float64, NaN = unknown)
    spectrum_lambda                                the dataset's wavelength grid (optional)
    attrs: format, format_version, meta            provenance JSON (checkpoint sha256, model, ...)

Older files still load: index stores written before the ``format`` attribute (same layout,
provenance as separate attributes) and the flat files of earlier ``galclip embed`` (vectors
and labels at the top level). Anything else is refused with a one-line ``InputFileError``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import h5py
import numpy as np

from galclip.errors import InputFileError
from galclip.utils.io import atomic_path

FORMAT = "galclip-embeddings"
FORMAT_VERSION = 2
ID_COLUMNS = ("object_id", "ra", "dec", "has_image", "has_spectrum")
EMBED_KINDS = ("image", "spectrum", "joint", "image_features")
#: The kind few-shot labeling and merger-candidate ranking read when the file has it: the
#: image representation finds mergers where the CLIP projection does not
#: (``benchmarks/results/representation_gz1_ablation.json``).
MORPHOLOGY_KIND = "image_features"
#: which vectors a stage reads ("" in a query option = the index's own kind)
EmbedKind = Literal["image", "spectrum", "joint", "image_features"]
QueryKind = Literal["", "image", "spectrum", "joint", "image_features"]


def morphology_kind(kinds: Sequence[str], fallback: str) -> str:
    """What labeling and candidate ranking compare by default: the image representation when
    stored (:data:`MORPHOLOGY_KIND`), else ``fallback`` (an older file: the index's kind)."""
    return MORPHOLOGY_KIND if MORPHOLOGY_KIND in kinds else fallback


def split_arrays(arrays: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """Flat ``embed_dataset`` layout → (id map, vectors by kind, numeric label columns)."""
    if "object_id" not in arrays:
        raise ValueError("embeddings lack the 'object_id' column")
    n = len(arrays["object_id"])
    idmap = {k: np.asarray(arrays[k]) for k in ID_COLUMNS if k in arrays}
    vectors = {k: arrays[k] for k in EMBED_KINDS if k in arrays and arrays[k] is not None}
    labels = {}
    for key, val in arrays.items():
        if key in ID_COLUMNS or key in EMBED_KINDS:
            continue
        val = np.asarray(val)
        if val.ndim == 1 and len(val) == n and np.issubdtype(val.dtype, np.number):
            labels[key] = val
    for key, kind in (("has_image", "image"), ("has_spectrum", "spectrum")):
        if key not in idmap:
            idmap[key] = np.isfinite(np.asarray(vectors[kind])).all(axis=1) if kind in vectors else np.zeros(n, bool)
    return idmap, vectors, labels


def write_embeddings(path: str | Path, idmap: Mapping[str, np.ndarray], vectors: Mapping[str, Any],
                     labels: Mapping[str, np.ndarray] | None = None, meta: Mapping[str, Any] | None = None,
                     batch_rows: int = 65536, spectrum_lambda: np.ndarray | None = None) -> Path:
    """Write the file atomically, copying vectors in row blocks (a survey need not fit in RAM).

    Args:
        idmap: ``object_id`` (str), ``ra``, ``dec``, ``has_image``, ``has_spectrum`` (N,).
        vectors: kind → (N,D) array-like supporting row slicing (ndarray, memmap, h5py).
        labels: label columns (N,).
        meta: JSON-serialisable provenance (checkpoint sha256, model name, dataset, ...).
        spectrum_lambda: the dataset's observed wavelength grid (Å), for spectrum-file queries.
    """
    n = len(idmap["object_id"])
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_idmap(h5, idmap, n)
            grp = h5.create_group("labels")
            for key, val in (labels or {}).items():
                grp.create_dataset(key, data=np.asarray(val, np.float64))
            _write_vectors(h5.create_group("embeddings"), vectors, n, batch_rows)
            if spectrum_lambda is not None:
                h5.create_dataset("spectrum_lambda", data=np.asarray(spectrum_lambda, np.float64))
            h5.attrs.update(format=FORMAT, format_version=FORMAT_VERSION,
                            meta=json.dumps(dict(meta or {}), sort_keys=True, default=str))
    return Path(path)


def write_embedding_arrays(path: str | Path, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """:func:`write_embeddings` for the flat ``embed_dataset`` layout."""
    idmap, vectors, labels = split_arrays(arrays)
    return write_embeddings(path, idmap, vectors, labels, meta)


def _write_idmap(h5: h5py.File, idmap: Mapping[str, np.ndarray], n: int) -> None:
    h5.create_dataset("object_id", data=np.asarray([str(v) for v in idmap["object_id"]], dtype=object),
                      dtype=h5py.string_dtype())
    for key in ("ra", "dec"):
        h5.create_dataset(key, data=np.asarray(idmap.get(key, np.full(n, np.nan)), np.float64))
    for key in ("has_image", "has_spectrum"):
        h5.create_dataset(key, data=np.asarray(idmap.get(key, np.zeros(n, bool)), bool))


def _write_vectors(grp: h5py.Group, vectors: Mapping[str, Any], n: int, batch_rows: int) -> None:
    for kind, arr in vectors.items():
        if arr is None:
            continue
        if len(arr) != n:
            raise ValueError(f"{kind} embeddings have {len(arr)} rows, id map has {n}")
        ds = grp.create_dataset(kind, shape=(n, arr.shape[1]), dtype=np.float32,
                                chunks=(min(n, 4096) or 1, arr.shape[1]))
        for a in range(0, n, batch_rows):
            ds[a:a + batch_rows] = np.asarray(arr[a:a + batch_rows], np.float32)


def _decode(values: np.ndarray) -> np.ndarray:
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


class EmbeddingStore:
    """Read access to an embeddings file: the id map in memory, vectors read on demand."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputFileError(self.path, "embeddings file not found")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputFileError(self.path, f"cannot read embeddings ({exc})") from None
        try:
            self._vectors, self._labels = self._layout()
        except InputFileError:
            self._h5.close()
            raise
        h5 = self._h5
        self.meta = self._meta()
        self.object_id = _decode(h5["object_id"][()])
        self.ra = h5["ra"][()]
        self.dec = h5["dec"][()]
        self.has_image = h5["has_image"][()].astype(bool)
        self.has_spectrum = h5["has_spectrum"][()].astype(bool)
        self._row: dict[str, int] | None = None

    def _layout(self) -> tuple[Mapping[str, h5py.Dataset], Mapping[str, h5py.Dataset]]:
        """(vectors, labels) of the current layout or of the flat layout of older ``galclip embed``."""
        h5 = self._h5
        version = int(h5.attrs.get("format_version", 0))
        missing = [k for k in ID_COLUMNS if k not in h5]
        if missing:
            raise InputFileError(self.path, f"not a galclip embeddings file (missing {missing[0]!r}; "
                                            "write it with `galclip embed`)")
        if version > FORMAT_VERSION:
            raise InputFileError(self.path, f"format_version {version} is newer than this galclip")
        if "embeddings" in h5:
            return h5["embeddings"], (h5["labels"] if "labels" in h5 else {})
        if h5.attrs.get("format") != FORMAT:
            raise InputFileError(self.path, "not a galclip embeddings file (no embeddings group)")
        flat = {k: h5[k] for k in h5 if isinstance(h5[k], h5py.Dataset) and k not in ID_COLUMNS}
        return ({k: v for k, v in flat.items() if k in EMBED_KINDS},
                {k: v for k, v in flat.items() if v.ndim == 1 and v.dtype.kind in "biuf"})

    def _meta(self) -> dict[str, Any]:
        attrs = self._h5.attrs
        if "meta" in attrs:
            return json.loads(attrs["meta"])
        return {k: json.loads(v) for k, v in attrs.items() if k not in ("format", "format_version")}

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.object_id.size)

    @property
    def kinds(self) -> list[str]:
        return list(self._vectors.keys())

    @property
    def label_columns(self) -> list[str]:
        return list(self._labels.keys())

    @property
    def spectrum_lambda(self) -> np.ndarray | None:
        """The dataset's wavelength grid (Å) when it was stored."""
        return self._h5["spectrum_lambda"][()] if "spectrum_lambda" in self._h5 else None

    def idmap(self) -> dict[str, np.ndarray]:
        return {"object_id": self.object_id, "ra": self.ra, "dec": self.dec, "has_image": self.has_image,
                "has_spectrum": self.has_spectrum}

    def dim(self, kind: str) -> int:
        return int(self.vectors(kind).shape[1])

    def label(self, name: str) -> np.ndarray:
        if name not in self.label_columns:
            raise InputFileError(self.path, f"no label column {name!r} (have: {', '.join(self.label_columns) or 'none'})")
        return self._labels[name][()]

    def labels(self) -> dict[str, np.ndarray]:
        return {name: self.label(name) for name in self.label_columns}

    def vectors(self, kind: str) -> h5py.Dataset:
        """The (N,D) dataset of ``kind``, unread (sliceable by row blocks)."""
        if kind not in self.kinds:
            raise InputFileError(self.path, f"no {kind!r} embeddings stored (have: {', '.join(self.kinds)})")
        return self._vectors[kind]

    def embeddings(self, kind: str, rows: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Embeddings of ``kind`` for ``rows`` (all rows when None), float32, NaN = missing."""
        ds = self.vectors(kind)
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
        ds = self.vectors(kind)
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


def read_embeddings(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The whole file in memory, in the flat ``embed_dataset`` layout → ``(arrays, meta)``."""
    with EmbeddingStore(path) as store:
        arrays = {**store.idmap(), **{k: store.embeddings(k) for k in store.kinds}}
        for name, val in store.labels().items():
            arrays.setdefault(name, val)
        return arrays, store.meta
