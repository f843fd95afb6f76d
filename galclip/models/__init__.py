"""galclip models: the CLIP-style dual encoder, its registry and safe checkpoints."""
from galclip.models.checkpoint import checkpoint_hash, load_model, read_model_meta, save_checkpoint
from galclip.models.config import (
    DEFAULT_MODEL,
    MODEL_PRESETS,
    ImageTowerConfig,
    ModelConfig,
    SpectrumTowerConfig,
    get_model_config,
    list_models,
)
from galclip.models.galclip import GalClip, build_model
from galclip.models.towers import TOWERS, build_tower, register_tower

__all__ = [
    "DEFAULT_MODEL", "MODEL_PRESETS", "TOWERS", "GalClip", "ImageTowerConfig", "ModelConfig",
    "SpectrumTowerConfig", "build_model", "build_tower", "checkpoint_hash", "get_model_config",
    "list_models", "load_model", "read_model_meta", "register_tower", "save_checkpoint",
]
