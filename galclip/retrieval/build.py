"""Build FAISS indexes over (N,D) embeddings with bounded memory — model-free array code.

Everything here works on anything that slices like an array (ndarray, np.memmap, h5py
dataset), so a survey larger than RAM is read block by block. Vectors are L2-normalised
and searched by inner product (= cosine similarity, the CLIP training similarity). The
FAISS id of a vector is its row number in the id map, so rows lacking a modality (NaN
embeddings) are simply not added and ids never shift.
"""
from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk
from tqdm.auto import tqdm

from galclip.errors import ConfigError
from galclip.retrieval.store import IVFDATA_FILE, normalise, valid_rows, write_faiss

log = logging.getLogger(__name__)

#: Up to this many vectors an exact ``Flat`` index is fast enough and has perfect recall.
EXACT_MAX = 50_000
#: Up to this many vectors IVF keeps full float32 vectors (exact distances); beyond, 8-bit codes.
IVF_FLAT_MAX = 5_000_000


def ivf_nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4·sqrt(n), as a power of two (FAISS guideline)."""
    return int(2 ** round(math.log2(max(16.0, 4 * math.sqrt(max(n, 1))))))


def auto_factory(n: int, d: int, on_disk: bool = False) -> str:
    """FAISS factory string for ``n`` vectors of dimension ``d``.

    * ``n`` ≤ 50k: exact ``Flat`` (sub-millisecond per query, perfect recall).
    * ``n`` ≤ 5M: ``IVF{nlist},Flat`` — k-means cells, full vectors, so the only error is
      a neighbour in an unvisited cell. On 10⁶ clustered 128-d vectors it gives
      recall@10 ≈ 0.97 at ~200× NumPy brute force per query with nprobe=8 and builds in
      about two minutes on one (busy) core (``benchmarks/bench_faiss.py``); HNSW was as
      accurate but took several times longer to build on the 2-core machine.
    * larger, or ``on_disk`` (sharded, memory-mapped): ``IVF{nlist},SQ8`` — 4× smaller
      8-bit codes, and IVF is the family whose inverted lists FAISS merges on disk.
    """
    nlist = ivf_nlist(n)
    if on_disk or n > IVF_FLAT_MAX:
        return f"IVF{nlist},SQ8"
    if n <= EXACT_MAX:
        return "Flat"
    return f"IVF{nlist},Flat"


def default_search_params(factory: str, n: int) -> str:
    """Search-time parameters (faiss.ParameterSpace syntax) matching :func:`auto_factory`.

    Measured on 10⁶ clustered 128-d vectors (``benchmarks/results/faiss.json``): IVF,Flat
    with nprobe=8 gives recall@10 ≈ 0.97 (nprobe=16: 0.98 at half the speed); 8-bit codes
    lose about 1.5 points of recall, so IVF,SQ8 probes 16 lists.
    """
    if "HNSW" in factory and "IVF" not in factory:
        return "efSearch=64"
    m = re.search(r"IVF(\d+)", factory)
    if m:
        nlist = int(m.group(1))
        probe = 8 if factory.rstrip().endswith(",Flat") else 16
        return f"nprobe={max(1, min(nlist, probe))}"
    return ""


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Set efSearch / nprobe / ... on an index (also through IDMap wrappers)."""
    if not params:
        return
    target = index
    if isinstance(target, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        target = faiss.downcast_index(target.index)
    faiss.ParameterSpace().set_index_parameters(target, params)


def new_index(factory: str, d: int) -> faiss.Index:
    """Index from a factory string, wrapped in ``IndexIDMap`` when it cannot take ids itself."""
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        if not isinstance(index, faiss.IndexIVF):  # IVF stores ids itself; others need a map
            index = faiss.index_factory(d, "IDMap2," + factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ConfigError(f"invalid FAISS factory string {factory!r}: {str(exc).splitlines()[-1][:160]}") from None
    return index


def count_valid(vectors: Any, batch_rows: int = 65536) -> int:
    """Rows with an embedding (one pass in blocks; the index size decides the factory)."""
    return int(sum(valid_rows(np.asarray(vectors[a:a + batch_rows], np.float32)).sum()
                   for a in range(0, len(vectors), batch_rows)))


def sample_rows(vectors: Any, n_sample: int, seed: int, batch_rows: int = 65536) -> np.ndarray:
    """A reproducible random sample of valid, normalised rows (to train IVF/PQ quantisers)."""
    n = len(vectors)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, n_sample), replace=False))
    parts = []
    for a in range(0, n, batch_rows):
        sel = pick[(pick >= a) & (pick < a + batch_rows)] - a
        if sel.size:
            block = np.asarray(vectors[a:a + batch_rows], np.float32)[sel]
            parts.append(block[valid_rows(block)])
    if not parts:
        raise ConfigError("no valid vectors to train the index on")
    return normalise(np.concatenate(parts))


