"""``galclip finetune``: train a fusion head for merger classification from few labels.

Pipeline: load the pretrained dual encoder → encoder features for every row (computed once
and cached when the encoders are frozen) → optional tabular/morphology inputs → stratified
labeled subset and a fixed held-out test split → head trained with class weights and
modality dropout → decision threshold chosen on out-of-fold validation predictions →
head checkpoint (safetensors + JSON), metrics JSON (both modalities, image only, spectrum
only) and per-object probabilities (CSV + FITS) keyed by object_id.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from galclip.config import to_dict
from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import MODALITIES, tabular_names
from galclip.data.morphology import morphology_flag
from galclip.finetune.features import extract_features, feature_tensors, output_dirs
from galclip.finetune.head_io import data_signature, head_factory, save_head, save_reference
from galclip.finetune.head_training import HeadTrainConfig, fit_with_threshold, predict
from galclip.finetune.heads import FusionClassifier, HeadConfig
from galclip.finetune.labels import evaluate_predictions, labeled_dataset, merger_probability, n_classes
from galclip.finetune.sampling import holdout_split, stratified_budget
from galclip.finetune.self_training import SelfTrainConfig, Student, teach
from galclip.finetune.repair import repair_dict
from galclip.finetune.tabular_inputs import (TabularInputConfig, build_tabular, image_blind, prep_to_dict,
                                             repaired_tabular)
from galclip.tables import columns_table, write_table
from galclip.utils.io import atomic_write_json

log = logging.getLogger(__name__)

@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning stage.

    Attributes:
        data: dataset to read (labels + images/spectra).
        labels: CSV/FITS table with ``object_id`` and a ``label`` column: labels made after
            ingest (they replace the dataset's own column; unknown ids are reported).
        checkpoint: pretrained galclip model (directory or ``model.safetensors``).
        out: output directory.
        label: label column: ``merger`` (binary, default) or ``merger_stage`` (multi-class).
        modalities: encoder modalities the head fuses (``image``, ``spectrum``).
        head: fusion head (kind, width, tabular branch).
        train: head optimisation, class balance, modality dropout, threshold metric.
        tabular: tabular inputs (catalogue columns + morphology) when ``head.tabular`` ≠ none.
        n_labels: labeled rows to train on (stratified draw from the non-test rows); 0 = all.
        label_seed: seed of that draw.
        test_fraction: held-out stratified test split of the labeled rows; 0 = train on
            every label and report cross-validated (out-of-fold) metrics instead.
        split_seed: seed of the test split (keep fixed to compare runs).
        unfreeze_blocks: 0 = frozen encoders (features precomputed once); n > 0 = train
            the last n blocks of each tower with layer-wise LR decay (Lightning).
        encoder_lr, layer_decay: LR of the top unfrozen block and its decay per block down.
        unfrozen_epochs, unfrozen_batch_size, val_fraction: end-to-end training (threshold
            chosen on a validation split of the labeled rows there).
        self_train: self-training of the image tower on the frozen head's soft labels for
            every unlabelled galaxy (:mod:`galclip.finetune.self_training`); the student's
            encoder is saved with the head (``encoder/``), the teacher's metrics beside its own.
        batch_size: encoding batch size.
        cache_dir: feature/morphology cache ("" = ``<out>/cache``).
        n_jobs: processes for morphology measurement.
        progress: tqdm bars.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: str = ""
    labels: str = ""
    out: str = "runs/finetune"
    label: str = "merger"
    modalities: list[str] = dataclasses.field(default_factory=lambda: list(MODALITIES))
    # the measured recipe (configs/finetune.yaml): the representation *and* the morphology statistics
    head: HeadConfig = dataclasses.field(default_factory=lambda: HeadConfig(tabular="linear"))
    train: HeadTrainConfig = dataclasses.field(default_factory=HeadTrainConfig)
    tabular: TabularInputConfig = dataclasses.field(default_factory=TabularInputConfig)
    n_labels: int = 0
    label_seed: int = 0
    test_fraction: float = 0.3
    split_seed: int = 0
    unfreeze_blocks: int = 0
    encoder_lr: float = 1e-4
    layer_decay: float = 0.75
    unfrozen_epochs: int = 5
    unfrozen_batch_size: int = 32
    val_fraction: float = 0.25
    self_train: SelfTrainConfig = dataclasses.field(default_factory=SelfTrainConfig)
    batch_size: int = 64
    cache_dir: str = ""
    n_jobs: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"modalities: {bad[0]!r} is not one of {list(MODALITIES)}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.head.kind == "metric" and self.unfreeze_blocks > 0:  # Lightning trains heads on logits
            raise ValueError("head.kind metric trains on frozen encoder features: set unfreeze_blocks=0")
        if self.self_train.enabled and (self.unfreeze_blocks > 0 or self.head.kind == "metric"
                                        or self.label != "merger" or "image" not in self.modalities):
            raise ValueError("self_train needs a frozen-encoder teacher (unfreeze_blocks=0), a head trained on "
                             "logits (not metric), label=merger and the image modality")


# --------------------------------------------------------------------------- stage

def _unfrozen_fit(cfg: FinetuneConfig, model: Any, dataset: SurveyDataset, factory: Callable[[], FusionClassifier],
                  train_idx: np.ndarray, y: np.ndarray, tab: np.ndarray | None, out: Path) -> tuple[Any, FusionClassifier, float]:
    """End-to-end training of the top encoder blocks + head; threshold on a validation split."""
    from torch.utils.data import DataLoader, Dataset

    from galclip.data.dataset import collate
    from galclip.finetune.lightning import FinetuneModule, fit_on_one_device
    from galclip.finetune.metrics import choose_threshold

    yl = y[train_idx].astype(int)
    _, counts = np.unique(yl, return_counts=True)
    if counts.min() >= 4 and cfg.val_fraction > 0:
        from sklearn.model_selection import train_test_split
        tr, va = train_test_split(train_idx, test_size=cfg.val_fraction, random_state=cfg.label_seed, stratify=yl)
    else:
        tr, va = train_idx, np.zeros(0, int)

    class _Labeled(Dataset):
        def __init__(self, rows: np.ndarray) -> None:
            self.rows = rows
            self.sub = dataset.subset(rows)

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict[str, Any]:
            item = self.sub[i]
            item["index"] = int(self.rows[i])  # row of the full dataset (tabular lookup)
            item["target"] = float(y[self.rows[i]])
            return item

    head = factory()
    module = FinetuneModule(model, head, cfg.train, yl, cfg.unfreeze_blocks, cfg.encoder_lr, cfg.layer_decay,
                            tabular=tab, tabular_names=tabular_names(model, dataset))
    loader = DataLoader(_Labeled(np.sort(tr)), batch_size=min(cfg.unfrozen_batch_size, len(tr)), shuffle=True,
                        collate_fn=collate, num_workers=0, drop_last=len(tr) > cfg.unfrozen_batch_size)
    fit_on_one_device(module, loader, str(out), cfg.progress, max_epochs=cfg.unfrozen_epochs)
    thr = 0.5
    if va.size:
        sub = dataset.subset(np.sort(va))
        f = extract_features(model, sub, tokens=head.needs_tokens, batch_size=cfg.batch_size, progress=False)
        p = predict(head, feature_tensors(f, np.arange(len(sub)), None if tab is None else tab[np.sort(va)]))
        if p.ndim == 1:
            thr = choose_threshold(y[np.sort(va)].astype(int), p, cfg.train.threshold_metric)
    return model, head, thr


def save_own_encoder(cfg: FinetuneConfig, model: Any, mcfg: Any, out: Path, sha: str, how: str) -> None:
    """The head's own encoder (``out/encoder``), with the pretrained checkpoint's preprocessing
    record, so predict reads new surveys as the encoder was trained on them."""
    from galclip.models.checkpoint import read_model_meta, save_checkpoint

    extra = dict(read_model_meta(cfg.checkpoint).get("extra") or {})
    extra["fine_tuned"] = {"from_sha256": sha, "how": how}
    save_checkpoint(model, mcfg, out / "encoder", extra=extra)


def _self_trained(cfg: FinetuneConfig, model: Any, mcfg: Any, teacher: FusionClassifier, thr: float,
                  dataset: SurveyDataset, y: np.ndarray, train_idx: np.ndarray, feats: dict[str, np.ndarray],
                  tab: np.ndarray | None, repair: tuple | None, out: Path, ckpt_sha: str) -> Student:
    """The student self-trained on the teacher's soft labels, its encoder saved to ``out/encoder``."""
    student = teach(model, teacher, thr, dataset, y, train_idx, feats, tab, cfg.self_train, keep=cfg.modalities,
                    balanced=cfg.train.class_balance != "none", repair=repair, modality_p=cfg.train.modality_dropout,
                    tabular_names=tabular_names(model, dataset), batch_size=cfg.batch_size, out=out,
                    progress=cfg.progress)
    views = dataclasses.replace(mcfg.image, eval_views=cfg.self_train.views)
    save_own_encoder(cfg, student.model, dataclasses.replace(mcfg, image=views), out, ckpt_sha, "self_trained")
    return student


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run the stage; returns the metrics dictionary also written to ``metrics.json``."""
    t0 = time.time()
    out, cache = output_dirs(cfg.out, cfg.cache_dir)
    ckpt, dataset, y = labeled_dataset(cfg.checkpoint, cfg.data, cfg.label, cfg.labels)
    model, mcfg, sha = ckpt.model, ckpt.cfg, ckpt.sha256
    pool, test = holdout_split(y, cfg.test_fraction, cfg.split_seed)
    train_idx = pool if cfg.n_labels <= 0 else stratified_budget(y, pool, cfg.n_labels, cfg.label_seed)
    n_out = n_classes(y, cfg.label)
    log.info("%d rows, %d labeled for training, %d test, %d output(s)", len(dataset), train_idx.size, test.size, n_out)

    tab, tab_names, prep, repair = None, [], None, None
    fit_rows = np.setdiff1d(np.arange(len(dataset)), test)
    if cfg.head.tabular != "none":
        tab, tab_names, prep = build_tabular(dataset, cfg.tabular, fit_rows, cache, cfg.n_jobs)
    frozen = cfg.unfreeze_blocks <= 0
    tokens = cfg.head.kind == "cross_attention"
    feats = extract_features(model, dataset, tokens=tokens, batch_size=cfg.batch_size, cache_dir=cache if frozen else None,
                             model_key=sha, progress=cfg.progress)
    measured_tab, flag = tab, morphology_flag(dataset)
    if tab is not None and frozen and "image" in feats:  # an unfrozen encoder changes the representation
        tab, repair = repaired_tabular(cfg.tabular, tab, tab_names, feats["image"], flag, fit_rows)
    factory = head_factory(cfg.head, feats, cfg.modalities, n_out, tab_names, cfg.train.seed)
    if frozen:
        ftrain = feature_tensors(feats, train_idx, tab, keep=cfg.modalities)
        head, thr, oof = fit_with_threshold(factory, ftrain, y[train_idx].astype(int), cfg.train, seed=cfg.train.seed)
    else:
        oof = None
        model, head, thr = _unfrozen_fit(cfg, model, dataset, factory, train_idx, y, tab, out)
        feats = extract_features(model, dataset, tokens=tokens, batch_size=cfg.batch_size, progress=cfg.progress)
        save_own_encoder(cfg, model, mcfg, out, sha, "unfrozen")
    teacher = None
    if cfg.self_train.enabled:
        remeasure = None if measured_tab is None else (cfg.tabular, measured_tab, tab_names, flag, fit_rows)
        st = _self_trained(cfg, model, mcfg, head, thr, dataset, y, train_idx, feats, tab, remeasure, out, sha)
        teacher, oof = (st.p_teacher, thr, oof), None
        model, head, thr, feats, tab, repair = st.model, st.head, st.threshold, st.features, st.tabular, st.repair

    everything = np.arange(len(dataset))
    variants = {"both": list(cfg.modalities)} | {f"{m}_only": [m] for m in cfg.modalities if len(cfg.modalities) > 1}
    blind = None if tab is None else image_blind(tab, tab_names)
    probs = {name: predict(head, feature_tensors(feats, everything, tab if "image" in keep else blind, keep=keep))
             for name, keep in variants.items()}
    metrics: dict[str, Any] = {"threshold": thr, "n_train": int(train_idx.size), "n_test": int(test.size),
                               "checkpoint_sha256": sha, "label": cfg.label, "test": {}}
    for name, p in probs.items():
        rows = test
        if name != "both":  # evaluate single-modality inference only where that modality exists
            m = name.removesuffix("_only")
            rows = test[feats[f"has_{m}"][test].astype(bool)]
        metrics["test"][name] = evaluate_predictions(y[rows], p[rows], thr, cfg.label) if rows.size else {}
    if oof is not None:  # out-of-fold predictions of the training labels (the threshold was chosen on them)
        metrics["cross_validated"] = evaluate_predictions(y[train_idx], oof, thr, cfg.label)
    if teacher is not None:  # the frozen head the student learned from, on the same rows
        p_t, thr_t, oof_t = teacher
        metrics["teacher"] = {"threshold": thr_t, "test": evaluate_predictions(y[test], p_t[test], thr_t, cfg.label)
                              if test.size else {}}
        if oof_t is not None:
            metrics["teacher"]["cross_validated"] = evaluate_predictions(y[train_idx], oof_t, thr_t, cfg.label)
    metrics["seconds"] = round(time.time() - t0, 2)

    p_all = probs["both"]
    p_merger = merger_probability(p_all, cfg.label)
    predicted = (p_merger >= thr).astype(int) if p_all.ndim == 1 else p_all.argmax(1)
    split = np.full(len(dataset), "unlabeled", dtype=object)
    split[np.isfinite(y)] = "unused"
    split[train_idx] = "train"
    split[test] = "test"
    table = {"object_id": dataset.column(S.OBJECT_ID).astype(str), "ra": dataset.column(S.RA),
             "dec": dataset.column(S.DEC), "p_merger": p_merger, "predicted": predicted, "label": y,
             "split": split.astype(str)}
    for name, p in probs.items():
        if name != "both":
            table[f"p_merger_{name}"] = merger_probability(p, cfg.label)
    if teacher is not None:
        table["p_merger_teacher"] = teacher[0]
    if repair is not None:  # which rows the head saw with statistics estimated from the representation
        table["statistics_repaired"] = repair.repaired_rows(feats["image"], flag)
    if p_all.ndim == 2:
        for k in range(p_all.shape[1]):
            stage = S.MERGER_STAGES[k] if cfg.label == "merger_stage" and k < len(S.MERGER_STAGES) else str(k)
            table[f"p_{stage}"] = p_all[:, k]
    write_table(columns_table(table, {"label": cfg.label, "thresh": thr if math.isfinite(thr) else -1.0}),
                out / "predictions", ("csv", "fits"))
    meta = {"format": "galclip-head", "version": 1, "head": to_dict(cfg.head), "n_out": n_out,
            "embed_dims": {m: int(feats[m].shape[1]) for m in cfg.modalities},
            "token_dims": {m: int(feats[f"{m}_tokens"].shape[2]) for m in cfg.modalities if f"{m}_tokens" in feats},
            "tabular_columns": tab_names, "tabular_prep": prep_to_dict(prep), "tabular_repair": repair_dict(repair),
            "threshold": thr,
            "label": cfg.label, "modalities": list(cfg.modalities), "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": sha, "unfreeze_blocks": cfg.unfreeze_blocks,
            "own_encoder": not frozen or cfg.self_train.enabled, "config": to_dict(cfg),
            "data": data_signature(dataset)}
    save_head(head, out, meta)
    save_reference(out, feats, train_idx, cfg.modalities)
    atomic_write_json(out / "metrics.json", metrics)
    shown = metrics["test"].get("both") or metrics.get("cross_validated", {})
    log.info("%s ROC AUC %.3f, F1 %.3f (threshold %.3f) → %s", "test" if test.size else "cross-validated",
             shown.get("roc_auc", float("nan")), shown.get("f1", float("nan")), thr, out)
    return metrics
