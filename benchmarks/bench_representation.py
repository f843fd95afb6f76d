"""Which pretraining recipe puts merger morphology into the embedding (issue 13 ablation).

    .venv/bin/galclip ingest --config configs/ingest_sdss_jpeg.yaml out=data/sdss_jpeg      # unlabeled GZ2
    .venv/bin/galclip ingest --config configs/ingest_gz1.yaml out=data/gz1_dev              # labelled GZ1
    .venv/bin/python benchmarks/bench_representation.py --pretrain-data data/sdss_jpeg --eval-data data/gz1_dev \\
        --name gz1 --variants random,vit_ssl,cnn_ssl,cnn_morph,cnn_ssl_morph,recipe --steps 300
    .venv/bin/python benchmarks/bench_representation.py ... --variants recipe --steps 1400   # the shipped length

Every variant is a real ``galclip pretrain --config configs/pretrain_image_only.yaml`` plus its
overrides (:data:`VARIANTS`), on the *unlabeled* survey; its checkpoint then embeds the
labelled survey with ``galclip embed``'s code, and the few-label stages run on the vectors:

* ``head_auc_<n>``: galclip's few-label head (``galclip_image`` of ``galclip evaluate``:
  the late-fusion head on the image vector) trained on n mergers + n non-mergers;
* ``fused_auc_<n>``: the same head + the morphology statistics (``galclip_image_tabular``; flagged
  statmorph fits repaired from the representation as ``galclip evaluate`` does, ``--no-repair``: as measured);
* ``probe_auc_<n>``: a linear probe on the same vector (class-balanced logistic regression, C = 1);
* ``metric_auc_<n>``: the metric-learning head (``galclip_image_metric``);
* ``morph_lr_auc_<n>``: the classical reference, statistics + logistic regression;
* ``zero_auc_<n>``: ranking by rotational asymmetry alone, no labels (``asymmetry_only``);
* ``<head>_minus_morph_<n>`` (``_ci95``, ``<head>_ahead_of_morph_<n>``): each head minus that
  reference on the same draws, with a bootstrap interval over the draws;
* ``knn_bacc_10``: ``galclip label``'s weighted kNN with 10 labelled galaxies per class,
  balanced accuracy over the rest;
* ``cand_p20``: ``galclip candidates``' score from 10 known mergers, precision of the top 20
  against the base rate of the ranked rest (``cand_base_rate``);
* ``p_at_1``, ``map_at_r`` (merger/non-merger retrieval, PML ``AccuracyCalculator``) when available.

Each is measured on the projection output (``vector=embedding``, the CLIP space) and on the
standardised pooled features (``vector=representation``, what galclip stores as
``image_features``). Fixed split, documented: ``numpy.random.default_rng(s)`` permutes the
merger and the non-merger rows (dataset order); the first n of each train, every other
galaxy is the test set, s = 0..seeds-1 (as ``bench_morphology_gz1.py``). ``--budgets all``
(keys ``*_all``): every label but one fold's, repeated stratified 5-fold cross-validation.
Writes ``benchmarks/results/representation_<name>.json`` (merged with earlier variants).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galclip.config import load_config  # noqa: E402
from galclip.data.dataset import DataConfig  # noqa: E402
from galclip.encode import embed_checkpoint, fit_representation  # noqa: E402
from galclip.data.morphology import morphology_columns, morphology_flag  # noqa: E402
from galclip.finetune.features import load_batches  # noqa: E402
from galclip.finetune.baselines import morphology_lr  # noqa: E402
from galclip.finetune.evaluate import EvaluateConfig  # noqa: E402
from galclip.finetune.methods import METHODS, Bench  # noqa: E402
from galclip.finetune.repair import StatisticRepair  # noqa: E402
from galclip.finetune.tabular_inputs import build_tabular  # noqa: E402
from galclip.models.checkpoint import save_checkpoint  # noqa: E402
from galclip.models.galclip import build_model  # noqa: E402
from galclip.pretrain.train import PretrainConfig, resolve_model_config, run_pretrain  # noqa: E402
from galclip.retrieval.candidates import score_block  # noqa: E402
from galclip.retrieval.fewshot import knn_proba  # noqa: E402

#: variant → (config file, overrides). ``random`` is the recipe's model, untrained.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "random": ("configs/pretrain_image_only.yaml", ["train.steps=0"]),
    # the starting point: 3-block ViT, SimCLR only, no morphology term
    "vit_ssl": ("configs/pretrain_image_only.yaml", ["model=small", "loss.morph_weight=0", "loss.ssl_image_weight=1",
                                                     "augment.psf_sigma=0", "augment.image_noise=0.5", "optim.lr=0.001"]),
    "cnn_ssl": ("configs/pretrain_image_only.yaml", ["loss.morph_weight=0", "loss.ssl_image_weight=1",
                                                     "augment.psf_sigma=0", "augment.image_noise=0.5"]),
    "cnn_ssl_morph": ("configs/pretrain_image_only.yaml", ["loss.ssl_image_weight=1"]),
    "cnn_morph_ssl0.1": ("configs/pretrain_image_only.yaml", ["loss.ssl_image_weight=0.1"]),
    "cnn_morph_noaug": ("configs/pretrain_image_only.yaml", ["augment.psf_sigma=0", "augment.image_noise=0.5"]),
    "vit_morph": ("configs/pretrain_image_only.yaml", ["model=small", "optim.lr=0.001"]),
    "recipe": ("configs/pretrain_image_only.yaml", []),  # ResNet-10t, morphology + profile targets, PSF + depth aug
    # the recipe before the on-the-fly structure profiles (morphology statistics only)
    "recipe_noprof": ("configs/pretrain_image_only.yaml", ["loss.profile_weight=0"]),
    "recipe_prof_only": ("configs/pretrain_image_only.yaml", ["loss.morph_weight=0"]),
    # the rotational residual I - rot180(I) as extra input channels
    "recipe_resid": ("configs/pretrain_image_only.yaml", ["model_options.image.residual=true"]),
    "recipe_noresid": ("configs/pretrain_image_only.yaml", ["model_options.image.residual=false"]),
    # the statistics of fits statmorph flagged (1 warning, 2 failed step) left out of the regression
    "recipe_maskflag": ("configs/pretrain_image_only.yaml", ["model_options.image.residual=true",
                                                              "loss.morph_mask_flag=1"]),
    # a wider backbone: ResNet-18 (11 M weights) in place of ResNet-10t (5 M)
    "recipe_resnet18": ("configs/pretrain_image_only.yaml", ["model_options.image.residual=true",
                                                              "model_options.image.backbone=resnet18"]),
    # paired (image + spectrum) surveys: the previous default (ViT, CLIP only) and the new one
    "paired_vit_clip": ("configs/pretrain.yaml", ["model=small", "loss.morph_weight=0", "augment.psf_sigma=0",
                                                  "augment.image_noise=0.5"]),
    "paired_recipe": ("configs/pretrain.yaml", []),
    "paired_recipe_noprof": ("configs/pretrain.yaml", ["loss.profile_weight=0"]),
    "paired_recipe_resid": ("configs/pretrain.yaml", ["model_options.image.residual=true"]),
    "paired_recipe_noresid": ("configs/pretrain.yaml", ["model_options.image.residual=false"]),
    # the demo's pretraining budget (a few hundred steps): learning rate and morphology weight
    "paired_recipe_lr3": ("configs/pretrain.yaml", ["optim.lr=0.003"]),
    "paired_recipe_morph3": ("configs/pretrain.yaml", ["optim.lr=0.003", "loss.morph_weight=3"]),
    "paired_morph_only": ("configs/pretrain.yaml", ["optim.lr=0.003", "loss.clip_weight=0"]),
}


def pretrain(variant: str, data: str, out: Path, steps: int, extra: list[str], reuse: bool = False) -> tuple[Path, float]:
    """Run the variant's pretraining (or save the untrained model); returns (checkpoint, minutes)."""
    cfg_file, overrides = VARIANTS[variant]
    over = [f"data.path={data}", f"out={out}", "progress=false", "resume=never"] + overrides + extra
    if not any(o.startswith("train.steps=") for o in overrides):
        over.append(f"train.steps={steps}")
    cfg = load_config(PretrainConfig, ROOT / cfg_file, over)
    t0 = time.perf_counter()
    if reuse and (out / "model.safetensors").exists():  # re-measure a finished run without retraining it
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
        return out, metrics.get("fit_seconds", 0.0) / 60
    if cfg.train.steps == 0:
        from galclip.data.dataset import SurveyDataset

        ds = SurveyDataset(cfg.data)
        mcfg = resolve_model_config(cfg, ds.n_bands, cfg.data.image.size, ds.spectrum_length)
        torch.manual_seed(cfg.seed)
        model = build_model(mcfg)
        # read out like a pretrained model: standardiser + principal components of the
        # (unlabelled) pretraining survey's features, which pretraining tracks as it trains
        fit_representation(model, load_batches(ds, 128, False))
        save_checkpoint(model, mcfg, out, extra={"steps": 0, "preprocessing": {
            "image": dataclasses.asdict(cfg.data.image), "spectrum": dataclasses.asdict(cfg.data.spectrum)}})
    else:
        run_pretrain(cfg)
    return out, (time.perf_counter() - t0) / 60


