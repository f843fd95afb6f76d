"""``galclip index``: embed a dataset (or take precomputed embeddings) and build a FAISS index.

The output is an index directory (see :mod:`galclip.retrieval.store`). It is assembled in a
staging directory beside the target and renamed into place at the end, so a killed build
never leaves a half-written index that a later search would trust.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from galclip.data.dataset import DataConfig
from galclip.embeddings import EmbedKind, EmbeddingStore, split_arrays, write_embeddings
from galclip.errors import ConfigError, InputFileError
from galclip.retrieval.build import (apply_search_params, auto_factory, build_index, build_ondisk, count_valid,
                                     default_search_params)
from galclip.retrieval.store import EMBEDDINGS_FILE, INDEX_FILE, IndexManifest, load_index, write_faiss, write_manifest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IndexConfig:
    """Options of ``galclip index``.

    Attributes:
        data: dataset to embed (ignored when ``embeddings`` is given).
        checkpoint: model checkpoint (``model.safetensors`` or its directory).
        embeddings: precomputed embeddings file from ``galclip embed`` (skips the model).
        out: index directory to write.
        kind: which embedding the index holds; the others are stored beside it for
            cross-modal queries.
        factory: FAISS factory string; empty = chosen by size (Flat / IVF,Flat / IVF,SQ8).
        search_params: search-time parameters (e.g. ``efSearch=128``, ``nprobe=32``);
            empty = a default matched to the factory.
        train_size: vectors sampled to train IVF/PQ quantisers (0 = 40 per inverted list).
        batch_rows: vectors added per block (bounds memory).
        shard_rows: >0 builds an IVF index in shards of this many vectors and merges the
            inverted lists on disk (``index.ivfdata``, memory-mapped) — for surveys beyond RAM.
        batch_size: embedding batch size when a model is run.
        seed: sampling seed for training the quantisers.
        overwrite: replace an existing index directory.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: str = ""
    embeddings: str = ""
    out: str = "runs/index"
    kind: EmbedKind = "joint"
    factory: str = ""
    search_params: str = ""
    train_size: int = 0
    batch_rows: int = 65536
    shard_rows: int = 0
    batch_size: int = 128
    seed: int = 0
    overwrite: bool = False


