"""CLIP loss against a naive reference, and gathered negatives across 2 gloo processes."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from galclip.pretrain.losses import SSLLoss, clip_loss


def naive_clip(zi: torch.Tensor, zs: torch.Tensor, scale: float) -> float:
    """Per-row InfoNCE written out with explicit sums (the definition)."""
    n = zi.shape[0]
    total = 0.0
    for a, b in ((zi, zs), (zs, zi)):
        for i in range(n):
            logits = [scale * float(a[i] @ b[j]) for j in range(n)]
            m = max(logits)
            lse = m + math.log(sum(math.exp(x - m) for x in logits))
            total += (lse - logits[i]) / n
    return total / 2


def test_clip_loss_matches_naive():
    g = torch.Generator().manual_seed(0)
    zi = F.normalize(torch.randn(9, 5, generator=g), dim=-1)
    zs = F.normalize(torch.randn(9, 5, generator=g), dim=-1)
    got = clip_loss(zi, zs, torch.tensor(7.0), gather=False)
    assert got.item() == pytest.approx(naive_clip(zi, zs, 7.0), rel=1e-5)


def test_clip_loss_mask_equals_subset_and_perfect_pairs_are_low():
    g = torch.Generator().manual_seed(1)
    zi = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    zs = F.normalize(torch.randn(8, 4, generator=g), dim=-1)
    valid = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    masked = clip_loss(zi, zs, torch.tensor(5.0), valid, gather=False)
    assert masked.item() == pytest.approx(naive_clip(zi[valid], zs[valid], 5.0), rel=1e-5)
    eye = torch.eye(8)
    assert clip_loss(eye, eye, torch.tensor(50.0), gather=False).item() < 1e-6
    assert clip_loss(eye, eye.roll(1, 0), torch.tensor(50.0), gather=False).item() > 10
    # fewer than two pairs: zero but still differentiable
    zi.requires_grad_(True)
    zero = clip_loss(zi, zs, torch.tensor(5.0), torch.zeros(8, dtype=torch.bool), gather=False)
    zero.backward()
    assert zero.item() == 0 and zi.grad is not None


def _objective(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor,
               gather: bool) -> torch.Tensor:
    zi = F.normalize(model[0](x), dim=-1)
    zs = F.normalize(model[1](y), dim=-1)
    zs2 = F.normalize(model[1](y * 1.1 + 0.05), dim=-1)
    return clip_loss(zi, zs, model[2].exp(), valid, gather=gather) + 0.5 * SSLLoss(0.2)(zs, zs2, valid, gather=gather)


def _make(seed: int = 0):
    torch.manual_seed(seed)
    lin = torch.nn.ModuleList([torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)])
    scale = torch.nn.Parameter(torch.tensor(2.0))
    g = torch.Generator().manual_seed(42)
    x, y = torch.randn(12, 6, generator=g), torch.randn(12, 5, generator=g)
    valid = torch.ones(12, dtype=torch.bool)
    valid[[1, 2, 3, 9]] = False  # ranks hold different numbers of pairs
    return lin, scale, x, y, valid


class _Wrap(torch.nn.Module):
    def __init__(self, lin, scale):
        super().__init__()
        self.lin, self.scale = lin, scale

    def __getitem__(self, i):
        return (self.lin[0], self.lin[1], self.scale)[i]


def _worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    lin, scale, x, y, valid = _make()
    model = _Wrap(lin, scale)
    b = x.shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    loss = _objective(model, x[sl], y[sl], valid[sl], gather=True)
    loss.backward()
    grads = [p.grad.clone() for p in list(lin.parameters()) + [scale]]
    for gr in grads:  # what DDP does: average gradients over ranks
        dist.all_reduce(gr)
        gr /= world
    if rank == 0:
        torch.save({"loss": loss.detach(), "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gathered_negatives_match_single_process(tmp_path):
    init = f"file://{tmp_path / 'pg'}"
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, init, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    lin, scale, x, y, valid = _make()
    loss = _objective(_Wrap(lin, scale), x, y, valid, gather=False)
    loss.backward()
    ref = [p.grad for p in list(lin.parameters()) + [scale]]
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    for g_dist, g_ref in zip(got["grads"], ref):
        assert torch.allclose(g_dist, g_ref, rtol=1e-4, atol=1e-6), (g_dist, g_ref)
    assert any(float(g.abs().sum()) > 0 for g in ref)
