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
