"""A checkpoint applied to a dataset: the one path from model files to vectors.

Every stage that turns survey rows into vectors (``embed``, ``index``, ``search``,
``finetune``, ``evaluate``) goes through this module, so a change of *which* vector the
stages use is made in one place:

* :func:`load_checkpoint` loads ``model.safetensors`` + ``model.json`` and hashes them;
* :func:`open_dataset` applies the checkpoint's recorded preprocessing and runs the one
  compatibility check (:func:`check_compatible`, an ``InputFileError`` naming the file);
* :func:`encode_batch` runs the towers over one collated batch — the second modality is
  always picked by :func:`~galclip.models.tabular_tower.second_tower_inputs`, so a tabular
  second tower reads catalogue columns everywhere;
* :func:`embed_dataset` (unit embeddings, NaN for a missing modality) and
  :func:`encode_dataset` (head features, optionally tokens) batch it over a dataset.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from galclip.data.dataset import DataConfig, SurveyDataset, collate
from galclip.errors import ConfigError, InputFileError
from galclip.models.checkpoint import checkpoint_hash, data_config_for, load_model
from galclip.models.config import ModelConfig
from galclip.models.galclip import GalClip
from galclip.models.tabular_tower import is_tabular_model, second_tower_inputs
from galclip.models.tabular_view import TabularAsSpectrum

MODALITIES = ("image", "spectrum")
#: The image vector few-label heads read (frozen features and end-to-end fine-tuning alike):
#: the standardised pooled features beat the projection output on real mergers
#: (``benchmarks/results/representation_gz1.json``).
HEAD_IMAGE_VECTOR = "representation"


@dataclasses.dataclass
class Checkpoint:
    """A loaded model with its config, weights hash and source path (named in errors)."""

    path: str
    model: GalClip
    cfg: ModelConfig
    sha256: str


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", expect_sha256: str = "",
                    recorded_by: str = "") -> Checkpoint:
    """Load and hash a galclip checkpoint (eval mode); one-line error when absent or unusable.

    ``expect_sha256`` (when given) is the hash an index or head recorded for its encoder
    (``recorded_by`` names that product in the error): other weights are refused.
    """
    if not path:
        raise ConfigError("checkpoint is required (a directory with model.safetensors + model.json)")
    model, cfg = load_model(path, map_location=resolve_device(device))
    ckpt = Checkpoint(str(path), model.eval(), cfg, checkpoint_hash(path))
    if expect_sha256 and ckpt.sha256 != expect_sha256:
        raise InputFileError(path, f"checkpoint differs from the one {recorded_by or 'recorded'} was built with "
                                   f"(sha256 {ckpt.sha256[:12]}… vs {expect_sha256[:12]}…)")
    return ckpt


def open_dataset(ckpt: Checkpoint, data: DataConfig) -> SurveyDataset:
    """``data`` read with the checkpoint's preprocessing, checked against the model.

    For a tabular second tower the dataset is the catalogue view
    (:class:`~galclip.models.tabular_view.TabularAsSpectrum`), as in pretraining.
    """
    if not data.path:
        raise ConfigError("data.path is required")
    ds: Any = SurveyDataset(data_config_for(ckpt.path, data))
    if ckpt.cfg.spectrum.kind == "tabular":
        ds = TabularAsSpectrum(ds, ckpt.cfg)
    check_compatible(ckpt.cfg, ds, ckpt.path)
    return ds


def _incompatibility(cfg: ModelConfig, dataset: Any) -> str:
    """Why ``dataset`` cannot be fed to a model built from ``cfg`` ("" when it can)."""
    n_bands = getattr(dataset, "n_bands", cfg.n_bands)
    if n_bands and n_bands != cfg.n_bands:
        return f"model {cfg.name!r} expects {cfg.n_bands} image bands, dataset has {n_bands}"
    size = getattr(getattr(getattr(dataset, "cfg", None), "image", None), "size", cfg.image_size)
    if n_bands and size != cfg.image_size:
        return f"model {cfg.name!r} expects {cfg.image_size}-px images, dataset gives {size} px (set data.image.size)"
    if cfg.spectrum.kind == "tabular":  # second tower reads catalogue columns, not spectra
        names = set(getattr(dataset, "tabular_names", []))
        missing = [c for c in cfg.spectrum.options.get("columns", []) if c not in names]
        return f"model {cfg.name!r} needs tabular column {missing[0]!r}, absent from the dataset" if missing else ""
    n_spec = getattr(dataset, "spectrum_length", 0)
    if n_spec and n_spec != cfg.spectrum_length:
        return (f"model {cfg.name!r} expects spectra of {cfg.spectrum_length} pixels, dataset gives {n_spec} "
                "(use the same data.spectrum settings as in pretraining)")
    return ""


def check_compatible(cfg: ModelConfig, dataset: Any, source: str | Path) -> None:
    """Refuse a dataset whose bands, cutout size, spectra or columns differ from the model's.

    ``source`` (the checkpoint, else the dataset) is named in the one-line ``InputFileError``.
    """
    reason = _incompatibility(cfg, dataset)
    if reason:
        raise InputFileError(source, reason)


def tabular_names(model: GalClip, dataset: Any) -> list[str] | None:
    """The dataset's catalogue column names when the model's second tower reads them."""
    return list(getattr(dataset, "tabular_names", [])) if is_tabular_model(model) else None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _on(args: Sequence[Tensor | None], dev: torch.device, rows: Tensor | None = None) -> list[Tensor | None]:
    return [None if a is None else (a if rows is None else a[rows]).to(dev) for a in args]


def _rows(fn: Any, args: Sequence[Tensor | None], present: Tensor, shape: tuple[int, ...], present_only: bool,
          dev: torch.device) -> Tensor:
    """``fn(*args)`` row-wise. ``present_only``: absent rows are NaN and not computed; else all
    rows are computed (a training batch keeps its shape) unless none is present (zeros)."""
    n = present.shape[0]
    if present_only:
        out = torch.full((n, *shape), float("nan"), device=dev)
        if present.any():
            out[present.to(dev)] = fn(*_on(args, dev, present)).float()
        return out
    return fn(*_on(args, dev)) if present.any() else torch.zeros(n, *shape, device=dev)


def encode_batch(model: GalClip, batch: dict[str, Any], names: Sequence[str] | None = None, *,
                 modalities: Sequence[str] = MODALITIES, tokens: bool = False, present_only: bool = False,
                 project: bool = True, image_vector: str = "embedding") -> dict[str, Tensor]:
    """Vectors of one collated batch (gradients flow if the caller enables them).

    Returns ``has_image``/``has_spectrum`` and, per modality, unit embeddings
    (``project``) or pooled pre-projection features; with ``tokens`` also
    ``image_tokens``/``spectrum_tokens``. ``names``: the dataset's tabular column names,
    needed when the second tower is tabular (see :func:`tabular_names`).
    ``image_vector``: ``embedding`` (the CLIP projection), ``representation`` (the
    standardised pooled features, :meth:`GalClip.image_representation`, as ``image``) or
    ``both`` (the projection as ``image`` and the representation as ``image_features``).
    """
    if image_vector not in ("embedding", "representation", "both"):
        raise ValueError(f"image_vector must be embedding, representation or both, got {image_vector!r}")
    x2, iv2, scale2, present = second_tower_inputs(model, batch, names)
    has = {"image": batch["has_image"].bool(), "spectrum": present.bool()}
    out: dict[str, Tensor] = {"has_image": has["image"], "has_spectrum": has["spectrum"]}
    towers = {"image": (model.image_encoder, (batch["image"],), model.encode_image, model.image_features,
                        model.image_tokens),
              "spectrum": (model.spectrum_encoder, (x2, iv2, scale2), model.encode_spectrum,
                           model.spectrum_features, model.spectrum_tokens)}
    dev = _device(model)
    rep_dim = model.representation_dim

    def both(image: Tensor) -> Tensor:  # one backbone pass: projection and representation side by side
        f, r = model.image_pooled(image)
        return torch.cat([model.project_image(f), model.represent(r)], dim=1)

    for m in modalities:
        tower, args, embed, features, tok = towers[m]
        if m == "image" and image_vector == "representation":
            out[m] = _rows(model.image_representation, args, has[m], (rep_dim,), present_only, dev)
        elif m == "image" and image_vector == "both" and project:
            pair = _rows(both, args, has[m], (model.embed_dim + rep_dim,), present_only, dev)
            out[m], out["image_features"] = pair[:, :model.embed_dim], pair[:, model.embed_dim:]
        else:
            width = model.embed_dim if project else tower.num_features
            out[m] = _rows(embed if project else features, args, has[m], (width,), present_only, dev)
            if m == "image" and image_vector == "both":  # raw features asked for: representation apart
                out["image_features"] = _rows(model.image_representation, args, has[m], (rep_dim,), present_only, dev)
        if tokens:
            out[f"{m}_tokens"] = _rows(tok, args, has[m], (1, tower.num_features), False, dev)
    return out


@torch.no_grad()
def fit_representation(model: GalClip, batches: Iterable[dict[str, Any]], max_rows: int = 8192) -> int:
    """Fit ``model``'s representation read-out (standardiser + principal components) on the
    images of ``batches``, label-free; returns the rows used.

    Pretraining tracks these statistics as it trains; a model that never trained has none
    and would hand heads its raw pooled features (896 for ``small-cnn``) instead of 64
    components. Fitted here, the random-init baseline is read out the same way as the
    pretrained model, so a comparison of the two measures the weights, not the read-out.
    """
    was = model.training
    model.eval()
    dev, feats, n = _device(model), [], 0
    for batch in batches:
        if n >= max_rows:
            break
        has = batch["has_image"].bool()
        if has.any():
            feats.append(model.image_pooled(batch["image"][has].to(dev))[1].float().cpu())
            n += int(has.sum())
    model.train(was)
    if n < 2:
        return 0
    model.image_standardizer.fit(torch.cat(feats)[:max_rows])
    return min(n, max_rows)


def joint(img: np.ndarray, spec: np.ndarray) -> np.ndarray:
    """Normalised mean of the present modalities (NaN where neither is present)."""
    stack = np.stack([img, spec])
    present = np.isfinite(stack).all(-1, keepdims=True)
    total = np.where(present, stack, 0).sum(0)
    count = present.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.linalg.norm(total, axis=-1, keepdims=True)
        out = total / norm
    return np.where((count > 0) & (norm > 0), out, np.nan).astype(np.float32)


def _numpy(t: Tensor) -> np.ndarray:
    return t.cpu().numpy() if t.dtype == torch.bool else t.float().cpu().numpy()


def _concat(parts: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@torch.no_grad()
def embed_dataset(model: GalClip, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                  num_workers: int = 0, progress: bool = True, source: str | Path = "") -> dict[str, np.ndarray]:
    """Unit embeddings of every item of a galclip dataset.

    Returns arrays keyed by ``object_id``, ``ra``, ``dec``, ``has_image``, ``has_spectrum``,
    ``image``/``spectrum``/``joint`` (N, D) float32 unit vectors (NaN rows for a missing
    modality) and one array per label column (``dataset.label_names``). For a tabular second
    tower the ``spectrum`` vectors embed the catalogue row and ``has_spectrum`` means "has
    at least one catalogue value". ``source`` is named if the dataset does not fit the model.
    """
    check_compatible(model.cfg, dataset, source or getattr(getattr(dataset, "cfg", None), "path", model.cfg.name))
    was_training = model.training
    model.eval().to(torch.device(device))
    labels = list(getattr(dataset, "label_names", []))
    names = tabular_names(model, dataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    parts = []
    for batch in tqdm(loader, desc="embed", unit="batch", disable=not progress):
        v = encode_batch(model, batch, names, present_only=True, image_vector="both")
        parts.append({"object_id": np.asarray(batch["object_id"], dtype=object),
                      "ra": batch["ra"].double().numpy(), "dec": batch["dec"].double().numpy(),
                      **{k: _numpy(t) for k, t in v.items()},
                      "labels": batch["labels"].numpy().reshape(len(batch["object_id"]), len(labels))})
    model.train(was_training)
    return _embedding_arrays(parts, labels, model.embed_dim, model.representation_dim)


def _embedding_arrays(parts: list[dict[str, Any]], labels: list[str], dim: int,
                      feature_dim: int) -> dict[str, np.ndarray]:
    """Batches → the embeddings layout (``joint`` added, labels split into named columns)."""
    if not parts:
        empty = np.zeros((0, dim), np.float32)
        return {"object_id": np.zeros(0, object), "ra": np.zeros(0), "dec": np.zeros(0),
                "has_image": np.zeros(0, bool), "has_spectrum": np.zeros(0, bool), "image": empty,
                "spectrum": empty, "joint": empty, "image_features": np.zeros((0, feature_dim), np.float32),
                **{name: np.zeros(0, np.float32) for name in labels}}
    out = _concat(parts)
    lab = out.pop("labels")
    out["joint"] = joint(out["image"], out["spectrum"])
    for j, name in enumerate(labels):
        out.setdefault(name, lab[:, j])
    return out


@torch.no_grad()
def encode_dataset(model: GalClip, dataset: Dataset, batches: Iterable[dict[str, Any]] | None = None,
                   tokens: bool = False, batch_size: int = 64, progress: bool = True) -> dict[str, np.ndarray]:
    """Head features of every row: ``image``/``spectrum`` unit embeddings (absent rows computed
    anyway, masked by the heads), ``has_*`` flags and, with ``tokens``, token sequences.

    ``batches``: rows already collated (e.g. shared by several encoders), else read here.
    """
    was_training = model.training
    model.eval()
    loader = batches if batches is not None else DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                                            collate_fn=collate, num_workers=0)
    names = tabular_names(model, dataset)
    parts = [{k: _numpy(t) for k, t in encode_batch(model, b, names, tokens=tokens,
                                                   image_vector=HEAD_IMAGE_VECTOR).items()}
             for b in tqdm(loader, desc="encode", unit="batch", disable=not progress)]
    model.train(was_training)
    return _concat(parts)


def embed_checkpoint(checkpoint: str | Path, data: DataConfig, batch_size: int = 256,
                     device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Embeddings of ``data`` by ``checkpoint`` and their provenance — what ``galclip embed``
    writes and ``galclip index`` stores, made in one place so the two are identical."""
    from galclip.config import to_dict

    ckpt = load_checkpoint(checkpoint, device)
    ds = open_dataset(ckpt, data)
    arrays = embed_dataset(ckpt.model, ds, batch_size=batch_size, device=resolve_device(device),
                           num_workers=num_workers, progress=progress, source=ckpt.path)
    arrays["image_features"], centre = centre_rows(arrays["image_features"])
    meta = {"checkpoint_sha256": ckpt.sha256, "model_name": ckpt.cfg.name, "embed_dim": ckpt.cfg.embed_dim,
            "dataset": str(Path(data.path).resolve()), "checkpoint": str(Path(checkpoint).resolve()),
            "n_objects": int(len(arrays["object_id"])), "label_columns": list(ds.label_names),
            "preprocess": {"image": to_dict(ds.cfg.image), "spectrum": to_dict(ds.cfg.spectrum)},
            "image_features_centre": [round(float(c), 7) for c in centre]}
    return arrays, meta


def centre_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors re-centred on their survey's mean (NaN rows kept) and that mean.

    The representation's standardisation comes from the pretraining survey; another survey
    (other cutout scale, depth, seeing) sits off-centre in it, and a common offset makes every
    galaxy look alike to a cosine similarity: candidate ranking from 10 GZ1 mergers fell from
    precision@20 0.47 to 0.21 without this (``benchmarks/results/representation_gz1.json``).
    Stored vectors and image-file queries (``image_features_centre`` in the metadata) use it.
    """
    ok = np.isfinite(vectors).all(1)
    centre = vectors[ok].mean(0) if ok.any() else np.zeros(vectors.shape[1], np.float32)
    return recentre(vectors, centre), centre.astype(np.float32)


def recentre(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``vectors - centre``, L2-normalised (NaN rows stay NaN)."""
    from galclip.retrieval.store import normalise

    return normalise(np.asarray(vectors, np.float32) - np.asarray(centre, np.float32))
