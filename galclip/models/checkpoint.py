"""Model export/import: ``model.safetensors`` (weights) + ``model.json`` (config, hashes).

safetensors holds only tensors, so loading a checkpoint can never execute code (unlike
pickled ``.pt``/``.ckpt`` files). The JSON sidecar rebuilds the architecture; any mismatch
between the two is refused with a message naming the file.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from galclip.config import from_dict, to_dict
from galclip.errors import ConfigError, InputFileError
from galclip.models.config import ModelConfig
from galclip.models.galclip import GalClip, build_model
from galclip.utils.io import atomic_path, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
FORMAT = "galclip-model"
FORMAT_VERSION = 1


def _weights_path(path: str | Path) -> Path:
    p = Path(path)
    return p / WEIGHTS_NAME if p.is_dir() or p.suffix not in (".safetensors", ".json") else p.with_name(WEIGHTS_NAME)


def save_checkpoint(model: GalClip, cfg: ModelConfig, dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``dir/model.safetensors`` then ``dir/model.json`` atomically; returns ``dir``.

    ``extra`` (JSON-serialisable) is stored under ``"extra"`` in the JSON, e.g. training
    provenance. Weights are written first, the JSON (which carries their hash) last, so a
    reader that finds a JSON always finds the weights it describes.
    """
    out = Path(dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"refusing to save non-finite weights ({bad[0]} ...)")
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "model_name": cfg.name})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": cfg.name,
        "embed_dim": cfg.embed_dim,
        "n_parameters": int(sum(v.numel() for v in state.values())),
        "model_config": to_dict(cfg),
        "weights_sha256": sha256_file(out / WEIGHTS_NAME),
        "extra": extra or {},
    }
    atomic_write_json(out / META_NAME, meta)
    return out


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """The ``model.json`` next to a checkpoint (directory, .safetensors or .json path)."""
    meta_path = _weights_path(path).with_name(META_NAME)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(meta_path, "no model.json here (is this a galclip checkpoint directory?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(meta_path, f"unreadable model metadata ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputFileError(meta_path, f"not a {FORMAT} file")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise InputFileError(meta_path, f"format_version {meta.get('format_version')} is newer than this galclip")
    return meta


#: Architecture options added after checkpoints existed, with the value that reproduces the
#: older architecture: a stored config that lacks one was made before it existed.
LEGACY_SPECTRUM_DEFAULTS = {"use_flux_scale": False, "norm_groups": 8}


def _with_legacy_defaults(model_config: dict) -> dict:
    spectrum = model_config.get("spectrum")
    if not isinstance(spectrum, dict):
        return model_config
    return {**model_config, "spectrum": {**LEGACY_SPECTRUM_DEFAULTS, **spectrum}}


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[GalClip, ModelConfig]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` (strict).

    Raises :class:`InputFileError` when the files are missing, corrupt, or describe
    different architectures (missing/unexpected keys or shape mismatches are named).
    """
    weights = _weights_path(path)
    meta = read_model_meta(path)
    try:
        cfg = from_dict(ModelConfig, _with_legacy_defaults(meta["model_config"]))
    except (KeyError, ConfigError) as exc:
        raise InputFileError(weights.with_name(META_NAME), f"bad model_config ({exc})") from None
    if not weights.exists():
        raise InputFileError(weights, "weights file missing next to model.json")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise InputFileError(weights, f"cannot read safetensors ({exc})") from None
    model = build_model(cfg)
    expected = model.state_dict()
    # checkpoints written before the feature standardiser existed: identity statistics
    state = {**{k: v for k, v in expected.items() if k.startswith("image_standardizer.")}, **state}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputFileError(weights, f"weights do not match model.json architecture ({what})")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InputFileError(weights, f"shape mismatch for {k}: file {tuple(state[k].shape)}, "
                                          f"model {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model.to(map_location), cfg


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 of the checkpoint's ``model.safetensors`` (identifies a model in outputs)."""
    weights = _weights_path(path)
    if not weights.exists():
        raise InputFileError(weights, "no model.safetensors here")
    return sha256_file(weights)


def data_config_for(path: str | Path, data: Any) -> Any:
    """``data`` (a :class:`~galclip.data.dataset.DataConfig`) with the checkpoint's preprocessing.

    Pretraining records the image/spectrum preprocessing in ``model.json``; every stage that
    embeds data with that model must scale its inputs the same way. Honoured only when
    ``data.prep_from_checkpoint`` is true; older checkpoints without the record leave
    ``data`` unchanged.
    """
    import dataclasses

    from galclip.data.preprocess import ImagePrep, SpectrumPrep

    prep = (read_model_meta(path).get("extra") or {}).get("preprocessing")
    if not prep or not getattr(data, "prep_from_checkpoint", False):
        return data
    image = from_dict(ImagePrep, prep.get("image", {}))
    spectrum = from_dict(SpectrumPrep, prep.get("spectrum", {}))
    # whether spectra are flux calibrated describes the data, not the model: the caller's wins
    spectrum = dataclasses.replace(spectrum, flux_calibrated=data.spectrum.flux_calibrated)
    if (image, spectrum) != (data.image, data.spectrum):
        log.info("using the checkpoint's preprocessing (image %s, spectrum %s)", image, spectrum)
    return dataclasses.replace(data, image=image, spectrum=spectrum)
