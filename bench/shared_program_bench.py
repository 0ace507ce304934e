"""Commands that share one sampler program: a fit, the same fit with other chains, a study.

On an empty compilation cache, for each version named on the command line, three whole
commands on the fit-test design (800 REGULAR + 700 EXPERIMENTAL students, 6 schools),
timed from start to exit:

1. ``fit``: ``classsize fit`` of dataset seed 0 (4 chains, the defaults);
2. ``fit --chains 2``: the same data with 2 chains;
3. ``recover``: ``classsize recover --datasets 8`` of the same design (coverage,
   4 chains, 300 + 300 iterations), whose dataset 0 is the fitted one.

For each command the program log (``CLASSSIZE_PROGRAM_LOG``) says how many sampler
programs it traced and exported, loaded from the store, and the seconds they took.
A version is ``NAME=PYTHONPATH`` (empty: the installed package); the versions run in
turn, each repetition on a new cache::

    python bench/shared_program_bench.py --reps 2 now= before=/tmp/basepkg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSSIZE = [sys.executable, "-c", "import sys; from classsize.inference.commands.cli import main; sys.exit(main())"]
DESIGN = "n_regular = 800\nn_experimental = 700\nn_schools = 6\n"


def timed(args, env, log: Path) -> tuple[float, str]:
    """Seconds of one whole command, and what its sampler programs cost."""
    log.unlink(missing_ok=True)
    begin = time.perf_counter()
    subprocess.run(CLASSSIZE + ["-q"] + args, env={**env, "CLASSSIZE_PROGRAM_LOG": str(log)}, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - begin
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    sampler = [e for e in lines if e["kind"] == "sampler"]
    traced = [e["seconds"] for e in sampler if e["source"] == "traced"]
    stored = [e["seconds"] for e in sampler if e["source"] == "stored"]
    return seconds, f"traced {len(traced)} ({sum(traced):.1f} s), loaded {len(stored)} ({sum(stored):.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="+", help="NAME=PYTHONPATH")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    versions = [v.split("=", 1) for v in args.versions]
    cases = ("fit", "fit --chains 2", "recover")
    times = {name: {case: [] for case in cases} for name, _ in versions}
    with tempfile.TemporaryDirectory(prefix="classsize-shared-") as tmp:
        tmp = Path(tmp)
        (tmp / "design.toml").write_text(DESIGN)
        subprocess.run(CLASSSIZE + ["-q", "simulate", "--config", str(tmp / "design.toml"), "--seed", "0",
                                    "--out", str(tmp / "data")], check=True, stdout=subprocess.DEVNULL)
        for rep in range(args.reps):
            for name, path in versions:
                env = {**os.environ, "CLASSSIZE_CACHE_DIR": str(tmp / f"cache-{name}-{rep}")}
                env.pop("CLASSSIZE_NO_CACHE", None)
                if path:
                    env["PYTHONPATH"] = path
                out = lambda tag: str(tmp / f"out-{name}-{rep}-{tag}")  # noqa: E731
                commands = {
                    "fit": ["fit", str(tmp / "data"), "--out", out("a")],
                    "fit --chains 2": ["fit", str(tmp / "data"), "--chains", "2", "--out", out("b")],
                    "recover": ["recover", "--config", str(tmp / "design.toml"), "--datasets", "8",
                                "--warmup", "300", "--samples", "300", "--out", out("c")],
                }
                for case in cases:
                    seconds, programs = timed(commands[case], env, tmp / "programs.jsonl")
                    times[name][case].append(seconds)
                    print(f"{name} rep {rep} {case}: {seconds:.1f} s; sampler programs {programs}", flush=True)
    print(f"\nmedians of {args.reps} runs, seconds (whole commands, each repetition from an empty cache):")
    print(f"{'version':<10} " + " ".join(f"{case:>15}" for case in cases))
    for name, t in times.items():
        print(f"{name:<10} " + " ".join(f"{statistics.median(t[case]):15.1f}" for case in cases))


if __name__ == "__main__":
    main()
