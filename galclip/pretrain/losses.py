"""Contrastive objectives with negatives gathered across all distributed ranks.

Gradient-correct gathering: :func:`gather_with_grad` uses
``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients that
every rank's loss sends to each rank's local embeddings. Each rank computes the *global*
loss on the full gathered batch; after DDP averages parameter gradients, training on W
ranks × B objects gives exactly the loss and gradients of one process with W·B objects
(the idea of open_clip's ``gather_features(..., gather_with_grad=True, local_loss=False)``;
checked by ``tests/pretrain/test_losses.py`` with two gloo processes).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks (rank order) keeping every rank's gradient path."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate a tensor without gradients (masks, labels) from all ranks."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _zero(*tensors: Tensor) -> Tensor:
    """A zero that stays connected to the graph (DDP needs every parameter used)."""
    return sum(t.sum() for t in tensors) * 0.0


def clip_loss(image: Tensor, spectrum: Tensor, logit_scale: Tensor, valid: Tensor | None = None,
              gather: bool = True) -> Tensor:
    """Symmetric InfoNCE between matching rows of unit ``image``/``spectrum`` embeddings.

    Args:
        image, spectrum: (N, D) L2-normalised embeddings of this rank's batch.
        logit_scale: scalar multiplier (1/temperature), already clamped.
        valid: (N,) bool, rows where both modalities exist; others are neither positives
            nor negatives.
        gather: use negatives from all ranks.
    """
    if valid is None:
        valid = torch.ones(image.shape[0], dtype=torch.bool, device=image.device)
    if gather:
        image, spectrum, valid = gather_with_grad(image), gather_with_grad(spectrum), gather_no_grad(valid)
    zi, zs = image[valid], spectrum[valid]
    if zi.shape[0] < 2:
        return _zero(image, spectrum, logit_scale)
    logits = logit_scale * zi @ zs.t()
    target = torch.arange(zi.shape[0], device=zi.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class SSLLoss(torch.nn.Module):
    """SimCLR NT-Xent between two augmented views (lightly's ``NTXentLoss``).

    Rows are gathered across ranks here (with masks, so ranks may hold different numbers
    of valid objects) and lightly then sees the global batch; its own
    ``gather_distributed`` would require equal-sized inputs on every rank.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.ntxent = NTXentLoss(temperature=temperature, gather_distributed=False)

    def forward(self, view0: Tensor, view1: Tensor, valid: Tensor | None = None, gather: bool = True) -> Tensor:
        if valid is None:
            valid = torch.ones(view0.shape[0], dtype=torch.bool, device=view0.device)
        if gather:
            view0, view1, valid = gather_with_grad(view0), gather_with_grad(view1), gather_no_grad(valid)
        a, b = view0[valid], view1[valid]
        if a.shape[0] < 2:
            return _zero(view0, view1)
        return self.ntxent(a, b)
