"""How long a new sampler program takes to prepare: tracing, exporting and compiling.

Each version named on the command line runs, in turn and in a fresh process with the
cache off (``CLASSSIZE_NO_CACHE=1``), one structural fit of the fit-test design (800 +
700 students, 6 schools) with 4 chains x (500 + 1000) on every core, and reports
``ChainRunner.compile_seconds`` (the program ready to run) and the sampling seconds.
A version is ``NAME=PYTHONPATH`` (empty: the installed package)::

    python bench/sampler_compile_bench.py --rounds 3 now= before=/tmp/basepkg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ONE_FIT = r"""
import json, os
os.environ["CLASSSIZE_NO_CACHE"] = "1"
from classsize.inference.engine.runtime import use_all_cores
use_all_cores()
from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.sampling import ChainRunner
from classsize.model import Config
from classsize.model.simulate import draw_many
from classsize.model.tables import observed_from_draw
config = Config(n_regular=800, n_experimental=700, n_schools=6)
analysis = get_analysis("structural")
problem = analysis.bind_many(config, observed_from_draw(draw_many(config, [3]), config, analysis.cohort))
runner = ChainRunner(chains=4, warmup=500, samples=1000)
draws = runner.run(problem, [11])
print(json.dumps({"prepare": runner.compile_seconds, "sampling": draws.seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="NAME=PYTHONPATH")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    runs = {name: [] for name, _ in versions}
    for r in range(args.rounds):
        for name, path in versions:
            env = {**os.environ, **({"PYTHONPATH": path} if path else {})}
            out = subprocess.run([sys.executable, "-c", ONE_FIT], env=env, check=True, capture_output=True, text=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(name, r, {k: round(v, 2) for k, v in runs[name][-1].items()}, flush=True)
    print(f"\nmedians of {args.rounds} rounds, seconds:")
    print(f"{'version':<10} {'prepare':>8} {'sampling':>9}")
    for name, rows in runs.items():
        print(f"{name:<10} {statistics.median(r['prepare'] for r in rows):8.2f} "
              f"{statistics.median(r['sampling'] for r in rows):9.2f}")


if __name__ == "__main__":
    main()
