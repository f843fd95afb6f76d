"""The astronomer's few-label path: simulate → pretrain → finetune --labels (all labels, CV) → predict."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from galclip.data.dataset import SurveyDataset
from galclip.data.sim.survey import SimulateConfig, run_simulate
from galclip.errors import InputFileError
from galclip.finetune.predict import PredictConfig, run_predict
from galclip.finetune.train import FinetuneConfig, run_finetune
from galclip.pretrain.train import PretrainConfig, run_pretrain


def _survey(out: Path, n: int, seed: int, bands=("g", "r", "i", "z")) -> Path:
    run_simulate(SimulateConfig(out=str(out), n=n, seed=seed, image_size=32, bands=list(bands), shard_size=32,
                                n_jobs=1, derived=False, morphology=False, progress=False))
    return out


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    first, second = _survey(root / "s1", 60, 1), _survey(root / "s2", 25, 2)
    cfg = PretrainConfig(model="tiny", out=str(root / "pre"), progress=False, seed=0)
    cfg.data.path = str(first)
    cfg.data.image.size = 32
    cfg.data.spectrum.downsample = 4
    cfg.train.steps = 3
    cfg.train.batch_size = 16
    cfg.train.val_fraction = 0.2
    run_pretrain(cfg)
    ds = SurveyDataset(str(first))
    ids, merger = ds.column("object_id").astype(str), ds.column("merger")
    pick = list(np.flatnonzero(merger > 0)[:8]) + list(np.flatnonzero(merger == 0)[:12])
    labels = root / "my_labels.csv"
    labels.write_text("object_id,merger\n" + "".join(f"{ids[i]},{int(merger[i])}\n" for i in pick)
                      + "not_in_survey,1\n")
    ft = FinetuneConfig(checkpoint=str(root / "pre"), labels=str(labels), out=str(root / "ft"), test_fraction=0,
                        progress=False)
    ft.data.path = str(first)
    ft.train.epochs = 10
    metrics = run_finetune(ft)
    return root, first, second, metrics, {ids[i] for i in pick}


def test_finetune_on_a_labels_csv_trains_on_every_label_and_cross_validates(workflow):
    root, first, _, metrics, picked = workflow
    assert metrics["n_train"] == len(picked) >= 16 and metrics["n_test"] == 0 and metrics["test"]["both"] == {}
    assert 0 <= metrics["cross_validated"]["roc_auc"] <= 1 and metrics["cross_validated"]["n"] == len(picked)
    rows = list(csv.DictReader(open(root / "ft" / "predictions.csv")))
    assert len(rows) == 60 and all(r["p_merger"] for r in rows)  # every row of the dataset
    train = {r["object_id"] for r in rows if r["split"] == "train"}
    assert train == picked and {r["split"] for r in rows} == {"train", "unlabeled"}


def test_predict_on_a_second_survey_gives_one_row_per_object(workflow):
    root, _, second, _, _ = workflow
    summary = run_predict(PredictConfig(model=str(root / "ft"), data=_data(second), out=str(root / "pred"),
                                        progress=False))
    rows = list(csv.DictReader(open(root / "pred" / "predictions.csv")))
    ids = list(SurveyDataset(str(second)).column("object_id").astype(str))
    assert [r["object_id"] for r in rows] == ids and summary["n"] == 25
    p = np.array([float(r["p_merger"]) for r in rows])
    thr = json.loads((root / "ft" / "head.json").read_text())["threshold"]
    assert np.all((p >= 0) & (p <= 1)) and np.allclose([float(r["threshold"]) for r in rows], thr)
    assert [int(r["predicted"]) for r in rows] == list((p >= thr).astype(int))
    assert {"ood", "knn_distance_image", "has_spectrum"} <= set(rows[0])


def test_predict_refuses_a_survey_with_other_bands(workflow):
    root, *_ = workflow
    other = _survey(root / "s3", 6, 3, bands=("u", "g", "r", "i"))  # four bands, but not the same four
    with pytest.raises(InputFileError, match=r"trained on bands \['g', 'r', 'i', 'z'\], the dataset has \['u', 'g'"):
        run_predict(PredictConfig(model=str(root / "ft"), data=_data(other), out=str(root / "bad"), progress=False))


def test_unknown_label_ids_only_is_one_error(workflow, tmp_path):
    root, first, *_ = workflow
    bad = tmp_path / "labels.csv"
    bad.write_text("object_id,merger\nnope1,1\nnope2,0\n")
    ft = FinetuneConfig(checkpoint=str(root / "pre"), labels=str(bad), out=str(tmp_path / "ft"), progress=False)
    ft.data.path = str(first)
    with pytest.raises(InputFileError, match="none of its 2 object ids"):
        run_finetune(ft)


def _data(path: Path):
    from galclip.data.dataset import DataConfig

    return DataConfig(path=str(path))


def test_self_trained_student_is_saved_and_applied_to_new_samples(workflow, tmp_path):
    """The student's own encoder (view-averaged) travels with the head: predict uses it, and
    on the training survey it reproduces finetune's own probabilities."""
    from galclip.models.checkpoint import read_model_meta

    root, first, second, _, _ = workflow
    ft = FinetuneConfig(checkpoint=str(root / "pre"), labels=str(root / "my_labels.csv"), out=str(tmp_path / "st"),
                        test_fraction=0, progress=False)
    ft.data.path = str(first)
    ft.train.epochs = 10
    ft.self_train.enabled, ft.self_train.prior = True, 0.1
    ft.self_train.epochs, ft.self_train.min_steps, ft.self_train.batch_size = 1, 3, 8
    ft.self_train.rounds = 2  # the first student teaches the second
    metrics = run_finetune(ft)
    assert "cross_validated" in metrics["teacher"] and "cross_validated" not in metrics
    assert read_model_meta(tmp_path / "st" / "encoder")["model_config"]["image"]["eval_views"] == 8
    rows = list(csv.DictReader(open(tmp_path / "st" / "predictions.csv")))
    student = np.array([float(r["p_merger"]) for r in rows])
    teacher = np.array([float(r["p_merger_teacher"]) for r in rows])
    assert not np.allclose(student, teacher)  # the student moved away from its teacher
    again = run_predict(PredictConfig(model=str(tmp_path / "st"), data=_data(first), out=str(tmp_path / "p1"),
                                      progress=False))
    pred = np.array([float(r["p_merger"]) for r in csv.DictReader(open(tmp_path / "p1" / "predictions.csv"))])
    np.testing.assert_allclose(pred, student, atol=1e-5)
    assert again["checkpoint_sha256"] != json.loads((root / "ft" / "head.json").read_text())["checkpoint_sha256"]
    new = run_predict(PredictConfig(model=str(tmp_path / "st"), data=_data(second), out=str(tmp_path / "p2"),
                                    progress=False))
    assert new["n"] == 25 and new["checkpoint_sha256"] == again["checkpoint_sha256"]
