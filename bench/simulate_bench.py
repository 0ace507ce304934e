"""Forward simulation benchmark: whole ``classsize simulate`` commands against the notebook.

Every figure is one whole process, timed from start to exit, as a user runs it:

* **model**: ``classsize simulate --out DIR --replicates K [--format parquet]`` (the
  installed ``classsize`` command, a subprocess).  Each command runs twice with a
  fresh JAX compilation cache folder (``CLASSSIZE_CACHE_DIR``): once with the folder
  empty (**cold**: imports, tracing and compilation included) and once again after it
  (**warm**: the compiled sampler is loaded from the cache);
* **notebook**: the notebook's own procedure in one Python process: for each of the K
  datasets ``simulate_notebook(Config(), seed)`` (numpy + pandas), written to
  ``replicate_KKKK/`` with ``Dataset.write`` (pandas ``to_csv``).  Above
  ``--notebook-max`` datasets it is not run; its time is then extrapolated from the
  largest K run (per dataset after its fixed cost, the K = 1 run) and marked so.

For each run: wall time, peak resident memory of the process (``ru_maxrss`` from
``os.wait4``) and bytes written.  The script then checks the targets: 200 datasets as
CSV folders at least 3x faster than the notebook writing 200; 1,000 as Parquet at
least 20x faster than the notebook writing 1,000 as CSV; 10,000 as Parquet under
2 GB of peak memory; one dataset, warm cache, at most 2 s.

With ``--breakdown`` it instead times, in one process, the steps of one batch of 256
replicates (CPU time per dataset, best of 3): the vectorised draw, the stacked tables,
the Parquet files, the CSV folders.

    python bench/simulate_bench.py                      # K = 1, 200, 1000, 10000
    python bench/simulate_bench.py --ks 1,200 --notebook-max 200
    python bench/simulate_bench.py --breakdown
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTEBOOK_SCRIPT = """
import sys
from pathlib import Path
from classsize.model import Config
from classsize.model.notebook import simulate_notebook
out, seed, k = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config = Config()
for i in range(k):
    ds = simulate_notebook(config, seed + i)
    ds.write(out if k == 1 else out / f"replicate_{i:04d}")
