"""Real Galaxy Zoo 1 cutouts (image only): ingest → image-only SSL pretraining → fine-tune → evaluate.

A small, fast slice (24 galaxies, 8 of them mergers) of ``../shared/data/gz1_dev``; skips
cleanly when the real data is absent. The numbers on the full sample are measured by
``benchmarks/bench_label_budget.py`` (see its docstring), not here.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from galclip.config import load_config
from tests.conftest import ROOT, shared_path


def test_gz1_ingest_pretrain_finetune_evaluate(tmp_path: Path) -> None:
    gz = shared_path("gz1_dev")
    rows = list(csv.DictReader((gz / "labels.csv").open()))
    pick = [r for r in rows if r["is_merger"] == "1"][:8] + [r for r in rows if r["is_merger"] == "0"][:16]
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for r in pick:  # a link, not a copy: real data never enters the repository or the test tree
        (img_dir / Path(r["file"]).name).symlink_to((gz / r["file"]).resolve())
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(pick)

    from galclip.data.ingest import IngestConfig, run_ingest

    ds = tmp_path / "gz1"
    run_ingest(load_config(IngestConfig, ROOT / "configs" / "ingest_gz1.yaml", [
        f"out={ds}", f"images=[{img_dir}]", f"labels.path={tmp_path / 'labels.csv'}", "image_size=48",
        "progress=false", "morphology_n_jobs=1"]))

    from galclip.pretrain.train import PretrainConfig, run_pretrain

    pre = tmp_path / "pre"
    run_pretrain(load_config(PretrainConfig, ROOT / "configs" / "pretrain.yaml", [
        f"data.path={ds}", "data.image.size=48", f"out={pre}", "model=tiny", "loss.clip_weight=0",
        "loss.ssl_image_weight=1", "train.steps=2", "train.batch_size=8", "train.num_workers=0",
        "train.val_fraction=0", "train.accelerator=cpu", "train.devices=1"]))
    ckpt = pre if (pre / "model.safetensors").exists() else next(pre.rglob("model.safetensors")).parent

    from galclip.finetune.train import FinetuneConfig, run_finetune

    m = run_finetune(load_config(FinetuneConfig, ROOT / "configs" / "finetune.yaml", [
        f"data.path={ds}", "data.image.size=48", f"checkpoint={ckpt}", f"out={tmp_path / 'ft'}",
        "modalities=[image]", "head.tabular=linear", "train.epochs=5", "train.cv_folds=2", "test_fraction=0.4",
        "progress=false"]))
    assert set(m["test"]) == {"both"} and m["test"]["both"]["n"] >= 8
    assert math.isfinite(m["test"]["both"]["roc_auc"])
    meta = json.loads((tmp_path / "ft" / "head.json").read_text())
    assert {"gini", "m20", "asymmetry", "concentration"} <= set(meta["tabular_columns"])  # reused from ingest

    from galclip.finetune.evaluate import EvaluateConfig, run_evaluate

    rep = run_evaluate(load_config(EvaluateConfig, ROOT / "configs" / "evaluate.yaml", [
        f"data.path={ds}", "data.image.size=48", f"checkpoint={ckpt}", f"out={tmp_path / 'ev'}",
        "budgets=[6]", "seeds=[0]", "test_fraction=0.4", "train.epochs=5", "train.cv_folds=0", "progress=false",
        "methods=[galclip_image,galclip_image_tabular,morphology_lr]"]))
    got = {r["method"]: r for r in rep["summary"]}
    assert set(got) == {"galclip_image", "galclip_image_tabular", "morphology_lr"}
    assert all(np.isfinite(r["roc_auc_mean"]) for r in got.values())
    assert "spectrum" not in " ".join(got)  # image-only data: no spectrum rows
