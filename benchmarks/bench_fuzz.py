"""Fuzz every reader with ≥10,000 hostile files; write benchmarks/results/fuzz.json.

Run: ``.venv/bin/python benchmarks/bench_fuzz.py --cases 10000``. Each case must end in a
sane product or a one-line ``InputFileError`` naming the file; any other exception, hang
(per-case deadline) or silent garbage is counted as a failure and the first few are listed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.reliability.fuzz_cases import STRATEGIES, check_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=10_000, help="total cases over all readers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"))
    args = ap.parse_args()
    per_kind = max(1, args.cases // len(STRATEGIES))
    results: dict[str, dict] = {}
    for kind, strat in sorted(STRATEGIES.items()):
        outcomes: Counter = Counter()
        failures: list[str] = []
        slowest = 0.0

        @settings(max_examples=per_kind, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=strat())
        def run(case: tuple[str, bytes]) -> None:
            nonlocal slowest
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                try:
                    outcomes[check_case(kind, case[0], case[1], Path(d))] += 1
                except Exception as exc:  # the oracle failed: record, keep fuzzing
                    outcomes["FAIL"] += 1
                    if len(failures) < 5:
                        failures.append(f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=2).splitlines()[-3:]}")
            slowest = max(slowest, time.perf_counter() - t0)

        t0 = time.time()
        run()
        results[kind] = {"cases": sum(outcomes.values()), "outcomes": dict(outcomes), "failures": failures,
                         "slowest_case_s": round(slowest, 3), "seconds": round(time.time() - t0, 1)}
        print(kind, results[kind]["cases"], dict(outcomes), f"slowest {slowest:.2f}s", flush=True)
    total = sum(r["cases"] for r in results.values())
    fails = sum(r["outcomes"].get("FAIL", 0) for r in results.values())
    out = {"total_cases": total, "failures": fails, "per_reader": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"{total} cases, {fails} failures -> {args.out}")


if __name__ == "__main__":
    main()
