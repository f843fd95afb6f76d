"""galclip index + search end to end with a tiny model: by id, by image file, by spectrum file, cross-modal."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galclip.data.dataset import DataConfig, SurveyDataset
from galclip.data.preprocess import ImagePrep
from galclip.errors import ConfigError, InputFileError
from galclip.retrieval.index import IndexConfig, run_index
from galclip.retrieval.search import SearchConfig, run_search
from galclip.retrieval.store import load_index


def _index(tmp_path, tiny_dataset, ckpt, kind):
    data = DataConfig(path=str(tiny_dataset), image=ImagePrep(size=32))
    return run_index(IndexConfig(data=data, checkpoint=str(ckpt), out=str(tmp_path / f"idx-{kind}"), kind=kind))


def test_search_by_id_writes_tables_gallery_report(tmp_path, tiny_dataset, tiny_checkpoint):
    idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image")
    man = load_index(idx).manifest
    assert man.embedding_kind == "image" and man.count == 24 and man.factory == "Flat" and man.model_name == "tiny"
    out = tmp_path / "s"
    table = run_search(SearchConfig(index=str(idx), out=str(out), object_id="obj003", k=5))
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    assert "obj003" not in list(table["object_id"])  # a query never finds itself
    assert np.all(np.diff(table["score"]) <= 1e-6)
    csv = Table.read(out / "neighbours.csv", format="ascii.csv")
    assert [str(v) for v in csv["object_id"]] == list(table["object_id"])
    with fits.open(out / "neighbours.fits") as hdul:
        assert list(hdul[1].data["object_id"]) == list(table["object_id"])
    assert (out / "gallery.png").stat().st_size > 5000
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "obj003" in html and "<img src='http" not in html


def test_cross_modal_spectrum_query_on_image_index(tmp_path, tiny_dataset, tiny_checkpoint):
    """A spectrum embedding searches the image index: scores are spectrum·image similarities."""
    idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image")
    loaded = load_index(idx)
    table = run_search(SearchConfig(index=str(idx), out=str(tmp_path / "x"), object_id="obj003",
                                    query_kind="spectrum", k=24, gallery=False))
    assert set(table["query_kind"]) == {"spectrum"}
    st = loaded.store
    q = st.embeddings("spectrum", st.rows_of(["obj003"]))[0]
    expect = st.embeddings("image") @ q
    assert len(table) == 24  # across modalities the object's own image is a valid answer
    got = dict(zip(table["object_id"], table["score"]))
    for oid, s in got.items():
        assert s == pytest.approx(expect[st.rows_of([oid])[0]], abs=1e-5)
    with pytest.raises(InputFileError, match="no spectrum embedding"):  # obj004 has no spectrum
        run_search(SearchConfig(index=str(idx), out=str(tmp_path / "y"), object_id="obj004", query_kind="spectrum"))


def test_file_queries_find_the_same_object(tmp_path, tiny_dataset, tiny_checkpoint):
    """An image file / SDSS spectrum file of a dataset object retrieves that object first (score ≈ 1)."""
    ds = SurveyDataset(DataConfig(path=str(tiny_dataset)))
    raw = ds.raw_row(5)
    fits.PrimaryHDU(raw["image_array"]).writeto(tmp_path / "cutout.fits")
    spec = Table({"flux": raw["spectrum_flux"].astype(np.float32), "loglam": np.log10(ds.wave),
                  "ivar": raw["spectrum_ivar"].astype(np.float32), "and_mask": np.zeros(ds.wave.size, np.int32)})
    info = Table({"Z": [float(raw["z"])], "PLUG_RA": [float(raw["ra"])], "PLUG_DEC": [float(raw["dec"])]})
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(spec), fits.BinTableHDU(info)]).writeto(
        tmp_path / "spec-0001-52000-0005.fits")

    big = np.kron(raw["image_array"], np.ones((1, 2, 2), np.float32))  # same field at twice the sampling
    fits.PrimaryHDU(big).writeto(tmp_path / "cutout64.fits")

    img_idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image")
    t = run_search(SearchConfig(index=str(img_idx), out=str(tmp_path / "qi"), image_file=str(tmp_path / "cutout.fits"), k=3))
    assert t["object_id"][0] == "obj005" and t["score"][0] > 0.999
    # a larger cutout is resampled to the stored size the way ingest does it
    assert load_index(img_idx).manifest.preprocess["stored_image_size"] == 32
    t = run_search(SearchConfig(index=str(img_idx), out=str(tmp_path / "qb"), image_file=str(tmp_path / "cutout64.fits"),
                                k=3, gallery=False))
    assert t["object_id"][0] == "obj005" and t["score"][0] > 0.999

    spec_idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "spectrum")
    t = run_search(SearchConfig(index=str(spec_idx), out=str(tmp_path / "qs"),
                                spectrum_file=str(tmp_path / "spec-0001-52000-0005.fits"), k=3))
    assert t["object_id"][0] == "obj005" and t["score"][0] > 0.999
    assert (tmp_path / "qs" / "gallery.png").exists()

    # cross-modal from a file: the spectrum file searches the image index
    t = run_search(SearchConfig(index=str(img_idx), out=str(tmp_path / "qx"),
                                spectrum_file=str(tmp_path / "spec-0001-52000-0005.fits"), k=3, gallery=False))
    assert set(t["query_kind"]) == {"spectrum"} and len(t) == 3

    # an index of the morphology representation: an image file finds its object, a spectrum is refused
    rep_idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image_features")
    t = run_search(SearchConfig(index=str(rep_idx), out=str(tmp_path / "qr"), image_file=str(tmp_path / "cutout.fits"),
                                k=3, gallery=False))
    assert t["object_id"][0] == "obj005" and t["score"][0] > 0.999 and set(t["query_kind"]) == {"image_features"}
    with pytest.raises(ConfigError, match="kind=image_features"):
        run_search(SearchConfig(index=str(rep_idx), out=str(tmp_path / "qz"),
                                spectrum_file=str(tmp_path / "spec-0001-52000-0005.fits"), k=3, gallery=False))


def test_partial_spectrum_is_masked_outside_its_range_and_refused_below_min_overlap(tmp_path, tiny_dataset,
                                                                                   tiny_checkpoint):
    from galclip.retrieval.query import grid_coverage

    ds = SurveyDataset(DataConfig(path=str(tiny_dataset)))
    raw = ds.raw_row(5)
    half = slice(0, ds.wave.size // 2)  # only the blue half of the grid
    spec = Table({"flux": raw["spectrum_flux"][half].astype(np.float32), "loglam": np.log10(ds.wave[half]),
                  "ivar": raw["spectrum_ivar"][half].astype(np.float32),
                  "and_mask": np.zeros(half.stop, np.int32)})
    info = Table({"Z": [0.123], "PLUG_RA": [float(raw["ra"])], "PLUG_DEC": [float(raw["dec"])]})
    f = tmp_path / "spec-0001-52000-0006.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(spec), fits.BinTableHDU(info)]).writeto(f)
    assert grid_coverage(ds.wave[half], ds.wave) == pytest.approx(0.5, abs=0.01)
    idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "spectrum")
    t = run_search(SearchConfig(index=str(idx), out=str(tmp_path / "q"), spectrum_file=str(f), k=3, gallery=False))
    assert len(t) == 3 and t["query_coverage"][0] == pytest.approx(0.5, abs=0.01) and t["query_z"][0] == 0.123
    with pytest.raises(InputFileError, match="covers 80% of the model"):
        run_search(SearchConfig(index=str(idx), out=str(tmp_path / "q2"), spectrum_file=str(f), k=3,
                                gallery=False, min_overlap=0.8))


def test_image_file_query_is_cropped_like_ingest(tmp_path, tiny_dataset, tiny_checkpoint):
    """A native cutout is centre-cropped (the ingest's image_crop) then resized, as ingest stored it."""
    from galclip.retrieval.query import query_from_image_file

    ds = SurveyDataset(DataConfig(path=str(tiny_dataset)))
    raw = ds.raw_row(5)
    fits.PrimaryHDU(raw["image_array"]).writeto(tmp_path / "stored.fits")
    native = np.pad(np.kron(raw["image_array"], np.ones((1, 2, 2), np.float32)), ((0, 0), (16, 16), (16, 16)))
    fits.PrimaryHDU(native).writeto(tmp_path / "native.fits")  # 96 px: the 64-px centre is the object
    model = load_index(_index(tmp_path, tiny_dataset, tiny_checkpoint, "image")).manifest
    from galclip.encode import load_checkpoint

    net = load_checkpoint(str(tiny_checkpoint)).model
    prep = ImagePrep(size=32)
    stored = {"stored_image_size": 32, "image_resize": "area", "image_crop": "64px", "bands": model.preprocess["bands"]}
    ref = query_from_image_file(net, tmp_path / "stored.fits", prep, stored).vector
    got = query_from_image_file(net, tmp_path / "native.fits", prep, stored).vector
    np.testing.assert_allclose(got, ref, atol=1e-5)
    off = query_from_image_file(net, tmp_path / "native.fits", prep, {**stored, "image_crop": ""}).vector
    assert not np.allclose(off, ref, atol=1e-3)  # without the crop the galaxy is shrunk: another vector
    with pytest.raises(InputFileError, match="pixel scale is unknown"):
        query_from_image_file(net, tmp_path / "native.fits", prep, {**stored, "image_crop": "20arcsec"})


def test_file_query_refuses_a_different_checkpoint(tmp_path, tiny_dataset, tiny_checkpoint):
    import torch

    from galclip.models import build_model, get_model_config
    from galclip.models.checkpoint import save_checkpoint

    idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image")
    torch.manual_seed(1)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    other = save_checkpoint(build_model(cfg), cfg, tmp_path / "other")
    raw = SurveyDataset(DataConfig(path=str(tiny_dataset))).raw_row(0)
    fits.PrimaryHDU(raw["image_array"]).writeto(tmp_path / "c.fits")
    with pytest.raises(InputFileError, match="checkpoint differs"):
        run_search(SearchConfig(index=str(idx), out=str(tmp_path / "o"), image_file=str(tmp_path / "c.fits"),
                                checkpoint=str(other)))
    with pytest.raises(InputFileError, match="not in the index"):
        run_search(SearchConfig(index=str(idx), out=str(tmp_path / "o"), object_id="nope"))


def test_index_from_precomputed_embeddings(tmp_path, tiny_dataset, tiny_checkpoint):
    from galclip.pretrain.embed import EmbedConfig, run_embed

    data = DataConfig(path=str(tiny_dataset), image=ImagePrep(size=32))
    emb = run_embed(EmbedConfig(data=data, checkpoint=str(tiny_checkpoint), out=str(tmp_path / "e.h5"), device="cpu"))
    idx = run_index(IndexConfig(embeddings=str(emb), out=str(tmp_path / "idx"), kind="joint"))
    loaded = load_index(idx, embedding_kind="joint")
    assert loaded.manifest.count == 24 and set(loaded.store.kinds) == {"image", "spectrum", "joint", "image_features"}
    assert "merger" in loaded.store.label_columns and loaded.store.spectrum_lambda is not None


def test_cli_index_and_search(tmp_path, tiny_dataset, tiny_checkpoint, capsys):
    import torch

    from galclip.cli import main
    from galclip.models import build_model, get_model_config
    from galclip.models.checkpoint import save_checkpoint
    from galclip.pretrain.embed import EmbedConfig, run_embed

    data = DataConfig(path=str(tiny_dataset), image=ImagePrep(size=32))
    emb = run_embed(EmbedConfig(data=data, checkpoint=str(tiny_checkpoint), out=str(tmp_path / "e.h5"), device="cpu"))
    idx = tmp_path / "idx"
    assert main(["index", "--checkpoint", str(tiny_checkpoint), "--out", str(idx), f"embeddings={emb}", "kind=image"]) == 0
    assert main(["search", "--index", str(idx), "--id", "obj002", "--k", "4", "--out", str(tmp_path / "s"),
                 "gallery=false"]) == 0
    assert len(Table.read(tmp_path / "s" / "neighbours.csv", format="ascii.csv")) == 4
    torch.manual_seed(7)
    cfg = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    other = save_checkpoint(build_model(cfg), cfg, tmp_path / "other")
    assert main(["index", "--checkpoint", str(other), "--out", str(tmp_path / "bad"), f"embeddings={emb}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another model" in err and str(emb) in err


@pytest.mark.shared
def test_real_sdss_desi_and_jpeg_queries(tmp_path, tiny_dataset, tiny_checkpoint):
    """Real survey files flow through the query path (the data team's readers + resampling)."""
    from tests.conftest import shared_path

    sdss = shared_path("sdss_spectra", "spec-0266-51602-0001.fits")
    desi = shared_path("desi_spectra", "coadd-sv3-dark-26065.fits")
    idx = _index(tmp_path, tiny_dataset, tiny_checkpoint, "image")
    t = run_search(SearchConfig(index=str(idx), out=str(tmp_path / "a"), spectrum_file=str(sdss), k=3, gallery=False))
    assert len(t) == 3 and set(t["query_kind"]) == {"spectrum"}
    t = run_search(SearchConfig(index=str(idx), out=str(tmp_path / "b"), spectrum_file=str(desi), k=2))
    assert len(set(t["query"])) >= 1 and (tmp_path / "b" / "report.html").exists()
    # a 3-band JPEG cannot feed a 2-band model: one clear line naming the file
    jpeg = next(iter(sorted(shared_path("gz1_dev", "images").glob("*.jpeg"))))
    with pytest.raises(InputFileError, match="3 bands, the model expects 2"):
        run_search(SearchConfig(index=str(idx), out=str(tmp_path / "c"), image_file=str(jpeg)))
