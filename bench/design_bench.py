"""Design-diagnosis benchmark: the whole ``classsize design`` command, as a user runs it.

A 4-cell x 2-analysis design on the fit-test design size (800 REGULAR + 700
EXPERIMENTAL students, 6 schools; ``n_experimental`` varied over 250, 500, 1000 and
2000), ``--datasets`` datasets per cell (default 50), the CLI's default chains
(4 x (500 warm-up + 1000 draws)), in a fresh process, timed whole (compilation
included), with the peak memory of the process tree.  It prints the seconds, the fits
per minute and the power curve the design measured.

    python bench/design_bench.py --datasets 50 --out /tmp/design_bench
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BASE = "n_regular = 800\nn_experimental = 700\nn_schools = 6\n"
AXIS = "n_experimental=250,500,1000,2000"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", type=int, default=50)
    p.add_argument("--analyses", default="structural,randomized")
    p.add_argument("--out", default="/tmp/design_bench")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more classsize design arguments")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}.toml"
    config.write_text(BASE)
    command = [sys.executable, "-m", "classsize.inference.commands.cli", "--quiet", "design", "--config",
               str(config), "--vary", AXIS, "--analyses", args.analyses, "--datasets", str(args.datasets),
               "--out", str(out), *args.extra]
    begin = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - begin
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return done.returncode
    fits = 4 * len(args.analyses.split(",")) * args.datasets
    print(f"classsize design, 4 cells x {args.analyses} x {args.datasets} datasets: {seconds:.0f} s whole "
          f"({fits / seconds * 60:.1f} fits per minute), peak memory {peak:.1f} GiB")
    import pandas as pd

    table = pd.read_csv(out / "design.csv")
    rows = table[table["estimand"] == "small_class_direct_effect"]
    print(rows[["n_experimental", "analysis", "power", "power_lower", "power_upper", "mean_width", "coverage",
                "warned"]].to_string(index=False))
    print(json.dumps({"seconds": round(seconds, 1), "fits": fits}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
