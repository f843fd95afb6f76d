"""Self-training on the unlabelled survey (a "noisy student", Xie et al. 2020).

Why: with 20 + 20 labels, fine-tuning the image tower on the labels alone scores below the
frozen representation (gz1_dev: 0.911 against 0.933 ROC AUC), yet the same tower fine-tuned
on every label reaches 0.954 (``benchmarks/results/finetune_ceiling_gz1.json``): the pixels
hold more than the frozen read-out gives, and forty labels are too few to find it. Here the
frozen fused head (the *teacher*, fitted as usual) gives every other galaxy of the survey a
merger probability; the image tower and a copy of the head (the *student*) are then trained
end to end on the true labels and those soft labels together, with random flips and 90°
rotations (per object) as the noise. The student's labels never include a held-out test label.

The teacher was trained class-balanced, so its probabilities speak for a 50 % merger
fraction; a survey has far fewer mergers. Before they become targets its odds are moved to
``prior`` (the survey's merger fraction): left at 50 %, the student learns that a fifth to a
third of the survey is merging (the teacher's mean probability on gz1_dev's other galaxies) and
gains almost nothing (gz1_dev, 10 draws: +0.002 ROC AUC over the teacher, against +0.0095 at
10 %).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from galclip.data.dataset import SurveyDataset, collate
from galclip.encode import HEAD_IMAGE_VECTOR, encode_batch
from galclip.finetune.features import extract_features, feature_tensors
from galclip.finetune.head_training import predict
from galclip.finetune.heads import FusionClassifier, modality_dropout
from galclip.finetune.lightning import fit_on_one_device
from galclip.pretrain.augment import AugmentConfig, augment_images

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SelfTrainConfig:
    """Self-training of the image tower on the teacher's soft labels.

    Attributes:
        enabled: run it after the frozen head (the teacher) is fitted.
        prior: the survey's merger fraction the teacher's probabilities are moved to before
            they become targets; 0 = the training labels' own fraction (right when the labels
            are a random sample of the survey, wrong for a class-balanced draw: set it then).
        epochs: passes over the labelled + soft-labelled rows.
        min_steps: at least this many optimiser steps (small samples).
        encoder_lr: peak learning rate of the image tower (one-cycle schedule).
        head_lr: peak learning rate of the head.
        weight_decay: AdamW weight decay.
        batch_size: rows per step.
        max_rows: soft-labelled rows per run at most (a random subset of a larger survey).
        views: flips/rotations the student's tower averages at prediction (its checkpoint's
            ``image.eval_views``; 8 = all of them, 1 = none).
        rounds: students in a row, each the next one's teacher (1 = one student).
        augment: the student's noise, :func:`galclip.pretrain.augment.augment_images` per
            object (flips and 90° rotations by default; sub-pixel shifts, extra pixel noise
            and seeing as in pretraining when set; no crops: tidal features stay in frame).
        seed: seed of the subset, the batches and the flips/rotations.
    """

    enabled: bool = False
    prior: float = 0.0
    epochs: int = 15
    min_steps: int = 150
    encoder_lr: float = 3e-4
    head_lr: float = 3e-3
    weight_decay: float = 0.05
    batch_size: int = 32
    max_rows: int = 50_000
    views: int = 8
    rounds: int = 1
    augment: AugmentConfig = dataclasses.field(
        default_factory=lambda: AugmentConfig(shift_px=0.0, image_noise=0.0, psf_sigma=0.0))
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.prior < 1:
            raise ValueError(f"self_train.prior must be in [0, 1) (0 = the labels' fraction), got {self.prior}")
        if min(self.epochs, self.max_rows, self.rounds) < 1 or self.batch_size < 2 or not 1 <= self.views <= 8:
            raise ValueError("self_train.epochs, max_rows and rounds must be >= 1, batch_size >= 2, views 1-8")


def move_to_prior(p: np.ndarray, source: float, target: float) -> np.ndarray:
    """Probabilities of a classifier trained at class fraction ``source`` as they would read at
    ``target`` (Bayes: the odds scale by the ratio of prior odds)."""
    p = np.clip(np.asarray(p, np.float64), 1e-9, 1 - 1e-9)
    odds = p / (1 - p) * (target / (1 - target)) / (source / (1 - source))
    return odds / (1 + odds)


def soft_targets(p_teacher: np.ndarray, y: np.ndarray, train_idx: np.ndarray, has_image: np.ndarray,
                 cfg: SelfTrainConfig, balanced: bool | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, targets, labelled mask): the training labels as they are, every other row with an
    image on the teacher's probability moved to the survey's merger fraction.

    ``balanced``: the teacher was trained class-balanced (its probabilities read at 50 %),
    False: at the labels' fraction, None: already at the survey's fraction (a student)."""
    yl = y[train_idx].astype(float)
    frac = float(yl.mean())
    prior = cfg.prior if cfg.prior > 0 else frac
    if cfg.prior <= 0 and frac >= 0.3:
        log.warning("self_train.prior=0 takes the labels' merger fraction, %.2f: if the labels are a balanced "
                    "draw rather than a random sample, set self_train.prior to the survey's fraction", frac)
    source = 0.5 if balanced else frac if balanced is not None else prior
    others = np.setdiff1d(np.flatnonzero(has_image), train_idx)
    if others.size > cfg.max_rows:
        others = np.sort(np.random.default_rng(cfg.seed).choice(others, cfg.max_rows, replace=False))
    rows = np.r_[train_idx, others]
    def inside(f: float) -> float:  # a fraction of 0 or 1 has no odds
        return min(max(f, 1e-4), 1 - 1e-4)

    targets = np.r_[yl, move_to_prior(p_teacher[others], inside(source), inside(prior))]
    labelled = np.r_[np.ones(train_idx.size, bool), np.zeros(others.size, bool)]
    log.info("self-training on %d labels + %d soft labels (teacher moved from %.2f to a merger fraction of %.3f)",
             train_idx.size, others.size, source, prior)
    return rows, targets.astype(np.float32), labelled


