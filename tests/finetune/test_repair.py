"""Flagged statmorph fits: their statistics estimated from the image representation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from galclip.finetune.repair import RepairConfig, StatisticRepair, statmorph_columns

NAMES = ["asymmetry", "gini", "n_companions", "mass"]


def _data(n: int = 200, seed: int = 0):
    """Statistics that follow the representation linearly; flagged rows measured as garbage."""
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(n, 8))
    truth = np.c_[vec[:, :2] @ [[1.0, 0.5], [-0.5, 1.0]], rng.normal(size=(n, 2))]
    flag = (rng.random(n) < 0.3).astype(float) * rng.integers(1, 3, n)
    tab = truth + rng.normal(0, 0.05, truth.shape)
    tab[flag >= 1, :2] = rng.normal(0, 5, (int((flag >= 1).sum()), 2))
    return vec, tab, truth, flag


def test_only_statmorph_outputs_are_repaired():
    names = ["asymmetry", "flag", "n_companions", "companion_flux_ratio", "mass", "deviation"]
    assert statmorph_columns(names) == [0, 5]


def test_flagged_statistics_are_replaced_by_the_representation_estimate():
    vec, tab, truth, flag = _data()
    repair = StatisticRepair.fit(vec, tab, NAMES, flag, np.arange(150), RepairConfig())
    fixed = repair.apply(vec, tab, NAMES, flag)
    bad = flag >= 1
    assert repair.columns == ["asymmetry", "gini"]
    assert np.abs(fixed[bad, :2] - truth[bad, :2]).mean() < 0.1 < np.abs(tab[bad, :2] - truth[bad, :2]).mean()
    assert np.array_equal(fixed[~bad], tab[~bad])  # good fits are kept as measured
    assert np.array_equal(fixed[:, 2:], tab[:, 2:])  # companions and catalogue columns untouched


def test_min_flag_two_keeps_warnings_as_measured():
    vec, tab, _, flag = _data()
    repair = StatisticRepair.fit(vec, tab, NAMES, flag, np.arange(200), RepairConfig(min_flag=2))
    fixed = repair.apply(vec, tab, NAMES, flag)
    assert np.array_equal(fixed[flag < 2], tab[flag < 2]) and not np.array_equal(fixed[flag == 2], tab[flag == 2])


def test_no_repair_without_flags_when_disabled_or_with_too_few_good_fits():
    vec, tab, _, flag = _data()
    assert StatisticRepair.fit(vec, tab, NAMES, None, np.arange(200), RepairConfig()) is None
    assert StatisticRepair.fit(vec, tab, NAMES, flag, np.arange(200), RepairConfig(enabled=False)) is None
    assert StatisticRepair.fit(vec, tab, NAMES, flag, np.arange(12), RepairConfig()) is None
    assert StatisticRepair.fit(vec, tab, ["mass"], flag, np.arange(200), RepairConfig()) is None


def test_a_repair_survives_its_json_round_trip():
    vec, tab, _, flag = _data()
    repair = StatisticRepair.fit(vec, tab, NAMES, flag, np.arange(200), RepairConfig())
    again = StatisticRepair.from_dict(json.loads(json.dumps(repair.to_dict())))
    assert np.allclose(again.apply(vec, tab, NAMES, flag), repair.apply(vec, tab, NAMES, flag))


@pytest.fixture(scope="module")
def flagged_survey(tmp_path_factory):
    """60 image-only galaxies storing four statmorph statistics and their flag (a third flagged)."""
    from galclip.data.shards import ShardWriter

    root = tmp_path_factory.mktemp("flagged")
    rng = np.random.default_rng(1)
    cols = ["morph_asymmetry", "morph_gini", "morph_m20", "morph_concentration", "morph_flag"]
    w = ShardWriter(root / "s", ["g", "r"], 32, None, label_columns=["merger"], tabular_columns=cols,
                    shard_size=50, provenance={"source": "test"})
    for i in range(60):
        img = rng.normal(0, 1, (2, 32, 32)).astype(np.float32)
        img[:, 10:22, 10 + i % 4:18 + i % 4] += 3 + i % 5
        stats = dict(zip(cols[:4], rng.normal(size=4)))
        w.add(dict(object_id=f"f{i}", ra=1.0, dec=2.0, z=0.1, image_array=img, image_ivar=np.ones_like(img),
                   has_spectrum=False, merger=i % 3 == 0, tabular={**stats, "morph_flag": float(i % 3 == 1)}))
    w.close()
    return root


def test_finetune_stores_the_repair_and_predict_applies_it(flagged_survey):
    from galclip.finetune.predict import PredictConfig, run_predict
    from galclip.finetune.train import FinetuneConfig, run_finetune
    from galclip.pretrain.train import PretrainConfig, run_pretrain

    root = flagged_survey
    pre = PretrainConfig(model="tiny", out=str(root / "pre"), progress=False, seed=0)
    pre.data.path = str(root / "s")
    pre.data.image.size = 32
    pre.train.steps, pre.train.batch_size, pre.train.val_fraction = 2, 16, 0.2
    run_pretrain(pre)
    ft = FinetuneConfig(checkpoint=str(root / "pre"), out=str(root / "ft"), test_fraction=0.25, progress=False)
    ft.data.path = str(root / "s")
    ft.head.tabular = "linear"  # configs/finetune.yaml's choice: the statistics are head inputs
    run_finetune(ft)
    meta = json.loads((root / "ft" / "head.json").read_text())
    assert sorted(meta["tabular_repair"]["columns"]) == ["asymmetry", "concentration", "gini", "m20"]
    trained = list(csv.DictReader(open(root / "ft" / "predictions.csv")))
    assert [r["statistics_repaired"] for r in trained] == [str(i % 3 == 1) for i in range(60)]
    pred = PredictConfig(model=str(root / "ft"), out=str(root / "pred"), progress=False)
    pred.data.path = str(root / "s")
    run_predict(pred)
    rows = list(csv.DictReader(open(root / "pred" / "predictions.csv")))
    assert [r["statistics_repaired"] for r in rows] == [str(i % 3 == 1) for i in range(60)]


def test_an_object_without_an_image_has_no_morphology_statistics():
    from galclip.finetune.tabular_inputs import image_blind

    tab = np.arange(12, dtype=np.float32).reshape(3, 4)
    blind = image_blind(tab, ["asymmetry", "mass", "n_companions", "redshift"])
    assert np.isnan(blind[:, [0, 2]]).all() and np.array_equal(blind[:, [1, 3]], tab[:, [1, 3]])
    assert np.isfinite(tab).all()  # the caller's statistics are untouched
