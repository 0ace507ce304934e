"""Forward simulation benchmark: the vectorised NumPyro model against the notebook.

Measures, in datasets per second:

* the model: ``draw_many(Config(), range(N))`` -- N datasets in one jitted, vmapped
  call (``draw_many`` blocks until the arrays are ready).  The first call (tracing
  and compilation included) is reported apart from the steady state, the median of
  ``--repeats`` further calls;
* the conversion of those batched draws into the two tables (``tables_from_draw``,
  one dataset at a time), reported apart;
* the notebook's pandas procedure (``simulate_notebook``), median time per dataset
  over ``--notebook-datasets`` datasets.

It prints a table and the speed-up of the model's draws per dataset over the
notebook (target: at least 20x), and the peak resident memory of the process.  The
address space is capped at ``--memory-limit-kb`` (default 16000000, as ``ulimit -v
16000000``) before JAX starts; 0 leaves it as it is.

    python bench/simulate_bench.py            # or: make bench
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time


def _cap_memory(limit_kb: int) -> str:
    if limit_kb <= 0:
        return "unchanged"
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = limit_kb * 1024
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or soft > want:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KB"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-datasets", type=int, default=1000, help="datasets per vectorised model call")
    ap.add_argument("--repeats", type=int, default=3, help="steady-state model calls (median)")
    ap.add_argument("--notebook-datasets", type=int, default=30, help="notebook datasets timed (median)")
    ap.add_argument("--table-datasets", type=int, default=200, help="draws converted to tables (median)")
    ap.add_argument("--memory-limit-kb", type=int, default=16_000_000)
    args = ap.parse_args(argv)

    cap = _cap_memory(args.memory_limit_kb)

    import jax
    import numpy as np
    import pandas as pd

    from classsize.model import Config
    from classsize.model.notebook import simulate_notebook
    from classsize.model.simulate import draw_many
    from classsize.model.tables import tables_from_draw

    config = Config()
    n = args.n_datasets
    seeds = range(n)

    # --- the model: first call (trace + compile + run), then the steady state
    t0 = time.perf_counter()
    draws = draw_many(config, seeds)
    first = time.perf_counter() - t0
    steady = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        draws = draw_many(config, seeds)
        steady.append(time.perf_counter() - t0)
    model_call = statistics.median(steady)
    model_per = model_call / n

    # --- batched draws -> tables, one dataset at a time
    k = min(args.table_datasets, n)
    table_times = []
    for i in range(k):
        one = {key: v[i] for key, v in draws.items()}
        t0 = time.perf_counter()
        tables_from_draw(one, config, shuffle_seed=i)
        table_times.append(time.perf_counter() - t0)
    table_per = statistics.median(table_times)

    # --- the notebook's pandas procedure
    simulate_notebook(config, 0)  # warm-up (imports, pandas caches)
    nb_times = []
    for s in range(args.notebook_datasets):
        t0 = time.perf_counter()
        simulate_notebook(config, 1 + s)
        nb_times.append(time.perf_counter() - t0)
    nb_per = statistics.median(nb_times)

    peak = _peak_rss_mb()
    rows = [
        ("model draws (vectorised, steady state)", model_per, f"median of {args.repeats} calls of {n}"),
        ("model draws + tables", model_per + table_per, f"tables: median of {k} datasets"),
        ("tables from draws (alone)", table_per, f"median of {k} datasets"),
        ("notebook (numpy + pandas)", nb_per, f"median of {args.notebook_datasets} datasets"),
    ]
    print(f"Forward simulation benchmark ({n} datasets of {config.n_students} students)")
    print(
        f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), python {platform.python_version()}, "
        f"jax {jax.__version__} on {jax.default_backend()}, numpy {np.__version__}, pandas {pd.__version__}"
    )
    print(f"address-space limit: {cap}")
    print()
    print(f"{'':40s} {'ms/dataset':>11s} {'datasets/s':>11s} {'vs notebook':>12s}  note")
    for name, per, note in rows:
        print(f"{name:40s} {per * 1e3:11.3f} {1.0 / per:11.1f} {nb_per / per:11.1f}x  {note}")
    print()
    print(f"model first call (trace + compile + run of {n}): {first:.2f} s")
    print(f"model steady-state call of {n}: median {model_call:.3f} s (runs: {', '.join(f'{t:.3f}' for t in steady)})")
    print(f"speed-up of the vectorised draws per dataset over the notebook: {nb_per / model_per:.1f}x (target >= 20x)")
    print(f"speed-up including the tables: {nb_per / (model_per + table_per):.1f}x")
    print(f"peak resident memory: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
