"""How the structural fit scales with the number of students.

Simulates the notebook's design with the cohorts multiplied by 1, 10 and 100 (6,000,
60,000 and 600,000 students; 20 schools), then fits each with the command users run,
``classsize fit DATA --model structural --chains 1 --warmup 200 --samples 200``, in a
fresh process under ``/usr/bin/time -v`` (whole-command seconds and peak memory), and
prints seconds per student and the slope between sizes.  Usage::

    python bench/scale_bench.py [--factors 1 10 100] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env=None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GB) and output of a command run under /usr/bin/time -v."""
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1e6
    return wall, rss, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="classsize-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for f in args.factors:
        n = 6000 * f
        config = work / f"x{f}.toml"
        config.write_text(f"n_regular = {4000 * f}\nn_experimental = {2000 * f}\n")
        data, run = work / f"data{f}", work / f"run{f}"
        subprocess.run([str(BIN / "classsize"), "simulate", "--config", str(config), "--seed", "100",
                        "--out", str(data), "--force"], check=True, capture_output=True)
        wall, rss, out = timed([str(BIN / "classsize"), "fit", str(data), "--model", "structural", "--chains", "1",
                                "--warmup", str(args.warmup), "--samples", str(args.samples), "--out", str(run),
                                "--force"])
        summary = json.loads((run / "summary.json").read_text())
        rows.append({"students": n, "seconds": wall, "peak_gb": rss,
                     "fit_seconds": summary["diagnostics"]["seconds"],
                     "us_per_student": 1e6 * wall / n})
        r = rows[-1]
        print(f"{n:>8} students: {r['seconds']:7.1f} s whole command ({r['fit_seconds']:.1f} s in fit), "
              f"peak {r['peak_gb']:.2f} GB, {r['us_per_student']:.0f} us per student", flush=True)
    for a, b in zip(rows, rows[1:]):
        slope = (b["seconds"] - a["seconds"]) / (b["students"] - a["students"])
        print(f"slope {a['students']} -> {b['students']}: {1e6 * slope:.0f} us per added student")


if __name__ == "__main__":
    main()
