"""Self-training as ``galclip finetune`` runs it, on few-label draws of a labelled survey.

    .venv/bin/python benchmarks/bench_self_training.py --checkpoint RUN --data data/gz1_dev \\
        --name gz1 --budgets 20,10 --draws 30 --prior 0.1 [--override self_train.epochs=15 ...]

Draws as ``bench_representation.py``: ``numpy.random.default_rng(s)`` permutes the mergers and
the non-mergers; the first n of each train, every other galaxy is a test galaxy. Per draw the
n + n labels are written to a labels table (``object_id``, ``merger``), as an astronomer would
mark them, and ``run_finetune`` (``configs/finetune.yaml``, ``labels=`` that table,
``test_fraction=0``, ``self_train.enabled=true``, ``modalities=[image]``) fits the frozen fused
head (the teacher) and its self-trained student. The test galaxies' labels are never read by
it; their images are part of the unlabelled survey it self-trains on. From its predictions
table: ``student`` (``p_merger``) and ``teacher`` (``p_merger_teacher``) ROC AUC on the test
galaxies, against ``morph_lr`` (the statistics + logistic regression, evaluate's C = 0.3) on
the same draw, with bootstrap intervals of the paired differences over the draws.
``student_bacc`` / ``teacher_bacc``: balanced accuracy of the flags as shipped (the student's
label-free threshold, the teacher's out-of-fold one). Rows whose label is missing (NaN) are
unlabelled survey: never drawn, never tested, self-trained on.
Writes ``benchmarks/results/self_training_<name>.json`` (entries ``<budget>[/<tag>]``).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from galclip.config import load_config  # noqa: E402
from galclip.data import schema as S  # noqa: E402
from galclip.data.dataset import DataConfig, SurveyDataset  # noqa: E402
from galclip.data.morphology import morphology_columns  # noqa: E402
from galclip.finetune.baselines import morphology_lr  # noqa: E402
from galclip.finetune.tabular_inputs import TabularInputConfig, build_tabular  # noqa: E402
from galclip.finetune.train import FinetuneConfig, run_finetune  # noqa: E402
from bench_representation import draws, paired_difference  # noqa: E402


def write_labels(path: Path, ids: np.ndarray, y: np.ndarray, rows: np.ndarray, label: str) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["object_id", label])
        w.writerows([ids[i], int(y[i])] for i in rows)


def read_scores(path: Path) -> dict[str, np.ndarray]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("p_merger", "p_merger_teacher")}


def summary(res: dict[str, list[float]], args: argparse.Namespace) -> dict[str, object]:
    """Means over the draws and the student's paired differences (bootstrap 95 % intervals)."""
    a = {k: np.array(v) for k, v in res.items()}
    out: dict[str, object] = {"draws": len(a["student"]), "prior": args.prior, "overrides": args.override,
                              "morph_c": args.morph_c, "mean": {k: round(float(v.mean()), 4) for k, v in a.items()},
                              "std": {k: round(float(v.std()), 4) for k, v in a.items()}}
    for ref in ("teacher", "morph_lr"):
        mean, ci, ahead = paired_difference(a["student"], a[ref])
        out[f"student_minus_{ref}"], out[f"student_minus_{ref}_ci95"], out[f"student_ahead_of_{ref}"] = mean, ci, ahead
    out["teacher_minus_morph_lr"] = paired_difference(a["teacher"], a["morph_lr"])[0]
    out["per_draw"] = {k: [round(float(x), 4) for x in v] for k, v in a.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--name", default="gz1")
    ap.add_argument("--label", default="merger")
    ap.add_argument("--budgets", default="20,10", help="labels per class")
    ap.add_argument("--draws", type=int, default=30)
    ap.add_argument("--prior", type=float, default=0.1, help="self_train.prior: the survey's merger fraction")
    ap.add_argument("--override", nargs="*", default=[], help="more finetune overrides (key=value)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--morph-c", type=float, default=0.3)
    args = ap.parse_args()
    ds = SurveyDataset(DataConfig(path=args.data))
    ids = ds.column(S.OBJECT_ID).astype(str)
    raw = ds.column(args.label).astype(float)
    known = np.flatnonzero(np.isfinite(raw))  # rows without a label: unlabelled survey, never drawn or tested
    y = (np.nan_to_num(raw) > 0).astype(int)
    tab, names, _ = build_tabular(ds, TabularInputConfig(columns=[], morphology=True), np.arange(len(ds)))
    xm = np.nan_to_num(tab[:, morphology_columns(names)])
    path = ROOT / "benchmarks" / "results" / f"self_training_{args.name}.json"
    out = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    out.update(checkpoint=str(Path(args.checkpoint).resolve()), data=str(Path(args.data).resolve()),
               protocol=__doc__.split("Draws as ")[1].split("Writes")[0].strip())
    work = Path(tempfile.mkdtemp(prefix="galclip_selftrain_"))
    try:
        for budget in args.budgets.split(","):
            n = int(budget)
            res: dict[str, list[float]] = {"student": [], "teacher": [], "morph_lr": [], "student_bacc": [],
                                           "teacher_bacc": [], "seconds": []}
            for s, (tr, te) in enumerate(draws(y[known], n, args.draws)):
                tr, te = known[tr], known[te]
                t0 = time.perf_counter()
                labels, run = work / f"labels_{n}_{s}.csv", work / f"run_{n}_{s}"
                write_labels(labels, ids, y, tr, args.label)
                cfg = load_config(FinetuneConfig, str(ROOT / "configs" / "finetune.yaml"), [
                    f"data.path={args.data}", f"checkpoint={args.checkpoint}", f"labels={labels}", f"out={run}",
                    f"label={args.label}", "test_fraction=0", "modalities=[image]", "progress=false",
                    f"cache_dir={work / 'cache'}", "self_train.enabled=true", f"self_train.prior={args.prior}",
                    *args.override])
                run_finetune(cfg)
                p = read_scores(run / "predictions.csv")
                metrics = json.loads((run / "metrics.json").read_text())
                res["student"].append(roc_auc_score(y[te], p["p_merger"][te]))
                res["teacher"].append(roc_auc_score(y[te], p["p_merger_teacher"][te]))
                # the flags as shipped: the student's label-free threshold against the teacher's
                res["student_bacc"].append(balanced_accuracy_score(y[te], p["p_merger"][te] >= metrics["threshold"]))
                res["teacher_bacc"].append(balanced_accuracy_score(
                    y[te], p["p_merger_teacher"][te] >= metrics["teacher"]["threshold"]))
                res["morph_lr"].append(roc_auc_score(y[te], morphology_lr(xm[tr], y[tr], xm[te], args.morph_c, 3,
                                                                          seed=0)[0]))
                res["seconds"].append(time.perf_counter() - t0)
                shutil.rmtree(run)
                print(budget, s, {k: round(v[-1], 3) for k, v in res.items()}, flush=True)
            key = f"{budget}/{args.tag}" if args.tag else budget
            out["budgets"][key] = summary(res, args)
            path.write_text(json.dumps(out, indent=1))
            print(key, json.dumps({k: out["budgets"][key][k] for k in ("mean", "student_minus_teacher",
                                                                          "student_minus_morph_lr")}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
