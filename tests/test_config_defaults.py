"""Overriding one key of a nested config keeps the parent's other defaults for it."""
from __future__ import annotations

import dataclasses

from galclip.config import load_config


@dataclasses.dataclass
class Inner:
    n: int = 10000
    flag: bool = True


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=lambda: Inner(n=2000))
    other: Inner = dataclasses.field(default_factory=Inner)


def test_partial_override_keeps_parent_default() -> None:
    cfg = load_config(Outer, None, ["inner.flag=false"])
    assert cfg.inner.n == 2000 and cfg.inner.flag is False
    assert cfg.other.n == 10000


def test_demo_keeps_its_small_survey_when_one_key_changes() -> None:
    from galclip.demo import DemoConfig

    cfg = load_config(DemoConfig, None, ["simulate.progress=false", "pretrain.progress=false"])
    assert cfg.simulate.n == DemoConfig().simulate.n
    assert cfg.pretrain.train.steps == DemoConfig().pretrain.train.steps