def train_index(index: faiss.Index, vectors: Any, train_size: int, seed: int) -> None:
    """Train quantisers (IVF centroids, PQ/SQ codebooks) on a sample if the index needs it.

    ``train_size`` ≤ 0 picks 40 vectors per inverted list (k-means needs ~39; more only
    costs time), or 100k for indexes without lists.
    """
    if index.is_trained:
        return
    t0 = time.time()
    ivf = faiss.try_extract_index_ivf(index)
    if train_size <= 0:
        train_size = 40 * ivf.nlist if ivf is not None else 100_000
    xt = sample_rows(vectors, train_size, seed)
    if ivf is not None and xt.shape[0] < 39 * ivf.nlist:
        log.warning("training %s on %d vectors (< 39 per list); consider fewer lists", type(ivf).__name__, len(xt))
    index.train(xt)
    log.info("trained index on %d vectors in %.1fs", len(xt), time.time() - t0)


def add_vectors(index: faiss.Index, vectors: Any, start: int = 0, stop: int | None = None,
                batch_rows: int = 65536, desc: str = "indexing") -> int:
    """Add rows ``start:stop`` in blocks with ``add_with_ids`` (id = row); returns the count added."""
    stop = len(vectors) if stop is None else stop
    added = 0
    for a in tqdm(range(start, stop, batch_rows), desc=desc, unit="block", disable=stop - start <= batch_rows):
        b = min(stop, a + batch_rows)
        block = np.asarray(vectors[a:b], np.float32)
        ok = valid_rows(block)
        if ok.any():
            x = normalise(block[ok])
            index.add_with_ids(x, np.arange(a, b, dtype=np.int64)[ok])
            added += int(ok.sum())
    return added


def build_index(vectors: Any, factory: str, train_size: int = 0, seed: int = 0,
                batch_rows: int = 65536) -> faiss.Index:
    """Build an in-memory index of ``vectors`` (N,D): train on a sample, add in blocks."""
    d = int(vectors.shape[1])
    index = new_index(factory, d)
    train_index(index, vectors, train_size, seed)
    add_vectors(index, vectors, batch_rows=batch_rows)
    return index


def build_ondisk(vectors: Any, factory: str, root: str | Path, shard_rows: int, train_size: int = 0,
                 seed: int = 0, batch_rows: int = 65536) -> faiss.Index:
    """Build an IVF index shard by shard and merge the inverted lists on disk.

    Each shard (``shard_rows`` vectors) is added to a copy of the trained empty index and
    written out, so peak memory is one shard; ``faiss.contrib.ondisk.merge_ondisk`` then
    concatenates the shards' inverted lists into ``root/index.ivfdata``, which is
    memory-mapped at query time. Returns the merged index (caller writes ``index.faiss``).
    """
    root = Path(root)
    d = int(vectors.shape[1])
    index = new_index(factory, d)
    if not isinstance(index, faiss.IndexIVF):
        raise ConfigError(f"on-disk/sharded builds need an IVF factory string, got {factory!r}")
    train_index(index, vectors, train_size, seed)
    trained = root / "trained.faiss"
    write_faiss(index, trained)
    shard_files: list[str] = []
    n = len(vectors)
    for k, a in enumerate(tqdm(range(0, n, shard_rows), desc="shards", unit="shard")):
        shard = faiss.read_index(str(trained))
        add_vectors(shard, vectors, a, min(n, a + shard_rows), batch_rows, desc=f"shard {k}")
        path = root / f"shard-{k:05d}.faiss"
        write_faiss(shard, path)
        shard_files.append(str(path))
        del shard
    merged = faiss.read_index(str(trained))
    merge_ondisk(merged, shard_files, str(root / IVFDATA_FILE))
    for f in shard_files + [str(trained)]:
        Path(f).unlink(missing_ok=True)
    return merged


def exact_search(db: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product with ``faiss.knn`` (ground truth for recall checks)."""
    return faiss.knn(normalise(queries), normalise(db), k, faiss.METRIC_INNER_PRODUCT)


def recall_at_k(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k."""
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) / k

