"""Merger candidates: objects like the known mergers come first; non-mergers push look-alikes down."""
from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from galclip.errors import ConfigError
from galclip.retrieval.candidates import CandidatesConfig, rank_candidates, run_candidates
from galclip.retrieval.index import build_index_dir
from galclip.retrieval.store import load_index


def _survey(tmp_path, clustered, n=600):
    x, y = clustered(n, 16, 6, 0.35, seed=11)  # cluster 0 plays "mergers"
    x[::10] = np.nan  # some objects lack this modality
    idmap = dict(object_id=np.array([f"s{i}" for i in range(n)], dtype=object), ra=np.arange(n) * 0.01,
                 dec=np.ones(n), has_image=np.isfinite(x).all(1), has_spectrum=np.zeros(n, bool))
    labels = {"merger": (y == 0).astype(float)}
    return build_index_dir(tmp_path / "idx", idmap, {"image": x}, "image", labels=labels), x, y


def test_known_like_objects_rank_first(tmp_path, clustered):
    idx, x, y = _survey(tmp_path, clustered)
    valid = np.isfinite(x).all(1)
    mergers = np.flatnonzero((y == 0) & valid)
    known = mergers[:4]
    store = load_index(idx).store
    table = rank_candidates(store, "image", known)
    n_rest = len(mergers) - 4
    top = [int(o[1:]) for o in table["object_id"][:n_rest]]
    assert (y[top] == 0).mean() >= 0.95  # the merger cluster fills the top of the list
    assert not set(known) & {int(o[1:]) for o in table["object_id"]}  # examples are not re-ranked
    assert len(table) == valid.sum() - 4  # objects without an embedding are not ranked
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    assert np.all(np.diff(table["score"]) <= 0)


def test_negatives_push_lookalikes_down(tmp_path, clustered):
    idx, x, y = _survey(tmp_path, clustered)
    valid = np.isfinite(x).all(1)
    store = load_index(idx).store
    # positives from two clusters; negatives from cluster 1 say "not those"
    pos = np.concatenate([np.flatnonzero((y == 0) & valid)[:3], np.flatnonzero((y == 1) & valid)[:3]])
    neg = np.flatnonzero((y == 1) & valid)[3:8]
    plain = rank_candidates(store, "image", pos)
    signed = rank_candidates(store, "image", pos, neg, negative_weight=1.0)

    def share_of_cluster1(t, m=40):
        return np.mean(y[[int(o[1:]) for o in t["object_id"][:m]]] == 1)

    assert share_of_cluster1(signed) < share_of_cluster1(plain)
    assert share_of_cluster1(signed) < 0.1


def test_candidates_stage_outputs(tmp_path, clustered):
    idx, x, y = _survey(tmp_path, clustered)
    valid = np.isfinite(x).all(1)
    known = np.flatnonzero((y == 0) & valid)[:3]
    Table({"object_id": [f"s{i}" for i in known]}).write(tmp_path / "mergers.csv", format="ascii.csv")
    cfg = CandidatesConfig(index=str(idx), out=str(tmp_path / "c"), positives=str(tmp_path / "mergers.csv"),
                           negative_ids=[f"s{np.flatnonzero((y == 2) & valid)[0]}"], top_n=6)
    t1 = run_candidates(cfg)
    t2 = run_candidates(CandidatesConfig(**{**cfg.__dict__, "out": str(tmp_path / "d")}))
    assert (tmp_path / "c" / "candidates.csv").read_bytes() == (tmp_path / "d" / "candidates.csv").read_bytes()
    csv = Table.read(tmp_path / "c" / "candidates.csv", format="ascii.csv")
    assert list(csv.colnames[:5]) == ["rank", "object_id", "ra", "dec", "score"]
    assert len(csv) == len(t1) == len(t2)
    for name in ("candidates.fits", "gallery.png", "report.html", "summary.json"):
        assert (tmp_path / "c" / name).exists()
    with pytest.raises(ConfigError, match="known mergers"):
        run_candidates(CandidatesConfig(index=str(idx), out=str(tmp_path / "e")))


