"""Index directories: write/read round trip, refusal of mismatched or inconsistent indexes."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from galclip.errors import ConfigError, InputFileError
from galclip.retrieval.build import auto_factory, exact_search, recall_at_k
from galclip.retrieval.index import build_index_dir
from galclip.retrieval.store import EMBEDDINGS_FILE, INDEX_FILE, MANIFEST_FILE, load_index


def _arrays(clustered, n=2000, d=16):
    img, _ = clustered(n, d, 20, 0.3, seed=0)
    spec = img + 0.05 * np.random.default_rng(1).normal(size=img.shape).astype(np.float32)
    spec[::7] = np.nan  # objects without a spectrum
    idmap = dict(object_id=np.array([f"g{i:05d}" for i in range(n)], dtype=object), ra=np.linspace(0, 10, n),
                 dec=np.linspace(-5, 5, n), has_image=np.ones(n, bool), has_spectrum=np.isfinite(spec).all(1))
    return idmap, {"image": img, "spectrum": spec}


@pytest.mark.parametrize("factory,shard_rows", [("Flat", 0), ("HNSW16,Flat", 0), ("IVF16,SQ8", 0), ("IVF16,SQ8", 600)])
def test_round_trip_matches_exact_search(tmp_path, clustered, factory, shard_rows):
    idmap, emb = _arrays(clustered)
    out = build_index_dir(tmp_path / "idx", idmap, emb, "spectrum", labels={"merger": np.arange(2000) % 2},
                          factory=factory, search_params="nprobe=16" if "IVF" in factory else "",
                          checkpoint_sha256="abc123", model_name="tiny", shard_rows=shard_rows)
    for name in (INDEX_FILE, EMBEDDINGS_FILE, MANIFEST_FILE):
        assert (out / name).exists()
    assert not list(tmp_path.glob(".idx*")), "staging directory left behind"
    loaded = load_index(out, checkpoint_sha256="abc123", embedding_kind="spectrum", mmap=True)
    man = loaded.manifest
    valid = np.isfinite(emb["spectrum"]).all(1)
    assert (man.factory, man.dim, man.count, man.n_rows, man.metric) == (factory, 16, int(valid.sum()), 2000,
                                                                           "inner_product")
    assert man.on_disk == (shard_rows > 0)
    # the id map and every modality round-trip
    st = loaded.store
    assert list(st.object_id[:3]) == ["g00000", "g00001", "g00002"]
    np.testing.assert_allclose(st.embeddings("image", [5, 3, 5]), emb["image"][[5, 3, 5]])
    np.testing.assert_array_equal(st.label("merger"), np.arange(2000) % 2)
    # faiss ids are id-map rows: results agree with exact search over the valid rows
    q = emb["image"][:50]
    scores, rows = loaded.search(q, 10)
    rows_valid = np.flatnonzero(valid)
    _, exact = exact_search(emb["spectrum"][valid], q, 10)
    assert recall_at_k(rows, rows_valid[exact], 10) >= 0.9
    assert not np.isin(rows, np.flatnonzero(~valid)).any(), "rows without a spectrum were indexed"
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_exclude_self(tmp_path, clustered):
    idmap, emb = _arrays(clustered, n=300)
    loaded = load_index(build_index_dir(tmp_path / "i", idmap, emb, "image"))
    _, rows = loaded.search(emb["image"][:20], 5, exclude_rows=list(range(20)))
    assert not (rows == np.arange(20)[:, None]).any()
    _, rows = loaded.search(emb["image"][:20], 5)
    assert (rows[:, 0] == np.arange(20)).all()


def test_refuses_other_model_kind_and_inconsistent_files(tmp_path, clustered):
    idmap, emb = _arrays(clustered, n=300)
    out = build_index_dir(tmp_path / "idx", idmap, emb, "image", checkpoint_sha256="a" * 64)
    with pytest.raises(InputFileError, match="another model"):
        load_index(out, checkpoint_sha256="b" * 64)
    with pytest.raises(InputFileError, match="holds 'image' embeddings, not 'spectrum'"):
        load_index(out, embedding_kind="spectrum")
    man_path = out / MANIFEST_FILE
    good = json.loads(man_path.read_text())
    man_path.write_text(json.dumps(dict(good, count=good["count"] + 1)))
    with pytest.raises(InputFileError, match="manifest says"):
        load_index(out)
    man_path.write_text(json.dumps(dict(good, dim=8)))
    with pytest.raises(InputFileError, match="dimension"):
        load_index(out)
    man_path.write_text(json.dumps(dict(good, n_rows=299)))
    with pytest.raises(InputFileError, match="id map has 300 rows"):
        load_index(out)
    man_path.write_text("{not json")
    with pytest.raises(InputFileError, match="malformed"):
        load_index(out)
    # errors are one line naming the file
    try:
        load_index(out)
    except InputFileError as exc:
        assert "\n" not in str(exc) and str(man_path) in str(exc)


def test_existing_directory_needs_overwrite(tmp_path, clustered):
    idmap, emb = _arrays(clustered, n=100)
    out = build_index_dir(tmp_path / "i", idmap, emb, "image")
    with pytest.raises(ConfigError, match="overwrite"):
        build_index_dir(out, idmap, emb, "image")
    build_index_dir(out, idmap, emb, "spectrum", overwrite=True)
    assert load_index(out).manifest.embedding_kind == "spectrum"


def test_bad_factory_and_missing_kind(tmp_path, clustered):
    idmap, emb = _arrays(clustered, n=100)
    with pytest.raises(ValueError, match="factory"):
        build_index_dir(tmp_path / "a", idmap, emb, "image", factory="NotAnIndex")
    with pytest.raises(ConfigError, match="joint"):
        build_index_dir(tmp_path / "b", idmap, emb, "joint")


def test_auto_factory_by_size():
    assert auto_factory(1000, 128) == "Flat"
    assert auto_factory(1_000_000, 128) == "IVF4096,Flat"
    assert auto_factory(50_000_000, 128).startswith("IVF")
    assert auto_factory(1000, 128, on_disk=True).startswith("IVF")
    idx = faiss.index_factory(128, auto_factory(50_000_000, 128), faiss.METRIC_INNER_PRODUCT)
    assert faiss.extract_index_ivf(idx).nlist >= 16384


def test_failed_rebuild_keeps_the_old_index(tmp_path, clustered):
    idmap, emb = _arrays(clustered, n=200)
    out = build_index_dir(tmp_path / "i", idmap, emb, "image")
    with pytest.raises(ConfigError, match="factory"):
        build_index_dir(out, idmap, emb, "spectrum", factory="IVF-broken", overwrite=True)
    assert load_index(out).manifest.embedding_kind == "image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]  # no staging leftovers
    with pytest.raises(ConfigError, match="no object has a spectrum"):
        build_index_dir(tmp_path / "j", idmap, {**emb, "spectrum": np.full_like(emb["image"], np.nan)}, "spectrum")
