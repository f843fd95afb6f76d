"""What the pixels give with labels: the pretrained image tower fine-tuned end to end, against
the frozen representation, on the same draws (issue 13's ceiling question).

    .venv/bin/python benchmarks/bench_finetune_ceiling.py --checkpoint RUN --data data/gz1_dev \\
        --name gz1 --budgets all --repeats 2            # every label: repeated stratified 5-fold CV
    .venv/bin/python benchmarks/bench_finetune_ceiling.py ... --budgets 20 --repeats 10   # 20 + 20 labels

Rows per draw (ROC AUC on the draw's test rows):

* ``finetuned``: the checkpoint's image tower + its representation read-out (standardiser,
  principal components, unit norm) + a linear layer, every weight trained (AdamW, one-cycle,
  backbone lr 3e-4, head 3e-3, class-weighted BCE, random flips/90° rotations), scored as the
  mean logit over the 8 flips/rotations;
* ``finetuned_tabular``: the same plus a linear term on the standardised morphology statistics,
  trained jointly (the end-to-end form of galclip's fused head);
* ``random_init``: the same network from random weights (a batch norm in place of the read-out);
* ``self_trained``: self-training on the unlabelled rows (a "noisy student"): galclip's fused
  head (``galclip_image_tabular``, frozen representation + repaired statistics, as
  ``bench_representation.py`` scores it) labels every other galaxy with its probability, moved
  from the balanced draw's 50 % to ``--prior`` (the survey's merger fraction, odds rescaled); the
  tower + statistics term is then fine-tuned end to end on the true labels (class-weighted)
  and those soft labels together, and scored on the test rows (whose true labels it never
  sees; their images are part of the unlabelled survey, as an astronomer's would be);
* ``galclip_fused``: that teacher's own score on the same rows;
* ``probe``: the frozen representation, class-balanced logistic regression (C = 1);
* ``fused_frozen``: frozen representation + statistics, one logistic regression (C = 0.1);
* ``morph_lr``: the statistics alone, logistic regression with C = ``--morph-c`` (rows stored
  before session 12's ``reference`` entries used C = 1; galclip's reference, as
  ``bench_representation.py`` scores it, is evaluate's ``morph_lr_c`` = 0.3, the default now).

Draws as ``bench_representation.py``: ``all`` = repeated stratified 5-fold CV (``random_state``
= repeat); n = ``numpy.random.default_rng(s)`` permutes mergers and non-mergers, the first n of
each train, every other galaxy tests. Writes ``benchmarks/results/finetune_ceiling_<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from galclip.data.dataset import DataConfig, SurveyDataset  # noqa: E402
from galclip.data.morphology import morphology_columns, morphology_flag  # noqa: E402
from galclip.encode import embed_checkpoint, load_checkpoint, open_dataset  # noqa: E402
from galclip.finetune.baselines import morphology_lr  # noqa: E402
from galclip.finetune.features import load_batches  # noqa: E402
from galclip.finetune.tabular_inputs import TabularInputConfig, build_tabular  # noqa: E402
from galclip.models.galclip import build_model  # noqa: E402
from galclip.models.towers import dihedral  # noqa: E402  (the 8 flips/rotations, as the towers average them)
from bench_representation import draws, head_setup  # noqa: E402  (the representation bench's draws and heads)


class Finetuner:
    """End-to-end training of one checkpoint's image tower on labelled rows."""

    def __init__(self, checkpoint: str, images: torch.Tensor, stats: torch.Tensor, y: np.ndarray, steps: int,
                 epochs: int, encoder_lr: float) -> None:
        self.checkpoint, self.x, self.stats, self.y = checkpoint, images, stats, y
        self.steps, self.epochs, self.encoder_lr = steps, epochs, encoder_lr

    def scores(self, tr: np.ndarray, te: np.ndarray, seed: int, pretrained: bool = True,
               tabular: bool = False, teacher: np.ndarray | None = None) -> np.ndarray:
        """Test-row logits after training on ``tr`` (and, with ``teacher``, every other row on
        the teacher's probability)."""
        torch.manual_seed(seed)
        ck = load_checkpoint(self.checkpoint)
        model = ck.model if pretrained else build_model(ck.cfg)
        enc = model.image_encoder
        if pretrained:  # the representation's own read-out, then a linear layer
            read, head = model.image_standardizer, torch.nn.Linear(model.representation_dim, 1)
        else:
            width = enc.pooled(self.x[:2])[1].shape[1]
            read, head = torch.nn.BatchNorm1d(width), torch.nn.Linear(width, 1)
        lin = torch.nn.Linear(self.stats.shape[1], 1)
        torch.nn.init.zeros_(lin.weight)
        top = [*head.parameters(), *read.parameters(), *lin.parameters()]
        opt = torch.optim.AdamW([{"params": enc.parameters(), "lr": self.encoder_lr}, {"params": top, "lr": 3e-3}],
                                weight_decay=0.05)
        labelled = tr
        target_all = self.y.astype(np.float32)
        if teacher is not None:  # every other row trains on the teacher's probability
            rest = np.setdiff1d(np.arange(len(self.y)), tr)
            target_all[rest] = teacher[rest]
            tr = np.arange(len(self.y))
        n_steps = max(self.epochs * int(np.ceil(len(tr) / 32)), self.steps)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, [self.encoder_lr, 3e-3], total_steps=n_steps, pct_start=0.1)
        ytr = self.y[labelled]
        pos_w = torch.tensor(float((ytr == 0).sum() / max((ytr == 1).sum(), 1)))
        rng = np.random.default_rng(seed)

        def logit(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
            z = head(F.normalize(read(enc.pooled(x)[1]), dim=-1) * 8).squeeze(-1)
            return z + lin(self.stats[rows]).squeeze(-1) if tabular else z

        step = 0
        enc.train()
        read.train()
        while step < n_steps:
            order = rng.permutation(tr)
            for i in range(0, len(order), 32):
                if step >= n_steps:
                    break
                idx = order[i:i + 32]
                target = torch.as_tensor(target_all[idx])
                # class weight on the labelled mergers only; soft labels carry the survey's prior
                w = torch.where(torch.as_tensor(np.isin(idx, labelled)) & (target > 0.5), pos_w, torch.tensor(1.0))
                loss = (F.binary_cross_entropy_with_logits(logit(dihedral(self.x[idx], int(rng.integers(8))), idx),
                                                           target, reduction="none") * w).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
        enc.eval()
        read.eval()
        with torch.no_grad():
            return np.mean([logit(dihedral(self.x[te], k), te).numpy() for k in range(8)], 0)


def fused_teacher(rep: np.ndarray, y: np.ndarray, tab: np.ndarray, names: list[str], flag: np.ndarray | None):
    """``(train rows, test rows) -> test-row probabilities`` of galclip's fused head, set up by
    ``bench_representation.head_setup`` as its ``head_aucs`` scores it (flagged fits repaired)."""
    from galclip.finetune.methods import METHODS, Bench

    cfg, feats, repaired = head_setup(rep, None, y, tab, names, "linear", flag)

    def run(tr: np.ndarray, te: np.ndarray) -> np.ndarray:
        bench = Bench(cfg, y, te, {"pretrained": feats}, tab, names, morphology_columns(names), repaired_tab=repaired)
        _, scored = METHODS["galclip_image_tabular"].run(bench, tr, 0)
        _, rows, p, _ = scored[0]
        out = np.full(len(y), np.nan)
        out[rows] = p
        return out[te]
    return run


def with_prior(p: np.ndarray, prior: float) -> np.ndarray:
    """Probabilities of a class-balanced classifier moved to a class fraction ``prior`` (odds rescaled)."""
    odds = p / np.clip(1 - p, 1e-9, None) * prior / (1 - prior)
    return odds / (1 + odds)


def seeded_draws(y: np.ndarray, n: int, repeats: int):
    """(seed, train rows, test rows): ``bench_representation.draws``, 5 folds per repeat for ``n = 0``
    (seed = the repeat), else one n + n draw per repeat (seed = the draw)."""
    splits = draws(y, n, 5 * repeats if n <= 0 else repeats)
    for i, (tr, te) in enumerate(splits):
        yield (i // 5 if n <= 0 else i), tr, te


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--name", default="gz1")
    ap.add_argument("--label", default="merger")
    ap.add_argument("--budgets", default="all", help="labels per class, or 'all' (5-fold CV)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=150, help="at least this many steps (small budgets)")
    ap.add_argument("--encoder-lr", type=float, default=3e-4)
    ap.add_argument("--rows", default="finetuned,finetuned_tabular,random_init",
                    help="of finetuned,finetuned_tabular,random_init,self_trained")
    ap.add_argument("--morph-c", type=float, default=0.3, help="C of morphology + LR (evaluate's morph_lr_c)")
    ap.add_argument("--tag", default="", help="results stored under '<budget>/<tag>' (keeps earlier rows)")
    ap.add_argument("--prior", type=float, default=0.1,
                    help="self_trained: the survey's merger fraction the soft labels are moved to")
    args = ap.parse_args()
    torch.set_num_threads(2)
    ck = load_checkpoint(args.checkpoint)
    batches = load_batches(open_dataset(ck, DataConfig(path=args.data)), 128, False)
    images = torch.cat([b["image"] for b in batches]).float()
    arrays, _ = embed_checkpoint(args.checkpoint, DataConfig(path=args.data), progress=False)
    y = (np.nan_to_num(arrays[args.label]) > 0).astype(int)
    rep = arrays["image_features"].astype(np.float32)
    ds = SurveyDataset(DataConfig(path=args.data))
    tab, names, _ = build_tabular(ds, TabularInputConfig(columns=[], morphology=True), np.arange(len(ds)))
    xm = np.nan_to_num(tab[:, morphology_columns(names)])
    both = np.c_[rep, xm]  # the frozen representation + statistics, for one logistic regression
    tuner = Finetuner(args.checkpoint, images, torch.as_tensor(xm, dtype=torch.float32), y, args.min_steps,
                      args.epochs, args.encoder_lr)
    rows = [r for r in args.rows.split(",") if r and r != "none"]  # none: the frozen rows only
    teacher = fused_teacher(rep, y, tab, names, morphology_flag(ds)) if "self_trained" in rows else None
    path = ROOT / "benchmarks" / "results" / f"finetune_ceiling_{args.name}.json"
    out = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    out.update(checkpoint=str(Path(args.checkpoint).resolve()), data=str(Path(args.data).resolve()),
               protocol=__doc__.split("Draws as ")[1].split("Writes")[0].strip())
    for budget in args.budgets.split(","):
        n = 0 if budget == "all" else int(budget)
        res: dict[str, list[float]] = {k: [] for k in ["morph_lr", "probe", "fused_frozen", *rows]}
        if teacher is not None:
            res["galclip_fused"] = []
        t0 = time.perf_counter()
        for r, tr, te in seeded_draws(y, n, args.repeats):
            res["morph_lr"].append(roc_auc_score(y[te], morphology_lr(xm[tr], y[tr], xm[te], args.morph_c, 3, seed=0)[0]))
            res["probe"].append(roc_auc_score(y[te], morphology_lr(rep[tr], y[tr], rep[te], 1.0, 3, seed=0)[0]))
            res["fused_frozen"].append(roc_auc_score(y[te], morphology_lr(both[tr], y[tr], both[te], 0.1, 3, seed=0)[0]))
            soft = None
            if teacher is not None:
                soft = np.zeros(len(y))
                soft[te] = teacher(tr, te)
                res["galclip_fused"].append(roc_auc_score(y[te], soft[te]))
                soft = with_prior(soft, args.prior)
            for row in rows:
                s = tuner.scores(tr, te, r, pretrained=row != "random_init",
                                 tabular=row in ("finetuned_tabular", "self_trained"),
                                 teacher=soft if row == "self_trained" else None)
                res[row].append(roc_auc_score(y[te], s))
            print(budget, {k: round(v[-1], 3) for k, v in res.items()}, f"{time.perf_counter() - t0:.0f}s", flush=True)
        key = f"{budget}/{args.tag}" if args.tag else budget
        out["budgets"][key] = {"draws": len(res["morph_lr"]), "minutes": round((time.perf_counter() - t0) / 60, 1),
                                  "epochs": args.epochs, "min_steps": args.min_steps, "encoder_lr": args.encoder_lr,
                                  "prior": args.prior if teacher is not None else None, "morph_c": args.morph_c,
                                  "mean": {k: round(float(np.mean(v)), 4) for k, v in res.items()},
                                  "std": {k: round(float(np.std(v)), 4) for k, v in res.items()},
                                  "per_draw": {k: [round(x, 4) for x in v] for k, v in res.items()}}
        path.write_text(json.dumps(out, indent=1))
        print(key, json.dumps(out["budgets"][key]["mean"]), flush=True)


if __name__ == "__main__":
    main()
