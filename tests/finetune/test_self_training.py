"""Self-training's pieces: the prior shift, the soft targets, the student's threshold."""
from __future__ import annotations

import numpy as np
import pytest

from galclip.config import load_config
from galclip.finetune.self_training import SelfTrainConfig, move_to_prior, soft_targets, student_threshold


def test_move_to_prior_rescales_odds_and_keeps_the_order():
    p = np.array([0.1, 0.5, 0.9])
    q = move_to_prior(p, 0.5, 0.1)
    assert q[1] == pytest.approx(0.1)  # undecided at 50 % reads as the survey's fraction
    assert q[2] == pytest.approx(0.5)  # odds 9 × 1/9
    assert np.all(np.diff(q) > 0) and np.all(q < p)
    np.testing.assert_allclose(move_to_prior(p, 0.3, 0.3), p)


def test_soft_targets_keep_true_labels_and_shift_the_rest():
    y = np.array([1, 0, 1, 0, np.nan, np.nan, np.nan, 0])
    p = np.full(8, 0.5)
    has = np.array([True] * 6 + [False, True])  # row 6 has no image: nothing to learn from
    train = np.array([0, 1, 2, 3])
    rows, t, lab = soft_targets(p, y, train, has, SelfTrainConfig(prior=0.05), balanced=True)
    assert list(rows) == [0, 1, 2, 3, 4, 5, 7]
    np.testing.assert_allclose(t[:4], [1, 0, 1, 0])
    np.testing.assert_allclose(t[4:], 0.05, rtol=1e-5)
    assert lab.tolist() == [True] * 4 + [False] * 3
    # prior 0: the labels' own fraction (here 50 %, a balanced draw: warned, not refused)
    _, t0, _ = soft_targets(p, y, train, has, SelfTrainConfig(prior=0.0), balanced=True)
    np.testing.assert_allclose(t0[4:], 0.5, rtol=1e-5)
    rows, _, _ = soft_targets(p, y, train, has, SelfTrainConfig(prior=0.1, max_rows=2), balanced=True)
    assert len(rows) == 6 and set(rows[:4]) == set(train)


def test_student_threshold_flags_as_many_as_the_teacher():
    rng = np.random.default_rng(0)
    teacher, student = rng.uniform(size=1000), rng.uniform(size=1000) ** 3
    rows = np.arange(1000)
    thr = student_threshold(teacher, student, rows, 0.8)
    assert np.mean(student >= thr) == pytest.approx(np.mean(teacher >= 0.8), abs=0.002)
    assert student_threshold(teacher, student, rows, float("nan")) == 0.5


def test_self_train_refuses_what_it_cannot_teach():
    from galclip.errors import ConfigError
    from galclip.finetune.train import FinetuneConfig

    for bad in (["unfreeze_blocks=1"], ["label=merger_stage"], ["head.kind=metric"]):
        with pytest.raises(ConfigError, match="self_train"):
            load_config(FinetuneConfig, None, ["self_train.enabled=true", *bad])
    with pytest.raises(ConfigError, match="prior"):
        load_config(FinetuneConfig, None, ["self_train.prior=1.5"])
