"""``galclip`` command line: parse a YAML config plus dotted overrides, call the library.

Every subcommand is ``galclip STAGE [--config configs/STAGE.yaml] [key.sub=value ...]``;
a few frequent options have short flags (``--out``, ``--n``, ...) that are just aliases
for dotted keys. The CLI holds no logic of its own: each stage is a library function that
takes one config dataclass (listed in :data:`COMMANDS`).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from galclip.config import dump_yaml, load_config
from galclip.errors import GalclipError


@dataclass(frozen=True)
class Command:
    """A CLI stage: ``target`` is ``"module:ConfigClass:function"``."""

    target: str
    help: str
    aliases: dict[str, str] = field(default_factory=dict)  # --flag → dotted key
    switches: dict[str, str] = field(default_factory=dict)  # --flag (no value) → dotted key set true


COMMANDS: dict[str, Command] = {
    "simulate": Command("galclip.data.sim.survey:SimulateConfig:run_simulate",
                        "simulate a paired image+spectrum survey with merger stages",
                        {"--n": "n", "--out": "out", "--seed": "seed"}, {"--preview": "preview"}),
    "ingest": Command("galclip.data.ingest:IngestConfig:run_ingest",
                      "build a dataset from real FITS/JPEG images, spectra and catalogues",
                      {"--out": "out"}),
    "crossmatch": Command("galclip.data.crossmatch:CrossmatchConfig:run_crossmatch",
                          "join a catalogue to a dataset by id or sky position", {"--out": "out"}),
    "pretrain": Command("galclip.pretrain.train:PretrainConfig:run_pretrain",
                        "contrastive image-spectrum pretraining (PyTorch Lightning)",
                        {"--data": "data.path", "--out": "out", "--model": "model"}),
    "embed": Command("galclip.pretrain.embed:EmbedConfig:run_embed",
                     "write image/spectrum/joint embeddings keyed by object id",
                     {"--data": "data.path", "--checkpoint": "checkpoint", "--out": "out"}),
    "finetune": Command("galclip.finetune.train:FinetuneConfig:run_finetune",
                        "train a fusion head for merger classification on few labels",
                        {"--data": "data.path", "--checkpoint": "checkpoint", "--out": "out", "--labels": "labels"}),
    "predict": Command("galclip.finetune.predict:PredictConfig:run_predict",
                       "apply a fine-tuned head to new samples (p_merger, decision, out-of-distribution flag)",
                       {"--model": "model", "--data": "data.path", "--out": "out"}),
    "evaluate": Command("galclip.finetune.evaluate:EvaluateConfig:run_evaluate",
                        "label-budget evaluation of galclip against baselines",
                        {"--data": "data.path", "--checkpoint": "checkpoint", "--out": "out"}),
    "index": Command("galclip.retrieval.index:IndexConfig:run_index",
                     "build a FAISS index over embeddings",
                     {"--data": "data.path", "--checkpoint": "checkpoint", "--out": "out"}),
    "search": Command("galclip.retrieval.search:SearchConfig:run_search",
                      "similarity search by object id, image file or spectrum file",
                      {"--index": "index", "--out": "out", "--id": "object_id", "--image": "image_file",
                       "--spectrum": "spectrum_file", "--k": "k"}),
    "label": Command("galclip.retrieval.label:LabelConfig:run_label",
                     "few-shot labeling of new samples from a small labeled set",
                     {"--index": "index", "--out": "out"}),
    "candidates": Command("galclip.retrieval.candidates:CandidatesConfig:run_candidates",
                          "rank merger candidates by similarity to known mergers",
                          {"--index": "index", "--out": "out"}),
    "report": Command("galclip.report:ReportConfig:run_report",
                      "HTML/PNG report of a run folder", {"--run": "run", "--out": "out"}),
    "demo": Command("galclip.demo:DemoConfig:run_demo",
                    "quickstart: simulate → pretrain → finetune → evaluate → index → candidates → report",
                    {"--out": "out"}),
}


def _resolve(target: str) -> tuple[type, Callable[[Any], Any]]:
    mod_name, cls_name, fn_name = target.split(":")
    mod = importlib.import_module(mod_name)
    return getattr(mod, cls_name), getattr(mod, fn_name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galclip", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.add_argument("--config", type=Path, help="YAML config (see configs/)")
        p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
        for flag, key in cmd.aliases.items():
            p.add_argument(flag, dest=f"alias:{key}", metavar=key.split(".")[-1].upper(), help=f"same as {key}=…")
        for flag, key in cmd.switches.items():
            p.add_argument(flag, dest=f"switch:{key}", action="store_true", help=f"same as {key}=true")
        p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # overrides may come before, between or after options: argparse fills the positional
    # list only once, so collect stray ``key=value`` words ourselves
    args, extra = parser.parse_known_args(argv)
    stray = [w for w in extra if w.startswith("-") or "=" not in w]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if getattr(args, "overrides", None) is not None:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not args.command:
        parser.print_help()
        return 2
    cmd = COMMANDS[args.command]
    overrides = list(args.overrides)
    for dest, value in vars(args).items():
        if dest.startswith("alias:") and value is not None:
            overrides.append(f"{dest[6:]}={value}")
        elif dest.startswith("switch:") and value:
            overrides.append(f"{dest[7:]}=true")
    try:
        cfg_cls, fn = _resolve(cmd.target)
        cfg = load_config(cfg_cls, args.config, overrides)
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return 0
        fn(cfg)
    except GalclipError as exc:
        print(f"galclip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"galclip {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
