"""Benchmark of the analyses: wall time (compilation included), ESS per second, and
cost as the data grow.

    python bench/fit_bench.py                  # structural (NumPyro and PyMC) + randomized + naive on the notebook's seed-100 data
    python bench/fit_bench.py --scaling        # structural at x1, x10, x100 students (short chains)

Run each configuration in a fresh process (so compilation is counted, as a user
waits for it) under ``ulimit -v``; peak resident memory comes from getrusage.
Figures go to bench/README.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def one_pymc_fit(n_regular: int, n_experimental: int, chains: int, warmup: int, samples: int) -> dict:
    """The same structural analysis written in PyMC (``bench/pymc_structural.py``), same data."""
    start = time.perf_counter()
    sys.path.insert(0, HERE)
    from pymc_structural import fit_pymc

    from classsize.model import Config, simulate

    cfg = Config(n_regular=n_regular, n_experimental=n_experimental)
    with tempfile.TemporaryDirectory() as d:
        simulate(cfg, 100).write(d)
        t0 = time.perf_counter()
        r = fit_pymc(d, chains=chains, warmup=warmup, samples=samples, seed=0, cores=min(chains, os.cpu_count() or 1))
    r["model"] = "structural-pymc" + ("-cold" if os.environ.get("PYTENSOR_FLAGS") else "")
    r["process_seconds"] = time.perf_counter() - start
    r["load_and_simulate_seconds"] = t0 - start
    r["max_r_hat_estimands"] = r["max_r_hat"]
    r["max_r_hat"] = r["max_r_hat_all_variables"]
    return r


def one_fit(model: str, n_regular: int, n_experimental: int, chains: int, warmup: int, samples: int) -> dict:
    if model.startswith("structural-pymc"):
        return one_pymc_fit(n_regular, n_experimental, chains, warmup, samples)
    import numpyro

    numpyro.set_host_device_count(max(os.cpu_count() or 1, chains))
    start = time.perf_counter()
    from classsize.inference.fit import fit
    from classsize.model import Config, simulate

    cfg = Config(n_regular=n_regular, n_experimental=n_experimental)
    with tempfile.TemporaryDirectory() as d:
        simulate(cfg, 100).write(d)
        t0 = time.perf_counter()
        r = fit(d, model, chains=chains, warmup=warmup, samples=samples, seed=0, progress=False,
                posterior_predictive=False)
    s = r.summary_dict()
    wall = r.diagnostics["seconds"]
    return {
        "model": model,
        "students": cfg.n_students,
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "fit_seconds": wall,
        "process_seconds": time.perf_counter() - start,
        "load_and_simulate_seconds": t0 - start,
        "divergences": s["diagnostics"]["divergences"],
        "max_r_hat": s["diagnostics"]["max_r_hat"],
        "ess_per_second": {k: v["ess_bulk"] / wall for k, v in s["estimands"].items()},
        "ess_bulk": {k: v["ess_bulk"] for k, v in s["estimands"].items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    env = dict(os.environ)
    compiledir = None
    if args[0] == "structural-pymc-cold":  # count a cold PyTensor compilation, as JAX pays one every run
        compiledir = tempfile.mkdtemp(prefix="pytensor-")
        env["PYTENSOR_FLAGS"] = f"base_compiledir={compiledir}"
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30)))
    if compiledir:
        import shutil

        shutil.rmtree(compiledir, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--child", nargs=6)
    p.add_argument("--scaling", action="store_true")
    p.add_argument("--models", default="structural,structural-pymc-cold,structural-pymc,randomized,naive",
                   help="structural-pymc: PyMC with its compile cache as it is; -cold: an empty cache")
    a = p.parse_args()
    if a.child:
        m, nr, ne, c, w, s = a.child
        print(json.dumps(one_fit(m, int(nr), int(ne), int(c), int(w), int(s))))
        return
    rows = []
    if a.scaling:
        for k in (1, 10, 100):
            rows.append(run_child(["structural", str(4000 * k), str(2000 * k), "1", "200", "200"]))
            print(json.dumps(rows[-1]), flush=True)
    else:
        for m in a.models.split(","):
            rows.append(run_child([m, "4000", "2000", "4", "1000", "1000"]))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{'model':<20} {'students':>8} {'fit s':>7} {'proc s':>7} {'div':>4} {'R-hat':>6} "
          f"{'ESS/s direct':>12} {'ESS/s total':>11} {'ESS/s MA':>9} {'peak MB':>8}")
    for r in rows:
        e = r["ess_per_second"]
        print(f"{r['model']:<20} {r['students']:>8} {r['fit_seconds']:7.1f} {r['process_seconds']:7.1f} "
              f"{r['divergences']:>4} {r['max_r_hat']:6.3f} {e.get('small_class_direct_effect', float('nan')):12.1f} "
              f"{e.get('small_class_total_effect', float('nan')):11.1f} {e.get('teacher_ma_effect', float('nan')):9.1f} "
              f"{r['peak_rss_mb']:8.0f}")


if __name__ == "__main__":
    main()
