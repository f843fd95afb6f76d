"""The quickstart on several simulated surveys: does its report hold beyond the default draw?

    .venv/bin/python benchmarks/bench_demo_surveys.py --seeds 0 1 2 --runs /tmp/demo_seeds

Each seed is ``galclip demo simulate.seed=<s>`` (the default demo is seed 0), run to completion
one after another on the same machine; a run folder that already holds a finished demo is
read, not re-run (``--runs`` keeps them). Per survey it records the stage timings, ROC AUC of
every method at every label budget (mean ± std over the demo's label draws) and the candidate
precision; then the issue-15 checks at 100 labels (fusion above morphology + LR, pretrained
above random-init encoders, fusion above ranking by asymmetry with no labels) and at every
budget. Writes ``benchmarks/results/demo_surveys.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_one(seed: int, out: Path) -> dict:
    """Run (or read) the demo for one survey seed; its numbers."""
    from galclip.config import load_config
    from galclip.demo import DemoConfig, run_demo

    if not (out / "summary.json").exists():
        run_demo(load_config(DemoConfig, None, [f"out={out}", f"simulate.seed={seed}"]))
    ev = json.loads((out / "evaluate" / "results.json").read_text())
    auc = {}
    for row in ev["summary"]:
        auc.setdefault(row["method"], {})[str(row["budget"])] = [round(row["roc_auc_mean"], 3),
                                                                  round(row["roc_auc_std"], 3)]
    summary = json.loads((out / "candidates" / "summary.json").read_text())
    cand = summary.get("precision_at_draws", summary)
    ref = summary.get("zero_label_asymmetry_precision", {})  # ranking by asymmetry, no known mergers
    return {"timings_s": json.loads((out / "timings.json").read_text()), "n_test": ev["n_test"],
            "n_test_mergers": ev["n_test_mergers"], "roc_auc": auc,
            "candidates_p20": round(cand["top20_mean"], 3), "candidates_base_rate": round(cand["base_rate_mean"], 3),
            "candidates_x_base": round(cand["top20_mean"] / cand["base_rate_mean"], 2),
            **({"zero_label_asymmetry_p20": round(ref["top20_mean"], 3)} if ref else {})}


def checks(r: dict) -> dict:
    """The report's claims, per label budget: True where they hold on this survey."""
    a = r["roc_auc"]
    out = {}
    for b in a["random_init"]:
        fus = max(a["galclip_fusion"][b][0], a["galclip_fusion_morph"][b][0])
        out[b] = {"fusion_above_morphology_lr": fus > a["morphology_lr"][b][0],
                  "pretrained_above_random_init": a["galclip_fusion"][b][0] > a["random_init"][b][0]}
        if "asymmetry_only" in a:  # the zero-label line (runs from session 9 on)
            out[b]["fusion_above_zero_label_asymmetry"] = fus > a["asymmetry_only"][b][0]
    out["candidates_3x"] = r["candidates_x_base"] >= 3
    out["under_5_min"] = sum(r["timings_s"].values()) <= 300
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default="/tmp/demo_seeds", help="folder of the demo runs (<runs>/seed<s>)")
    ap.add_argument("--note", default="", help="how the runs were made (e.g. which shared the cores), kept in the JSON")
    args = ap.parse_args()
    res = {}
    for s in args.seeds:
        r = run_one(s, Path(args.runs) / f"seed{s}")
        res[str(s)] = r | {"checks": checks(r)}
        print(s, json.dumps(res[str(s)]["checks"]), flush=True)
    path = ROOT / "benchmarks" / "results" / "demo_surveys.json"
    path.write_text(json.dumps({"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
                                "note": args.note, "surveys": res}, indent=1))


if __name__ == "__main__":
    main()
