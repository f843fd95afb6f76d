"""Metric-learning head (``head.kind: metric``): learn a space where the few labels cluster.

Instead of fitting a decision boundary with cross-entropy, a small MLP (lightly's block-list
``ProjectionHead``) maps the frozen features (+ standardised statistics) to unit vectors and is
trained with a pytorch-metric-learning loss and miner on the labeled rows: with 10–30 labels,
"pull same-class rows together, push the others apart" uses every pair of labels, not just
each label once. Objects are then classified by cosine similarity to the class prototypes (mean
embedding of each class) or to each class's nearest labeled examples, which the head keeps as
buffers — so a saved head (safetensors) predicts without its training data.
"""
from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galclip.errors import ConfigError

if TYPE_CHECKING:
    from galclip.finetune.head_training import HeadTrainConfig
    from galclip.finetune.heads import FusionClassifier, HeadConfig

MetricLoss = Literal["supcon", "triplet", "multi_similarity"]
Miner = Literal["multi_similarity", "triplet", "none"]
MetricClassifier = Literal["prototype", "knn"]


def make_loss(name: str, temperature: float) -> nn.Module:
    """The PML loss named in ``head.metric_loss`` (SupCon shares the classifier's temperature)."""
    from pytorch_metric_learning import losses

    if name == "supcon":
        return losses.SupConLoss(temperature=temperature)
    if name == "triplet":
        return losses.TripletMarginLoss(margin=0.2)
    if name == "multi_similarity":
        return losses.MultiSimilarityLoss()
    raise ConfigError(f"head.metric_loss: {name!r} is not one of {list(typing.get_args(MetricLoss))}")


def make_miner(name: str) -> nn.Module | None:
    """The PML miner named in ``head.miner`` (``none`` = every pair/triplet of the batch)."""
    from pytorch_metric_learning import miners

    if name == "multi_similarity":
        return miners.MultiSimilarityMiner(epsilon=0.1)
    if name == "triplet":
        return miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    if name == "none":
        return None
    raise ConfigError(f"head.miner: {name!r} is not one of {list(typing.get_args(Miner))}")


def _masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x * m.to(x.dtype)[:, None]


class MetricHead(nn.Module):
    """Modality vectors → unit embedding; logits from similarity to the stored labeled examples.

    ``support`` / ``support_y`` (the training rows' embeddings and classes) are buffers set by
    :meth:`set_support` after training; they are resized on load, so any number of rows saves.
    """

    def __init__(self, dims: dict[str, int], n_out: int, cfg: HeadConfig) -> None:
        super().__init__()
        from lightly.models.modules.heads import ProjectionHead

        self.names = list(dims)
        self.n_out, self.n_classes = n_out, max(2, n_out)
        self.classifier, self.k, self.temperature = cfg.metric_classifier, cfg.metric_k, cfg.metric_temperature
        self.noise = cfg.feature_noise
        # embeddings get a LayerNorm (unit-scale coordinates); the statistics are standardised
        # already, and a row-wise norm would erase "every statistic is high" from them
        self.norms = nn.ModuleDict({k: nn.Identity() if k == "tabular" else nn.LayerNorm(d) for k, d in dims.items()})
        d_in = sum(dims.values()) + len(dims)
        self.dropout = nn.Dropout(cfg.dropout)
        self.mlp = ProjectionHead([(d_in, cfg.hidden, None, nn.Sequential(nn.GELU(), nn.Dropout(cfg.dropout))),
                                   (cfg.hidden, cfg.metric_dim, None, None)])
        self.register_buffer("support", torch.zeros(0, cfg.metric_dim))
        self.register_buffer("support_y", torch.zeros(0, dtype=torch.long))

    def embed(self, vecs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, metric_dim) unit vectors; Gaussian feature noise + dropout while training."""
        parts = [_masked(self.norms[k](vecs[k]), masks[k]) for k in self.names]
        x = torch.cat(parts + [masks[k].to(parts[0].dtype)[:, None] for k in self.names], dim=1)
        if self.training and self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return F.normalize(self.mlp(self.dropout(x)), dim=1)

    @torch.no_grad()
    def set_support(self, z: torch.Tensor, y: torch.Tensor) -> None:
        self.support = z.detach().float().clone()
        self.support_y = y.detach().long().clone()

    def class_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """(N, C) log class probabilities from cosine similarity (uniform before training)."""
        n, c = z.shape[0], self.n_classes
        if self.support.shape[0] == 0:
            return torch.full((n, c), -float(np.log(c)), device=z.device)
        onehot = F.one_hot(self.support_y, c).to(z.dtype)  # (S, C)
        if self.classifier == "prototype":
            counts = onehot.sum(0)
            protos = F.normalize(onehot.T @ self.support, dim=1)  # (C, E)
            scores = (z @ protos.T) / self.temperature
            scores = scores.masked_fill(counts[None] == 0, -1e4)  # a class without examples
            return torch.log_softmax(scores, dim=1)
        # knn: mean similarity to each class's k nearest labeled rows — a continuous score, where a
        # majority vote of k neighbours would give only k + 1 distinct probabilities (tied ranks)
        sims = z @ self.support.T  # (N, S)
        scores = torch.full((n, c), -1e4, device=z.device, dtype=z.dtype)
        for k in range(c):
            own = self.support_y == k
            if own.any():
                scores[:, k] = sims[:, own].topk(min(self.k, int(own.sum())), dim=1).values.mean(1) / self.temperature
        return torch.log_softmax(scores, dim=1)

    def forward(self, vecs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], tokens=None) -> torch.Tensor:
        lp = self.class_log_probs(self.embed(vecs, masks))
        return (lp[:, 1] - lp[:, 0])[:, None] if self.n_out == 1 else lp

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        for name in ("support", "support_y"):  # the number of stored examples is the saved one
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def fit_metric_head(clf: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray, cfg: HeadTrainConfig,
                    seed: int) -> FusionClassifier:
    """Train ``clf``'s metric head with its PML loss + miner, then store the labeled embeddings."""
    from galclip.finetune.heads import modality_dropout
    from galclip.finetune.labels import class_weights

    head = clf.head
    assert isinstance(head, MetricHead), "fit_metric_head needs a head of kind metric"
    loss_fn, miner = make_loss(clf.cfg.metric_loss, clf.cfg.metric_temperature), make_miner(clf.cfg.miner)
    gen = torch.Generator().manual_seed(seed)
    yt = torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    bs = min(cfg.batch_size, n)
    sw = class_weights(y, head.n_classes)[yt] if cfg.class_balance == "sampler" else None
    clf.train()
    for _ in range(cfg.epochs):
        order = (torch.multinomial(sw, n, replacement=True, generator=gen) if sw is not None
                 else torch.randperm(n, generator=gen))
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            batch = modality_dropout({k: v[idx] for k, v in feats.items()}, cfg.modality_dropout, gen)
            z = clf.embed(batch)
            pairs = miner(z, yt[idx]) if miner is not None else None
            loss = loss_fn(z, yt[idx], pairs)
            if not loss.requires_grad:  # nothing mined in this batch
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        head.set_support(clf.embed(feats), yt)
    return clf
