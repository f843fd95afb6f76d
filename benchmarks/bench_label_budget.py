"""Label-budget benchmark: galclip fusion vs baselines (wraps ``galclip evaluate``).

Pipeline measured for the report (simulated survey, 2 CPU cores)::

    .venv/bin/galclip simulate --n 3000 --out /tmp/sim3k
    .venv/bin/galclip pretrain --data /tmp/sim3k --out /tmp/pre3k model=small train.steps=...
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_label_budget.py \
        --data /tmp/sim3k --checkpoint /tmp/pre3k --name sim3k

Real Galaxy Zoo 1 cutouts (image only, 40 mergers in 440; ../shared/data)::

    .venv/bin/galclip ingest --config configs/ingest_gz1.yaml --out /tmp/gz1
    .venv/bin/galclip pretrain --data /tmp/gz1 --out /tmp/pre_gz1 model=small \
        data.image.size=96 loss.clip_weight=0 loss.ssl_image_weight=1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_label_budget.py --data /tmp/gz1 \
        --checkpoint /tmp/pre_gz1 --name gz1 --image-size 96 --budgets 10 20 50 100 200

Writes ``benchmarks/results/label_budget_<name>.json`` (headline numbers + the mean ± std
table) next to the full evaluation folder (``--out``: CSV, JSON, PNG, per-object CSV).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--image-ssl-checkpoint", default="")
    ap.add_argument("--name", default="sim")
    ap.add_argument("--out", default="")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--head", default="late")
    ap.add_argument("--cnn-epochs", type=int, default=15)
    ap.add_argument("--test-fraction", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra dotted EvaluateConfig overrides")
    args = ap.parse_args()

    import logging

    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    from galclip.config import load_config
    from galclip.finetune.evaluate import EvaluateConfig, run_evaluate

    out = Path(args.out or ROOT / "runs" / f"bench_label_budget_{args.name}")
    ov = [f"data.path={args.data}", f"data.image.size={args.image_size}", f"checkpoint={args.checkpoint}",
          f"out={out}", f"budgets={args.budgets}", f"seeds={args.seeds}", f"head.kind={args.head}",
          f"cnn.epochs={args.cnn_epochs}", f"test_fraction={args.test_fraction}", "progress=false"]
    if args.image_ssl_checkpoint:
        ov.append(f"image_ssl_checkpoint={args.image_ssl_checkpoint}")
    if args.methods:
        ov.append(f"methods=[{','.join(args.methods)}]")
    cfg = load_config(EvaluateConfig, ROOT / "configs" / "evaluate.yaml", ov + list(args.overrides))
    t0 = time.time()
    rep = run_evaluate(cfg)
    keep = ("method", "budget", "n_seeds", "roc_auc_mean", "roc_auc_std", "pr_auc_mean", "balanced_accuracy_mean",
            "balanced_accuracy_std", "f1_mean", "f1_std", "ece_mean", "seconds_mean")
    result = {
        "benchmark": "label_budget", "name": args.name, "data": args.data, "checkpoint": args.checkpoint,
        "checkpoint_sha256": rep["checkpoint_sha256"], "n_rows": rep["n_rows"], "n_test": rep["n_test"],
        "n_test_mergers": rep["n_test_mergers"], "budgets": rep["budgets"], "seeds": args.seeds,
        "headline": rep["headline"], "table": [{k: r.get(k) for k in keep} for r in rep["summary"]],
        "evaluation_dir": str(out), "wall_seconds": round(time.time() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.platform()},
    }
    from galclip.utils.io import atomic_write_json

    dest = ROOT / "benchmarks" / "results" / f"label_budget_{args.name}.json"
    atomic_write_json(dest, result)
    print(json.dumps(result["headline"], indent=1))
    for r in result["table"]:
        print(f"{r['method']:32s} {r['budget']:5d}  AUC {r['roc_auc_mean']:.3f}±{r['roc_auc_std']:.3f}  "
              f"bacc {r['balanced_accuracy_mean']:.3f}  F1 {r['f1_mean']:.3f}±{r['f1_std']:.3f}")
    print(f"→ {dest}")


if __name__ == "__main__":
    main()
