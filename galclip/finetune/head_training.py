"""Train fusion heads on precomputed features (frozen encoders).

A plain PyTorch loop, not Lightning, on purpose: a head over precomputed features is a tiny
full-batch problem (≤ a few thousand rows, ~10⁴ parameters, a few ms per step) and the
evaluation harness trains hundreds of them (methods × budgets × seeds × CV folds);
Lightning's per-fit setup (trainer, callbacks, loggers) would cost more than the training
itself. Lightning is used when encoders are unfrozen (:mod:`galclip.finetune.lightning`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from galclip.finetune.heads import FusionClassifier, init_linear_from, modality_dropout, paired_rows
from galclip.finetune.labels import class_weights
from galclip.finetune.metrics import choose_threshold
from galclip.finetune.sampling import cv_folds


@dataclasses.dataclass
class HeadTrainConfig:
    """Optimisation of a head (also used for the head when encoders are unfrozen).

    Attributes:
        epochs: passes over the labeled rows (full batch when ``batch_size`` ≥ rows).
        batch_size: rows per step.
        lr: AdamW learning rate of the head.
        weight_decay: AdamW weight decay (strong: few labels).
        class_balance: ``weights`` (loss weights ∝ 1/frequency), ``sampler`` (balanced
            resampling of minibatches) or ``none``.
        modality_dropout: probability of hiding one modality of a paired object per step.
        threshold_metric: metric the decision threshold maximises on validation predictions.
        cv_folds: folds of out-of-fold validation predictions used to choose the threshold
            (labels are too few to set a separate validation split aside).
        tabular_init: initialise the linear tabular term from a logistic regression fitted on
            the labeled rows (``lr``), or train it from zero (``zero``).
        tabular_lr_c: inverse L2 strength of that logistic regression.
        tabular_lr_scale: learning-rate multiplier of the linear tabular term; small values
            keep it near the regularised logistic-regression start, so with a handful of
            labels the head cannot drift far from the classical solution.
        linear_c: inverse L2 strength of the linear head's logistic fit on its unit-scale
            inputs. 0.1 sits between the best value on real gz1_dev mergers (0.03) and on
            the simulated demo survey (≥ 0.1); choosing it by cross-validation on 10–40
            labels measured worse than either fixed value.
        spectrum_scales: candidate multipliers of the linear head's spectrum columns (a
            block-wise L2 penalty: scale s costs the block 1/s² as much). With more than one,
            out-of-fold ROC AUC on the labeled rows picks one per fit (ties → the earlier;
            :func:`fit_with_threshold` picks once on all labeled rows and its threshold folds
            reuse it); the first is used where the labels are too few for folds. A spectrum that carries
            no signal for the task then stops costing the image its few labels, and one that
            does keeps its weight (three simulated demo surveys, 8 label draws: +0.02 to
            +0.03 ROC AUC at 30 labels, +0.004 to +0.017 at 100, ±0.006 at 300).
        term_selection: with a linear tabular term, ``auto`` compares out-of-fold ROC AUC
            of the full head and of the linear (logistic-regression-like) term alone and keeps
            the better (the embedding term adds variance with ~20 labels); ``full`` or
            ``linear`` force one.
        seed: torch seed of initialisation, dropout and modality dropout.
    """

    epochs: int = 150
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.05
    class_balance: Literal["weights", "sampler", "none"] = "weights"
    modality_dropout: float = 0.3
    threshold_metric: str = "f1"
    cv_folds: int = 3
    tabular_init: Literal["lr", "zero"] = "lr"
    tabular_lr_c: float = 0.3
    tabular_lr_scale: float = 0.1
    term_selection: Literal["auto", "full", "linear"] = "full"
    linear_c: float = 0.1
    spectrum_scales: tuple[float, ...] = (1.0, 0.35, 0.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.spectrum_scales or min(self.spectrum_scales) < 0:
            raise ValueError(f"spectrum_scales must be one or more scales >= 0, got {list(self.spectrum_scales)}")


HeadFactory = Callable[[], FusionClassifier]


def loss_fn(logits: torch.Tensor, y: torch.Tensor, class_w: torch.Tensor | None) -> torch.Tensor:
    """Weighted BCE (one logit) or weighted cross-entropy (C logits)."""
    if logits.shape[1] == 1:
        w = None if class_w is None else class_w[y.long()]
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), weight=w)
    return F.cross_entropy(logits, y.long(), weight=class_w)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """(N,) merger probability for a binary head, (N, C) class probabilities otherwise."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0]).numpy()
    return torch.softmax(logits, 1).numpy()


