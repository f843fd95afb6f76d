"""Baselines an astronomer would try instead of galclip, run in the same harness.

* :func:`morphology_lr` — Gini/M20/asymmetry/concentration/... + logistic regression
  (scikit-learn); the classical few-label merger classifier (Lotz et al. 2004).
* :func:`cnn_from_scratch` — a small timm CNN trained from random weights on the labeled
  images only, with flip/rotation augmentation (galaxies have no preferred orientation).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, train_test_split

from galclip.data.preprocess import arcsinh_stretch
from galclip.finetune.metrics import choose_threshold
from galclip.finetune.sampling import cv_folds

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CNNConfig:
    """From-scratch CNN baseline (kept small: it must run on 2 CPU cores).

    Attributes:
        backbone: timm model name (random init).
        epochs: passes over the labeled images (the best validation epoch is kept).
        batch_size, lr, weight_decay: AdamW training.
        val_fraction: labeled rows held out to pick the epoch and the threshold
            (only when each class has ≥ 4 labels; else all rows train and threshold = 0.5).
        softening, clip: arcsinh stretch of noise-unit images (same as the galclip towers).
    """

    backbone: str = "resnet10t"
    epochs: int = 15
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.25
    softening: float = 3.0
    clip: float = 10.0


def morphology_lr(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, c: float = 1.0,
                  folds: int = 3, metric: str = "f1", seed: int = 0) -> tuple[np.ndarray, float]:
    """Balanced L2 logistic regression on standardised statistics (NaN → 0 = typical value).

    Returns test probabilities and the threshold chosen on out-of-fold predictions.
    """
    xtr = np.nan_to_num(x_train, nan=0.0, posinf=0.0, neginf=0.0)
    xte = np.nan_to_num(x_test, nan=0.0, posinf=0.0, neginf=0.0)
    y = np.asarray(y_train).astype(int)
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    thr = 0.5
    splits = cv_folds(y, folds, seed)
    if splits:
        oof = cross_val_predict(lr, xtr, y, cv=splits, method="predict_proba")[:, 1]
        thr = choose_threshold(y, oof, metric)
    lr.fit(xtr, y)
    return lr.predict_proba(xte)[:, 1], thr


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90° rotations per batch (dihedral group of the pixel grid)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def _predict(net: torch.nn.Module, x: torch.Tensor, cfg: CNNConfig, bs: int = 256) -> np.ndarray:
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            out.append(torch.sigmoid(net(arcsinh_stretch(x[i:i + bs], cfg.softening, cfg.clip))[:, 0]))
    return torch.cat(out).numpy() if out else np.zeros(0)


def cnn_from_scratch(images: torch.Tensor, y: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray,
                     cfg: CNNConfig, seed: int = 0, metric: str = "f1") -> tuple[np.ndarray, float]:
    """Train a random-init timm CNN on ``images[train_idx]``; test probabilities + threshold.

    Args:
        images: (N, B, H, W) noise-unit images of the whole dataset (stretched here).
        y: integer labels for every row (only ``train_idx`` rows are used for training).
    """
    import timm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    yl = y[train_idx].astype(int)
    _, counts = np.unique(yl, return_counts=True)
    if counts.size > 1 and counts.min() >= 4 and cfg.val_fraction > 0:
        tr, va = train_test_split(train_idx, test_size=cfg.val_fraction, random_state=seed, stratify=yl)
    else:
        tr, va = train_idx, np.zeros(0, dtype=int)
    net = timm.create_model(cfg.backbone, pretrained=False, num_classes=1, in_chans=images.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ytr = torch.as_tensor(y[tr], dtype=torch.float32)
    pos = float(ytr.sum())
    pos_weight = torch.tensor((len(ytr) - pos) / max(pos, 1.0))
    best = (np.inf, None)
    for _ in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(tr), generator=gen)
        for i in range(0, len(tr), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            if len(b) < 2:
                continue
            xb = arcsinh_stretch(_augment(images[tr[b.numpy()]], gen), cfg.softening, cfg.clip)
            loss = F.binary_cross_entropy_with_logits(net(xb)[:, 0], ytr[b], pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if va.size:
            pv = _predict(net, images[va], cfg)
            yv = torch.as_tensor(y[va], dtype=torch.float32)
            vloss = float(F.binary_cross_entropy(torch.as_tensor(pv).clamp(1e-6, 1 - 1e-6), yv))
            if vloss < best[0]:
                best = (vloss, {k: v.clone() for k, v in net.state_dict().items()})
    thr = 0.5
    if best[1] is not None:
        net.load_state_dict(best[1])
        thr = choose_threshold(y[va].astype(int), _predict(net, images[va], cfg), metric)
    return _predict(net, images[test_idx], cfg), thr
