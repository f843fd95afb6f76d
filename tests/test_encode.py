"""The one checkpoint → vectors path: every stage gets the same vectors for the same inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.encode import centre_rows, load_checkpoint, open_dataset
from galclip.errors import ConfigError, InputFileError
from galclip.models import build_model, get_model_config, save_checkpoint


def _data(path: Path) -> DataConfig:
    data = DataConfig(path=str(path))
    data.image.size = 32
    return data


@pytest.fixture
def tabular_ckpt(tabular_survey: Path, tmp_path: Path) -> Path:
    """A tiny checkpoint whose second tower reads the survey's catalogue columns."""
    from galclip.models.tabular_tower import resolve_tabular_tower

    full = SurveyDataset(_data(tabular_survey))
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum=dict(kind="tabular", width=16, depth=1, heads=2))
    cfg = resolve_tabular_tower(cfg, full)
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path / "tab_ckpt")


def test_finetune_features_of_a_tabular_checkpoint_equal_embed(tabular_survey: Path, tabular_ckpt: Path,
                                                                tmp_path: Path) -> None:
    """Fine-tuning reads the catalogue row through the tabular tower, exactly as ``galclip embed``."""
    from galclip.finetune.features import extract_features
    from galclip.embeddings import read_embeddings
    from galclip.pretrain.embed import EmbedConfig, run_embed

    emb, _ = read_embeddings(run_embed(EmbedConfig(data=_data(tabular_survey), checkpoint=str(tabular_ckpt),
                                                   out=str(tmp_path / "e.h5"), device="cpu")))
    ckpt = load_checkpoint(tabular_ckpt)
    hs = emb["has_spectrum"]
    assert hs.all()  # every row has a catalogue value (the survey has no spectra at all)
    for ds in (open_dataset(ckpt, _data(tabular_survey)), SurveyDataset(_data(tabular_survey))):
        feats = extract_features(ckpt.model, ds, progress=False)
        np.testing.assert_array_equal(feats["has_spectrum"], hs)
        np.testing.assert_allclose(feats["spectrum"], emb["spectrum"], rtol=1e-5, atol=1e-6)
        # heads read the image representation; the stored one is re-centred on the survey
        np.testing.assert_allclose(centre_rows(feats["image"])[0], emb["image_features"], rtol=1e-4, atol=1e-5)


def test_one_compatibility_check_names_the_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    ds = SurveyDataset(_data(tiny_dataset))
    cfg = get_model_config("tiny", n_bands=3, image_size=32, spectrum_length=ds.spectrum_length)
    ck = save_checkpoint(build_model(cfg), cfg, tmp_path / "ck3")
    with pytest.raises(InputFileError, match=r"ck3: model 'tiny' expects 3 image bands, dataset has 2"):
        open_dataset(load_checkpoint(ck), _data(tiny_dataset))
    with pytest.raises(ConfigError, match="checkpoint is required"):
        load_checkpoint("")


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if a[key].dtype == object:
            assert list(a[key]) == list(b[key]), key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_embed_and_index_store_identical_embeddings(tiny_dataset: Path, tmp_path: Path) -> None:
    """``galclip embed`` and ``galclip index`` write the same vectors, ids, labels and provenance."""
    from galclip.embeddings import read_embeddings
    from galclip.pretrain.embed import EmbedConfig, run_embed
    from galclip.retrieval.index import IndexConfig, run_index
    from galclip.retrieval.store import EMBEDDINGS_FILE

    ds = SurveyDataset(_data(tiny_dataset))
    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=ds.spectrum_length)
    ck = str(save_checkpoint(build_model(cfg), cfg, tmp_path / "ck"))
    emb, emb_meta = read_embeddings(run_embed(EmbedConfig(data=_data(tiny_dataset), checkpoint=ck,
                                                          out=str(tmp_path / "e.h5"), device="cpu")))
    idx = run_index(IndexConfig(data=_data(tiny_dataset), checkpoint=ck, out=str(tmp_path / "idx")))
    stored, idx_meta = read_embeddings(idx / EMBEDDINGS_FILE)
    _assert_same_arrays(emb, stored)
    assert emb_meta == idx_meta and emb_meta["checkpoint_sha256"] and "merger" in emb
    feats = emb["image_features"]  # the image representation is stored beside the CLIP vectors ...
    assert feats.shape == (len(ds), cfg_width(ck)) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    centre = np.asarray(emb_meta["image_features_centre"])  # ... re-centred on this survey's mean
    assert np.linalg.norm(feats.mean(0)) < 0.5 * np.linalg.norm(centre) or np.linalg.norm(centre) < 1e-6
    # an index built from the embed file stores the same again
    idx2 = run_index(IndexConfig(embeddings=str(tmp_path / "e.h5"), out=str(tmp_path / "idx2")))
    again, meta2 = read_embeddings(idx2 / EMBEDDINGS_FILE)
    _assert_same_arrays(emb, again)
    assert meta2 == emb_meta


