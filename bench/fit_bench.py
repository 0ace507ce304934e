"""Benchmark of ``classsize fit`` as a user runs it: whole commands, start to exit.

    python bench/fit_bench.py                                  # every model, 3 repeats
    python bench/fit_bench.py --repeats 1 --models structural,pymc
    python bench/fit_bench.py --data DATA --json runs.jsonl    # reuse a data folder, keep every run

The data are the notebook's seed-100 tables (``classsize simulate --engine notebook
--seed 100``), made once.  Each measured thing is a subprocess, run with the default
chain lengths on every core, twice against one fresh cache folder: **cold** (empty)
then **warm** (what the cold run left):

* ``structural``, ``randomized``, ``naive``: ``classsize fit DATA --model M --out RUN``
  with ``CLASSSIZE_CACHE_DIR`` the cache folder (JAX's compilation cache);
* ``pymc``: ``python bench/pymc_structural.py DATA`` (the structural density ported to
  PyMC, PyMC's NUTS) with the folder as PyTensor's ``base_compiledir``;
* ``nutpie``: the same PyMC model sampled by nutpie (numba backend), the folder as
  PyTensor's ``base_compiledir`` and ``NUMBA_CACHE_DIR``.

The PyMC port runs the chain lengths the ``classsize fit`` command defaults to (read
from its parser).  Per run: wall seconds of the whole command, peak resident memory
(``os.wait4``: the largest single process of the command's tree, in MB of 1024 KB),
bulk ESS of the estimands (``summary.json``, or the port's JSON line) and ESS per
second of the whole command.  Repeats are interleaved (every model cold and warm,
then again); the table gives medians, and each row's ESS/s against structural's
with the same cache state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ESTIMANDS = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")
SHORT = {"small_class_direct_effect": "direct", "small_class_total_effect": "total", "teacher_ma_effect": "MA"}
NUMPYRO_MODELS = ("structural", "randomized", "naive")
PYMC_MODELS = ("pymc", "nutpie")
ALL_MODELS = NUMPYRO_MODELS + PYMC_MODELS


def classsize_exe() -> str:
    exe = BIN / "classsize"
    return str(exe) if exe.exists() else shutil.which("classsize") or "classsize"


def cli_defaults() -> dict:
    """The chain lengths ``classsize fit`` runs when not told (its parser's defaults)."""
    from classsize.inference.commands.cli import build_parser

    a = build_parser().parse_args(["fit", "DATA", "--out", "RUN"])
    return {"chains": a.chains, "warmup": a.warmup, "samples": a.samples}


def make_data(folder: Path) -> None:
    subprocess.run([classsize_exe(), "simulate", "--engine", "notebook", "--seed", "100", "--out", str(folder)],
                   check=True, capture_output=True, text=True)


def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float, int]:
    """``(wall seconds, peak RSS MB, exit status)`` of one command, its output to ``log``."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def command(model: str, data: Path, run: Path, cache: Path, lengths: dict) -> tuple[list[str], dict]:
    """The command line and environment of one measured run."""
    env = dict(os.environ)
    if model in NUMPYRO_MODELS:
        env["CLASSSIZE_CACHE_DIR"] = str(cache)
        return [classsize_exe(), "fit", str(data), "--model", model, "--out", str(run)], env
    flags = env.get("PYTENSOR_FLAGS", "")
    env["PYTENSOR_FLAGS"] = (flags + "," if flags else "") + f"base_compiledir={cache}"
    env["NUMBA_CACHE_DIR"] = str(cache / "numba")
    cmd = [sys.executable, str(HERE / "pymc_structural.py"), str(data), "--sampler", model,
           "--cores", str(os.cpu_count() or 1)]
    for k, v in lengths.items():
        cmd += [f"--{k}", str(v)]
    return cmd, env


def ess_of(model: str, run: Path, log: Path) -> dict:
    """Bulk ESS of each estimand the run reports."""
    if model in NUMPYRO_MODELS:
        summary = json.loads((run / "summary.json").read_text())
        return {k: v["ess_bulk"] for k, v in summary["estimands"].items()}
    last = [line for line in log.read_text().splitlines() if line.startswith("{")][-1]
    return json.loads(last)["ess_bulk"]


def measure(model: str, cache_state: str, data: Path, cache: Path, work: Path, lengths: dict, tag: str) -> dict:
    run = work / f"run-{model}-{cache_state}-{tag}"
    log = work / f"log-{model}-{cache_state}-{tag}.txt"
    cmd, env = command(model, data, run, cache, lengths)
    wall, rss, rc = timed(cmd, env, log)
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{model} ({cache_state}) exited {rc}:\n{tail}")
    ess = ess_of(model, run, log)
    shutil.rmtree(run, ignore_errors=True)
    return {"model": model, "cache": cache_state, "wall_s": wall, "peak_rss_mb": rss, "ess_bulk": ess,
            "ess_per_s": {k: v / wall for k, v in ess.items()}}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(rows: list[dict], models: list[str]) -> str:
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["cache"]), []).append(r)
    summary = {}
    for key, rs in groups.items():
        summary[key] = {
            "n": len(rs),
            "wall": med([r["wall_s"] for r in rs]),
            "wall_lo": min(r["wall_s"] for r in rs), "wall_hi": max(r["wall_s"] for r in rs),
            "rss": med([r["peak_rss_mb"] for r in rs]),
            "ess": {k: med([r["ess_bulk"].get(k) for r in rs]) for k in ESTIMANDS},
            "eps": {k: med([r["ess_per_s"].get(k) for r in rs]) for k in ESTIMANDS},
        }
    lines = [f"{'command':<12} {'cache':<5} {'n':>2} {'wall s (range)':>20} {'peak MB':>8} "
             + " ".join(f"{'ESS ' + SHORT[k]:>11}" for k in ESTIMANDS) + " "
             + " ".join(f"{'ESS/s ' + SHORT[k]:>12}" for k in ESTIMANDS) + f" {'ESS/s vs structural':>20}"]
    for m in models:
        for c in ("cold", "warm"):
            s = summary.get((m, c))
            if s is None:
                continue
            ref = summary.get(("structural", c))
            ratios = []
            for k in ESTIMANDS:
                if ref and s["eps"][k] and ref["eps"][k]:
                    ratios.append(f"{s['eps'][k] / ref['eps'][k]:.2f}")
                else:
                    ratios.append("-")
            wall = f"{s['wall']:.1f} ({s['wall_lo']:.1f}-{s['wall_hi']:.1f})"
            lines.append(f"{m:<12} {c:<5} {s['n']:>2} {wall:>20} {s['rss']:8.0f} "
                         + " ".join(f"{fmt(s['ess'][k], '.0f'):>11}" for k in ESTIMANDS) + " "
                         + " ".join(f"{fmt(s['eps'][k], '.1f'):>12}" for k in ESTIMANDS)
                         + f" {' / '.join(ratios):>20}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(ALL_MODELS), help=f"comma-separated, of {', '.join(ALL_MODELS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", type=Path, help="data folder (default: the seed-100 notebook tables, made in a temp folder)")
    p.add_argument("--json", type=Path, help="append every run as a JSON line to this file")
    a = p.parse_args(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = set(models) - set(ALL_MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {', '.join(ALL_MODELS)}")
    lengths = cli_defaults()
    sys.path.insert(0, str(HERE))
    from pymc_structural import fit_defaults

    print(f"chain lengths (classsize fit's defaults): {lengths}; {os.cpu_count()} cores", flush=True)
    if fit_defaults() != lengths:
        print(f"note: classsize.inference.fit.result.fit() defaults to {fit_defaults()}; the command's are used", flush=True)
    with tempfile.TemporaryDirectory(prefix="fit-bench-") as tmp:
        work = Path(tmp)
        data = a.data
        if data is None:
            data = work / "data"
            make_data(data)
        rows = []
        for rep in range(a.repeats):
            for m in models:
                cache = work / f"cache-{m}-{rep}"  # fresh and empty: cold, then warm with what it left
                cache.mkdir()
                for state in ("cold", "warm"):
                    r = measure(m, state, data, cache, work, lengths, str(rep))
                    r["repeat"] = rep
                    rows.append(r)
                    print(json.dumps(r), flush=True)
                    if a.json:
                        with open(a.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
                shutil.rmtree(cache, ignore_errors=True)
    print()
    print(table(rows, models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