def draws(y: np.ndarray, n: int, seeds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per seed: n + n labelled, everything else tested.

    ``n = 0`` ("all"): every label but one fold's, the ceiling a few-label budget approaches.
    Stratified 5-fold splits (scikit-learn, ``random_state`` = repeat), repeated until there
    are ``seeds`` folds; each fold is scored on its own rows."""
    if n <= 0:
        from sklearn.model_selection import StratifiedKFold

        folds = [(tr, te) for r in range(-(-seeds // 5))
                 for tr, te in StratifiedKFold(5, shuffle=True, random_state=r).split(np.zeros(len(y)), y)]
        return folds[:seeds]
    out = []
    for s in range(seeds):
        rng = np.random.default_rng(s)
        p, q = rng.permutation(np.flatnonzero(y == 1)), rng.permutation(np.flatnonzero(y == 0))
        tr = np.r_[p[:n], q[:n]]
        out.append((tr, np.setdiff1d(np.arange(len(y)), tr)))
    return out


HEADS = {"head": "galclip_image", "fused": "galclip_image_tabular", "metric": "galclip_image_metric",
         "fusion": "galclip_fusion", "zero": "asymmetry_only"}


def head_setup(vec: np.ndarray, spectrum: np.ndarray | None, y: np.ndarray, tab: np.ndarray, tab_names: list[str],
               head_kind: str = "linear", flag: np.ndarray | None = None) -> tuple[EvaluateConfig, dict, dict]:
    """(evaluate config, the ``Bench`` features, the repaired statistics) galclip's heads read.

    The repair is label-free, so it is fitted on every galaxy of the sample, as the statistics'
    scaler is here (the unlabelled survey an astronomer has); evaluate fits both on its
    non-test rows."""
    cfg = EvaluateConfig()
    cfg.head.kind = head_kind
    has_spec = np.zeros(len(y), bool) if spectrum is None else np.isfinite(spectrum).all(1)
    feats = {"image": np.nan_to_num(vec).astype(np.float32), "has_image": np.isfinite(vec).all(1),
             "spectrum": np.zeros((len(y), 1), np.float32) if spectrum is None else np.nan_to_num(spectrum),
             "has_spectrum": has_spec}
    repair = StatisticRepair.fit(feats["image"], tab, tab_names, flag, np.arange(len(y)), cfg.tabular.repair)
    repaired = {} if repair is None else {"pretrained": repair.apply(feats["image"], tab, tab_names, flag)}
    return cfg, feats, repaired


def head_aucs(vec: np.ndarray, spectrum: np.ndarray | None, y: np.ndarray, tab: np.ndarray, tab_names: list[str],
              n: int, seeds: int, heads: list[str], head_kind: str = "linear",
              flag: np.ndarray | None = None) -> dict[str, float]:
    """galclip's few-label heads (embedding only; + morphology) and morphology + LR, mean ROC AUC.

    With ``flag`` (statmorph's, per row) the heads that read the image get the statistics of
    flagged fits repaired from ``vec`` as ``galclip evaluate`` does; morphology + LR always reads
    the measured statistics."""
    cfg, feats, repaired = head_setup(vec, spectrum, y, tab, tab_names, head_kind, flag)
    morph_cols = morphology_columns(tab_names)
    res: dict[str, list[float]] = {k: [] for k in [*heads, "morph_lr"]}
    for tr, te in draws(y, n, seeds):
        bench = Bench(cfg, y, te, {"pretrained": feats}, tab, tab_names, morph_cols, repaired_tab=repaired)
        for key in heads:
            if key == "probe":  # the classical linear probe: class-balanced logistic regression, C = 1
                p, _ = morphology_lr(feats["image"][tr], y[tr], feats["image"][te], 1.0, cfg.train.cv_folds, seed=0)
                res[key].append(roc_auc_score(y[te], p))
                continue
            name = HEADS[key]
            if name in METHODS and METHODS[name].available(bench):
                _, scored = METHODS[name].run(bench, tr, 0)
                _, rows, p, _ = scored[0]
                res[key].append(roc_auc_score(y[rows], p))
        xm = tab[:, morph_cols]
        p, _ = morphology_lr(xm[tr], y[tr], xm[te], cfg.morph_lr_c, cfg.train.cv_folds, seed=0)
        res["morph_lr"].append(roc_auc_score(y[te], p))
    tag = n or "all"
    return {f"{k}_auc_{tag}": round(float(np.mean(v)), 4) for k, v in res.items() if v} | {
        f"{k}_auc_{tag}_std": round(float(np.std(v)), 4) for k, v in res.items() if v} | _margins(res, tag)


def _margins(res: dict[str, list[float]], n: int | str) -> dict[str, object]:
    """Each head minus morphology + LR on the same draws: mean, bootstrap 95 % interval over
    the draws, fraction of draws ahead. The draws share one sample of galaxies, so the
    interval is how well the draws pin the mean down on *this* sample, not across samples."""
    out: dict[str, object] = {}
    ref = np.asarray(res["morph_lr"])
    for k, v in res.items():
        if k == "morph_lr" or len(v) != ref.size or not v:
            continue
        mean, ci, ahead = paired_difference(np.asarray(v), ref)
        out[f"{k}_minus_morph_{n}"], out[f"{k}_minus_morph_{n}_ci95"], out[f"{k}_ahead_of_morph_{n}"] = mean, ci, ahead
    return out


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, list[float], float]:
    """Mean of ``a - b`` over draws, its bootstrap 95 % interval over the draws, and the fraction
    of draws where ``a`` is ahead."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    boot = np.random.default_rng(0).choice(diff, (5000, diff.size)).mean(1)
    return (round(float(diff.mean()), 4), [round(float(q), 4) for q in np.percentile(boot, [2.5, 97.5])],
            round(float((diff > 0).mean()), 3))


def knn_and_candidates(vec: np.ndarray, y: np.ndarray, seeds: int) -> dict[str, float]:
    """``galclip label`` kNN (10 per class) balanced accuracy; ``galclip candidates`` precision@20."""
    ok = np.isfinite(vec).all(1)
    bacc, p20, base = [], [], []
    for tr, te in draws(y, 10, seeds):
        tr, te = tr[ok[tr]], te[ok[te]]
        prob = knn_proba(vec[tr], y[tr], vec[te], 2)
        bacc.append(balanced_accuracy_score(y[te], prob.argmax(1)))
        known = tr[y[tr] == 1]
        rest = np.setdiff1d(np.flatnonzero(ok), known)
        score = score_block(vec[rest], vec[known], None, 3, 1.0)[0]
        top = rest[np.lexsort((rest, -score))[:20]]
        p20.append(y[top].mean())
        base.append(y[rest].mean())
    out = {"knn_bacc_10": round(float(np.mean(bacc)), 4), "cand_p20": round(float(np.mean(p20)), 4),
           "cand_base_rate": round(float(np.mean(base)), 4)}
    try:  # PML AccuracyCalculator (merger / non-merger retrieval), where the package provides it
        from galclip.retrieval.metrics import retrieval_accuracy  # type: ignore[attr-defined]

        out.update({k: round(float(v), 4) for k, v in retrieval_accuracy(vec[ok], y[ok]).items()})
    except ImportError:
        pass
    return out


def evaluate(ckpt: Path | list[Path], data: str, label: str, seeds: int, budgets: list[int],
             vectors: list[str], heads: list[str], head_kind: str = "linear", repair: bool = True) -> dict[str, dict]:
    """Scores of one checkpoint's vectors, or (a list) of several checkpoints' side by side: each
    one's unit vector, concatenated and divided by sqrt(k) (an ensemble of pretraining runs)."""
    ckpts = ckpt if isinstance(ckpt, list) else [ckpt]
    runs = [embed_checkpoint(c, DataConfig(path=data), progress=False)[0] for c in ckpts]
    arrays = runs[0]
    for key in ("image", "image_features"):
        arrays[key] = np.concatenate([r[key] for r in runs], 1) / np.sqrt(len(runs))
    y = (np.nan_to_num(arrays[label]) > 0).astype(int)
    from galclip.data.dataset import SurveyDataset
    from galclip.finetune.tabular_inputs import TabularInputConfig

    ds = SurveyDataset(DataConfig(path=data))
    tab, names, _ = build_tabular(ds, TabularInputConfig(columns=[], morphology=True), np.arange(len(ds)))
    spectrum = arrays["spectrum"] if arrays["has_spectrum"].any() else None
    out = {}
    for vector, key in (("embedding", "image"), ("representation", "image_features")):
        if vector not in vectors:
            continue
        vec = arrays[key].astype(np.float32)
        row: dict[str, float] = {}
        for n in budgets:
            row.update(head_aucs(vec, spectrum, y, tab, names, n, seeds, heads, head_kind,
                                 morphology_flag(ds) if repair else None))
        row.update(knn_and_candidates(vec, y, seeds))
        out[vector] = row
    return out


def _budget(text: str) -> int:
    """A ``--budgets`` entry: labels per class, or ``all`` (0: cross-validated, see :func:`draws`)."""
    return 0 if text.strip() == "all" else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pretrain-data", required=True)
    ap.add_argument("--eval-data", required=True)
    ap.add_argument("--name", default="gz1")
    ap.add_argument("--label", default="merger")
    ap.add_argument("--variants", default="random,cnn_ssl,cnn_ssl_morph,recipe")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--vectors", default="embedding,representation")
    ap.add_argument("--head-kind", default="linear", help="head.kind of the few-label heads (linear, late, ...)")
    ap.add_argument("--heads", default="head,fused", help=f"few-label heads to score, of probe,{','.join(HEADS)}")
    ap.add_argument("--budgets", default="10,20", help="labels per class; 'all' = 5-fold CV on every label")
    ap.add_argument("--override", action="append", default=[], help="extra pretrain override (all variants)")
    ap.add_argument("--keep", default="", help="directory to keep the checkpoints in")
    ap.add_argument("--reuse", action="store_true", help="evaluate checkpoints already in --keep (minutes = their fit time)")
    ap.add_argument("--concat", default="",
                    help="comma-separated checkpoint dirs: score their representations concatenated, no pretraining")
    ap.add_argument("--no-repair", action="store_true",
                    help="heads read the measured statistics of flagged fits too (rows keyed .../measured)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    path = ROOT / "benchmarks" / "results" / f"representation_{args.name}.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    results.update(protocol=__doc__.split("Fixed split, documented: ")[1].split("Writes")[0].strip(),
                   pretrain_data=str(Path(args.pretrain_data).resolve()), eval_data=str(Path(args.eval_data).resolve()))
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="galclip_rep_"))
    if args.concat:
        ckpts = [Path(c) for c in args.concat.split(",")]
        results["rows"]["concat:" + "+".join(c.name for c in ckpts)] = row = {
            "checkpoints": [str(c.resolve()) for c in ckpts],
            **evaluate(ckpts, args.eval_data, args.label, args.seeds, [_budget(b) for b in args.budgets.split(",")],
                       args.vectors.split(","), args.heads.split(","), args.head_kind, not args.no_repair)}
        path.write_text(json.dumps(results, indent=1))
        print("concat", json.dumps(row), flush=True)
        return
    for variant in args.variants.split(","):
        ckpt, minutes = pretrain(variant, args.pretrain_data, base / f"{variant}_{args.steps}", args.steps,
                                 args.override, args.reuse)
        metrics = json.loads((ckpt / "metrics.json").read_text()) if (ckpt / "metrics.json").exists() else {}
        row = {"variant": variant, "overrides": VARIANTS[variant][1] + args.override, "steps": metrics.get("steps", 0),
               "pretrain_minutes": round(minutes, 2), "val_morph_r2": metrics.get("val/morph_r2"),
               **{k: metrics[k] for k in ("val/i2s_top1", "val/i2s_top5", "val/s2i_top1", "val/s2i_top5",
                                          "val/i2s_median_rank_frac") if k in metrics},
               **evaluate(ckpt, args.eval_data, args.label, args.seeds, [_budget(b) for b in args.budgets.split(",")],
                        args.vectors.split(","), args.heads.split(","), args.head_kind, not args.no_repair),
               "head_kind": args.head_kind}
        key = f"{variant}@{args.steps}" + ("" if args.head_kind == "late" else f"/{args.head_kind}")
        if args.heads == "probe":
            key += "/probe"
        if args.no_repair:
            key += "/measured"
        results["rows"][key] = row
        path.write_text(json.dumps(results, indent=1))
        print(variant, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
