"""PyTorch datasets over galclip HDF5 shards.

Two access patterns:

* :class:`SurveyDataset` — map-style random access (fine-tuning, embedding, evaluation).
  HDF5 files are opened lazily *in the process that reads them*, so DataLoader workers
  never share a file handle.
* :class:`StreamingSurvey` — an ``IterableDataset`` for survey-scale pretraining. It reads
  contiguous row blocks (bounded memory whatever the survey size), shuffles blocks and a
  bounded buffer with a seed that depends only on ``(seed, epoch)``, and splits blocks
  deterministically over distributed ranks × DataLoader workers. Every rank yields the same
  number of samples per epoch (short ranks wrap around), which DDP needs.

Both return the same item dictionary (see :func:`make_item`).
"""
from __future__ import annotations

import bisect
import weakref
import dataclasses
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from galclip.data import schema as S
from galclip.data.preprocess import ImagePrep, SpectrumPrep, prepare_image, prepare_spectrum
from galclip.data.shards import Manifest, read_manifest
from galclip.errors import InputFileError


@dataclasses.dataclass
class DataConfig:
    """Which dataset to read and how to preprocess it.

    Attributes:
        path: dataset directory (with ``manifest.json``).
        image: image preprocessing.
        spectrum: spectrum preprocessing.
        label_columns: label/parameter columns to return (default: all in the manifest).
        block_rows: rows read per HDF5 access when streaming (memory ∝ block × buffer).
        shuffle_blocks: blocks held in the shuffle buffer when streaming.
        prep_from_checkpoint: stages that load a pretrained checkpoint replace ``image`` and
            ``spectrum`` with the preprocessing the model was trained with (recorded in its
            ``model.json``), so embeddings are never computed on differently scaled inputs.
            Set false to use the values given here.
    """

    path: str = ""
    image: ImagePrep = dataclasses.field(default_factory=ImagePrep)
    spectrum: SpectrumPrep = dataclasses.field(default_factory=SpectrumPrep)
    label_columns: list[str] | None = None
    block_rows: int = 64
    shuffle_blocks: int = 8
    prep_from_checkpoint: bool = True


class _ShardReader:
    """Lazily opened, per-process HDF5 handles (re-opened after a fork).

    At most ``max_open`` shards stay open (least recently used are closed): every open
    HDF5 file holds its own chunk caches, so keeping all shards of a large survey open
    would make memory grow with the number of shards.
    """

    def __init__(self, paths: Sequence[Path], max_open: int = 16) -> None:
        self.paths = list(paths)
        self.max_open = max(1, int(max_open))
        self._files: OrderedDict[int, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def file(self, i: int) -> h5py.File:
        if os.getpid() != self._pid:  # forked worker: never reuse the parent's handles
            self._files = OrderedDict()
            self._pid = os.getpid()
        f = self._files.get(i)
        if f is None:
            try:
                f = h5py.File(self.paths[i], "r")
            except OSError as exc:
                raise InputFileError(self.paths[i], f"cannot open shard ({exc})") from None
            self._files[i] = f
            while len(self._files) > self.max_open:
                _, old = self._files.popitem(last=False)
                try:
                    old.close()
                except Exception:  # pragma: no cover - closing a dead handle
                    pass
        else:
            self._files.move_to_end(i)
        return f

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except Exception:  # pragma: no cover - closing a dead handle
                pass
        self._files = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"paths": self.paths, "max_open": self.max_open, "_files": OrderedDict(), "_pid": -1}


def read_rows(h5: h5py.File, start: int, stop: int, label_columns: Sequence[str],
              tabular_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Read raw rows ``start:stop`` of one shard as dicts (one contiguous HDF5 read per column)."""
    return _read_sel(h5, slice(start, stop), stop - start, label_columns, tabular_columns)


def read_rows_at(h5: h5py.File, rows: Sequence[int], label_columns: Sequence[str],
                 tabular_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Read the given rows of one shard (any order, repeats allowed) with one HDF5 read per column."""
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inv = np.unique(rows, return_inverse=True)
    if uniq.size and uniq[-1] - uniq[0] + 1 == uniq.size:
        got = _read_sel(h5, slice(int(uniq[0]), int(uniq[-1]) + 1), uniq.size, label_columns, tabular_columns)
    else:
        got = _read_sel(h5, uniq, uniq.size, label_columns, tabular_columns)
    return [got[i] for i in inv]


_SMALL_CACHE: "weakref.WeakKeyDictionary[h5py.File, dict[str, np.ndarray]]" = weakref.WeakKeyDictionary()


def _small_column(h5: h5py.File, key: str, group: str | None = None) -> np.ndarray | None:
    """A whole 1-D per-row column of an open shard, read once and kept with the handle.

    Each HDF5 dataset access costs ~0.1–0.3 ms of Python overhead; a survey row has dozens
    of label/parameter columns, so reading them row by row dominated random access. The
    columns are tiny (8 bytes × rows), so one read per shard is cheap in memory.
    """
    cache = _SMALL_CACHE.setdefault(h5, {})
    ck = f"{group}/{key}" if group else key
    if ck not in cache:
        node = h5.get(group) if group else h5
        if node is None or key not in node:
            cache[ck] = None  # type: ignore[assignment]
        else:
            arr = node[key][()]
            if key == S.OBJECT_ID:
                arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr], dtype=object)
            cache[ck] = arr
    return cache[ck]


