"""A recovery study in one process against the same study on local Dask workers.

Runs ``classsize recover`` twice as whole commands (subprocesses), with the same
study (model, design, datasets, seed, chains):

* **in-process**: no flag; batches of ``--batch-size`` (default 4 per device of
  this process, every core a device), fitted one after another;
* **workers**: ``--workers N`` (default 2): a ``LocalCluster`` of N worker
  processes, one thread and ``cores // N`` devices each, one batch per task
  (default batch size 4 per device of a worker).

For each it reports the wall time of the command, the study's own timings
(``study.json``: simulation, compilation, fitting, summed over batches), the peak
resident memory of the command's process and of each worker (sampled every 0.2 s
with psutil over the process tree), and from the batch files the seconds per batch
and per dataset.  It checks that both give the same tables (all but the timing
column), then projects the wall time of a 10,000-dataset study on N workers from the
measured cost of a batch on a worker: ``other + first + (ceil(batches / N) - 1) x
later``, with ``first`` a worker's first batch (it loads the JAX programs), ``later``
the median of the others, and ``other`` the wall time the busiest worker did not
spend in batches (cluster start, waiting, assembling the tables and plots).  A
batch's seconds are those of the whole task: simulation, compilation, fit and the
summaries.

    python bench/distributed_bench.py --datasets 100 --chains 2 --warmup 100 --samples 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SMALL = {"n_regular": 300, "n_experimental": 300, "n_schools": 5}


def run_command(argv: list[str]) -> dict:
    """Run a command; its wall time and the peak RSS of each process of its tree."""
    import psutil

    peaks: dict[int, tuple[str, int]] = {}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                        name = "command" if p.pid == proc.pid else " ".join(p.cmdline()[-2:])[:60]
                    except psutil.Error:
                        continue
                    if rss > peaks.get(p.pid, ("", 0))[1]:
                        peaks[p.pid] = (name, rss)
            except psutil.Error:
                pass
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall": wall, "peaks": peaks, "stdout": out, "stderr": err}


def study_figures(out: Path) -> dict:
    settings = json.loads((out / "study.json").read_text())
    batches = [json.loads(p.read_text()) for p in sorted((out / "batches").glob("batch-*.json"))]
    per_batch = [b["batch_seconds"] for b in batches]
    return {"settings": settings, "batches": batches, "per_batch": per_batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="randomized")
    ap.add_argument("--datasets", type=int, default=100)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="default: each mode's own (4 per device)")
    ap.add_argument("--project", type=int, default=10_000, help="datasets of the projected study")
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import psutil

    folder = Path(tempfile.mkdtemp(prefix="distributed_bench."))
    config = folder / "small.toml"
    config.write_text("".join(f"{k} = {v}\n" for k, v in SMALL.items()))
    classsize = str(Path(sys.executable).with_name("classsize"))
    common = [classsize, "recover", "--model", args.model, "--from-prior", "--datasets", str(args.datasets),
              "--config", str(config), "--chains", str(args.chains), "--warmup", str(args.warmup),
              "--samples", str(args.samples), "--rank-draws", str(min(99, args.chains * args.samples)), "-q"]
    if args.batch_size:
        common += ["--batch-size", str(args.batch_size)]
    print(f"machine: {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at start, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB")
    runs = {}
    for name, extra in (("in-process", []), (f"{args.workers} workers", ["--workers", str(args.workers)])):
        out = folder / name.replace(" ", "_")
        result = run_command([*common, *extra, "--out", str(out)])
        runs[name] = {**result, **study_figures(out), "out": out}
        print(f"{name}: {result['wall']:.0f} s wall (load average {os.getloadavg()[0]:.1f} at end)", flush=True)

    tables = [pd.read_csv(r["out"] / "recovery.csv").drop(columns=["seconds"]) for r in runs.values()]
    pd.testing.assert_frame_equal(*tables, check_exact=True)
    print("tables equal: yes (every column but the timings)\n")

    print("| run | batch size | batches | wall | simulate | compile | fit | s per batch (median) | s per dataset "
          "(wall) | peak RSS: command | peak RSS: each worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in runs.items():
        s = r["settings"]
        workers = [rss for label, rss in r["peaks"].values() if "spawn_main" in label]
        command_rss = next(rss for label, rss in r["peaks"].values() if label == "command")
        print(f"| {name} | {s['batch_size']} | {len(r['batches'])} | {r['wall']:.0f} s | {s['simulate_seconds']:.0f} s "
              f"| {s['compile_seconds']:.0f} s | {s['fit_seconds_total']:.0f} s | {np.median(r['per_batch']):.1f} s "
              f"| {r['wall'] / args.datasets:.2f} s | {command_rss / 2**20:.0f} MiB | "
              f"{', '.join(f'{w / 2**20:.0f}' for w in sorted(workers)) or '-'} MiB |")
    print("\nper batch after each process's first (medians): simulate / compile / fit / the rest (binding the "
          "data, the pilot, diagnostics and summaries)")
    for name, r in runs.items():
        later = [b for b in r["batches"] if b["batch"] not in {min(x["batch"] for x in r["batches"] if x["pid"] == pid)
                                                              for pid in {y["pid"] for y in r["batches"]}}] or r["batches"]
        parts = {k: float(np.median([b[k] for b in later])) for k in ("simulate_seconds", "compile_seconds",
                                                                      "fit_seconds", "batch_seconds")}
        rest = parts["batch_seconds"] - parts["simulate_seconds"] - parts["compile_seconds"] - parts["fit_seconds"]
        print(f"  {name}: {parts['simulate_seconds']:.1f} / {parts['compile_seconds']:.1f} / {parts['fit_seconds']:.1f}"
              f" / {rest:.1f} s of {parts['batch_seconds']:.1f} s (batch of {r['settings']['batch_size']})")
    single, multi = runs["in-process"], runs[f"{args.workers} workers"]
    print(f"\nspeed-up of {args.workers} workers over in-process (wall): {single['wall'] / multi['wall']:.2f}x")
    by_worker: dict[int, list[float]] = {}
    for record in sorted(multi["batches"], key=lambda r: r["batch"]):
        by_worker.setdefault(record["pid"], []).append(record["batch_seconds"])
    firsts = [v[0] for v in by_worker.values()]
    later = [x for v in by_worker.values() for x in v[1:]] or firsts
    first, steady = float(np.median(firsts)), float(np.median(later))
    busiest = max(sum(v) for v in by_worker.values())
    other = multi["wall"] - busiest
    bs = multi["settings"]["batch_size"]
    print(f"workers run: batches per worker {', '.join(str(len(v)) for v in by_worker.values())}; a worker's first "
          f"batch of {bs} took {first:.1f} s (median; loading JAX programs), later ones {steady:.1f} s (median); "
          f"the busiest worker spent {busiest:.0f} s in batches, so {other:.0f} s of the {multi['wall']:.0f} s wall "
          f"time was cluster start, waiting and assembly")
    single_batches = [r["batch_seconds"] for r in sorted(single["batches"], key=lambda r: r["batch"])]
    print(f"in-process run: first batch of {single['settings']['batch_size']} {single_batches[0]:.1f} s, later ones "
          f"{np.median(single_batches[1:] or single_batches):.1f} s (median)")
    n_batches = math.ceil(args.project / bs)
    print(f"\nprojection: {args.project} datasets = {n_batches} batches of {bs}: "
          f"{other:.0f} s + first batch + (ceil({n_batches} / N) - 1) x {steady:.1f} s")
    print("| workers | wall (projected) |")
    print("|---:|---:|")
    for n in (2, 8, 32, 128):
        wall = other + first + (math.ceil(n_batches / n) - 1) * steady
        print(f"| {n} | {wall / 3600:.1f} h |")


if __name__ == "__main__":
    main()
