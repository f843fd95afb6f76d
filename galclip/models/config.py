"""Model configuration and the registry of named, tested model combinations.

The presets are YAML files shipped inside the package (``galclip/models/presets/<name>.yaml``,
the single source: an installed package has them without the repository's ``configs/``
folder, and users copy one to edit it). ``get_model_config`` accepts either a preset name
or the path of such a YAML file.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

from galclip.config import from_dict, read_yaml
from galclip.errors import ConfigError


@dataclasses.dataclass
class ImageTowerConfig:
    """Image encoder: any timm model, created headless with ``pretrained=False``.

    Attributes:
        backbone: timm model name (``timm.list_models()``).
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ViT
            ``patch_size``/``embed_dim``/``depth`` to size a small ViT for 64-px cutouts).
        softening: arcsinh softening (noise units) applied inside the model.
        clip: clip of the stretched image.
        residual: also feed the rotational residual I − rot180(I) of the stretched image
            (one more channel per band). Asymmetric light (tails, companions, lopsided
            discs) is then visible to the first convolution instead of being something a
            globally pooled CNN must infer from where light sits relative to the centre.
        representation_stages: how many of the backbone's last stages, each globally
            pooled, make up the image representation (:meth:`GalClip.image_representation`).
            1 = the final pooled features. More keeps the finer-scale structure the
            earlier stages see (companions, tails a few pixels wide) that the final stage
            can give up while it learns the pretraining targets; linear evaluation on
            several layers is the usual practice for self-supervised features (DINO).
        representation_components: leading principal components of the standardised
            representation features kept (:class:`~galclip.models.galclip.FeatureStandardizer`;
            capped at their width). Few enough that hundreds of weak, noisy directions do
            not decide nearest neighbours; enough that a linear head still sees the finer
            structure of several stages.
        eval_views: in eval mode, average the pooled features over this many of the 8
            flips/90° rotations of each cutout (1 = the cutout as it is). A tower trained
            with flips and rotations as noise (``finetune``'s self-training) is made
            invariant to them this way at prediction time; pretrained towers keep 1.
    """

    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    softening: float = 3.0
    clip: float = 10.0
    residual: bool = False
    representation_stages: int = 1
    representation_components: int = 64
    eval_views: int = 1


@dataclasses.dataclass
class SpectrumTowerConfig:
    """Spectrum (or other 1-D) encoder, picked by ``kind`` from the tower registry.

    Attributes:
        kind: ``conv1d`` (strided 1-D CNN) or ``transformer`` (overlapping patches, as
            AstroCLIP); other kinds can be registered with
            :func:`galclip.models.towers.register_tower`.
        width: feature width (transformer) / final channel count (conv1d).
        depth: transformer layers / conv stages.
        heads: attention heads (transformer).
        patch_size, patch_stride: spectral patches (stride < size → overlap).
        kernel_size: conv kernel (conv1d).
        norm_groups: GroupNorm groups of the conv1d stages (a divisor of the channel count
            is used). 1 normalises each spectrum's feature map as a whole, keeping the
            relative level and spread of the channels; one group per channel (the old value,
            8) normalises every channel separately. Measured on the simulated survey
            (``compact``, 250 steps, with the flux scale): image→spectrum top-5 retrieval 48%
            with 1 group against 10–16% with 8. Checkpoints made before this option existed
            load with 8.
        dropout: dropout inside the encoder.
        use_flux_scale: also feed log10 of the spectrum's flux normalisation (the
            ``spectrum_scale`` batch key). Spectra are normalised so the tower sees shape,
            not distance; the scale keeps the apparent (fibre) brightness, which the image
            sees too. Missing scales (NaN, or spectra that are not flux calibrated) use a
            learned "unknown" vector. (Checkpoints made before this option load with False.)
        options: free-form keyword arguments for registered plug-in kinds.
    """

    kind: str = "transformer"
    width: int = 128
    depth: int = 4
    heads: int = 4
    patch_size: int = 16
    patch_stride: int = 8
    kernel_size: int = 7
    norm_groups: int = 1
    dropout: float = 0.0
    use_flux_scale: bool = True
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ModelConfig:
    """Dual-encoder (image tower + spectrum tower) with a shared embedding space.

    Attributes:
        name: preset name (informational; saved with checkpoints).
        n_bands: image bands (``in_chans``); filled from the dataset by pretraining.
        image_size: cutout size in pixels.
        spectrum_length: spectrum pixels; filled from the dataset (or kept from the config
            when the dataset has no spectra, so both towers always exist).
        embed_dim: shared embedding dimension D.
        proj_hidden: hidden width of the 2-layer projection heads (0 = a single linear map).
        init_temperature: initial softmax temperature (logit scale = 1/T, learnable).
        max_logit_scale: the logit scale is clamped to this (CLIP uses 100) for stability.
        image, spectrum: tower configs.
    """

    name: str = "custom"
    n_bands: int = 3
    image_size: int = 64
    spectrum_length: int = 1024
    embed_dim: int = 128
    proj_hidden: int = 0
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    image: ImageTowerConfig = dataclasses.field(default_factory=ImageTowerConfig)
    spectrum: SpectrumTowerConfig = dataclasses.field(default_factory=SpectrumTowerConfig)

    def __post_init__(self) -> None:
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0 < self.init_temperature < 10:
            raise ValueError(f"init_temperature must be in (0, 10), got {self.init_temperature}")
        if self.max_logit_scale < 1:
            raise ValueError(f"max_logit_scale must be >= 1, got {self.max_logit_scale}")


#: Directory of the named model configs (package data).
PRESET_DIR = Path(__file__).with_name("presets")


def _load_presets() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Preset name → config dictionary, and preset name → its ``runtime`` block, read from
    :data:`PRESET_DIR` (all exercised by tests/models)."""
    presets, runtime = {}, {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = read_yaml(path)
        data.pop("name", None)
        runtime[path.stem] = dict(data.pop("runtime", None) or {})
        presets[path.stem] = data
    return presets, runtime


#: Named model combinations (see the comment at the top of each YAML file for its use), and
#: how each trains fastest: the optional ``runtime:`` block of a preset (``channels_last``,
#: ``compile``, ``fused_adamw``), measured with ``benchmarks/bench_throughput.py``. It is
#: not part of the model (not saved with weights); ``galclip.pretrain.runtime`` reads it.
MODEL_PRESETS, PRESET_RUNTIME = _load_presets()

DEFAULT_MODEL = "small-cnn"


def list_models() -> list[str]:
    """Names accepted by :func:`get_model_config` (and ``galclip pretrain --model``)."""
    return sorted(MODEL_PRESETS)


def runtime_hints(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The ``runtime:`` block of a preset name or model YAML path ({} when it has none)."""
    if name in PRESET_RUNTIME:
        return dict(PRESET_RUNTIME[name])
    if str(name).endswith((".yaml", ".yml")) or Path(str(name)).is_file():
        return dict(read_yaml(name).get("runtime") or {})
    return {}


def get_model_config(name: str = DEFAULT_MODEL, **overrides: Any) -> ModelConfig:
    """Preset name or YAML path → :class:`ModelConfig` (keyword overrides win)."""
    if name in MODEL_PRESETS:
        data = copy.deepcopy(MODEL_PRESETS[name])
        data["name"] = name
    elif str(name).endswith((".yaml", ".yml")) or Path(str(name)).is_file():
        data = read_yaml(name)
        data.pop("runtime", None)  # training speed hints, not the model (see runtime_hints)
        data.setdefault("name", Path(str(name)).stem)
    else:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(list_models())}, or a YAML file path)")
    data.update(overrides)
    return from_dict(ModelConfig, data)