"""


def _classsize() -> str:
    here = Path(sys.executable).parent / "classsize"
    return str(here) if here.exists() else (shutil.which("classsize") or "classsize")


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak resident memory in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024.0


def breakdown(batch: int = 256) -> int:
    """CPU time per dataset of each step of ``write_replicates`` on one batch."""
    import numpyro

    numpyro.set_host_device_count(os.cpu_count() or 1)  # as the classsize command does
    import importlib

    import numpy as np

    from classsize.model import Config
    from classsize.model import writers as W
    from classsize.model.jaxcache import enable_compilation_cache

    enable_compilation_cache()
    S = importlib.import_module("classsize.model.simulate")
    config, seeds = Config(), list(range(batch))
    root = Path(tempfile.mkdtemp(prefix="simulate_breakdown_"))

    def best(name: str, step) -> object:
        times, out = [], None
        for _ in range(3):
            t0 = time.process_time()
            out = step()
            times.append(time.process_time() - t0)
        print(f"  {name:34s} {min(times) / batch * 1e3:7.3f} ms CPU per dataset")
        return out

    def draw():
        return {k: np.asarray(v) for k, v in S._start_batch(config, seeds, batch).items()}

    def parquet():
        w = W.StackedWriter(root / "pq", config, batch)
        w.add(st, cl, seeds, d["school_effect"])
        w.close()

    def csv():
        shutil.rmtree(root / "csv", ignore_errors=True)
        truths = [W.truth_of(config, s, d["school_effect"][i]) for i, s in enumerate(seeds)]
        W.write_csv_folders(root / "csv", st, cl, truths, [f"replicate_{i:04d}" for i in seeds])

    try:
        d = draw()  # compilation (or the cache) out of the timing
        print(f"steps of one batch of {batch} replicates (Config(): {config.n_students} students each)")
        d = best("draw (jitted, vmapped)", draw)
        st, cl = best("stacked tables", lambda: W.stacked_tables(d, config, seeds))
        best("  of which the shuffle orders", lambda: W.shuffle_orders(d["class_of_student"], seeds))
        best("Parquet files (StackedWriter)", parquet)
        best("CSV folders (one thread)", csv)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,200,1000,10000", help="numbers of datasets, comma-separated")
    ap.add_argument("--notebook-max", type=int, default=1000, help="largest K the notebook procedure runs")
    ap.add_argument("--csv-max", type=int, default=1000, help="largest K written as CSV folders by the model")
    ap.add_argument("--workdir", default=None, help="where outputs go (default: a temporary folder, removed)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs")
    ap.add_argument("--breakdown", action="store_true", help="time the steps of one batch, in process")
    args = ap.parse_args(argv)
    if args.breakdown:
        return breakdown()
    ks = [int(k) for k in args.ks.split(",")]

    root = Path(args.workdir or tempfile.mkdtemp(prefix="simulate_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    exe = _classsize()
    base_env = {k: v for k, v in os.environ.items() if k not in ("CLASSSIZE_NO_CACHE", "CLASSSIZE_CACHE_DIR")}
    rows: list[tuple[str, int, str, float, float, int]] = []
    results: dict[tuple[str, int, str], float] = {}
    mem: dict[tuple[str, int, str], float] = {}

    def record(what: str, k: int, cache: str, wall: float, peak: float, nbytes: int) -> None:
        rows.append((what, k, cache, wall, peak, nbytes))
        results[(what, k, cache)] = wall
        mem[(what, k, cache)] = peak
        print(f"  {what:16s} K={k:<6d} {cache:6s} {wall:8.2f} s  {peak:7.0f} MB  {nbytes / 1e6:9.1f} MB written",
              flush=True)

    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    try:
        for k in ks:
            formats = (["csv"] if k == 1 or k <= args.csv_max else []) + (["parquet"] if k > 1 else [])
            for fmt in formats:
                cache = root / f"cache_{fmt}_{k}"
                env = dict(base_env, CLASSSIZE_CACHE_DIR=str(cache))
                for state in ("cold", "warm"):
                    out = root / f"model_{fmt}_{k}_{state}"
                    cmd = [exe, "simulate", "--out", str(out), "--replicates", str(k), "--format", fmt]
                    wall, peak = run(cmd, env)
                    record(f"model {fmt}", k, state, wall, peak, _bytes_under(out))
                    shutil.rmtree(out)
                shutil.rmtree(cache)
            if k <= args.notebook_max:
                out = root / f"notebook_{k}"
                wall, peak = run([sys.executable, "-c", NOTEBOOK_SCRIPT, str(out), "0", str(k)], base_env)
                record("notebook csv", k, "-", wall, peak, _bytes_under(out))
                shutil.rmtree(out)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)

    nb = {k: w for (what, k, _), w in results.items() if what == "notebook csv"}

    def notebook_time(k: int) -> tuple[float, str]:
        if k in nb:
            return nb[k], "measured"
        big = max(nb)
        fixed = nb.get(1, 0.0)
        per = (nb[big] - fixed) / max(big - 1, 1)
        return fixed + per * (k - 1), f"extrapolated from K={big}"

    print()
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    print("targets:")
    if 200 in nb and ("model csv", 200, "warm") in results:
        for state in ("cold", "warm"):
            r = nb[200] / results[("model csv", 200, state)]
            print(f"  200 as CSV folders ({state} cache): {r:.1f}x faster than the notebook (target >= 3x)")
    if nb and ("model parquet", 1000, "warm") in results:
        t, how = notebook_time(1000)
        for state in ("cold", "warm"):
            r = t / results[("model parquet", 1000, state)]
            print(f"  1000 as Parquet ({state} cache): {r:.1f}x faster than the notebook writing 1000 CSV "
                  f"({how}) (target >= 20x)")
    if ("model parquet", 10000, "warm") in mem:
        peak = max(mem[("model parquet", 10000, s)] for s in ("cold", "warm"))
        print(f"  10000 as Parquet: peak memory {peak:.0f} MB (target < 2048 MB)")
        if nb:
            t, how = notebook_time(10000)
            r = t / results[("model parquet", 10000, "warm")]
            print(f"  10000 as Parquet (warm cache): {r:.1f}x faster than the notebook writing 10000 CSV ({how})")
    if ("model csv", 1, "warm") in results:
        print(f"  one dataset, warm cache: {results[('model csv', 1, 'warm')]:.2f} s (target <= 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