def _read_sel(h5: h5py.File, sel: Any, n: int, label_columns: Sequence[str],
              tabular_columns: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [dict() for _ in range(n)]

    def put(key: str, arr: Any) -> None:
        for i in range(n):
            out[i][key] = arr[i]

    for key in (S.OBJECT_ID, S.RA, S.DEC, S.Z, S.HAS_IMAGE, S.HAS_SPECTRUM):
        put(key, _small_column(h5, key)[sel])
    if S.IMAGE in h5:
        put(S.IMAGE, h5[S.IMAGE][sel])
        put(S.IMAGE_IVAR, h5[S.IMAGE_IVAR][sel])
        scale = _small_column(h5, S.IMAGE_SCALE)
        if scale is not None:
            put(S.IMAGE_SCALE, scale[sel])
    if S.SPEC_FLUX in h5:
        put(S.SPEC_FLUX, h5[S.SPEC_FLUX][sel])
        put(S.SPEC_IVAR, h5[S.SPEC_IVAR][sel])
        put(S.SPEC_MASK, h5[S.SPEC_MASK][sel])
    for key in label_columns:
        col = _small_column(h5, key)
        put(key, col[sel] if col is not None else np.full(n, np.nan))
    if tabular_columns:
        cols = [_small_column(h5, c, S.TABULAR_GROUP) for c in tabular_columns]
        tab = np.stack([c[sel] if c is not None else np.full(n, np.nan, np.float32) for c in cols],
                       axis=1).astype(np.float32)
        put("tabular", tab)
    return out


class _ItemMaker:
    """Turns raw rows into model-ready tensors; shared by both dataset kinds."""

    def __init__(self, manifest: Manifest, wave: np.ndarray | None, cfg: DataConfig) -> None:
        self.manifest = manifest
        self.wave = wave
        self.cfg = cfg
        self.labels = list(manifest.label_columns if cfg.label_columns is None else cfg.label_columns)
        self.tabular = list(manifest.tabular_columns)
        self.n_bands = len(manifest.bands)
        self.n_spec = self._spec_len()

    def _spec_len(self) -> int:
        if not self.manifest.has_spectra or self.wave is None:
            return 0
        sp = self.cfg.spectrum
        n = sp.n_rest if sp.rest_frame else self.manifest.n_wave
        return n // max(1, sp.downsample)

    def __call__(self, row: dict[str, Any], index: int) -> dict[str, Any]:
        return make_item(row, index, self)


def make_item(row: dict[str, Any], index: int, mk: _ItemMaker) -> dict[str, Any]:
    """Model-ready item.

    Keys: ``index``, ``object_id``, ``ra``, ``dec``, ``z``, ``has_image``, ``image``
    (B,H,W float32 in noise units, *not yet* arcsinh-stretched), ``image_ivar``,
    ``has_spectrum``, ``spectrum`` (L,) normalised flux, ``spectrum_ivar`` (L,) (0 = bad
    pixel), ``spectrum_scale`` (log10 of the normalisation in 1e-17 erg/s/cm²/Å; NaN if
    unknown), ``labels`` (float32 vector in ``label_names`` order, NaN = unknown),
    ``tabular`` (float32, NaN = missing). Missing modalities are zero tensors with the
    ``has_*`` flag False.
    """
    cfg = mk.cfg
    size = cfg.image.size
    item: dict[str, Any] = {
        "index": int(index),
        "object_id": row[S.OBJECT_ID],
        "ra": float(row[S.RA]),
        "dec": float(row[S.DEC]),
        "z": float(row[S.Z]),
    }
    has_img = bool(row.get(S.HAS_IMAGE, False)) and mk.n_bands > 0
    if has_img:
        img, ivar = prepare_image(row[S.IMAGE], row[S.IMAGE_IVAR], cfg.image, float(row.get(S.IMAGE_SCALE, np.nan)))
    else:
        img = np.zeros((max(mk.n_bands, 1), size, size), np.float32)
        ivar = np.zeros_like(img)
    item.update(has_image=has_img, image=torch.from_numpy(img), image_ivar=torch.from_numpy(ivar))
    has_spec = bool(row.get(S.HAS_SPECTRUM, False)) and mk.n_spec > 0
    if has_spec:
        ivar_in = np.where(row[S.SPEC_MASK], 0, row[S.SPEC_IVAR]).astype(np.float32)
        flux, sivar, scale = prepare_spectrum(mk.wave, row[S.SPEC_FLUX], ivar_in, float(row[S.Z]), cfg.spectrum)
        has_spec = bool((sivar > 0).sum() >= 8)
    if not has_spec:
        flux = np.zeros(max(mk.n_spec, 1), np.float32)
        sivar = np.zeros_like(flux)
        scale = float("nan")
    item.update(has_spectrum=has_spec, spectrum=torch.from_numpy(flux), spectrum_ivar=torch.from_numpy(sivar),
                spectrum_scale=scale)
    item["labels"] = torch.tensor([float(row.get(k, np.nan)) for k in mk.labels], dtype=torch.float32)
    item["tabular"] = torch.from_numpy(np.asarray(row.get("tabular", np.zeros(0)), np.float32))
    return item


def _open(root: str | Path) -> tuple[Manifest, list[Path], np.ndarray | None]:
    root = Path(root)
    man = read_manifest(root)
    paths = [root / s.path for s in man.shards]
    wave = None
    if man.has_spectra and paths:
        with h5py.File(paths[0], "r") as h5:
            wave = h5[S.SPEC_LAMBDA][()] if S.SPEC_LAMBDA in h5 else None
    return man, paths, wave


class _SurveyShape:
    """What both dataset kinds say about their items (filled by ``_ItemMaker``)."""

    _maker: _ItemMaker

    @property
    def label_names(self) -> list[str]:
        return self._maker.labels

    @property
    def tabular_names(self) -> list[str]:
        return self._maker.tabular

    @property
    def n_bands(self) -> int:
        return self._maker.n_bands

    @property
    def spectrum_length(self) -> int:
        return self._maker.n_spec


class SurveyDataset(_SurveyShape, Dataset):
    """Random-access dataset over all shards (optionally a subset of row ``indices``)."""

    def __init__(self, cfg: DataConfig | str | Path, indices: Sequence[int] | None = None) -> None:
        if not isinstance(cfg, DataConfig):
            cfg = DataConfig(path=str(cfg))
        self.cfg = cfg
        self.manifest, paths, self.wave = _open(cfg.path)
        self._reader = _ShardReader(paths)
        self._offsets = np.cumsum([0] + [s.n_rows for s in self.manifest.shards]).tolist()
        self._maker = _ItemMaker(self.manifest, self.wave, cfg)
        self.indices = np.arange(self.manifest.n_rows) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def locate(self, global_row: int) -> tuple[int, int]:
        """Global row number → (shard index, row within shard)."""
        s = bisect.bisect_right(self._offsets, global_row) - 1
        return s, global_row - self._offsets[s]

    def raw_row(self, i: int) -> dict[str, Any]:
        g = int(self.indices[i])
        s, r = self.locate(g)
        return read_rows(self._reader.file(s), r, r + 1, self._maker.labels, self._maker.tabular)[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._maker(self.raw_row(i), int(self.indices[i]))

    def subset(self, indices: Sequence[int]) -> "SurveyDataset":
        """A view on some rows (indices relative to this dataset)."""
        return SurveyDataset(self.cfg, self.indices[np.asarray(indices, dtype=np.int64)])

    def column(self, name: str) -> np.ndarray:
        """A whole per-row column (ids, ra/dec, z, flags, labels) for the rows of this view."""
        parts = []
        for s in range(len(self._reader.paths)):
            h5 = self._reader.file(s)
            if name in h5 and h5[name].ndim > 1:  # pixel arrays: read, never cache with the handle
                parts.append(h5[name][()])
                continue
            col = _small_column(h5, name) if name in h5 else _small_column(h5, name, S.TABULAR_GROUP)
            if col is None:
                raise KeyError(f"{self.cfg.path}: no column {name!r}")
            parts.append(col)
        full = np.concatenate(parts) if parts else np.zeros(0)
        return full[self.indices]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack item dicts into a batch (ids stay a list of strings)."""
    out: dict[str, Any] = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[key] = torch.stack(vals)
        elif isinstance(vals[0], (bool, np.bool_)):
            out[key] = torch.tensor(vals, dtype=torch.bool)
        elif isinstance(vals[0], (int, np.integer)):
            out[key] = torch.tensor(vals, dtype=torch.long)
        elif isinstance(vals[0], (float, np.floating)):
            out[key] = torch.tensor(vals, dtype=torch.float32)
        else:
            out[key] = vals
    return out


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StreamingSurvey(_SurveyShape, IterableDataset):
    """Stream a survey of any size with bounded memory and deterministic sharding.

    Args:
        cfg: data config.
        seed: base seed; the order of an epoch depends only on ``(seed, epoch)``.
        shuffle: shuffle blocks and rows within the buffer.
        rank, world_size: override the distributed rank (default: from torch.distributed).
    """

    def __init__(self, cfg: DataConfig, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.skip = 0
        self._rank, self._world = rank, world_size
        self.manifest, paths, self.wave = _open(cfg.path)
        self._reader = _ShardReader(paths)
        self._maker = _ItemMaker(self.manifest, self.wave, cfg)
        self._offsets = np.cumsum([0] + [x.n_rows for x in self.manifest.shards]).tolist()
        b = max(1, cfg.block_rows)
        self.blocks = [(s, r, min(r + b, info.n_rows))
                       for s, info in enumerate(self.manifest.shards) for r in range(0, info.n_rows, b)]

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order; ``skip`` drops this many samples per rank (exact resume)."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def _world_info(self) -> tuple[int, int]:
        r, w = _dist_info()
        return (self._rank if self._rank is not None else r, self._world if self._world is not None else w)

    def samples_per_rank(self) -> int:
        return self.manifest.n_rows // self._world_info()[1]

    def __len__(self) -> int:
        return self.samples_per_rank()

    def _rank_rows(self) -> Iterator[tuple[int, int]]:
        """(shard, row) pairs of this rank for this epoch, in order, wrapped to equal length."""
        rank, world = self._world_info()
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.blocks)) if self.shuffle else np.arange(len(self.blocks))
        mine = [self.blocks[i] for i in order[rank::world]] or [self.blocks[i] for i in order]
        quota = self.samples_per_rank()
        produced = 0
        while produced < quota:
            for s, a, b in mine:
                for r in range(a, b):
                    if produced >= quota:
                        return
                    yield s, r
                    produced += 1

    def _buffers(self) -> Iterator[list[tuple[int, int]]]:
        """The rank's epoch order as consecutive shuffled buffers (``shuffle_blocks × block_rows``).

        Only one buffer of positions exists at a time, so memory does not grow with the
        survey; the order is a pure function of ``(seed, epoch, rank, world)``.
        """
        rng = np.random.default_rng([self.seed, self.epoch, 7919])
        cap = max(1, self.cfg.shuffle_blocks * self.cfg.block_rows)
        buffer: list[tuple[int, int]] = []
        for pos in self._rank_rows():
            buffer.append(pos)
            if len(buffer) >= cap:
                if self.shuffle:
                    rng.shuffle(buffer)
                yield buffer
                buffer = []
        if buffer:
            if self.shuffle:
                rng.shuffle(buffer)
            yield buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
        # Sample j of the rank order (after ``skip``) goes to worker j % nworkers, so a
        # DataLoader interleaving its workers reproduces the single-process order.
        k = 0  # position of the buffer's first sample in the rank order
        step = max(1, self.cfg.block_rows)
        for buf in self._buffers():
            mine = [buf[i] for i in range(len(buf))
                    if k + i >= self.skip and (k + i - self.skip) % nworkers == wid]
            k += len(buf)
            for a in range(0, len(mine), step):  # read ≤ block_rows rows at a time, grouped by shard
                yield from self._read_positions(mine[a:a + step])

    def _read_positions(self, positions: list[tuple[int, int]]) -> Iterator[dict[str, Any]]:
        by_shard: dict[int, list[int]] = {}
        for s, r in positions:
            by_shard.setdefault(s, []).append(r)
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        for s, rs in by_shard.items():
            got = read_rows_at(self._reader.file(s), rs, self._maker.labels, self._maker.tabular)
            for r, row in zip(rs, got):
                rows[(s, r)] = row
        for s, r in positions:
            yield self._maker(rows[(s, r)], self._offsets[s] + r)

    def _global(self, s: int, r: int) -> int:
        return self._offsets[s] + r