def test_demo_mode_draws_known_examples_and_reports_precision(tmp_path, clustered):
    import json

    idx, x, y = _survey(tmp_path, clustered)
    run_candidates(CandidatesConfig(index=str(idx), out=str(tmp_path / "c"), from_label="merger", n_known=4, top_n=4,
                                    repeats=3))
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["n_positives"] == 4 and summary["n_negatives"] == 0  # random non-mergers are not look-alikes
    assert all(y[int(o[1:])] == 0 for o in summary["known_positive_ids"])
    prec = summary["precision_at"]
    assert prec["top50"] >= 0.9 and prec["base_rate"] < 0.3
    draws = summary["precision_at_draws"]  # three draws of known mergers: mean and spread
    assert draws["draws"] == 3 and draws["top50_mean"] >= 0.9 and 0 <= draws["top50_std"] < 0.1


def test_candidates_and_label_default_to_the_image_representation(tmp_path, clustered):
    """With ``image_features`` stored, ranking and labeling read it unless told otherwise."""
    import json

    from galclip.retrieval.label import LabelConfig, run_label

    x, y = clustered(300, 16, 6, 0.35, seed=3)
    noise = np.random.default_rng(0).normal(size=(300, 16))  # the index's kind holds no morphology here
    idmap = dict(object_id=np.array([f"s{i}" for i in range(300)], dtype=object), ra=np.zeros(300),
                 dec=np.zeros(300), has_image=np.ones(300, bool), has_spectrum=np.zeros(300, bool))
    idx = build_index_dir(tmp_path / "idx", idmap, {"image": noise, "image_features": x}, "image",
                          labels={"merger": (y == 0).astype(float)})
    run_candidates(CandidatesConfig(index=str(idx), out=str(tmp_path / "c"), from_label="merger", n_known=4))
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["kind"] == "image_features" and summary["precision_at"]["top50"] >= 0.9
    run_candidates(CandidatesConfig(index=str(idx), out=str(tmp_path / "d"), from_label="merger", n_known=4,
                                    kind="image"))
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["precision_at"]["top50"] < 0.6
    run_label(LabelConfig(index=str(idx), out=str(tmp_path / "l"), label_column="merger"))
    assert json.loads((tmp_path / "l" / "summary.json").read_text())["kind"] == "image_features"


def test_candidates_report_the_zero_label_asymmetry_ranking(tmp_path, clustered):
    """With a survey that stores rotational asymmetry, the summary says what ranking by it alone finds."""
    import json

    from galclip.data.shards import ShardWriter

    n = 60
    x, _ = clustered(n, 8, 3, 0.35, seed=5)
    merger = (np.arange(n) % 4 == 0).astype(float)
    asym = merger + np.random.default_rng(0).normal(0, 0.1, n)
    asym[4] = np.nan  # an unmeasured merger ranks last
    w = ShardWriter(tmp_path / "survey", ["g"], 8, None, label_columns=["merger"], tabular_columns=["morph_asymmetry"],
                    shard_size=100, provenance={"source": "test"})
    for i in range(n):
        w.add(dict(object_id=f"s{i}", ra=0.0, dec=0.0, z=0.1, image_array=np.zeros((1, 8, 8), np.float32),
                   image_ivar=np.ones((1, 8, 8), np.float32), has_spectrum=False, merger=merger[i],
                   tabular={"morph_asymmetry": asym[i]}))
    w.close()
    idmap = dict(object_id=np.array([f"s{i}" for i in range(n)], dtype=object), ra=np.zeros(n), dec=np.zeros(n),
                 has_image=np.ones(n, bool), has_spectrum=np.zeros(n, bool))
    idx = build_index_dir(tmp_path / "idx", idmap, {"image": x}, "image", labels={"merger": merger})
    cfg = CandidatesConfig(index=str(idx), out=str(tmp_path / "c"), from_label="merger", n_known=4, top_n=4,
                           repeats=2, dataset=str(tmp_path / "survey"))
    run_candidates(cfg)
    ref = json.loads((tmp_path / "c" / "summary.json").read_text())["zero_label_asymmetry_precision"]
    assert ref["draws"] == 2 and ref["top10_mean"] == 1.0  # 10 of the 14 measured mergers are never known
    assert ref["base_rate_mean"] == pytest.approx(11 / 56)  # the known mergers are left out, as in the ranking
    assert ref["top50_mean"] <= 11 / 50  # every remaining merger, then non-mergers
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    page = (tmp_path / "c" / "report.html").read_text()
    # the page says how reliable its gallery is: both precisions, as summary.json has them
    assert f"precision@20 = {summary['precision_at_draws']['top20_mean']:.3f}" in page
    assert f"with no known mergers: {ref['top20_mean']:.3f}" in page
