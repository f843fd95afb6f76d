"""Few-shot labeling accuracy vs labelled examples per class (1, 5, 10, 25), over seeds.

Runs :func:`galclip.retrieval.fewshot.fewshot_curve` (similarity-weighted kNN and class
prototypes) on galclip embeddings of

* the simulated survey — ``--data DIR --checkpoint CKPT`` (embedded here) or
  ``--embeddings FILE.h5`` (from ``galclip embed``), for each label column (``merger``,
  ``merger_stage``) and embedding kind (image, spectrum, joint). With ``--random-init`` the
  same architecture with untrained weights is measured too, to show what pretraining adds;
* the real Galaxy Zoo 1 cutouts — ``--gz1-embeddings FILE.h5`` or ``--gz1-data DIR
  --gz1-checkpoint CKPT`` (an ingested ``gz1_dev`` dataset and a 3-band i,r,g image model;
  labels ``merger`` / ``gz1_class``). Skipped, with the reason recorded, when absent.

Writes ``benchmarks/results/fewshot.json``. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fewshot.py \\
        --data runs/demo/data --checkpoint runs/demo/pretrain/model --random-init
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("image", "spectrum", "joint")


def embed(data: str, checkpoint: str, random_init: bool, batch_size: int, image_size: int) -> tuple[dict, dict]:
    """Embed a dataset with a checkpoint (or the same architecture, untrained)."""
    import torch

    from galclip.data.dataset import DataConfig, SurveyDataset
    from galclip.data.preprocess import ImagePrep
    from galclip.models import build_model
    from galclip.encode import embed_dataset, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model, cfg = ckpt.model, ckpt.cfg
    if random_init:
        torch.manual_seed(0)
        model = build_model(cfg)
    data_cfg = DataConfig(path=data, image=ImagePrep(size=image_size or cfg.image_size))
    run_cfg = Path(checkpoint) / "config.yaml"  # a pretrain run directory: reuse its preprocessing
    if run_cfg.exists():
        from galclip.config import from_dict, read_yaml
        from galclip.data.preprocess import SpectrumPrep

        pre = read_yaml(run_cfg).get("data", {})
        data_cfg.image = from_dict(ImagePrep, pre.get("image", {}))
        data_cfg.spectrum = from_dict(SpectrumPrep, pre.get("spectrum", {}))
    ds = SurveyDataset(data_cfg)
    arrays = embed_dataset(model, ds, batch_size=batch_size)
    return arrays, {"checkpoint_sha256": "" if random_init else ckpt.sha256, "dataset": data,
                    "model_name": cfg.name, "random_init": random_init}


def retrieval(x: np.ndarray, y: np.ndarray, max_rows: int = 5000) -> dict[str, Any]:
    """Same-class retrieval (precision@1, MAP@R, R-precision; PML AccuracyCalculator) of the
    labelled rows — at most ``max_rows`` of them (seeded draw), as MAP@R searches as deep as
    the largest class."""
    from galclip.retrieval.fewshot import encode_labels
    from galclip.retrieval.metrics import retrieval_accuracy
    from galclip.retrieval.store import valid_rows

    keep = valid_rows(x) & (np.isfinite(y) if y.dtype.kind in "fc" else True)
    rows = np.flatnonzero(keep)
    if rows.size > max_rows:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
    _, codes = encode_labels(y[rows])
    return {**retrieval_accuracy(x[rows], codes), "n": int(rows.size)}


def curves(arrays: dict[str, np.ndarray], labels: list[str], kinds: list[str], shots: list[int],
           seeds: list[int], k: int) -> list[dict[str, Any]]:
    from galclip.retrieval.fewshot import fewshot_curve, summarise_curve

    out = []
    for label in labels:
        if label not in arrays:
            print(f"  label {label!r} not in embeddings; skipped")
            continue
        y = np.asarray(arrays[label])
        for kind in kinds:
            x = arrays.get(kind)
            if x is None or not np.isfinite(x).all(axis=1).any():
                continue
            t0 = time.perf_counter()
            rows = fewshot_curve(x, y, shots=shots, seeds=seeds, k=k)
            summ = summarise_curve(rows)
            ret = retrieval(np.asarray(x, np.float32), y)
            out.append(dict(label=label, kind=kind, n_objects=int(np.isfinite(x).all(axis=1).sum()),
                            classes={str(c): int(n) for c, n in zip(*np.unique(y[np.isfinite(y)] if y.dtype.kind == "f" else y, return_counts=True))},
                            summary=summ, rows=rows, retrieval=ret, seconds=round(time.perf_counter() - t0, 2)))
            print(f"  {label:<14} {kind:<9} retrieval: P@1 {ret['p_at_1']:.3f}  MAP@R {ret['map_at_r']:.3f}")
            for s in summ:
                print(f"  {label:<14} {kind:<9} {s['method']:<10} {s['shots']:>3} shots: acc {s['accuracy_mean']:.3f} "
                      f"± {s['accuracy_std']:.3f}  bal.acc {s['balanced_accuracy_mean']:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="", help="simulated dataset directory")
    ap.add_argument("--checkpoint", default="", help="pretrained model directory")
    ap.add_argument("--embeddings", default="", help="precomputed embeddings (galclip embed) instead of data+checkpoint")
    ap.add_argument("--random-init", action="store_true", help="also measure the untrained architecture")
    ap.add_argument("--gz1-embeddings", default="", help="embeddings of the real Galaxy Zoo 1 cutouts")
    ap.add_argument("--gz1-data", default="", help="ingested gz1_dev dataset (with --gz1-checkpoint)")
    ap.add_argument("--gz1-checkpoint", default="", help="a 3-band (i,r,g) image model for --gz1-data")
    ap.add_argument("--labels", nargs="+", default=["merger", "merger_stage"])
    ap.add_argument("--gz1-labels", nargs="+", default=["merger", "is_merger", "gz1_class"])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS))
    ap.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 25])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=0, help="image prep size (0 = the model's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fewshot.json")
    args = ap.parse_args(argv)
    import torch

    from galclip.embeddings import read_embeddings
    from galclip.utils.io import atomic_write_json

    torch.set_num_threads(1)
    report: dict[str, Any] = dict(benchmark="fewshot", shots=args.shots, seeds=args.seeds, k=args.k,
                                  methods=["knn (similarity-weighted, T=0.1)", "prototype (T=0.1)"],
                                  protocol=("per seed: each class shuffled; first max(shots) per class = pool of "
                                            "labelled examples, the rest = test set (same for all shot counts)"),
                                  command=" ".join(["python", "benchmarks/bench_fewshot.py",
                                                    *(argv if argv is not None else sys.argv[1:])]),
                                  simulated={}, gz1={})
    if args.embeddings or (args.data and args.checkpoint):
        runs = []
        if args.embeddings:
            arrays, meta = read_embeddings(args.embeddings)
            runs.append(("pretrained", arrays, meta))
        else:
            runs.append(("pretrained", *embed(args.data, args.checkpoint, False, args.batch_size, args.image_size)))
            if args.random_init:
                runs.append(("random_init", *embed(args.data, args.checkpoint, True, args.batch_size, args.image_size)))
        for name, arrays, meta in runs:
            print(f"simulated survey, {name} ({len(arrays['object_id'])} objects)")
            report["simulated"][name] = dict(meta={k: meta.get(k) for k in ("checkpoint_sha256", "model_name", "dataset")},
                                             curves=curves(arrays, args.labels, args.kinds, args.shots, args.seeds, args.k))
    else:
        report["simulated"] = {"skipped": "give --data and --checkpoint, or --embeddings"}
        print("simulated survey: skipped (give --data and --checkpoint, or --embeddings)")
    gz1 = None
    if args.gz1_embeddings and Path(args.gz1_embeddings).exists():
        gz1 = read_embeddings(args.gz1_embeddings)
    elif args.gz1_data and Path(args.gz1_data).exists() and (Path(args.gz1_checkpoint) / "model.json").exists():
        gz1 = embed(args.gz1_data, args.gz1_checkpoint, False, args.batch_size, args.image_size)
    if gz1 is not None:
        arrays, meta = gz1
        print(f"Galaxy Zoo 1 ({len(arrays['object_id'])} objects)")
        report["gz1"] = dict(meta={k: meta.get(k) for k in ("checkpoint_sha256", "model_name", "dataset")},
                             curves=curves(arrays, args.gz1_labels, ["image"], args.shots, args.seeds, args.k))
    else:
        report["gz1"] = {"skipped": "no --gz1-embeddings / --gz1-data + --gz1-checkpoint given, or absent "
                                    "(the real cutouts need a 3-band i,r,g image model)"}
        print("Galaxy Zoo 1: skipped")
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
