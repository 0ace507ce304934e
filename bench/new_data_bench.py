"""`classsize fit` on data the machine has not fitted before, as a user runs it.

For each repetition, two fresh datasets of the default design (new seeds) and an empty
compilation cache; then three whole commands, timed from start to exit:

1. ``cold``: the first dataset on the empty cache;
2. ``new data``: the second dataset, on the cache the first left (another dataset of
   the same design, never fitted);
3. ``again``: the second dataset once more;
4. ``warm-up 300``: the second dataset with ``--warmup 300`` (a chain length this cache
   has not run).

Each version named on the command line runs every repetition in turn (side by side).
A version is ``NAME=PYTHONPATH`` (empty: the installed package)::

    python bench/new_data_bench.py --reps 3 now= before=/tmp/basepkg
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSSIZE = [sys.executable, "-c", "import sys; from classsize.inference.commands.cli import main; sys.exit(main())"]


def timed(args, env) -> float:
    begin = time.perf_counter()
    subprocess.run(CLASSSIZE + ["-q"] + args, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="NAME=PYTHONPATH")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=9100)
    args = parser.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    cases = ("cold", "new data", "again", "warm-up 300")
    times = {name: {case: [] for case in cases} for name, _ in versions}
    with tempfile.TemporaryDirectory(prefix="classsize-new-data-") as tmp:
        tmp = Path(tmp)
        for rep in range(args.reps):
            seeds = (args.first_seed + 2 * rep, args.first_seed + 2 * rep + 1)
            for s in seeds:
                subprocess.run(CLASSSIZE + ["-q", "simulate", "--seed", str(s), "--out", str(tmp / f"d{s}")],
                               check=True, stdout=subprocess.DEVNULL)
            for name, path in versions:
                env = {**os.environ, "CLASSSIZE_CACHE_DIR": str(tmp / f"cache-{name}-{rep}")}
                env.pop("CLASSSIZE_NO_CACHE", None)
                if path:
                    env["PYTHONPATH"] = path
                run = lambda d, tag: ["fit", str(tmp / f"d{d}"), "--out", str(tmp / f"r-{name}-{rep}-{tag}")]  # noqa: E731
                times[name]["cold"].append(timed(run(seeds[0], "a"), env))
                times[name]["new data"].append(timed(run(seeds[1], "b"), env))
                times[name]["again"].append(timed(run(seeds[1], "c"), env))
                times[name]["warm-up 300"].append(timed(run(seeds[1], "d") + ["--warmup", "300"], env))
                print(name, rep, {k: round(v[-1], 1) for k, v in times[name].items()}, flush=True)
    print(f"\nmedians of {args.reps} runs, seconds (whole `classsize fit` commands, structural, defaults):")
    print(f"{'version':<10} " + " ".join(f"{case:>12}" for case in cases))
    for name, t in times.items():
        print(f"{name:<10} " + " ".join(f"{statistics.median(t[case]):12.1f}" for case in cases))


if __name__ == "__main__":
    main()
