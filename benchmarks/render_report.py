"""Render a run's report.html in headless Chromium to a PNG, to look at it as a user would.

    .venv/bin/python benchmarks/render_report.py runs/demo/report.html [--out report.png] [--height 2400]

Needs a Chromium binary (``apt-get install chromium``); writes the screenshot next to the
report by default and prints its path and the page size.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def render(html: Path, out: Path, width: int = 1400, height: int = 2400) -> Path:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("no chromium found (apt-get install chromium)")
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
                    f"--screenshot={out.resolve()}", html.resolve().as_uri()], check=True, timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--height", type=int, default=2400)
    args = ap.parse_args()
    out = render(args.html, args.out or args.html.with_suffix(".png"), height=args.height)
    print(f"{out} ({args.html.stat().st_size / 1e6:.2f} MB page)", file=sys.stdout)


if __name__ == "__main__":
    main()
