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
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from galclip.config import to_dict
from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.errors import ConfigError, InputFileError
from galclip.encode import MODALITIES, load_checkpoint, open_dataset, tabular_names
from galclip.finetune.features import extract_features, feature_tensors
from galclip.finetune.head_training import HeadTrainConfig, fit_with_threshold, predict
from galclip.finetune.heads import FusionClassifier, HeadConfig
from galclip.finetune.metrics import binary_metrics, multiclass_metrics
from galclip.finetune.sampling import stratified_budget, holdout_split
from galclip.finetune.tabular_inputs import TabularInputConfig, build_tabular, prep_to_dict
from galclip.utils.io import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"


@dataclasses.dataclass
class FinetuneConfig:
    """Fine-tuning stage.

    Attributes:
        data: dataset to read (labels + images/spectra).
        checkpoint: pretrained galclip model (directory or ``model.safetensors``).
        out: output directory.
        label: label column: ``merger`` (binary, default) or ``merger_stage`` (multi-class).
        modalities: encoder modalities the head fuses (``image``, ``spectrum``).
        head: fusion head (kind, width, tabular branch).
        train: head optimisation, class balance, modality dropout, threshold metric.
        tabular: tabular inputs (catalogue columns + morphology) when ``head.tabular`` ≠ none.
        n_labels: labeled rows to train on (stratified draw from the non-test rows); 0 = all.
        label_seed: seed of that draw.
        test_fraction: held-out stratified test split of the labeled rows.
        split_seed: seed of the test split (keep fixed to compare runs).
        unfreeze_blocks: 0 = frozen encoders (features precomputed once); n > 0 = train
            the last n blocks of each tower with layer-wise LR decay (Lightning).
        encoder_lr, layer_decay: LR of the top unfrozen block and its decay per block down.
        unfrozen_epochs, unfrozen_batch_size, val_fraction: end-to-end training (threshold
            chosen on a validation split of the labeled rows there).
        batch_size: encoding batch size.
        cache_dir: feature/morphology cache ("" = ``<out>/cache``).
        n_jobs: processes for morphology measurement.
        progress: tqdm bars.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint: str = ""
    out: str = "runs/finetune"
    label: str = "merger"
    modalities: list[str] = dataclasses.field(default_factory=lambda: list(MODALITIES))
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
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
    batch_size: int = 64
    cache_dir: str = ""
    n_jobs: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"modalities: {bad[0]!r} is not one of {list(MODALITIES)}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")


# --------------------------------------------------------------------------- shared helpers

def read_labels(dataset: SurveyDataset, label: str) -> np.ndarray:
    """Label column as float (NaN = unknown; negative codes are treated as unknown)."""
    if label not in dataset.label_names and label not in dataset.manifest.label_columns:
        raise ConfigError(f"label column {label!r} not in dataset {dataset.cfg.path} "
                          f"(has: {', '.join(dataset.manifest.label_columns) or 'none'})")
    y = dataset.column(label).astype(np.float64)
    y[~np.isfinite(y) | (y < 0)] = np.nan
    return y


def n_classes(y: np.ndarray, label: str) -> int:
    """1 logit for binary labels, C for multi-class (merger_stage uses the simulator's stages)."""
    known = y[np.isfinite(y)].astype(int)
    if label == "merger_stage":
        return max(len(S.MERGER_STAGES), int(known.max(initial=0)) + 1)
    k = int(known.max(initial=1)) + 1
    return 1 if k <= 2 else k


def merger_probability(prob: np.ndarray, label: str) -> np.ndarray:
    """p(merger) from a head's output: the probability itself, or the merger stages' sum."""
    if prob.ndim == 1:
        return prob
    if label == "merger_stage":
        is_m = np.zeros(prob.shape[1], bool)
        is_m[: len(S.MERGER_STAGE_IS_MERGER)] = np.asarray(S.MERGER_STAGE_IS_MERGER, bool)
        return prob[:, is_m].sum(1)
    return 1.0 - prob[:, 0]


def head_factory(head_cfg: HeadConfig, feats: dict[str, np.ndarray], modalities: Sequence[str], n_out: int,
                 tab_names: Sequence[str], seed: int = 0) -> Callable[[], FusionClassifier]:
    """Builder of fresh heads sized from the features (seeded for reproducibility)."""
    embed = {m: int(feats[m].shape[1]) for m in modalities if m in feats}
    tokens = {m: int(feats[f"{m}_tokens"].shape[2]) for m in modalities if f"{m}_tokens" in feats}
    counter = [0]

    def make() -> FusionClassifier:
        torch.manual_seed(seed * 1000 + counter[0])
        counter[0] += 1
        return FusionClassifier(head_cfg, embed, n_out=n_out, tabular_columns=tab_names, token_dims=tokens)

    return make


def evaluate_predictions(y: np.ndarray, prob: np.ndarray, threshold: float, label: str) -> dict[str, Any]:
    """Binary merger metrics (plus multi-class metrics when the head is multi-class)."""
    if prob.ndim == 1:
        return binary_metrics(y, prob, threshold)
    out = {f"stage_{k}": v for k, v in multiclass_metrics(y, prob).items()}
    if label == "merger_stage":
        ybin = np.asarray(S.MERGER_STAGE_IS_MERGER)[y.astype(int)]
        out.update(binary_metrics(ybin, merger_probability(prob, label), 0.5))
    return out


def write_table(rows: dict[str, np.ndarray], csv_path: Path, fits_path: Path | None, meta: dict[str, Any]) -> None:
    """Per-object table → CSV (+ FITS) via astropy, atomically."""
    from astropy.table import Table

    t = Table({k: np.asarray(v) for k, v in rows.items()})
    for k, v in meta.items():
        t.meta[k.upper()[:8]] = v
    with atomic_path(csv_path, suffix=".csv") as tmp:
        t.write(tmp, format="ascii.csv", overwrite=True)
    if fits_path is not None:
        with atomic_path(fits_path, suffix=".fits") as tmp:
            t.write(tmp, format="fits", overwrite=True)


def save_head(head: FusionClassifier, out: Path, meta: dict[str, Any]) -> None:
    """``head.safetensors`` + ``head.json`` (config, columns, scaler, threshold, encoder hash)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    with atomic_path(out / HEAD_WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_json(out / HEAD_META, meta)


def load_head(run_dir: str | Path) -> tuple[FusionClassifier, dict[str, Any]]:
    """Rebuild a saved head (safetensors only); refuses a weights/JSON mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from galclip.config import from_dict

    run_dir = Path(run_dir)
    meta_path = run_dir / HEAD_META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise InputFileError(meta_path, "head metadata not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(meta_path, f"unreadable head metadata ({exc.__class__.__name__})") from None
    cfg = from_dict(HeadConfig, meta["head"])
    head = FusionClassifier(cfg, {k: int(v) for k, v in meta["embed_dims"].items()}, n_out=int(meta["n_out"]),
                            tabular_columns=meta.get("tabular_columns", []),
                            token_dims={k: int(v) for k, v in meta.get("token_dims", {}).items()})
    try:
        state = load_file(str(run_dir / HEAD_WEIGHTS))
        head.load_state_dict(state)
    except (SafetensorError, RuntimeError, FileNotFoundError, OSError) as exc:
        raise InputFileError(run_dir / HEAD_WEIGHTS, f"head weights do not match {HEAD_META} ({str(exc)[:200]})") from None
    head.eval()
    return head, meta


# --------------------------------------------------------------------------- stage

def _unfrozen_fit(cfg: FinetuneConfig, model: Any, dataset: SurveyDataset, factory: Callable[[], FusionClassifier],
                  train_idx: np.ndarray, y: np.ndarray, tab: np.ndarray | None, out: Path) -> tuple[Any, FusionClassifier, float]:
    """End-to-end training of the top encoder blocks + head; threshold on a validation split."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, Dataset

    from galclip.data.dataset import collate
    from galclip.finetune.lightning import FinetuneModule
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
    trainer = pl.Trainer(max_epochs=cfg.unfrozen_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=cfg.progress, enable_model_summary=False,
                         default_root_dir=str(out))
    trainer.fit(module, loader)
    model.eval()
    head.eval()
    thr = 0.5
    if va.size:
        sub = dataset.subset(np.sort(va))
        f = extract_features(model, sub, tokens=head.needs_tokens, batch_size=cfg.batch_size, progress=False)
        p = predict(head, feature_tensors(f, np.arange(len(sub)), None if tab is None else tab[np.sort(va)]))
        if p.ndim == 1:
            thr = choose_threshold(y[np.sort(va)].astype(int), p, cfg.train.threshold_metric)
    return model, head, thr


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run the stage; returns the metrics dictionary also written to ``metrics.json``."""
    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    ckpt = load_checkpoint(cfg.checkpoint)
    model, mcfg, sha = ckpt.model, ckpt.cfg, ckpt.sha256
    dataset = open_dataset(ckpt, cfg.data)
    y = read_labels(dataset, cfg.label)
    pool, test = holdout_split(y, cfg.test_fraction, cfg.split_seed)
    train_idx = pool if cfg.n_labels <= 0 else stratified_budget(y, pool, cfg.n_labels, cfg.label_seed)
    n_out = n_classes(y, cfg.label)
    log.info("%d rows, %d labeled for training, %d test, %d output(s)", len(dataset), train_idx.size, test.size, n_out)

    tab, tab_names, prep = None, [], None
    if cfg.head.tabular != "none":
        fit_rows = np.setdiff1d(np.arange(len(dataset)), test)
        tab, tab_names, prep = build_tabular(dataset, cfg.tabular, fit_rows, cache, cfg.n_jobs)
    frozen = cfg.unfreeze_blocks <= 0
    tokens = cfg.head.kind == "cross_attention"
    feats = extract_features(model, dataset, tokens=tokens, batch_size=cfg.batch_size, cache_dir=cache if frozen else None,
                             model_key=sha, progress=cfg.progress)
    factory = head_factory(cfg.head, feats, cfg.modalities, n_out, tab_names, cfg.train.seed)
    if frozen:
        ftrain = feature_tensors(feats, train_idx, tab, keep=cfg.modalities)
        head, thr, _ = fit_with_threshold(factory, ftrain, y[train_idx].astype(int), cfg.train, seed=cfg.train.seed)
    else:
        model, head, thr = _unfrozen_fit(cfg, model, dataset, factory, train_idx, y, tab, out)
        feats = extract_features(model, dataset, tokens=tokens, batch_size=cfg.batch_size, progress=cfg.progress)
        from galclip.models.checkpoint import save_checkpoint
        save_checkpoint(model, mcfg, out / "encoder")

    everything = np.arange(len(dataset))
    variants = {"both": list(cfg.modalities)} | {f"{m}_only": [m] for m in cfg.modalities if len(cfg.modalities) > 1}
    probs = {name: predict(head, feature_tensors(feats, everything, tab, keep=keep)) for name, keep in variants.items()}
    metrics: dict[str, Any] = {"threshold": thr, "n_train": int(train_idx.size), "n_test": int(test.size),
                               "checkpoint_sha256": sha, "label": cfg.label, "test": {}}
    for name, p in probs.items():
        rows = test
        if name != "both":  # evaluate single-modality inference only where that modality exists
            m = name.removesuffix("_only")
            rows = test[feats[f"has_{m}"][test].astype(bool)]
        metrics["test"][name] = evaluate_predictions(y[rows], p[rows], thr, cfg.label) if rows.size else {}
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
    if p_all.ndim == 2:
        for k in range(p_all.shape[1]):
            stage = S.MERGER_STAGES[k] if cfg.label == "merger_stage" and k < len(S.MERGER_STAGES) else str(k)
            table[f"p_{stage}"] = p_all[:, k]
    write_table(table, out / "predictions.csv", out / "predictions.fits",
                {"label": cfg.label, "thresh": thr if math.isfinite(thr) else -1.0})
    meta = {"format": "galclip-head", "version": 1, "head": to_dict(cfg.head), "n_out": n_out,
            "embed_dims": {m: int(feats[m].shape[1]) for m in cfg.modalities},
            "token_dims": {m: int(feats[f"{m}_tokens"].shape[2]) for m in cfg.modalities if f"{m}_tokens" in feats},
            "tabular_columns": tab_names, "tabular_prep": prep_to_dict(prep), "threshold": thr,
            "label": cfg.label, "modalities": list(cfg.modalities), "checkpoint": str(cfg.checkpoint),
            "checkpoint_sha256": sha, "unfreeze_blocks": cfg.unfreeze_blocks, "config": to_dict(cfg)}
    save_head(head, out, meta)
    atomic_write_json(out / "metrics.json", metrics)
    log.info("test ROC AUC %.3f, F1 %.3f (threshold %.3f) → %s", metrics["test"]["both"].get("roc_auc", float("nan")),
             metrics["test"]["both"].get("f1", float("nan")), thr, out)
    return metrics
