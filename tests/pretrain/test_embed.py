"""embed_dataset / write_embeddings / run_embed against the cross-team interface."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.errors import InputFileError
from galclip.models import build_model, checkpoint_hash, get_model_config, save_checkpoint
from galclip.encode import embed_dataset
from galclip.embeddings import read_embeddings, write_embedding_arrays
from galclip.pretrain.embed import EmbedConfig, run_embed


def _model(ds):
    torch.manual_seed(0)
    cfg = get_model_config("tiny", n_bands=ds.n_bands, image_size=32, spectrum_length=ds.spectrum_length)
    return build_model(cfg), cfg


def test_embed_dataset_keys_and_missing_modalities(tiny_dataset):
    data = DataConfig(path=str(tiny_dataset))
    data.image.size = 32
    ds = SurveyDataset(data)
    model, cfg = _model(ds)
    out = embed_dataset(model, ds, batch_size=7, progress=False)
    n = len(ds)
    for key in ("object_id", "ra", "dec", "has_image", "has_spectrum", "image", "spectrum", "joint",
                "merger", "merger_stage", "redshift"):
        assert key in out and len(out[key]) == n
    assert out["image"].shape == (n, cfg.embed_dim)
    hs = out["has_spectrum"]
    assert hs.sum() == n - n // 5 and not hs[4]
    assert np.isnan(out["spectrum"][~hs]).all() and np.isfinite(out["spectrum"][hs]).all()
    assert np.allclose(np.linalg.norm(out["joint"], axis=1), 1, atol=1e-5)
    # joint of an image-only row is the image embedding itself
    assert np.allclose(out["joint"][~hs], out["image"][~hs], atol=1e-5)
    both = (out["image"][hs] + out["spectrum"][hs])
    assert np.allclose(out["joint"][hs], both / np.linalg.norm(both, axis=1, keepdims=True), atol=1e-5)
    assert list(out["object_id"][:2]) == ["obj000", "obj001"]
    # batch size does not change results (eval mode, no cross-batch state)
    out2 = embed_dataset(model, ds, batch_size=24, progress=False)
    assert np.allclose(out["image"], out2["image"], atol=1e-5)


def test_refuses_incompatible_model(tiny_dataset):
    ds = SurveyDataset(DataConfig(path=str(tiny_dataset)))
    cfg = get_model_config("tiny", n_bands=3, image_size=32, spectrum_length=ds.spectrum_length)
    with pytest.raises(InputFileError, match="bands"):
        embed_dataset(build_model(cfg), ds, progress=False)


def test_run_embed_roundtrip(tiny_dataset, tmp_path):
    data = DataConfig(path=str(tiny_dataset))
    data.image.size = 32
    ds = SurveyDataset(data)
    model, cfg = _model(ds)
    save_checkpoint(model, cfg, tmp_path / "ck")
    path = run_embed(EmbedConfig(data=data, checkpoint=str(tmp_path / "ck"), out=str(tmp_path / "emb"),
                                 batch_size=8, device="cpu"))
    assert path == tmp_path / "emb" / "embeddings.h5"
    arrays, meta = read_embeddings(path)
    assert meta["checkpoint_sha256"] == checkpoint_hash(tmp_path / "ck")
    assert meta["model_name"] == "tiny" and meta["embed_dim"] == cfg.embed_dim
    assert arrays["object_id"][3] == "obj003" and arrays["image"].shape == (24, cfg.embed_dim)
    direct = embed_dataset(model.eval(), ds, progress=False)
    assert np.allclose(arrays["image"], direct["image"], atol=1e-6)


def test_write_read_and_bad_file(tmp_path):
    arrays = {"object_id": np.array(["a", "b"], dtype=object), "image": np.eye(2, dtype=np.float32)}
    write_embedding_arrays(tmp_path / "e.h5", arrays, {"model_name": "x"})
    back, meta = read_embeddings(tmp_path / "e.h5")
    assert list(back["object_id"]) == ["a", "b"] and meta == {"model_name": "x"}
    (tmp_path / "bad.h5").write_text("nope")
    with pytest.raises(InputFileError, match="bad.h5"):
        read_embeddings(tmp_path / "bad.h5")


def test_embed_with_tabular_second_tower(tabular_survey):
    """A model whose second tower is the tabular encoder embeds the catalogue row."""
    from galclip.models.tabular_tower import with_tabular_tower

    data = DataConfig(path=str(tabular_survey))
    data.image.size = 32
    ds = SurveyDataset(data)
    table = np.stack([ds.column("mass"), ds.column("sfr")], axis=1)
    cfg = with_tabular_tower(get_model_config("tiny", n_bands=2, image_size=32), table, ["mass", "sfr"])
    out = embed_dataset(build_model(cfg), ds, batch_size=8, progress=False)
    assert out["has_spectrum"].all() and np.isfinite(out["spectrum"]).all()
    assert np.allclose(np.linalg.norm(out["spectrum"], axis=1), 1, atol=1e-5)
