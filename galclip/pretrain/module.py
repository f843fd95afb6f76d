"""Lightning module of contrastive pretraining: loss, optimiser, schedule, validation.

Manual optimisation is used on purpose: a step whose loss or gradients are not finite is
*skipped* (no optimiser or scheduler update, counted and logged) and the run stops with a
message after too many in a row, which Lightning's automatic loop cannot do safely under
DDP. Every random draw of step ``s`` (augmentations, dropout) is seeded from
``(seed, s)`` so a resumed run repeats the uninterrupted one exactly.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from galclip.config import to_dict
from galclip.errors import GalclipError
from galclip.models.galclip import GalClip
from galclip.pretrain.augment import AugmentConfig, augment_images, augment_scale, augment_spectra
from galclip.pretrain.losses import SSLLoss, clip_loss
from galclip.pretrain.metrics import embedding_metrics
from galclip.pretrain.morph_targets import MorphTargets, morph_loss, r2_per_target
from galclip.pretrain.profile_targets import STATS, ProfileStandardizer, structure_profiles

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LossConfig:
    """Weights of the objective terms.

    Attributes:
        clip_weight: symmetric image↔spectrum InfoNCE (objects with both modalities).
        ssl_image_weight: SimCLR NT-Xent between two augmented views of each image, so
            image-only objects (or image-only surveys) still train the image tower.
        ssl_spectrum_weight: the same for spectra.
        ssl_temperature: NT-Xent temperature.
        morph_weight: regression of the stored morphology statistics (``morph_*`` columns
            from ingest) from the image tower's pooled features
            (:mod:`galclip.pretrain.morph_targets`): puts merger structure into the
            embedding. Ignored (with a log line) when the dataset stores none.
        morph_columns: which statistics (default: every stored one).
        morph_mask_flag: > 0: statmorph's statistics of fits it flagged at least this high
            (stored ``morph_flag``; 1 warning, 2 a failed step) are not regressed; 0 regresses all.
        profile_weight: regression of rotation-invariant structure profiles (light, m=1/m=2
            Fourier amplitudes and rotational residual per annulus) computed on the fly from
            each cutout (:mod:`galclip.pretrain.profile_targets`): resolves *where* light is
            lopsided or asymmetric, which the global statistics average away, and needs no
            catalogue.
        profile_annuli: annuli of the profiles (4 statistics each).
    """

    clip_weight: float = 1.0
    ssl_image_weight: float = 0.0
    ssl_spectrum_weight: float = 0.0
    ssl_temperature: float = 0.1
    morph_weight: float = 1.0
    morph_columns: list[str] = dataclasses.field(default_factory=list)
    morph_mask_flag: int = 0
    profile_weight: float = 1.0
    profile_annuli: int = 8

    def __post_init__(self) -> None:
        if self.profile_annuli < 1:
            raise ValueError("loss.profile_annuli must be >= 1")


@dataclasses.dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay (per step), gradient clipping.

    ``fused``: AdamW's fused kernel (true), its for-loop (false), or ``null`` = the model
    preset's measured choice, else torch's default (:mod:`galclip.pretrain.runtime`).
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    max_bad_steps: int = 20
    fused: bool | None = None


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    return p.ndim <= 1 or name.endswith((".bias", "logit_scale", "pos", "cls", "pos_embed", "cls_token"))


class PretrainModule(pl.LightningModule):
    """Wraps a :class:`GalClip` for Lightning.

    Args:
        model: the dual encoder.
        loss, optim, augment: configs.
        total_steps: length of the run (for the cosine schedule).
        seed: base seed of all per-step randomness.
        target_names: label columns probed by kNN at validation (plus ``z``).
        use_spectra / use_images: False when the survey lacks that modality.
        morph: standardised morphology targets of every row (``loss.morph_weight`` > 0).
    """

    def __init__(self, model: GalClip, loss: LossConfig, optim: OptimConfig, augment: AugmentConfig,
                 total_steps: int, seed: int = 0, target_names: list[str] | None = None,
                 use_images: bool = True, use_spectra: bool = True, log_every: int = 10,
                 morph: MorphTargets | None = None) -> None:
        super().__init__()
        self.morph = morph if (morph is not None and loss.morph_weight > 0 and use_images) else None
        # a pretraining-only head: the embedding is the tower's pooled features it reads
        self.morph_head = (torch.nn.Linear(model.image_encoder.num_features, len(self.morph.names))
                           if self.morph is not None else None)
        n_prof = len(STATS) * loss.profile_annuli
        self.use_profiles = loss.profile_weight > 0 and use_images
        self.profile_head = torch.nn.Linear(model.image_encoder.num_features, n_prof) if self.use_profiles else None
        self.profile_std = ProfileStandardizer(n_prof) if self.use_profiles else None
        self._prof_val: list[tuple[np.ndarray, np.ndarray]] = []
        self.log_every = max(1, log_every)
        self.model = model
        self.loss_cfg, self.optim_cfg, self.aug_cfg = loss, optim, augment
        self.total_steps, self.seed = total_steps, seed
        self.target_names = list(target_names or [])
        self.use_images, self.use_spectra = use_images, use_spectra
        self.ssl = SSLLoss(loss.ssl_temperature)
        self.automatic_optimization = False
        self.batches_seen = 0
        self.skipped_steps = 0
        self._bad_in_row = 0
        self._val: list[dict[str, np.ndarray]] = []
        self._morph_val: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.val_metrics: dict[str, float] = {}

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if _no_decay(name, p) else decay).append(p)
        kernel = {} if o.fused is None else {"fused": True} if o.fused else {"foreach": False}
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas),
                                **kernel)
        warm = max(1, min(o.warmup_steps, self.total_steps - 1))
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [
            torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.total_steps - warm),
                                                       eta_min=o.lr * o.min_lr_ratio),
        ], milestones=[warm])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _generator(self, step: int) -> torch.Generator:
        seed = (self.seed * 1_000_003 + step) % (2**63 - 1)
        torch.manual_seed(seed)  # dropout etc. on every device
        return torch.Generator().manual_seed(seed)

    def compute_loss(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Total objective on one (per-rank) batch with fresh augmentations."""
        L, A, m = self.loss_cfg, self.aug_cfg, self.model
        hi, hs = batch["has_image"].bool(), batch["has_spectrum"].bool()
        parts: dict[str, torch.Tensor] = {}
        zi = zs = None
        if self.use_images and (L.clip_weight > 0 or L.ssl_image_weight > 0 or self.morph is not None
                                or self.use_profiles):
            fi, fr = m.image_pooled(augment_images(batch["image"], batch["image_ivar"], A, gen)[0])
            zi = m.project_image(fi)
            m.image_standardizer.update(fr)  # running statistics of the stored representation
            if self.morph is not None:
                target, present = (t.to(fi.device) for t in self.morph.batch(batch["index"]))
                present = present & batch["has_image"].bool()[:, None]
                parts["morph"] = L.morph_weight * morph_loss(self.morph_head(fi), target, present)
            if self.use_profiles:
                parts["profile"] = L.profile_weight * self._profile_loss(batch, fi, update=True)
            if L.ssl_image_weight > 0:
                zi2 = m.encode_image(augment_images(batch["image"], batch["image_ivar"], A, gen)[0])
                parts["ssl_image"] = L.ssl_image_weight * self.ssl(zi, zi2, hi)
        if self.use_spectra and (L.clip_weight > 0 or L.ssl_spectrum_weight > 0):
            zs = self._encode_spectrum(batch, gen)
            if L.ssl_spectrum_weight > 0:
                zs2 = self._encode_spectrum(batch, gen)
                parts["ssl_spectrum"] = L.ssl_spectrum_weight * self.ssl(zs, zs2, hs)
        if L.clip_weight > 0 and zi is not None and zs is not None:
            parts["clip"] = L.clip_weight * clip_loss(zi, zs, m.scale(), hi & hs)
        if not parts:
            raise GalclipError("no loss term applies to this data (enable loss.profile_weight or "
                               "loss.ssl_image_weight for image-only surveys)")
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _profile_targets(self, batch: dict[str, torch.Tensor], update: bool) -> torch.Tensor:
        """Standardised structure profiles of the batch's un-augmented cutouts."""
        t = structure_profiles(self.model.image_encoder.stretch(batch["image"]), self.loss_cfg.profile_annuli)
        keep = batch["has_image"].bool().to(t.device)
        if update:  # every rank calls it (a collective under DDP), even with no image in its shard
            self.profile_std.update(t[keep])
        return self.profile_std(t)

    def _profile_loss(self, batch: dict[str, torch.Tensor], fi: torch.Tensor, update: bool) -> torch.Tensor:
        target = self._profile_targets(batch, update).to(fi.device)
        present = batch["has_image"].bool().to(fi.device)[:, None].expand_as(target)
        return morph_loss(self.profile_head(fi), target, present)

    def _encode_spectrum(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """Spectrum embeddings of freshly augmented spectra (and flux scales, if the model uses them)."""
        flux, ivar = augment_spectra(batch["spectrum"], batch["spectrum_ivar"], self.aug_cfg, gen)
        scale = batch.get("spectrum_scale")
        if self.model.flux_scale is not None and scale is not None:
            scale = augment_scale(scale, self.aug_cfg, gen)
        return self.model.encode_spectrum(flux, ivar, scale)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        gen = self._generator(self.batches_seen)
        self.batches_seen += 1
        opt = self.optimizers()
        sched = self.lr_schedulers()
        loss, parts = self.compute_loss(batch, gen)
        ok = bool(torch.isfinite(loss))
        if ok:
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), self.optim_cfg.grad_clip or float("inf"))
            ok = bool(torch.isfinite(norm))
        if not ok:
            opt.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            self._bad_in_row += 1
            log.warning("step %d: non-finite loss/gradients, update skipped (%d in a row)",
                        self.batches_seen, self._bad_in_row)
            if self._bad_in_row >= self.optim_cfg.max_bad_steps:
                raise GalclipError(f"stopping: {self._bad_in_row} consecutive non-finite steps at step "
                                   f"{self.batches_seen}; the last good checkpoint is kept (try a lower lr)")
            return
        self._bad_in_row = 0
        opt.step()
        sched.step()
        if self.batches_seen % self.log_every == 0 or self.batches_seen == 1:
            # one log_dict call every few steps: Lightning's per-call logging overhead is
            # milliseconds, comparable to a small model's step on a CPU
            n_pairs = float((batch["has_image"].bool() & batch["has_spectrum"].bool()).sum())
            loss, parts = self._global_mean(loss, parts)
            scalars = {"train/loss": float(loss.detach()), "train/logit_scale": float(self.model.scale().detach()),
                       "train/lr": float(sched.get_last_lr()[0]), "train/grad_norm": float(norm),
                       "train/pairs_in_batch": n_pairs, "train/skipped_steps": float(self.skipped_steps)}
            scalars.update({f"train/{k}": v for k, v in parts.items()})
            if self.trainer.is_global_zero:
                for lg in self.loggers:  # straight to CSV/TensorBoard: no per-step cache replays
                    lg.log_metrics(scalars, step=self.batches_seen)
            self.log("loss", scalars["train/loss"], prog_bar=True, logger=False)

    @staticmethod
    def _global_mean(loss: torch.Tensor, parts: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss terms averaged over DDP ranks for logging: per-object terms (morphology,
        profiles) are local means over equal shards, so their average is the global batch's,
        and the logged curve is the one a single process would write."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return loss, parts
        vals = torch.tensor([float(loss.detach()), *parts.values()], device=loss.device)
        dist.all_reduce(vals)
        vals = vals / dist.get_world_size()
        return vals[0], {k: float(v) for k, v in zip(parts, vals[1:])}

    # -- checkpoint state -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["galclip"] = {"batches_seen": self.batches_seen, "skipped_steps": self.skipped_steps,
                                 "total_steps": self.total_steps,
                                 "model_config": to_dict(self.model.cfg)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("galclip", {})
        self.batches_seen = int(state.get("batches_seen", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))

    # -- validation ---------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []
        self._morph_val = []
        self._prof_val = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        m = self.model
        n, D = batch["index"].shape[0], m.embed_dim
        nan = torch.full((n, D), float("nan"))
        zi = ri = nan
        if self.use_images:
            fi, fr = m.image_pooled(batch["image"])
            zi = m.project_image(fi).float().cpu()
            ri = m.represent(fr).float().cpu()  # what kNN labeling and candidates read
        if self.morph is not None:
            target, present = self.morph.batch(batch["index"])
            self._morph_val.append((self.morph_head(fi).float().cpu().numpy(), target.numpy(),
                                    (present & batch["has_image"].bool().cpu()[:, None]).numpy()))
        if self.use_profiles:
            keep = batch["has_image"].bool().cpu().numpy()
            self._prof_val.append((self.profile_head(fi).float().cpu().numpy()[keep],
                                   self._profile_targets(batch, update=False).float().cpu().numpy()[keep]))
        zs = (m.encode_spectrum(batch["spectrum"], batch["spectrum_ivar"], batch.get("spectrum_scale")).float().cpu()
              if self.use_spectra else nan)
        self._val.append({"image": zi.numpy(), "image_repr": ri.numpy(), "spectrum": zs.numpy(),
                          "has_image": (batch["has_image"].bool().cpu() & self.use_images).numpy(),
                          "has_spectrum": (batch["has_spectrum"].bool().cpu() & self.use_spectra).numpy(),
                          "labels": batch["labels"].float().cpu().numpy(), "z": batch["z"].float().cpu().numpy()})

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        cat = {k: np.concatenate([v[k] for v in self._val]) for k in self._val[0]}
        targets = {name: cat["labels"][:, j] for j, name in enumerate(self.target_names)}
        if "z" not in targets and "redshift" not in targets:
            targets["z"] = cat["z"]
        metrics = embedding_metrics(cat["image"], cat["spectrum"], cat["has_image"], cat["has_spectrum"], targets,
                                    image_probe=cat["image_repr"])
        if self._morph_val:
            pred, target, present = (np.concatenate(x) for x in zip(*self._morph_val))
            r2 = r2_per_target(pred, target, present)
            if np.isfinite(r2).any():  # how much of the classical morphology the features hold
                metrics["morph_r2"] = float(np.nanmean(r2))
                metrics.update({f"morph_r2/{n.removeprefix('morph_')}": float(v)
                                for n, v in zip(self.morph.names, r2) if np.isfinite(v)})
        if self._prof_val:
            pred, target = (np.concatenate(x) for x in zip(*self._prof_val))
            r2 = r2_per_target(pred, target, np.ones_like(target, bool))
            if np.isfinite(r2).any():  # how much of the on-the-fly structure profiles the features hold
                metrics["profile_r2"] = float(np.nanmean(r2))
                for j, stat in enumerate(STATS):  # annulus-major columns: every 4th is one statistic
                    if np.isfinite(r2[j::len(STATS)]).any():
                        metrics[f"profile_r2/{stat}"] = float(np.nanmean(r2[j::len(STATS)]))
        self.val_metrics = metrics
        for k, v in metrics.items():
            if math.isfinite(v):
                self.log(f"val/{k}", v, prog_bar=k in ("i2s_top1", "s2i_top1"))
        self._val = []
