"""The one checkpoint → vectors path: every stage gets the same vectors for the same inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import load_checkpoint, open_dataset
from galclip.errors import ConfigError, InputFileError
from galclip.models import build_model, get_model_config, save_checkpoint


def _data(path: Path) -> DataConfig:
    data = DataConfig(path=str(path))
    data.image.size = 32
    return data


@pytest.fixture
def tabular_ckpt(tabular_survey: Path, tmp_path: Path) -> Path:
    """A tiny checkpoint whose second tower reads the survey's catalogue columns."""
    from galclip.models.tabular import resolve_tabular_tower

    full = SurveyDataset(_data(tabular_survey))
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum=dict(kind="tabular", width=16, depth=1, heads=2))
    cfg = resolve_tabular_tower(cfg, full)
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path / "tab_ckpt")


def test_finetune_features_of_a_tabular_checkpoint_equal_embed(tabular_survey: Path, tabular_ckpt: Path,
                                                                tmp_path: Path) -> None:
    """Fine-tuning reads the catalogue row through the tabular tower, exactly as ``galclip embed``."""
    from galclip.finetune.features import extract_features
    from galclip.pretrain.embed import EmbedConfig, read_embeddings, run_embed

    emb, _ = read_embeddings(run_embed(EmbedConfig(data=_data(tabular_survey), checkpoint=str(tabular_ckpt),
                                                   out=str(tmp_path / "e.h5"), device="cpu")))
    ckpt = load_checkpoint(tabular_ckpt)
    hs = emb["has_spectrum"]
    assert hs.all()  # every row has a catalogue value (the survey has no spectra at all)
    for ds in (open_dataset(ckpt, _data(tabular_survey)), SurveyDataset(_data(tabular_survey))):
        feats = extract_features(ckpt.model, ds, progress=False)
        np.testing.assert_array_equal(feats["has_spectrum"], hs)
        np.testing.assert_allclose(feats["spectrum"], emb["spectrum"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(feats["image"], emb["image"], rtol=1e-5, atol=1e-6)


def test_one_compatibility_check_names_the_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    ds = SurveyDataset(_data(tiny_dataset))
    cfg = get_model_config("tiny", n_bands=3, image_size=32, spectrum_length=ds.spectrum_length)
    ck = save_checkpoint(build_model(cfg), cfg, tmp_path / "ck3")
    with pytest.raises(InputFileError, match=r"ck3: model 'tiny' expects 3 image bands, dataset has 2"):
        open_dataset(load_checkpoint(ck), _data(tiny_dataset))
    with pytest.raises(ConfigError, match="checkpoint is required"):
        load_checkpoint("")