def _rows(feats: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[idx] for k, v in feats.items()}


def init_tabular_term(head: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray, c: float) -> None:
    """Start the linear tabular term at a balanced, L2-regularised logistic regression.

    With 10–30 labels this makes the head start at the classical morphology + LR solution;
    gradient steps then only have to learn what the embeddings add.
    """
    if head.linear_term is None or np.unique(y).size < 2:
        return
    x = torch.nan_to_num(feats["tabular"], nan=0.0, posinf=0.0, neginf=0.0).numpy()
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x, y.astype(int))
    coef, icpt = torch.tensor(lr.coef_, dtype=torch.float32), torch.tensor(lr.intercept_, dtype=torch.float32)
    if head.linear_term.out_features == 1:
        init_linear_from(head.linear_term, coef[:1], icpt[:1])
    elif coef.shape[0] == head.linear_term.out_features:
        init_linear_from(head.linear_term, coef, icpt)


def fit_head(head: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray, cfg: HeadTrainConfig,
             seed: int | None = None) -> FusionClassifier:
    """Train ``head`` on all rows of ``feats`` with labels ``y`` (ints)."""
    seed = cfg.seed if seed is None else seed
    if head.cfg.kind == "metric":  # a metric loss on embeddings, not a loss on logits
        from galclip.finetune.metric_head import fit_metric_head

        return fit_metric_head(head, feats, np.asarray(y).astype(int), cfg, seed)
    if head.cfg.kind == "linear":  # a logistic regression: solved, not descended
        return fit_linear_head(head, feats, np.asarray(y).astype(int), cfg)
    gen = torch.Generator().manual_seed(seed)
    yt = torch.as_tensor(y, dtype=torch.long)
    with torch.no_grad():
        n_out = head(_rows(feats, torch.arange(min(2, len(y))))).shape[1]
    if cfg.tabular_init == "lr" and "tabular" in feats:
        init_tabular_term(head, feats, y, cfg.tabular_lr_c)
    class_w = class_weights(y, n_out) if cfg.class_balance == "weights" else None
    lin = [] if head.linear_term is None else list(head.linear_term.parameters())
    lin_ids = {id(p) for p in lin}
    groups = [{"params": [p for p in head.parameters() if id(p) not in lin_ids], "lr": cfg.lr}]
    if lin:
        groups.append({"params": lin, "lr": cfg.lr * cfg.tabular_lr_scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, int(np.ceil(n / bs)))
    if cfg.class_balance == "sampler":
        sw = class_weights(y, n_out)[yt]
    head.train()
    for _ in range(cfg.epochs):
        if cfg.class_balance == "sampler":
            order = torch.multinomial(sw, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            idx = order[s * bs:(s + 1) * bs]
            batch = modality_dropout(_rows(feats, idx), cfg.modality_dropout, gen)
            loss = loss_fn(head(batch), yt[idx], class_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    return head


def _modality_copies(feats: dict[str, torch.Tensor], p: float,
                     names: tuple[str, ...] = ("image", "spectrum")) -> list[tuple[dict[str, torch.Tensor], np.ndarray]]:
    """Rows as they are plus, for objects with several modalities, copies with one hidden.

    The exact counterpart of :func:`modality_dropout`: each paired row keeps weight 1 - p
    and each copy missing one modality weight p / (modalities), so the fit sees the partial
    inputs that image-only or spectrum-only inference will give it.
    """
    present, paired = paired_rows(feats, names)
    if p <= 0 or len(present) < 2:
        return [(feats, np.ones(paired.shape[0]))]
    both = paired.numpy()
    out = [(feats, np.where(both, 1.0 - p, 1.0))]
    for k in present:
        hidden = dict(feats)
        hidden[f"has_{k}"] = torch.zeros_like(feats[f"has_{k}"], dtype=torch.bool)
        out.append((hidden, np.where(both, p / len(present), 0.0)))
    return out


def fit_linear_head(head: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray,
                    cfg: HeadTrainConfig) -> FusionClassifier:
    """Fit a ``linear`` head exactly: scikit-learn's L2 logistic regression on its layer's inputs.

    The head is a logistic regression over frozen features: gradient steps only approach this
    solution, at over 10x the time (150 AdamW epochs: 0.65 s against 0.05 s per fit in the
    demo's evaluation, with the same ROC AUC within 0.006).
    Class balance and modality dropout enter as sample weights (:func:`_modality_copies`).
    """
    layer = head.head.linear
    n_out = layer.out_features
    x, yy, w = _weighted_design(head, feats, y, cfg)
    keep = w > 0
    cols, scale = _spectrum_block(head), 1.0
    if cols is not None:
        scale = _choose_scale(x, yy, w, y.size, cols, cfg)
        x[:, cols] *= scale
    classes = np.unique(yy[keep])
    weight = torch.zeros(n_out, x.shape[1], dtype=torch.float64)
    bias = torch.full((n_out,), -30.0, dtype=torch.float64)  # classes never labeled are never predicted
    if classes.size < 2 and n_out == 1:  # one class only: a constant prediction of it
        bias[0] = 30.0 if classes[0] == 1 else -30.0
    elif classes.size < 2:
        bias[int(classes[0])] = 30.0
    else:
        lr = LogisticRegression(C=cfg.linear_c, max_iter=5000).fit(x[keep], yy[keep], sample_weight=w[keep])
        coef, icpt = torch.from_numpy(lr.coef_ * _col_scale(x.shape[1], cols, scale)), torch.from_numpy(lr.intercept_)
        if n_out == 1:
            weight[0], bias[0] = coef[0], icpt[0]
        elif classes.size == 2:  # sklearn's one binary logit → two symmetric class logits
            for sign, c in ((-0.5, classes[0]), (0.5, classes[1])):
                weight[c], bias[c] = sign * coef[0], sign * icpt[0]
        else:
            for i, c in enumerate(classes):
                weight[c], bias[c] = coef[i], icpt[i]
    init_linear_from(layer, weight.float(), bias.float())
    head.eval()
    return head


def _weighted_design(head: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray,
                     cfg: HeadTrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, labels, sample weights) of the linear head's logistic fit: the labeled rows in
    their modality copies, weighted for class balance."""
    with torch.no_grad():
        parts = [(head.design(f).double().numpy(), w) for f, w in _modality_copies(feats, cfg.modality_dropout)]
    x = np.concatenate([a for a, _ in parts])
    w = np.concatenate([b for _, b in parts])
    yy = np.tile(y, len(parts))
    if cfg.class_balance != "none":
        w = w * class_weights(y, head.head.linear.out_features).double().numpy()[yy]
    return x, yy, w


def fix_spectrum_scale(head: FusionClassifier, feats: dict[str, torch.Tensor], y: np.ndarray,
                       cfg: HeadTrainConfig) -> HeadTrainConfig:
    """``cfg`` with ``spectrum_scales`` reduced to the one chosen on all labeled rows.

    :func:`fit_with_threshold` fits a head once per fold only to choose the decision
    threshold; choosing the scale again inside each fold fitted the logistic regression 40
    times per head instead of 13 (the demo's evaluate: 47 s). The threshold's out-of-fold
    predictions then share the scale chosen with their own rows, a leak into the threshold
    only: the head and its scale are those of the full fit.
    """
    cols = _spectrum_block(head) if head.cfg.kind == "linear" else None
    if cols is None or len(cfg.spectrum_scales) < 2:
        return cfg
    x, yy, w = _weighted_design(head, feats, np.asarray(y).astype(int), cfg)
    return dataclasses.replace(cfg, spectrum_scales=(_choose_scale(x, yy, w, len(y), cols, cfg),))


def _spectrum_block(head: FusionClassifier) -> slice | None:
    lin = head.head
    return lin.columns("spectrum") if "spectrum" in getattr(lin, "names", ()) else None


def _col_scale(n_cols: int, cols: slice | None, scale: float) -> np.ndarray:
    out = np.ones(n_cols)
    if cols is not None:
        out[cols] = scale
    return out


def _choose_scale(x: np.ndarray, yy: np.ndarray, w: np.ndarray, n: int, cols: slice,
                  cfg: HeadTrainConfig) -> float:
    """The spectrum-block scale of ``cfg.spectrum_scales`` with the best out-of-fold ROC AUC.

    ``x`` stacks ``len(x) // n`` weighted copies of the ``n`` labeled rows (modality copies);
    folds split the labeled rows, and each is scored on its rows as given (copy 0).
    """
    scales = tuple(cfg.spectrum_scales)
    y = yy[:n]
    useful = len(scales) > 1 and np.unique(y).size == 2 and np.any(x[:n, cols] != 0)
    folds = cv_folds(y, cfg.cv_folds, cfg.seed) if useful else []
    if not folds:
        return float(scales[0])
    copies = len(x) // n
    best, best_auc = float(scales[0]), -np.inf
    # one warm-started fit per fold: each scale starts from the previous scale's solution (the
    # same convex optimum, about half the L-BFGS iterations)
    fits = [LogisticRegression(C=cfg.linear_c, max_iter=5000, warm_start=True) for _ in folds]
    prev = None
    for s in scales:
        xs = x * _col_scale(x.shape[1], cols, s)
        oof = np.zeros(n)
        for lr, (tr, va) in zip(fits, folds):
            idx = np.concatenate([j * n + tr for j in range(copies)])
            idx = idx[w[idx] > 0]
            if prev and s > 0:  # the same function of the unscaled inputs
                lr.coef_[:, cols] *= prev / s
            lr.fit(xs[idx], yy[idx], sample_weight=w[idx])
            oof[va] = lr.decision_function(xs[va])
        prev = s
        auc = _oof_auc(y, oof)
        if auc > best_auc + 1e-12:
            best, best_auc = float(s), auc
    return best


@torch.no_grad()
def predict(head: FusionClassifier, feats: dict[str, torch.Tensor], batch_size: int = 4096) -> np.ndarray:
    """Probabilities for every row (see :func:`probabilities`)."""
    head.eval()
    n = next(iter(feats.values())).shape[0]
    outs = [probabilities(head(_rows(feats, torch.arange(i, min(n, i + batch_size)))))
            for i in range(0, n, batch_size)]
    return np.concatenate(outs) if outs else np.zeros(0)


def linear_only(factory: HeadFactory) -> HeadFactory:
    """Heads whose embedding term is switched off (scale fixed at 0): the classical model."""
    def make() -> FusionClassifier:
        head = factory()
        if head.linear_term is not None:
            with torch.no_grad():
                head.embed_scale.zero_()
            head.embed_scale.requires_grad_(False)
        return head
    return make


def _oof(factory: HeadFactory, feats: dict[str, torch.Tensor], y: np.ndarray, cfg: HeadTrainConfig,
         folds: list, seed: int) -> np.ndarray:
    oof = None
    for k, (tr, va) in enumerate(folds):
        h = fit_head(factory(), _rows(feats, torch.as_tensor(tr)), y[tr], cfg, seed=seed * 100 + k + 1)
        p = predict(h, _rows(feats, torch.as_tensor(va)))
        if oof is None:
            oof = np.full((len(y),) + p.shape[1:], np.nan)
        oof[va] = p
    return oof


def _oof_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(p)
    return float(roc_auc_score(y[ok], p[ok])) if len(np.unique(y[ok])) == 2 else float("nan")


def fit_with_threshold(factory: HeadFactory, feats: dict[str, torch.Tensor], y: np.ndarray,
                       cfg: HeadTrainConfig, seed: int = 0) -> tuple[FusionClassifier, float, np.ndarray | None]:
    """Fit a head on all labeled rows; choose the decision threshold on out-of-fold predictions.

    With a linear tabular term and ``cfg.term_selection == "auto"``, the out-of-fold ROC AUC
    also decides between the full head and the linear term alone (ties → linear).

    Returns:
        (head, threshold, out-of-fold probabilities or None). Multi-class heads get threshold
        NaN (argmax decisions). With too few of a class for CV the threshold is 0.5.
    """
    y = np.asarray(y).astype(int)
    probe = factory()
    has_linear = probe.linear_term is not None
    if has_linear and cfg.term_selection == "linear":
        factory = linear_only(factory)
    cfg = fix_spectrum_scale(probe, feats, y, cfg)
    folds = cv_folds(y, cfg.cv_folds, seed) if cfg.cv_folds >= 2 else []
    oof = _oof(factory, feats, y, cfg, folds, seed) if folds else None
    binary = oof is None or oof.ndim == 1
    if oof is not None and binary and has_linear and cfg.term_selection == "auto":
        lin_factory = linear_only(factory)
        oof_lin = _oof(lin_factory, feats, y, cfg, folds, seed)
        if not _oof_auc(y, oof) > _oof_auc(y, oof_lin):
            factory, oof = lin_factory, oof_lin
    torch.manual_seed(seed)
    head = fit_head(factory(), feats, y, cfg, seed=seed)
    if not binary:
        return head, float("nan"), oof
    thr = choose_threshold(y, oof, cfg.threshold_metric) if oof is not None else 0.5
    return head, thr, oof
