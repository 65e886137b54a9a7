"""Run every benchmark of this folder in turn (``make bench``), one thread each, and summarise.

Each ``bench_*.py`` prints its own figures and ratios; this runner only sequences them and
reports which ones failed (a missing dataset or peer library fails that benchmark alone).

Usage::

    python benchmarks/run_all.py [--only sdmr,serving] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help="comma list of benchmark names (bench_<name>.py)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per benchmark")
    args = p.parse_args()
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    env = {**os.environ, "SEGUE_THREADS": os.environ.get("SEGUE_THREADS", "1"), "OPENBLAS_NUM_THREADS": "1"}
    status: list[tuple[str, str, float]] = []
    for script in scripts:
        print(f"\n=== {script.name}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run([sys.executable, str(script)], env=env, timeout=args.timeout).returncode
            outcome = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            outcome = f"timed out after {args.timeout:.0f} s"
        status.append((script.name, outcome, time.perf_counter() - t0))
    print("\n=== summary")
    for name, outcome, secs in status:
        print(f"{name:<28} {outcome:<24} {secs:8.1f} s")
    return 0 if all(o == "ok" for _, o, _ in status) else 1


if __name__ == "__main__":
    sys.exit(main())
