"""End-to-end fine-tuning and evaluation on the tiny dataset with a tiny random model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from galclip.config import load_config
from galclip.errors import InputFileError


@pytest.fixture
def tiny_ckpt(tiny_dataset: Path, tmp_path: Path) -> Path:
    from galclip.models import build_model, get_model_config, save_checkpoint

    torch.manual_seed(0)
    mc = get_model_config("tiny", n_bands=2, image_size=32, spectrum_length=256)
    save_checkpoint(build_model(mc), mc, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _ft_cfg(ds: Path, ckpt: Path, out: Path, *extra: str):
    """Embedding-only heads unless a test asks for the statistics (statmorph on the tiny survey)."""
    from galclip.finetune.train import FinetuneConfig

    return load_config(FinetuneConfig, None, [f"data.path={ds}", "data.image.size=32", f"checkpoint={ckpt}",
                                              f"out={out}", "train.epochs=15", "progress=false", "head.tabular=none",
                                              *extra])


@pytest.mark.parametrize("kind", ["late", "cross_attention", "metric"])
def test_finetune_writes_head_metrics_and_per_object_tables(tiny_dataset: Path, tiny_ckpt: Path, tmp_path: Path,
                                                            kind: str) -> None:
    from astropy.table import Table

    from galclip.data.dataset import DataConfig, SurveyDataset
    from galclip.finetune.features import extract_features, feature_tensors
    from galclip.finetune.head_training import predict
    from galclip.finetune.head_io import load_head
    from galclip.finetune.train import run_finetune

    out = tmp_path / f"run_{kind}"
    fast = ["train.epochs=3", "train.cv_folds=0"] if kind == "cross_attention" else []  # heavier head: keep it short
    fast += ["head.metric_classifier=knn", "head.metric_loss=triplet"] if kind == "metric" else []
    metrics = run_finetune(_ft_cfg(tiny_dataset, tiny_ckpt, out, f"head.kind={kind}", *fast))
    for f in ("head.safetensors", "head.json", "metrics.json", "predictions.csv", "predictions.fits"):
        assert (out / f).exists(), f
    assert set(metrics["test"]) == {"both", "image_only", "spectrum_only"}
    assert metrics["test"]["both"]["n"] == metrics["n_test"] > 0
    # spectrum-only inference is scored only where a spectrum exists (every 5th row lacks one)
    assert metrics["test"]["spectrum_only"]["n"] <= metrics["test"]["both"]["n"]
    assert json.loads((out / "metrics.json").read_text())["threshold"] == pytest.approx(metrics["threshold"])

    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 24
    assert [r["object_id"] for r in rows] == [f"obj{i:03d}" for i in range(24)]
    assert {"object_id", "ra", "dec", "p_merger", "predicted", "label", "split"} <= set(rows[0])
    assert rows[4]["label"] == "1.0" and rows[1]["label"] == "0.0"
    p = np.array([float(r["p_merger"]) for r in rows])
    assert ((p >= 0) & (p <= 1)).all() and p.std() > 0
    assert np.array_equal(np.array([int(r["predicted"]) for r in rows]), (p >= metrics["threshold"]).astype(int))
    assert sum(r["split"] == "test" for r in rows) == metrics["n_test"]
    t = Table.read(out / "predictions.fits")
    assert list(t["object_id"]) == [r["object_id"] for r in rows]

    # the saved head reproduces the probabilities
    head, meta = load_head(out)
    ds = SurveyDataset(DataConfig(path=str(tiny_dataset), image=__import__("galclip.data.preprocess", fromlist=["ImagePrep"]).ImagePrep(size=32)))
    from galclip.models import load_model

    model, _ = load_model(tiny_ckpt)
    feats = extract_features(model, ds, tokens=kind == "cross_attention", progress=False)
    again = predict(head, feature_tensors(feats, np.arange(24)))
    np.testing.assert_allclose(again, p, atol=1e-5)
    assert meta["checkpoint_sha256"] == metrics["checkpoint_sha256"]


def test_finetune_with_morphology_and_multiclass(tiny_dataset: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    from galclip.finetune.train import run_finetune

    out = tmp_path / "stage"
    m = run_finetune(_ft_cfg(tiny_dataset, tiny_ckpt, out, "label=merger_stage", "head.kind=gated",
                             "head.tabular=linear", "train.cv_folds=0"))
    meta = json.loads((out / "head.json").read_text())
    assert meta["n_out"] == 5 and "gini" in meta["tabular_columns"] and "m20" in meta["tabular_columns"]
    assert "stage_accuracy" in m["test"]["both"]
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"p_isolated", "p_post_merger", "p_merger"} <= set(header)
    assert any(p.name.startswith("morphology_") for p in (out / "cache").iterdir())


def test_unfrozen_finetune_trains_top_blocks(tiny_dataset: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    from galclip.finetune.lightning import encoder_param_groups, tower_blocks
    from galclip.finetune.train import run_finetune
    from galclip.models import load_model

    model, _ = load_model(tiny_ckpt)
    groups = encoder_param_groups(model, n_blocks=1, lr=1e-3, layer_decay=0.5, weight_decay=0.0)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert 0 < len(trainable) < len(list(model.parameters()))
    stem = tower_blocks(model.image_encoder)[0]
    assert len(tower_blocks(model.image_encoder)) >= 2
    assert not any(p.requires_grad for p in stem)  # the stem stays frozen
    assert all(p.requires_grad for p in tower_blocks(model.image_encoder)[-1])
    assert {g["lr"] for g in groups} >= {1e-3, 5e-4}

    out = tmp_path / "unfrozen"
    run_finetune(_ft_cfg(tiny_dataset, tiny_ckpt, out, "unfreeze_blocks=1", "unfrozen_epochs=1"))
    tuned, _ = load_model(out / "encoder")
    from galclip.models.checkpoint import read_model_meta
    assert read_model_meta(out / "encoder")["extra"]["fine_tuned"]["how"] == "unfrozen"
    before, _ = load_model(tiny_ckpt)
    changed = {id(p) for p, q in zip(tuned.parameters(), before.parameters()) if not torch.equal(p, q)}
    assert changed
    tuned_stem = {id(p) for p in tower_blocks(tuned.image_encoder)[0]}
    assert not changed & tuned_stem


def test_finetune_refuses_mismatched_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    from galclip.finetune.train import run_finetune
    from galclip.models import build_model, get_model_config, save_checkpoint

    mc = get_model_config("tiny", n_bands=3, image_size=32, spectrum_length=256)
    save_checkpoint(build_model(mc), mc, tmp_path / "bad")
    with pytest.raises(InputFileError, match="bands"):
        run_finetune(_ft_cfg(tiny_dataset, tmp_path / "bad", tmp_path / "o"))


def test_evaluate_harness_tiny(tiny_dataset: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    from galclip.finetune.evaluate import EvaluateConfig, run_evaluate

    out = tmp_path / "ev"
    cfg = load_config(EvaluateConfig, None, [
        f"data.path={tiny_dataset}", "data.image.size=32", f"checkpoint={tiny_ckpt}", f"out={out}",
        "budgets=[6,100]", "seeds=[0,1]", "train.epochs=3", "train.cv_folds=0", "cnn.epochs=1", "progress=false",
        "methods=[galclip_fusion,galclip_spectrum,random_init,cnn_scratch,galclip_image_metric]"])
    rep = run_evaluate(cfg)
    assert rep["budgets"] == [6, rep["n_pool"]]  # budgets above the pool size are capped
    names = {r["method"] for r in rep["summary"]}
    assert names == {"galclip_fusion", "galclip_fusion@image_only", "galclip_fusion@spectrum_only",
                     "galclip_spectrum", "random_init", "cnn_scratch", "galclip_image_metric"}
    assert all(r["n_seeds"] == 2 for r in rep["summary"])
    assert {"roc_auc_mean", "roc_auc_std", "ece_mean", "f1_mean"} <= set(rep["summary"][0])
    assert "pretraining_gain" in rep["headline"]
    for f in ("results.json", "results.csv", "label_budget.png", "predictions.csv"):
        assert (out / f).stat().st_size > 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert rows[0]["object_id"].startswith("obj") and {"method", "budget", "seed", "p_merger", "label"} <= set(rows[0])
    # every method saw the same test objects
    test_ids = {m: {r["object_id"] for r in rows if r["method"] == m and r["seed"] == "0" and r["budget"] == "6"}
                for m in ("galclip_fusion", "random_init", "cnn_scratch")}
    assert test_ids["galclip_fusion"] == test_ids["random_init"] == test_ids["cnn_scratch"]
    assert list((out / "cache").glob("features_random*_fitted_*.npz"))  # random init: read-out fitted


def test_evaluate_runs_self_training_only_when_asked(tiny_dataset: Path, tiny_ckpt: Path, tmp_path: Path) -> None:
    from galclip.finetune.evaluate import EvaluateConfig, run_evaluate

    base = [f"data.path={tiny_dataset}", "data.image.size=32", f"checkpoint={tiny_ckpt}", "budgets=[8]", "seeds=[0]",
            "train.epochs=3", "train.cv_folds=0", "progress=false", "self_train.epochs=1", "self_train.min_steps=2",
            "self_train.batch_size=8", "self_train.prior=0.25"]
    report = run_evaluate(load_config(EvaluateConfig, None, [*base, f"out={tmp_path / 'ev'}",
                                                            "methods=[galclip_self_trained,morphology_lr]"]))
    rows = {r["method"]: r for r in report["summary"]}
    assert set(rows) == {"galclip_self_trained", "morphology_lr"}
    run = next(r for r in report["runs"] if r["method"] == "galclip_self_trained")
    assert 0 <= run["roc_auc"] <= 1 and run["seconds"] > 0
    every = run_evaluate(load_config(EvaluateConfig, None, [*base, f"out={tmp_path / 'all'}",
                                                            "methods=null", "head.tabular=none"]))
    ran = {r["method"] for r in every["runs"]}
    assert "galclip_fusion" in ran and "galclip_self_trained" not in ran  # opt-in: not in "all that apply"
