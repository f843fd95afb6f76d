"""Training batches for pretraining: an in-memory cache when the survey fits, streaming otherwise.

Why a cache: per-row HDF5 reads plus per-object preprocessing cost more than a small model
step on a 2-core machine, and DataLoader workers would steal the training cores. A survey of
a few thousand cutouts fits in a few hundred MB, so it is read and preprocessed *once*
(block reads, vectorised where the data module allows) and every batch is a single tensor
gather. Larger surveys stream through :class:`~galclip.data.dataset.StreamingSurvey`.

Both sources are *step addressed*: the batch of global step ``s`` is a pure function of
``(seed, s)``, so resuming at step ``s`` reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info
from tqdm.auto import tqdm

from galclip.data.dataset import StreamingSurvey, SurveyDataset, collate

log = logging.getLogger(__name__)

TENSOR_KEYS = ("index", "z", "has_image", "image", "image_ivar", "has_spectrum", "spectrum", "spectrum_ivar",
               "spectrum_scale", "labels")


def cache_size_bytes(ds: Any) -> int:
    """Approximate in-memory size of a dataset's preprocessed tensors."""
    size = getattr(getattr(ds, "cfg", None), "image", None)
    px = (size.size if size is not None else 64) ** 2
    per_row = 4 * (2 * max(1, ds.n_bands) * px + 2 * max(1, ds.spectrum_length) + len(ds.label_names) + 4)
    return int(per_row * len(ds))


def load_tensors(ds: SurveyDataset, batch_size: int = 256, progress: bool = True) -> dict[str, torch.Tensor]:
    """Read and preprocess a whole (sub)dataset once into stacked tensors."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in TENSOR_KEYS}
    for batch in tqdm(loader, desc="cache", unit="batch", disable=not progress):
        for k in TENSOR_KEYS:
            parts[k].append(batch[k])
    return {k: torch.cat(v) for k, v in parts.items()}


class TensorBatches(Dataset):
    """A dataset whose items are whole batches: ``ds[list_of_rows]`` → batch dict."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors["index"].shape[0])

    def __getitem__(self, rows: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return {k: v.index_select(0, idx) for k, v in self.tensors.items()}


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's rows for global steps ``start .. total-1``.

    Data epoch ``e`` is a permutation seeded by ``(seed, e)``; step ``s`` takes global
    batch ``s`` of the concatenated epochs (dropping each epoch's ragged tail), and rank
    ``r`` its ``r``-th slice — so every rank has equal work and the global batch is the same
    whatever the number of ranks.
    """

    def __init__(self, n_rows: int, global_batch: int, total_steps: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start: int = 0) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} ranks")
        if n_rows < global_batch:
            raise ValueError(f"only {n_rows} training rows for a global batch of {global_batch}")
        self.n, self.gb, self.total, self.seed = n_rows, global_batch, total_steps, seed
        self.rank, self.world, self.start = rank, world_size, start
        self.per_epoch = n_rows // global_batch

    def __len__(self) -> int:
        return self.total  # Lightning counts the already-done steps as fetched on resume

    def rows(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        glob = perm[k * self.gb:(k + 1) * self.gb]
        b = self.gb // self.world
        return glob[self.rank * b:(self.rank + 1) * b].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.total):
            yield self.rows(step)


def memory_loader(tensors: dict[str, torch.Tensor], sampler: StepBatchSampler, pin_memory: bool = False) -> DataLoader:
    """DataLoader over cached tensors: one gather per batch, no workers needed."""
    return DataLoader(TensorBatches(tensors), sampler=sampler, batch_size=None, num_workers=0,
                      pin_memory=pin_memory)


class StreamingSteps(IterableDataset):
    """Stream samples from a :class:`StreamingSurvey`, epoch after epoch, from a step on.

    The data position of step ``start`` is ``(epoch, skip)`` with
    ``start × batch = epoch × samples_per_rank + skip``; ``StreamingSurvey.set_epoch``
    fast-forwards there. Exact resume holds with ``num_workers=0``; with workers the
    DataLoader interleaves per-worker batches, so the resumed order is close but not
    identical.
    """

    def __init__(self, survey: StreamingSurvey, batch_size: int, total_steps: int, start: int = 0,
                 exclude: set[int] | None = None) -> None:
        super().__init__()
        self.survey, self.batch, self.total, self.start = survey, batch_size, total_steps, start
        self.exclude = exclude or set()

    def __len__(self) -> int:
        return (self.total - self.start) * self.batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        # worker w builds the batches of steps w, w+nw, ... (the DataLoader alternates workers)
        remaining = len(range(wid, self.total - self.start, nw)) * self.batch
        spr = max(1, self.survey.samples_per_rank())
        epoch, skip = divmod(self.start * self.batch, spr)
        while remaining > 0:
            self.survey.set_epoch(epoch, skip)
            for item in self.survey:
                if item["index"] in self.exclude:  # held-out validation rows
                    continue
                yield item
                remaining -= 1
                if remaining <= 0:
                    return
            epoch, skip = epoch + 1, 0


def _tensor_collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = collate(items)
    return {k: batch[k] for k in TENSOR_KEYS}


def streaming_loader(survey: StreamingSurvey, batch_size: int, total_steps: int, start: int, num_workers: int,
                     pin_memory: bool = False, exclude: set[int] | None = None) -> DataLoader:
    """DataLoader over a streamed survey (for surveys larger than the cache limit)."""
    return DataLoader(StreamingSteps(survey, batch_size, total_steps, start, exclude), batch_size=batch_size,
                      num_workers=num_workers, collate_fn=_tensor_collate, pin_memory=pin_memory,
                      persistent_workers=False, drop_last=True)
