"""Methods of ``galclip evaluate``: a small registry of objects, not strings.

Each method says what it needs (an encoder's features, tabular statistics, raw images) and
turns one labeled subset into scored test rows; the harness only loops over
:data:`METHODS`. Adding a method (or changing which vector a method reads) is one entry here.

==============================  ==============================================================
galclip_fusion                  pretrained image+spectrum embeddings → fusion head; also scored
                                with image-only and spectrum-only inference (``@image_only``...)
galclip_fusion_morph            the same + morphology/catalogue statistics (head inputs; + linear term for MLP heads)
galclip_image                   pretrained image tower alone → same head (single modality)
galclip_image_tabular           pretrained image tower + tabular statistics
galclip_image_metric            pretrained image tower → metric-learning head (``head.kind: metric``:
                                PML loss + miner, prototype/kNN similarity classifier)
galclip_image_tabular_metric    the same + standardised tabular statistics as metric-head inputs
galclip_spectrum                pretrained spectrum tower alone → same head (single modality)
tabular_head                    tabular statistics only → same head
random_init                     randomly initialised encoders, fused → same head (image read-out fitted label-free
                                on the dataset, as pretraining fits its own: standardiser + principal components)
image_ssl                       image tower of an image-only SSL checkpoint (``image_ssl_checkpoint``)
image_ssl_morph                 the same + morphology statistics
morphology_lr                   Gini/M20/A/C... + logistic regression (scikit-learn); morphology
                                columns only, even when the dataset has other catalogue columns
galclip_self_trained            galclip_image_tabular as the teacher of a self-trained student (image tower +
                                head, :mod:`galclip.finetune.self_training`), scored as the student; opt-in
                                (``methods: [..., galclip_self_trained]``): it trains a network per draw
asymmetry_only                  zero-label reference: galaxies ranked by rotational asymmetry alone
                                (labels only place its decision threshold)
cnn_scratch                     small timm CNN trained from scratch with augmentation
==============================  ==============================================================
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Protocol

import numpy as np
import torch

from galclip.data.morphology import MERGER_STATISTIC
from galclip.finetune.baselines import cnn_from_scratch, morphology_lr
from galclip.finetune.features import feature_tensors
from galclip.finetune.head_io import head_factory
from galclip.finetune.head_training import fit_with_threshold, predict
from galclip.finetune.metrics import choose_threshold

#: (row name: method [+ inference variant], test rows scored, p(merger), decision threshold)
Scored = tuple[str, np.ndarray, np.ndarray, float]


@dataclasses.dataclass
class Bench:
    """What every method of one evaluation shares (the same labels, test rows and inputs)."""

    cfg: Any  # EvaluateConfig
    yi: np.ndarray
    test: np.ndarray
    features: dict[str, dict[str, np.ndarray]]  # encoder ("pretrained", "random", "image_ssl") → features
    tab: np.ndarray | None = None
    tab_names: list[str] = dataclasses.field(default_factory=list)
    morph_cols: list[int] = dataclasses.field(default_factory=list)
    images: torch.Tensor | None = None
    # encoder → ``tab`` with flagged fits' statistics estimated from that encoder's image
    # representation (galclip.finetune.repair); heads that read the image use it, baselines never
    repaired_tab: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    dataset: Any = None  # the survey and the checkpoint path, for methods that train the encoder
    checkpoint: str = ""

    @property
    def has_spectra(self) -> bool:
        return bool(self.features["pretrained"]["has_spectrum"].any())


class Method(Protocol):
    """An evaluated method: its needs and one fit + score on a labeled subset."""

    name: str
    features: str  # encoder whose features it reads ("" = none)
    tabular: bool
    images: bool

    def available(self, bench: Bench) -> bool: ...

    def run(self, bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[float, list[Scored]]: ...


@dataclasses.dataclass(frozen=True)
class HeadMethod:
    """Encoder features (+ tabular statistics) → the fusion head of ``cfg.head``.

    ``modalities`` None = every modality the data has; ``single`` = modalities also scored
    alone at inference (rows ``<name>@<modality>_only``); ``kind`` replaces ``cfg.head.kind``
    ("" = keep it), so one evaluation compares head kinds on the same labels.
    """

    name: str
    features: str
    modalities: tuple[str, ...] | None
    tabular: bool = False
    single: tuple[str, ...] = ()
    images: bool = False
    kind: str = ""

    def _modalities(self, bench: Bench) -> list[str]:
        if self.modalities is None:
            return ["image", "spectrum"] if bench.has_spectra else ["image"]
        return list(self.modalities)

    def available(self, bench: Bench) -> bool:
        return (self.features in bench.features and not (self.tabular and bench.tab is None)
                and ("spectrum" not in self._modalities(bench) or bench.has_spectra))

    def run(self, bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[float, list[Scored]]:
        t0 = time.time()
        cfg, feats, mods = bench.cfg, bench.features[self.features], self._modalities(bench)
        tab = None
        if self.tabular:
            tab = bench.repaired_tab.get(self.features, bench.tab) if "image" in mods else bench.tab
        hcfg = dataclasses.replace(cfg.head, kind=self.kind or cfg.head.kind,
                                   tabular=cfg.tabular_head if self.tabular else "none")
        factory = head_factory(hcfg, feats, mods, 1, bench.tab_names if self.tabular else [], seed)
        ftr = feature_tensors(feats, train_rows, tab, keep=mods)
        head, thr, _ = fit_with_threshold(factory, ftr, bench.yi[train_rows], cfg.train, seed=seed)
        secs = time.time() - t0
        scored = []
        for suffix, keep in {"": mods, **{f"@{m}_only": [m] for m in self.single}}.items():
            rows = bench.test
            for mod in keep if suffix else []:  # single-modality inference only where it exists
                rows = rows[feats[f"has_{mod}"][rows].astype(bool)]
            scored.append((self.name + suffix, rows, predict(head, feature_tensors(feats, rows, tab, keep=keep)), thr))
        return secs, scored


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A method without galclip features: ``fit`` trains on the labeled rows and scores the test rows."""

    name: str
    fit: Callable[[Bench, np.ndarray, int], tuple[np.ndarray, float]]
    ready: Callable[[Bench], bool]
    tabular: bool = False
    images: bool = False
    features: str = ""

    def available(self, bench: Bench) -> bool:
        return self.ready(bench)

    def run(self, bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[float, list[Scored]]:
        t0 = time.time()
        p, thr = self.fit(bench, train_rows, seed)
        return time.time() - t0, [(self.name, bench.test, p, thr)]


@dataclasses.dataclass(frozen=True)
class SelfTrainedMethod:
    """The fused image head (``galclip_image_tabular``) as the teacher of a self-trained student,
    as ``galclip finetune self_train.enabled=true`` runs it (``cfg.self_train``; the test rows'
    labels are never read, their images are part of the survey it self-trains on)."""

    name: str = "galclip_self_trained"
    features: str = "pretrained"
    tabular: bool = True
    images: bool = False
    opt_in: bool = True

    def available(self, bench: Bench) -> bool:
        return bench.dataset is not None and bool(bench.checkpoint) and bench.tab is not None

    def run(self, bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[float, list[Scored]]:
        from galclip.data.morphology import morphology_flag
        from galclip.encode import load_checkpoint
        from galclip.finetune.self_training import teach

        t0 = time.time()
        cfg, feats, everything = bench.cfg, bench.features["pretrained"], np.arange(len(bench.yi))
        tab = bench.repaired_tab.get("pretrained", bench.tab)
        hcfg = dataclasses.replace(cfg.head, tabular=cfg.tabular_head)
        factory = head_factory(hcfg, feats, ["image"], 1, bench.tab_names, seed)
        teacher, thr, _ = fit_with_threshold(factory, feature_tensors(feats, train_rows, tab, keep=["image"]),
                                             bench.yi[train_rows], cfg.train, seed=seed)
        # the statistics repaired from the student, fitted on the non-test rows, as predict does
        repair = (cfg.tabular, bench.tab, bench.tab_names, morphology_flag(bench.dataset),
                  np.setdiff1d(everything, bench.test))
        st = teach(load_checkpoint(bench.checkpoint).model, teacher, thr, bench.dataset, bench.yi, train_rows, feats,
                   tab, dataclasses.replace(cfg.self_train, seed=seed), keep=["image"],
                   balanced=cfg.train.class_balance != "none", repair=repair, batch_size=cfg.batch_size,
                   progress=False)
        return time.time() - t0, [(self.name, bench.test, st.p_student[bench.test], st.threshold)]


def _morphology_lr(bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """The classical baseline: morphology statistics only + logistic regression."""
    cfg, xm = bench.cfg, bench.tab[:, bench.morph_cols]
    return morphology_lr(xm[train_rows], bench.yi[train_rows], xm[bench.test], cfg.morph_lr_c, cfg.train.cv_folds,
                         cfg.train.threshold_metric, seed)


def _asymmetry_only(bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Zero-label reference: every galaxy ranked by its rotational asymmetry, nothing learned.

    Mergers are the most asymmetric galaxies, so this ranking needs no labels; its ROC AUC is
    the same at every budget and draw (the labelled rows only place the decision threshold).
    A few-label method below this line has learned less than the one classical statistic
    (real GZ1: AUC 0.86; the deep simulated surveys: 0.77-0.81).
    """
    from scipy.stats import rankdata

    v = bench.tab[:, bench.tab_names.index(MERGER_STATISTIC)].astype(np.float64)
    p = rankdata(np.where(np.isfinite(v), v, -np.inf)) / len(v)  # label-free score in (0, 1]: its quantile
    thr = choose_threshold(bench.yi[train_rows], p[train_rows], bench.cfg.train.threshold_metric)
    return p[bench.test], thr


def _image_probe(bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Linear probe: logistic regression (class-balanced, C = 1) on the pretrained image vector
    (the image representation). With 10–40 labels it is the strongest reader of the
    representation on real mergers (README ablation)."""
    x = np.nan_to_num(bench.features["pretrained"]["image"])
    return morphology_lr(x[train_rows], bench.yi[train_rows], x[bench.test], 1.0, bench.cfg.train.cv_folds,
                         bench.cfg.train.threshold_metric, seed)


def _cnn_scratch(bench: Bench, train_rows: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """A small CNN trained from scratch on the labeled cutouts (no pretraining at all)."""
    return cnn_from_scratch(bench.images, bench.yi, train_rows, bench.test, bench.cfg.cnn, seed,
                            bench.cfg.train.threshold_metric)


METHODS: dict[str, Method] = {m.name: m for m in (
    HeadMethod("galclip_fusion", "pretrained", ("image", "spectrum"), single=("image", "spectrum")),
    HeadMethod("galclip_fusion_morph", "pretrained", ("image", "spectrum"), tabular=True, single=("image",)),
    HeadMethod("galclip_image", "pretrained", ("image",)),
    HeadMethod("galclip_image_tabular", "pretrained", ("image",), tabular=True),
    HeadMethod("galclip_image_metric", "pretrained", ("image",), kind="metric"),
    HeadMethod("galclip_image_tabular_metric", "pretrained", ("image",), tabular=True, kind="metric"),
    HeadMethod("galclip_spectrum", "pretrained", ("spectrum",)),
    HeadMethod("tabular_head", "pretrained", (), tabular=True),
    HeadMethod("random_init", "random", None),
    HeadMethod("image_ssl", "image_ssl", ("image",)),
    HeadMethod("image_ssl_morph", "image_ssl", ("image",), tabular=True),
    SelfTrainedMethod(),
    Baseline("galclip_image_probe", _image_probe, lambda bench: "pretrained" in bench.features,
             features="pretrained"),
    Baseline("morphology_lr", _morphology_lr, lambda bench: bool(bench.morph_cols), tabular=True),
    Baseline("asymmetry_only", _asymmetry_only, lambda bench: MERGER_STATISTIC in bench.tab_names, tabular=True),
    Baseline("cnn_scratch", _cnn_scratch, lambda bench: bench.images is not None, images=True),
)}
ALL_METHODS = tuple(METHODS)