class _Rows(Dataset):
    """Rows of the survey with their (soft) target and whether it is a true label."""

    def __init__(self, dataset: SurveyDataset, rows: np.ndarray, targets: np.ndarray, labelled: np.ndarray) -> None:
        order = np.argsort(rows)
        self.rows, self.targets, self.labelled = rows[order], targets[order], labelled[order]
        self.sub = dataset.subset(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.sub[i]
        item["index"] = int(self.rows[i])  # row of the full dataset (tabular lookup)
        item["target"] = float(self.targets[i])
        item["labelled"] = bool(self.labelled[i])
        return item


class StudentModule(pl.LightningModule):
    """The whole image tower + the head, trained on true and soft labels (one-cycle AdamW)."""

    def __init__(self, model: Any, head: FusionClassifier, cfg: SelfTrainConfig, total_steps: int,
                 pos_weight: float, modality_p: float, tabular: np.ndarray | None = None,
                 tabular_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model, self.head, self.cfg = model, head, cfg
        self.total_steps, self.pos_weight, self.modality_p = total_steps, pos_weight, modality_p
        self.tabular_names = tabular_names
        self.register_buffer("tabular", torch.as_tensor(tabular, dtype=torch.float32) if tabular is not None
                             else torch.zeros(0), persistent=False)
        self.gen = torch.Generator().manual_seed(cfg.seed)

    def on_train_epoch_start(self) -> None:
        # only the image tower learns; the spectrum tower keeps its pretrained normalisation
        self.train()
        self.model.spectrum_encoder.eval()

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        f = encode_batch(self.model, batch, self.tabular_names, modalities=self.head.modalities,
                         image_vector=HEAD_IMAGE_VECTOR)
        if self.tabular.numel():
            f["tabular"] = self.tabular[batch["index"].long()]
        if self.training:
            f = modality_dropout(f, self.modality_p)
        return self.head(f)[:, 0]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, ivar = augment_images(batch["image"], batch["image_ivar"], self.cfg.augment, self.gen)
        batch = {**batch, "image": image, "image_ivar": ivar}
        target = batch["target"].float()
        # class weight on the labelled mergers only; the soft labels already carry the survey's prior
        w = torch.where(batch["labelled"].bool() & (target > 0.5), self.pos_weight, 1.0)
        loss = (F.binary_cross_entropy_with_logits(self.logits(batch), target, reduction="none") * w).mean()
        self.log("train_loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def configure_optimizers(self) -> Any:
        for p in self.model.parameters():
            p.requires_grad_(False)
        tower = list(self.model.image_encoder.parameters())
        for p in tower:
            p.requires_grad_(True)
        cfg = self.cfg
        opt = torch.optim.AdamW([{"params": tower, "lr": cfg.encoder_lr},
                                 {"params": list(self.head.parameters()), "lr": cfg.head_lr}],
                                weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, [cfg.encoder_lr, cfg.head_lr], total_steps=self.total_steps,
                                                    pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def student_threshold(p_teacher: np.ndarray, p_student: np.ndarray, rows: np.ndarray, teacher_thr: float) -> float:
    """The student's threshold that flags as many of ``rows`` as the teacher's did (label-free:
    every label trained the student, so none is left to choose a threshold on)."""
    if not math.isfinite(teacher_thr) or rows.size == 0:
        return 0.5
    frac = float(np.mean(p_teacher[rows] >= teacher_thr))
    return float(np.quantile(p_student[rows], 1 - frac)) if 0 < frac < 1 else teacher_thr


def self_train(model: Any, teacher: FusionClassifier, dataset: SurveyDataset, y: np.ndarray, train_idx: np.ndarray,
               p_teacher: np.ndarray, has_image: np.ndarray, cfg: SelfTrainConfig, *, balanced: bool,
               modality_p: float = 0.0, tabular: np.ndarray | None = None,
               tabular_names: Sequence[str] | None = None, out: str | Path = ".",
               progress: bool = True) -> tuple[Any, FusionClassifier, np.ndarray]:
    """Train a student (``model``'s image tower + a copy of ``teacher``) on the training labels
    and the teacher's soft labels; returns (model, student head, rows it trained on).

    With ``cfg.rounds`` > 1 each student teaches the next, which starts again from the
    pretrained tower and the teacher's head (Xie et al.: iterating helps); a student's
    probabilities already read at the survey's fraction, so they are not moved again."""
    start = copy.deepcopy(model) if cfg.rounds > 1 else None
    for r in range(cfg.rounds):
        net = model if start is None or r == cfg.rounds - 1 else copy.deepcopy(start)
        net, head, rows = _one_round(net, teacher, dataset, y, train_idx, p_teacher, has_image, cfg,
                                     balanced if r == 0 else None, modality_p, tabular, tabular_names, out, progress)
        if r < cfg.rounds - 1:
            p_teacher = _probabilities(net, head, dataset, tabular, progress)
    return net, head, rows


def _probabilities(model: Any, head: FusionClassifier, dataset: SurveyDataset, tabular: np.ndarray | None,
                   progress: bool) -> np.ndarray:
    """Every row's merger probability from a student (its tower averaging its views)."""
    feats = extract_features(model, dataset, progress=progress)
    return predict(head, feature_tensors(feats, np.arange(len(dataset)), tabular, keep=head.modalities))


def _one_round(model: Any, teacher: FusionClassifier, dataset: SurveyDataset, y: np.ndarray, train_idx: np.ndarray,
               p_teacher: np.ndarray, has_image: np.ndarray, cfg: SelfTrainConfig, balanced: bool | None,
               modality_p: float, tabular: np.ndarray | None, tabular_names: Sequence[str] | None,
               out: str | Path, progress: bool) -> tuple[Any, FusionClassifier, np.ndarray]:
    """One student trained on ``p_teacher`` (``balanced`` None: already at the survey's fraction)."""
    rows, targets, labelled = soft_targets(p_teacher, y, train_idx, has_image, cfg, balanced)
    yl = y[train_idx].astype(int)
    pos_weight = float((yl == 0).sum() / max((yl == 1).sum(), 1))
    torch.manual_seed(cfg.seed)
    head = copy.deepcopy(teacher)  # the student starts where the teacher is
    data = _Rows(dataset, rows, targets, labelled)
    loader = DataLoader(data, batch_size=min(cfg.batch_size, len(data)), shuffle=True, collate_fn=collate,
                        num_workers=0, drop_last=len(data) > cfg.batch_size,
                        generator=torch.Generator().manual_seed(cfg.seed))
    steps = max(cfg.epochs * len(loader), cfg.min_steps)
    module = StudentModule(model, head, cfg, steps, pos_weight, modality_p, tabular, tabular_names)
    module.train()
    model.spectrum_encoder.eval()
    fit_on_one_device(module, loader, str(out), progress, max_steps=steps, max_epochs=-1)
    model.image_encoder.eval_views = cfg.views
    return model, head, rows


@dataclasses.dataclass
class Student:
    """A self-trained student as ``finetune`` saves it and ``evaluate`` scores it."""

    model: Any
    head: FusionClassifier
    features: dict[str, np.ndarray]  # every row, from the student's tower
    tabular: np.ndarray | None  # the statistics with flagged fits repaired from *its* representation
    repair: Any  # that repair (None: nothing repaired), stored with the head for predict
    p_teacher: np.ndarray  # every row
    p_student: np.ndarray  # every row
    threshold: float


def teach(model: Any, teacher: FusionClassifier, teacher_thr: float, dataset: SurveyDataset, y: np.ndarray,
          train_idx: np.ndarray, feats: dict[str, np.ndarray], tab: np.ndarray | None, cfg: SelfTrainConfig, *,
          keep: Sequence[str], balanced: bool, repair: Any = None, modality_p: float = 0.0,
          tabular_names: Sequence[str] | None = None, batch_size: int = 64, out: str | Path = ".",
          progress: bool = True) -> Student:
    """The whole self-training step of ``finetune`` and ``evaluate``: the teacher's probabilities of
    every row (``feats``/``tab``: the frozen features and statistics it read), the student trained
    on them, its features, its statistics and its threshold.

    ``repair``: ``(tabular config, measured statistics, their names, morphology flag, fit rows)``
    to refit the flagged fits' repair on the student's representation, as predict will apply it."""
    from galclip.finetune.tabular_inputs import repaired_tabular

    everything = np.arange(len(dataset))
    p_teacher = predict(teacher, feature_tensors(feats, everything, tab, keep=keep))
    model, head, rows = self_train(model, teacher, dataset, y, train_idx, p_teacher, feats["has_image"].astype(bool),
                                   cfg, balanced=balanced, modality_p=modality_p, tabular=tab,
                                   tabular_names=tabular_names, out=out, progress=progress)
    student = extract_features(model, dataset, tokens=head.needs_tokens, batch_size=batch_size, progress=progress)
    fitted = None
    if repair is not None:
        tcfg, measured, names, flag, fit_rows = repair
        tab, fitted = repaired_tabular(tcfg, measured, names, student["image"], flag, fit_rows)
    p_student = predict(head, feature_tensors(student, everything, tab, keep=keep))
    thr = student_threshold(p_teacher, p_student, np.setdiff1d(rows, train_idx), teacher_thr)
    return Student(model, head, student, tab, fitted, p_teacher, p_student, thr)