def cfg_width(ck: str) -> int:
    from galclip.models import load_model

    return load_model(ck)[0].representation_dim


def test_heads_read_the_image_representation(tiny_dataset: Path, tmp_path: Path) -> None:
    """Few-label heads and ``galclip embed``'s ``image_features`` are the same vectors."""
    from galclip.encode import embed_dataset, encode_dataset

    ds = SurveyDataset(_data(tiny_dataset))
    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=ds.spectrum_length)
    model = build_model(cfg)
    model.image_standardizer.update(torch.randn(16, model.image_encoder.num_features) + 2)
    assert model.representation_dim == min(64, model.image_encoder.num_features)
    heads = encode_dataset(model, ds, progress=False)
    emb = embed_dataset(model, ds, progress=False)
    assert np.allclose(heads["image"], emb["image_features"], atol=1e-5)
    assert heads["spectrum"].shape[1] == cfg.embed_dim  # spectra stay in the CLIP space


def test_old_flat_embeddings_file_still_loads(tmp_path: Path) -> None:
    """Files of the earlier flat ``galclip embed`` layout load; foreign files are refused."""
    import h5py

    from galclip.embeddings import read_embeddings

    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("object_id", data=np.asarray(["a", "b"], dtype=object), dtype=h5py.string_dtype())
        for key, val in (("ra", np.zeros(2)), ("dec", np.ones(2)), ("has_image", np.ones(2, bool)),
                         ("has_spectrum", np.zeros(2, bool)), ("image", np.eye(2, dtype=np.float32)),
                         ("merger", np.asarray([0.0, 1.0], np.float32))):
            h5.create_dataset(key, data=val)
        h5.attrs["meta"] = '{"model_name": "old"}'
        h5.attrs["format"] = "galclip-embeddings"
    arrays, meta = read_embeddings(path)
    assert meta == {"model_name": "old"} and list(arrays["object_id"]) == ["a", "b"]
    np.testing.assert_array_equal(arrays["image"], np.eye(2))
    assert list(arrays["merger"]) == [0, 1]
    with h5py.File(path, "r+") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(InputFileError, match="old.h5: format_version 99 is newer"):
        read_embeddings(path)


def test_fit_representation_reads_a_random_model_out_like_a_pretrained_one(tiny_dataset: Path) -> None:
    """A model that never trained gets principal components of its own pooled features."""
    from galclip.encode import encode_dataset, fit_representation
    from galclip.finetune.features import load_batches

    ds = SurveyDataset(_data(tiny_dataset))
    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=ds.spectrum_length)
    cfg.image.representation_components = 4
    model = build_model(cfg)
    raw = encode_dataset(model, ds, progress=False)["image"]
    assert raw.shape[1] == model.image_encoder.representation_width  # no statistics: plain features
    n = fit_representation(model, load_batches(ds, 8, False))
    assert n == len(ds) and model.representation_dim == 4
    fitted = encode_dataset(model, ds, progress=False)["image"]
    assert fitted.shape == (len(ds), 4) and np.allclose(np.linalg.norm(fitted, axis=1), 1, atol=1e-5)
    model.train()  # the caller's mode is restored
    fit_representation(model, load_batches(ds, 8, False))
    assert model.training
