"""``galclip predict``: apply a fine-tuned head to new samples (another dataset).

The head (safetensors + JSON), its encoder checkpoint (verified by sha256) and its tabular
scaler are loaded from the ``finetune`` output; the dataset is read with the checkpoint's
preprocessing and refused with one line when it does not match what the head was trained
on (bands, image size, spectral grid, tabular columns). A missing modality is fine: the
head was trained with modality dropout. Each object gets ``p_merger``, the decision at the
head's threshold, and an ``ood`` flag when its embedding is farther from the training
objects than 99 % of them are from each other (kNN distance), where a prediction is an
extrapolation.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from galclip.config import from_dict
from galclip.data import schema as S
from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import load_checkpoint, open_dataset
from galclip.errors import ConfigError, InputFileError
from galclip.data.morphology import morphology_flag
from galclip.finetune.features import extract_features, feature_tensors, output_dirs, tabular_raw
from galclip.finetune.head_io import data_signature, knn_distance, load_head, load_reference, signature_mismatch
from galclip.finetune.head_training import predict
from galclip.finetune.labels import merger_probability
from galclip.finetune.repair import StatisticRepair
from galclip.finetune.tabular_inputs import TabularInputConfig
from galclip.tables import columns_table, write_table
from galclip.utils.io import atomic_write_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PredictConfig:
    """Prediction stage.

    Attributes:
        model: a ``galclip finetune`` output directory (``head.safetensors`` + ``head.json``).
        data: the new dataset (``galclip ingest`` / ``simulate`` output).
        out: output directory (``predictions.csv``/``.fits``, ``summary.json``).
        threshold: decision threshold on ``p_merger`` (NaN = the head's own).
        batch_size: encoding batch size.
        cache_dir: morphology cache for tabular heads ("" = ``<out>/cache``).
        n_jobs: processes for morphology measurement.
        formats: table formats.
        progress: tqdm bars.
    """

    model: str = ""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    out: str = "runs/predict"
    threshold: float = float("nan")
    batch_size: int = 64
    cache_dir: str = ""
    n_jobs: int = 1
    formats: list[str] = dataclasses.field(default_factory=lambda: ["csv", "fits"])
    progress: bool = True


def _encoder(cfg: PredictConfig, meta: dict[str, Any]) -> Any:
    """The encoder the head was trained on: its own fine-tuned or self-trained copy, or the
    recorded checkpoint."""
    own = Path(cfg.model) / "encoder"
    if (meta.get("own_encoder") or int(meta.get("unfreeze_blocks", 0)) > 0) and own.exists():
        return load_checkpoint(own)
    return load_checkpoint(meta["checkpoint"], expect_sha256=meta.get("checkpoint_sha256", ""),
                           recorded_by=f"head {cfg.model}")


def _tabular(dataset: SurveyDataset, meta: dict[str, Any], cache: Path, n_jobs: int) -> np.ndarray | None:
    """The head's tabular inputs for the new rows, scaled with the training scaler."""
    from galclip.data.tabular import TabularPreprocessor

    cols = list(meta.get("tabular_columns") or [])
    if not cols:
        return None
    tcfg = from_dict(TabularInputConfig, meta["config"]["tabular"])
    raw, names = tabular_raw(dataset, tcfg.columns, tcfg.morphology, cache, n_jobs=n_jobs)
    missing = [c for c in cols if c not in names]
    if missing:
        raise InputFileError(dataset.cfg.path, f"missing tabular column {missing[0]!r} the head was trained on "
                                               f"({len(missing)} missing)")
    raw = raw[:, [names.index(c) for c in cols]]
    prep = TabularPreprocessor.from_dict(meta["tabular_prep"])
    return prep.transform(raw, cols).astype(np.float32)


def _repair(dataset: SurveyDataset, meta: dict[str, Any], tab: np.ndarray | None,
            feats: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Flagged fits' statistics estimated from the representation, as the head was trained with
    (``galclip.finetune.repair``); also which rows were repaired (None: no repair)."""
    spec = meta.get("tabular_repair")
    if tab is None or not spec:
        return tab, None
    flag = morphology_flag(dataset)
    if flag is None:
        log.warning("%s stores no morphology flag: the head was trained with flagged fits' statistics repaired, "
                    "these are used as measured", dataset.cfg.path)
        return tab, None
    repair = StatisticRepair.from_dict(spec)
    cols = list(meta["tabular_columns"])
    return repair.apply(feats["image"], tab, cols, flag), repair.repaired_rows(feats["image"], flag)


def _ood(feats: dict[str, np.ndarray], reference: dict[str, np.ndarray], modalities: list[str]) -> dict[str, np.ndarray]:
    """kNN distance to the training embeddings per modality, and the out-of-distribution flag."""
    n = len(next(iter(feats.values())))
    out: dict[str, np.ndarray] = {"ood": np.zeros(n, bool)}
    for m in modalities:
        if m not in reference:
            continue
        has = feats[f"has_{m}"].astype(bool)
        d = np.full(n, np.nan)
        if has.any():
            d[has] = knn_distance(feats[m][has], reference[m])
        out[f"knn_distance_{m}"] = d
        out["ood"] |= np.nan_to_num(d, nan=0.0) > float(reference[f"{m}_threshold"][0])
    return out


def run_predict(cfg: PredictConfig) -> dict[str, Any]:
    """Predict every row of ``cfg.data``; writes ``predictions.*`` and ``summary.json``."""
    if not cfg.model:
        raise ConfigError("model is required (a galclip finetune output directory)")
    head, meta = load_head(cfg.model)
    ckpt = _encoder(cfg, meta)
    dataset = open_dataset(ckpt, cfg.data)
    why = signature_mismatch(meta.get("data", {}), data_signature(dataset))
    if why:
        raise InputFileError(cfg.data.path, why)
    out, cache = output_dirs(cfg.out, cfg.cache_dir)
    tab = _tabular(dataset, meta, cache, cfg.n_jobs)
    feats = extract_features(ckpt.model, dataset, tokens=head.needs_tokens, batch_size=cfg.batch_size,
                             progress=cfg.progress)
    tab, repaired = _repair(dataset, meta, tab, feats)
    modalities = list(meta.get("modalities", ["image", "spectrum"]))
    rows = np.arange(len(dataset))
    prob = predict(head, feature_tensors(feats, rows, tab, keep=modalities))
    p_merger = merger_probability(prob, meta.get("label", "merger"))
    thr = cfg.threshold if math.isfinite(cfg.threshold) else float(meta.get("threshold", 0.5))
    thr = thr if math.isfinite(thr) else 0.5
    flags = _ood(feats, load_reference(cfg.model), modalities)
    table = {"object_id": dataset.column(S.OBJECT_ID).astype(str), "ra": dataset.column(S.RA),
             "dec": dataset.column(S.DEC), "p_merger": p_merger, "predicted": (p_merger >= thr).astype(int),
             "threshold": np.full(len(dataset), thr),
             **{f"has_{m}": feats[f"has_{m}"].astype(bool) for m in ("image", "spectrum") if f"has_{m}" in feats},
             **flags, **({"statistics_repaired": repaired} if repaired is not None else {})}
    write_table(columns_table(table, {"thresh": thr}), out / "predictions", tuple(cfg.formats))
    summary = {"model": str(cfg.model), "data": cfg.data.path, "n": int(len(dataset)), "threshold": thr,
               "n_predicted_mergers": int(table["predicted"].sum()), "n_ood": int(flags["ood"].sum()),
               "checkpoint_sha256": ckpt.sha256}
    atomic_write_json(out / "summary.json", summary)
    log.info("%d objects, %d predicted mergers at p >= %.3f, %d outside the training distribution -> %s",
             summary["n"], summary["n_predicted_mergers"], thr, summary["n_ood"], out)
    return summary
