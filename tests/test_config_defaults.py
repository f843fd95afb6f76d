"""Overriding one key of a nested config keeps the parent's other defaults for it; a stage's
dataclass defaults are the recipe its ``configs/<stage>.yaml`` documents."""
from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

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


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: Keys where a stage's YAML deliberately differs from its dataclass default (output paths;
#: pretrain.yaml's survey augmentation, which the 200-step demo does without).
INTENDED = {"ingest": {"out"}, "pretrain": {"augment.image_noise", "augment.psf_sigma"}}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


@pytest.mark.parametrize("stage", ["simulate", "ingest", "pretrain", "embed", "finetune", "predict", "evaluate",
                                   "index", "search", "label", "candidates"])
def test_stage_defaults_are_the_recipe_of_its_config_file(stage: str) -> None:
    """A library user calling ``run_<stage>(Config())`` gets what the CLI's config file runs
    (the finetune head once defaulted to the embeddings alone, the YAML to + statistics)."""
    from galclip.cli import COMMANDS

    module, cls, _ = COMMANDS[stage].target.split(":")
    defaults = _flat(dataclasses.asdict(getattr(importlib.import_module(module), cls)()))
    written = _flat(yaml.safe_load((CONFIGS / f"{stage}.yaml").read_text()) or {})
    differ = {k for k, v in written.items() if k in defaults and not _same(defaults[k], v)}
    assert differ == INTENDED.get(stage, set())
