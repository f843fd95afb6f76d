"""Fusion heads on disk and their construction: ``head.safetensors`` + ``head.json``.

Shared by ``finetune`` (which writes heads) and ``evaluate`` (which builds one per method,
budget and seed); a saved head can be rebuilt without the training code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from galclip.errors import InputFileError
from galclip.finetune.heads import FusionClassifier, HeadConfig
from galclip.utils.io import atomic_path, atomic_write_json

HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"


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


REFERENCE = "reference.safetensors"
_OOD_K = 5


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(query: np.ndarray, reference: np.ndarray, k: int = _OOD_K, exclude_self: bool = False) -> np.ndarray:
    """Mean cosine distance of each query to its ``k`` nearest reference rows (FAISS, exact)."""
    import faiss

    ref = np.ascontiguousarray(_unit(reference))
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    kk = min(k + int(exclude_self), ref.shape[0])
    sim, _ = index.search(np.ascontiguousarray(_unit(query)), kk)
    sim = sim[:, 1:] if exclude_self and kk > 1 else sim
    return (1.0 - sim).mean(1)


def save_reference(out: Path, feats: dict[str, np.ndarray], train_idx: np.ndarray, modalities: Sequence[str],
                   percentile: float = 99.0) -> None:
    """The training rows' embeddings and the ``percentile`` of their own kNN distance, so
    ``predict`` can flag new objects that lie outside what the head was trained on."""
    from safetensors.numpy import save_file

    state: dict[str, np.ndarray] = {}
    for m in modalities:
        has = feats[f"has_{m}"][train_idx].astype(bool) if f"has_{m}" in feats else np.ones(train_idx.size, bool)
        ref = np.asarray(feats[m][train_idx][has], np.float32)
        if ref.shape[0] > _OOD_K:
            state[m] = ref
            dist = knn_distance(ref, ref, exclude_self=True)
            state[f"{m}_threshold"] = np.asarray([np.percentile(dist, percentile)], np.float32)
    if state:
        with atomic_path(out / REFERENCE, suffix=".safetensors") as tmp:
            save_file(state, str(tmp))


def load_reference(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``{modality: training embeddings, modality_threshold: (1,)}``; empty when not saved."""
    from safetensors.numpy import load_file

    path = Path(run_dir) / REFERENCE
    return load_file(str(path)) if path.exists() else {}


def data_signature(dataset: Any) -> dict[str, Any]:
    """What a head's inputs looked like: band names, stored image size, spectral grid."""
    man = getattr(dataset, "manifest", None)
    if man is None:
        return {}
    wave = getattr(dataset, "wave", None)
    grid = [] if wave is None or len(wave) == 0 else [float(wave[0]), float(wave[-1]), int(len(wave))]
    return {"bands": list(man.bands), "image_size": int(man.image_size), "spectrum_grid": grid}


def signature_mismatch(trained: dict[str, Any], now: dict[str, Any]) -> str:
    """Why a dataset does not match the data a head was trained on ("" when it does)."""
    tb, nb = [b.lower() for b in trained.get("bands", [])], [b.lower() for b in now.get("bands", [])]
    if tb and nb and tb != nb:
        return f"the head was trained on bands {trained['bands']}, the dataset has {now['bands']}"
    tg, ng = trained.get("spectrum_grid") or [], now.get("spectrum_grid") or []
    if tg and ng and (tg[2] != ng[2] or not np.allclose(tg[:2], ng[:2], rtol=1e-4)):
        return (f"the head was trained on spectra on a {tg[0]:.0f}-{tg[1]:.0f} Å grid of {tg[2]} pixels, "
                f"the dataset has {ng[0]:.0f}-{ng[1]:.0f} Å, {ng[2]} pixels")
    return ""
