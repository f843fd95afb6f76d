"""End-to-end fine-tuning with partly unfrozen encoders (PyTorch Lightning).

Zoobot-style: only the last ``n_blocks`` blocks of each tower (plus the projection heads)
train, with layer-wise learning-rate decay — block ``k`` from the top gets
``encoder_lr × layer_decay**k`` — so the generic low-level features the contrastive
pretraining learned are disturbed least.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from galclip.encode import HEAD_IMAGE_VECTOR, encode_batch
from galclip.finetune.head_training import HeadTrainConfig, loss_fn
from galclip.finetune.heads import FusionClassifier, modality_dropout
from galclip.finetune.labels import class_weights

log = logging.getLogger(__name__)


def fit_on_one_device(module: pl.LightningModule, loader: Any, out: str, progress: bool, **limits: Any) -> None:
    """Fit a fine-tuning module on one device (a GPU when there is one; no logs or checkpoints:
    the caller saves what it keeps), then hand its networks back in eval mode on the CPU, where
    features and heads are read. ``limits``: ``max_epochs`` / ``max_steps``."""
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=progress, enable_model_summary=False, default_root_dir=out, **limits)
    trainer.fit(module, loader)
    module.eval().cpu()


def tower_blocks(tower: nn.Module) -> list[list[nn.Parameter]]:
    """Parameters of a tower grouped bottom → top into blocks.

    timm backbones use their own ``group_matcher`` (stem, stages/blocks, ...); galclip's
    spectrum towers are grouped by transformer layer or conv stage, with everything else
    (patch embedding, positions, [CLS]) in the bottom group and final norms on top.
    """
    import timm.models

    backbone = getattr(tower, "backbone", None)
    if backbone is not None and hasattr(backbone, "group_matcher"):
        named = dict(backbone.named_parameters())
        groups = timm.models.group_parameters(backbone, backbone.group_matcher(coarse=False))
        return [[named[n] for n in names] for _, names in sorted(groups.items())]
    blocks: list[list[nn.Parameter]] = []
    seen: set[int] = set()
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    if layers is not None:
        blocks = [list(m.parameters()) for m in layers]
    elif isinstance(getattr(tower, "net", None), nn.Sequential):
        cur: list[nn.Parameter] = []
        for m in tower.net:
            if isinstance(m, (nn.Conv1d, nn.Conv2d)) and cur:
                blocks.append(cur)
                cur = []
            cur += list(m.parameters(recurse=False))
        if cur:
            blocks.append(cur)
    for b in blocks:
        seen.update(id(p) for p in b)
    top = [p for n, p in tower.named_parameters() if id(p) not in seen and n.startswith("norm")]
    seen.update(id(p) for p in top)
    bottom = [p for p in tower.parameters() if id(p) not in seen]
    return [g for g in [bottom] + blocks + [top] if g]


def encoder_param_groups(model: Any, n_blocks: int, lr: float, layer_decay: float,
                         weight_decay: float) -> list[dict[str, Any]]:
    """Unfreeze the top ``n_blocks`` of each tower (+ projections) with layer-wise LR decay.

    Everything else gets ``requires_grad=False``.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    groups: list[dict[str, Any]] = []
    proj = [p for m in (getattr(model, "image_proj", None), getattr(model, "spectrum_proj", None)) if m is not None
            for p in m.parameters()]
    for p in proj:
        p.requires_grad_(True)
    if proj:
        groups.append({"params": proj, "lr": lr, "weight_decay": weight_decay})
    for tower in (model.image_encoder, model.spectrum_encoder):
        blocks = tower_blocks(tower)
        for depth, params in enumerate(reversed(blocks[-n_blocks:] if n_blocks > 0 else [])):
            for p in params:
                p.requires_grad_(True)
            groups.append({"params": params, "lr": lr * layer_decay ** (depth + 1), "weight_decay": weight_decay})
    return groups


class FinetuneModule(pl.LightningModule):
    """Encoders (partly trainable) + fusion head, trained on raw dataset batches."""

    def __init__(self, model: Any, head: FusionClassifier, train_cfg: HeadTrainConfig, y_train: np.ndarray,
                 n_blocks: int, encoder_lr: float, layer_decay: float, tabular: np.ndarray | None = None,
                 tabular_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tabular_names = tabular_names  # the dataset's catalogue columns, for a tabular second tower
        self.head = head
        self.cfg = train_cfg
        self.n_blocks = n_blocks
        self.encoder_lr = encoder_lr
        self.layer_decay = layer_decay
        n_out = head.linear_term.out_features if head.linear_term is not None else None
        self.class_w = class_weights(y_train, n_out or int(max(2, y_train.max() + 1))) \
            if train_cfg.class_balance == "weights" else None
        # tabular rows addressed by dataset row index
        self.register_buffer("tabular", torch.as_tensor(tabular, dtype=torch.float32) if tabular is not None
                             else torch.zeros(0), persistent=False)

    def on_train_epoch_start(self) -> None:
        # Frozen blocks keep their pretrained normalisation statistics (BatchNorm in eval mode).
        self.train()
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()

    def features(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        f = encode_batch(self.model, batch, self.tabular_names, tokens=self.head.needs_tokens,
                         modalities=self.head.modalities, image_vector=HEAD_IMAGE_VECTOR)
        if self.tabular.numel():
            f["tabular"] = self.tabular[batch["index"].long()]
        return f

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        f = modality_dropout(self.features(batch), self.cfg.modality_dropout)
        y = batch["target"]
        cw = None if self.class_w is None else self.class_w.to(y.device)
        loss = loss_fn(self.head(f), y, cw)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.head(self.features(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = encoder_param_groups(self.model, self.n_blocks, self.encoder_lr, self.layer_decay,
                                      self.cfg.weight_decay)
        groups.append({"params": list(self.head.parameters()), "lr": self.cfg.lr, "weight_decay": self.cfg.weight_decay})
        return torch.optim.AdamW(groups)
