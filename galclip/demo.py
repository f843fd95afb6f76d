"""``galclip demo``: the whole pipeline on the embedded simulated survey, in one command.

simulate → pretrain → embed → fine-tune → evaluate → index → candidates → report, each
stage called through its own library function with its own config, so the demo is also
the reference for chaining stages in a notebook. Sizes default to a ~5-minute run on
2 CPU cores; every stage config is reachable by dotted overrides
(``galclip demo simulate.n=20000 pretrain.train.steps=5000``) so the same pipeline scales.
Stages whose outputs already exist are re-used, so an interrupted demo resumes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from galclip.config import dump_yaml
from galclip.data.dataset import DataConfig
from galclip.data.morphology import MorphologyOptions
from galclip.data.sim.survey import SimulateConfig, run_simulate
from galclip.finetune.evaluate import EvaluateConfig, run_evaluate
from galclip.finetune.train import FinetuneConfig, run_finetune
from galclip.models import DEFAULT_MODEL
from galclip.pretrain.train import PretrainConfig, TrainConfig, run_pretrain
from galclip.report import ReportConfig, run_report
from galclip.retrieval.candidates import CandidatesConfig, run_candidates
from galclip.retrieval.index import IndexConfig, run_index
from galclip.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STAGES = ("simulate", "pretrain", "embed", "finetune", "evaluate", "index", "candidates", "report")


def _sim() -> SimulateConfig:
    # the deep preset: at SDSS depth the tidal features of most mergers are below the noise
    # (README "The simulated survey"; its measured ceiling is the deep preset's); the
    # morphology is measured while simulating, binned to 32 px without MID (~0.08 CPU-s/galaxy),
    # so pretraining can regress it and the classical baseline can use it
    return SimulateConfig(n=1500, seed=0, survey="deep", morphology=True, morph=MorphologyOptions(size=32, mid=False))


def _pretrain() -> PretrainConfig:
    # the default recipe (small-cnn with the rotational-residual input, CLIP + morphology and
    # structure-profile regression) cut to 200 steps; at that
    # length a 3x learning rate and morphology weight learn the most merger structure without
    # losing the cross-modal alignment (benchmarks/results/representation_demo_probe*.json)
    cfg = PretrainConfig(model=DEFAULT_MODEL, train=TrainConfig(steps=200, batch_size=128, checkpoint_every=100,
                                                                val_every=0))
    cfg.optim.lr = 3e-3
    cfg.loss.morph_weight = 3.0
    cfg.data.spectrum.downsample = 2
    return cfg


def _finetune() -> FinetuneConfig:
    return FinetuneConfig(n_labels=100)


def _evaluate() -> EvaluateConfig:
    # the full comparison (CNN from scratch, 1000 labels, more seeds) is
    # benchmarks/bench_label_budget.py; the demo runs the quick rows (spectrum-only inference
    # is the fusion head's galclip_fusion@spectrum_only row: no separate spectrum head to train);
    # asymmetry_only is the zero-label line every few-label method has to clear
    return EvaluateConfig(budgets=[30, 100, 300], seeds=[0, 1, 2],
                          methods=["galclip_fusion", "galclip_fusion_morph", "galclip_image_probe",
                                   "morphology_lr", "asymmetry_only", "random_init"])


@dataclasses.dataclass
class DemoConfig:
    """Quickstart configuration.

    Attributes:
        out: run folder (survey, checkpoint, metrics, plots, tables, report.html).
        stages: stages to run, in pipeline order (drop some to skip them).
        simulate, pretrain, finetune, evaluate, index, candidates, report: stage configs;
            their input/output paths are filled in by the demo.
    """

    out: str = "runs/demo"
    stages: list[str] = dataclasses.field(default_factory=lambda: list(STAGES))
    simulate: SimulateConfig = dataclasses.field(default_factory=_sim)
    pretrain: PretrainConfig = dataclasses.field(default_factory=_pretrain)
    finetune: FinetuneConfig = dataclasses.field(default_factory=_finetune)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=_evaluate)
    index: IndexConfig = dataclasses.field(default_factory=IndexConfig)
    # known mergers are drawn from the simulator's ground truth (the rest is ranked blind) and
    # the ranking's precision, over 10 draws, is reported in candidates/summary.json
    candidates: CandidatesConfig = dataclasses.field(
        default_factory=lambda: CandidatesConfig(from_label="merger", n_known=10, repeats=10))
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)


def _wire(cfg: DemoConfig) -> None:
    """Point every stage at the run folder (inputs of one stage = outputs of the last)."""
    out = Path(cfg.out)
    survey = str(out / "survey")
    cfg.simulate.out = survey
    for stage in (cfg.pretrain, cfg.finetune, cfg.evaluate, cfg.index):
        stage.data.path = survey
    ckpt = str(out / "pretrain")
    cfg.pretrain.out = ckpt
    cfg.finetune.checkpoint = cfg.evaluate.checkpoint = cfg.index.checkpoint = ckpt
    cfg.finetune.out = str(out / "finetune")
    cfg.evaluate.out = str(out / "evaluate")
    cfg.index.out = str(out / "index")
    cfg.index.embeddings = str(out / "embeddings.h5")
    cfg.index.overwrite = True
    cfg.candidates.index = cfg.index.out
    cfg.candidates.out = str(out / "candidates")
    cfg.candidates.dataset = survey
    cfg.report.run = str(out)


def _embed(cfg: DemoConfig) -> Path:
    """Embed the survey with the pretrained model (image, spectrum, joint): ``galclip embed``."""
    from galclip.pretrain.embed import EmbedConfig, run_embed

    return run_embed(EmbedConfig(data=DataConfig(path=cfg.simulate.out), checkpoint=cfg.pretrain.out,
                                 out=cfg.index.embeddings))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the quickstart; returns a summary (also ``<out>/summary.json``)."""
    _wire(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "demo_config.yaml", dump_yaml(cfg))
    unknown = sorted(set(cfg.stages) - set(STAGES))
    if unknown:
        from galclip.errors import ConfigError

        raise ConfigError(f"unknown demo stage {unknown[0]} (stages: {', '.join(STAGES)})")
    # a partial re-run (``stages=[...]``) keeps the timings of the stages it did not run
    old = out / "timings.json"
    timings: dict[str, float] = json.loads(old.read_text()) if old.exists() else {}
    summary: dict[str, Any] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        if name not in cfg.stages:
            return None
        log.info("=== demo stage %d/%d: %s ===", STAGES.index(name) + 1, len(STAGES), name)
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        atomic_write_json(out / "timings.json", timings)
        return result

    survey_done = (Path(cfg.simulate.out) / "manifest.json").exists()
    if survey_done:
        cfg.simulate.resume = True
    stage("simulate", lambda: run_simulate(cfg.simulate))
    summary["pretrain"] = stage("pretrain", lambda: run_pretrain(cfg.pretrain))
    stage("embed", lambda: _embed(cfg))
    summary["finetune"] = stage("finetune", lambda: run_finetune(cfg.finetune))
    stage("evaluate", lambda: run_evaluate(cfg.evaluate))
    stage("index", lambda: run_index(cfg.index))
    stage("candidates", lambda: run_candidates(cfg.candidates))
    cand_summary = Path(cfg.candidates.out) / "summary.json"
    if cand_summary.exists():
        cand = json.loads(cand_summary.read_text())
        summary["candidates"] = cand.get("precision_at_draws", cand.get("precision_at", {}))
    stage("report", lambda: run_report(cfg.report))
    summary["timings_s"] = timings
    summary["total_s"] = round(sum(timings.values()), 1)  # every stage's latest run
    atomic_write_json(out / "summary.json", summary)
    log.info("demo finished in %.0f s: open %s", summary["total_s"], out / "report.html")
    return summary