def build_index_dir(out: str | Path, idmap: Mapping[str, np.ndarray], embeddings: Mapping[str, Any],
                    kind: str, labels: Mapping[str, np.ndarray] | None = None, factory: str = "",
                    search_params: str = "", checkpoint_sha256: str = "", model_name: str = "",
                    dataset: str = "", checkpoint: str = "", train_size: int = 0,
                    batch_rows: int = 65536, shard_rows: int = 0, seed: int = 0, overwrite: bool = False,
                    spectrum_lambda: np.ndarray | None = None, preprocess: Mapping[str, Any] | None = None,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write a complete index directory from arrays — the model-free core of ``galclip index``.

    Args:
        out: index directory.
        idmap: ``object_id``, ``ra``, ``dec``, ``has_image``, ``has_spectrum`` (N,).
        embeddings: kind → (N,D) array-like; ``kind`` is indexed, all are stored.
        kind: embedding kind to index.
        labels: label columns kept with the id map (for ``galclip label`` / ``candidates``).
        factory: FAISS factory string ("" = automatic by size).
        search_params: search-time parameters ("" = default for the factory).
        checkpoint_sha256, model_name, dataset, checkpoint: provenance for the manifest.
        train_size, batch_rows, shard_rows, seed: see :class:`IndexConfig`.
        overwrite: replace an existing directory.
        spectrum_lambda: dataset wavelength grid, stored for spectrum-file queries.
        preprocess: dataset image/spectrum preprocessing, stored for file queries.
        meta: provenance of the embeddings (as ``galclip embed`` records it), kept in the store.

    Returns:
        The index directory.
    """
    out = Path(out)
    if kind not in embeddings:
        raise ConfigError(f"no {kind!r} embeddings to index (have: {', '.join(embeddings) or 'none'})")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; pass overwrite=true to replace it")
    vectors = embeddings[kind]
    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    on_disk = shard_rows > 0
    n_valid = count_valid(vectors, batch_rows)  # e.g. only the objects that have a spectrum
    if n_valid == 0:
        raise ConfigError(f"no object has a {kind} embedding: nothing to index")
    factory = factory or auto_factory(n_valid, d, on_disk=on_disk)
    search_params = search_params or default_search_params(factory, n_valid)
    stage = out.with_name(f".{out.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        _build_into(stage, vectors, idmap, embeddings, kind, labels, factory, search_params, checkpoint_sha256,
                    model_name, dataset, checkpoint, train_size, batch_rows, shard_rows, seed, spectrum_lambda,
                    preprocess, meta)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # never leave a half-built index behind
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(out)
    load_index(out).store.close()  # verify what was written (manifest vs files) before reporting success
    log.info("wrote %s: %d of %d objects indexed with %s", out, n_valid, n, factory)
    return out


def _build_into(stage: Path, vectors: Any, idmap: Mapping[str, np.ndarray], embeddings: Mapping[str, Any], kind: str,
                labels: Mapping[str, np.ndarray] | None, factory: str, search_params: str, checkpoint_sha256: str,
                model_name: str, dataset: str, checkpoint: str, train_size: int, batch_rows: int, shard_rows: int,
                seed: int, spectrum_lambda: np.ndarray | None, preprocess: Mapping[str, Any] | None,
                meta: Mapping[str, Any] | None) -> None:
    """Write index, store and manifest into the staging directory."""
    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    on_disk = shard_rows > 0
    t0 = time.time()
    log.info("indexing %s vectors (d=%d) with %r", kind, d, factory)
    if on_disk:
        index = build_ondisk(vectors, factory, stage, shard_rows, train_size, seed, batch_rows)
    else:
        index = build_index(vectors, factory, train_size, seed, batch_rows)
    apply_search_params(index, search_params)
    write_faiss(index, stage / INDEX_FILE)
    build_s = time.time() - t0
    write_embeddings(stage / EMBEDDINGS_FILE, idmap, embeddings, labels,
                     meta={**(meta or {}), "checkpoint_sha256": checkpoint_sha256, "dataset": dataset},
                     batch_rows=batch_rows, spectrum_lambda=spectrum_lambda)
    man = IndexManifest(checkpoint_sha256=checkpoint_sha256, model_name=model_name, embedding_kind=kind, dim=d,
                        factory=factory, count=int(index.ntotal), n_rows=n, label_columns=sorted(labels or {}),
                        dataset=str(dataset), checkpoint=str(checkpoint), on_disk=on_disk,
                        build_seconds=round(build_s, 3), search_params=search_params,
                        preprocess=dict(preprocess or {}))
    write_manifest(stage, man)


def embed_with_model(cfg: IndexConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run the checkpoint over the dataset: (arrays in ``embed_dataset`` layout, provenance)."""
    from galclip.encode import embed_checkpoint

    if not cfg.checkpoint:
        raise ConfigError("give checkpoint=... (or embeddings=... with precomputed embeddings)")
    if not cfg.data.path:
        raise ConfigError("give data.path=... (the dataset to index)")
    return embed_checkpoint(cfg.checkpoint, cfg.data, batch_size=cfg.batch_size)


def dataset_grid(dataset: str) -> np.ndarray | None:
    """The dataset's observed wavelength grid, or None when it has no spectra / is absent."""
    from galclip.data.dataset import SurveyDataset

    if not dataset or not Path(dataset).exists():
        return None
    try:
        return SurveyDataset(DataConfig(path=dataset)).wave
    except InputFileError as exc:
        log.warning("cannot read the wavelength grid of %s (%s)", dataset, exc)
        return None


def run_index(cfg: IndexConfig) -> Path:
    """CLI stage: embed (or read ``galclip embed``'s file) then build and save the index directory."""
    if not cfg.embeddings:
        arrays, meta = embed_with_model(cfg)
        return _build(cfg, *split_arrays(arrays), meta)
    with EmbeddingStore(cfg.embeddings) as store:  # vectors stay on disk, copied block by block
        meta = dict(store.meta)
        _check_pairing(cfg, meta)
        return _build(cfg, store.idmap(), {k: store.vectors(k) for k in store.kinds}, store.labels(), meta)


def _build(cfg: IndexConfig, idmap: Mapping[str, np.ndarray], vectors: Mapping[str, Any],
           labels: Mapping[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """:func:`build_index_dir` with the provenance of the embeddings."""
    dataset = str(meta.get("dataset", ""))
    return build_index_dir(cfg.out, idmap, vectors, cfg.kind, labels, cfg.factory, cfg.search_params,
                           checkpoint_sha256=str(meta.get("checkpoint_sha256", "")),
                           model_name=str(meta.get("model_name", "")), dataset=dataset,
                           checkpoint=str(meta.get("checkpoint", cfg.checkpoint)), train_size=cfg.train_size,
                           batch_rows=cfg.batch_rows, shard_rows=cfg.shard_rows, seed=cfg.seed,
                           overwrite=cfg.overwrite, spectrum_lambda=dataset_grid(dataset),
                           preprocess={**meta.get("preprocess", {}), **_dataset_info(dataset)}, meta=meta)


def _check_pairing(cfg: IndexConfig, meta: dict[str, Any]) -> None:
    """With both embeddings and a checkpoint given, they must come from the same model."""
    if not cfg.checkpoint:
        return
    from galclip.models.checkpoint import checkpoint_hash

    sha = checkpoint_hash(cfg.checkpoint)
    if meta.get("checkpoint_sha256") and sha != meta["checkpoint_sha256"]:
        raise InputFileError(cfg.embeddings, f"embeddings were made by another model (sha256 "
                                             f"{str(meta['checkpoint_sha256'])[:12]}…, {cfg.checkpoint}: {sha[:12]}…)")
    meta["checkpoint"] = str(Path(cfg.checkpoint).resolve())


def _dataset_info(dataset: str) -> dict[str, Any]:
    """How the dataset stores cutouts (band order, stored size, ingest resize mode).

    An image-file query must be brought to the same state as a stored row before the
    dataset preprocessing runs (e.g. a 423-px JPEG area-resampled to the stored 96 px).
    """
    from galclip.data.shards import read_manifest

    if not dataset or not Path(dataset).exists():
        return {}
    try:
        man = read_manifest(dataset)
    except InputFileError:
        return {}
    ingest = (man.provenance or {}).get("config", {}) if isinstance(man.provenance, dict) else {}
    ingest = ingest if isinstance(ingest, dict) else {}
    scale = ingest.get("pixel_scale")
    return {"bands": list(man.bands), "stored_image_size": int(man.image_size),
            "image_resize": str(ingest.get("image_resize", "area")), "image_crop": str(ingest.get("image_crop") or ""),
            "pixel_scale": float(scale) if isinstance(scale, (int, float)) else float("nan")}
