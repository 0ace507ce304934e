"""Recovery-study benchmark: batched NUTS fits against fits one by one.

For each analysis model it simulates ``--datasets`` datasets and fits them twice,
with the same chains and kernel settings:

* **one by one**: ``classsize.inference.fit.result.fit`` on each dataset (loaded from its
  CSV files, as ``classsize fit`` does), one after another.  Each call builds and
  compiles its own MCMC run; the time of each call is the whole call, with the
  compilation and the ArviZ InferenceData it builds (the posterior predictive
  replicates are switched off);
* **batched**: :class:`classsize.inference.engine.sampling.ChainRunner` on
  ``get_analysis(model).bind_many(config, observed)``, every dataset's chains in one
  compiled program, sharded over the JAX devices (``--vectorize``, the runner's
  ``vectorize``: ``map``, lanes one after another on each device, the default;
  ``vmap``, all lanes of a device at once).  Compilation is reported apart from the
  run.

It prints fits per minute for both (the batched figure with and without its one
compilation), their ratio, the leapfrog steps per draw, the seconds per leapfrog
step and device, and a projection for a 100-dataset SBC with the default chain
lengths (4 chains x (1000 warm-up + 1000 draws)): 400 lanes x 2000 iterations x
the steps per iteration measured here x the seconds per step, divided by the number
of devices, plus one compilation.  Short chains are enough to measure the ratio;
the projection assumes the steps per iteration of the short run's draws (a longer
warm-up may find a larger step size).

The address space is capped at ``--memory-limit-kb`` (default 16000000, as ``ulimit
-v 16000000``) before JAX starts; 0 leaves it as it is.  JAX gets one CPU device per
core (importing :mod:`classsize.inference`), as the ``classsize`` command gives it.

    python bench/recover_bench.py --design small --models randomized structural
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

DESIGNS = {
    "default": {},  # the notebook's experiment: 4000 + 2000 students, 20 schools
    "small": {"n_regular": 300, "n_experimental": 300, "n_schools": 5},
    "fit-test": {"n_regular": 800, "n_experimental": 700, "n_schools": 6},  # the tests' and design bench's size
}


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["randomized", "structural"],
                    choices=["structural", "randomized", "naive"])
    ap.add_argument("--design", choices=sorted(DESIGNS), default="small",
                    help="default: the notebook's 6000 students; small: 300 + 300 students, 5 schools")
    ap.add_argument("--datasets", type=int, default=8, help="datasets fitted each way")
    ap.add_argument("--one-by-one", type=int, default=None,
                    help="datasets fitted one by one (default: --datasets; 0 skips them)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--vectorize", nargs="+", default=["map"], choices=["map", "vmap"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-limit-kb", type=int, default=16_000_000)
    args = ap.parse_args(argv)

    cap = _cap_memory(args.memory_limit_kb)
    import classsize.inference  # noqa: F401  (every core a JAX device, before JAX starts)
    import jax
    import numpy as np
    import numpyro

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset
    from classsize.inference.fit.result import fit
    from classsize.inference.engine.sampling import ChainRunner
    from classsize.inference.studies.fitting import FIT_SEED_OFFSET
    from classsize.model import Config, simulate
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    config = Config(**DESIGNS[args.design])
    n = args.datasets
    n_one = n if args.one_by_one is None else args.one_by_one
    seeds = [args.seed + k for k in range(n)]
    fit_seeds = [s + FIT_SEED_OFFSET for s in seeds]
    iterations = args.warmup + args.samples
    print(f"Recovery benchmark: design {args.design!r} ({config.n_regular} + {config.n_experimental} students, "
          f"{config.n_schools} schools), {n} datasets, {args.chains} chains x ({args.warmup} + {args.samples})")
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), python {platform.python_version()}, "
          f"jax {jax.__version__} on {jax.default_backend()} with {jax.device_count()} device(s), "
          f"numpyro {numpyro.__version__}; address-space limit: {cap}; load average at start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    draws = draw_many(config, seeds)
    for model in args.models:
        analysis = get_analysis(model)
        obs = observed_from_draw(draws, config, analysis.cohort)
        if (analysis.unfittable_schools(obs, config.n_schools) > 0).any():
            print(f"{model}: a dataset has a school without students; choose other seeds")
            continue
        print(f"== {model}")
        # ----------------------------------------------------------- one by one
        one_seconds = []
        if n_one:
            with tempfile.TemporaryDirectory() as tmp:
                for k in range(n_one):
                    folder = Path(tmp) / str(k)
                    simulate(config, seeds[k]).write(folder)
                    loaded = load_dataset(folder)
                    t0 = time.perf_counter()
                    r = fit(loaded, model, chains=args.chains, warmup=args.warmup, samples=args.samples,
                            seed=fit_seeds[k], progress=False, posterior_predictive=False)
                    one_seconds.append(time.perf_counter() - t0)
                    del r
            per_one = float(np.mean(one_seconds))
            print(f"one by one  : {n_one} fits, {sum(one_seconds):7.1f} s, {per_one:6.1f} s per fit "
                  f"(first {one_seconds[0]:.1f} s, last {one_seconds[-1]:.1f} s) -> {60 / per_one:6.2f} fits/min")
        # -------------------------------------------------------------- batched
        for vec in args.vectorize:
            fitter = ChainRunner(args.chains, args.warmup, args.samples, vectorize=vec)
            out = fitter.run(analysis.bind_many(config, obs), fit_seeds)
            total = fitter.compile_seconds + out.seconds
            num_steps, diverging = out.stats["n_steps"], out.stats["diverging"]
            max_tree_depth = analysis.kernel_settings.get("max_tree_depth", 10)
            steps = num_steps.mean()
            all_steps = num_steps.sum() + out.warmup_steps.sum()
            per_step = out.seconds * fitter.n_devices / all_steps
            print(f"batched {vec:4s}: {n} fits, {out.seconds:7.1f} s run + {fitter.compile_seconds:5.1f} s compile "
                  f"-> {60 * n / total:6.2f} fits/min ({60 * n / out.seconds:.2f} without the compilation)")
            if n_one:
                print(f"  speed-up over one by one: {per_one * n / total:.1f}x with the compilation, "
                      f"{per_one * n / out.seconds:.1f}x without")
            print(f"  leapfrog steps per draw {steps:.0f} (warm-up {out.warmup_steps.mean():.0f}); tree depth "
                  f"saturated in {100 * np.mean(num_steps >= 2 ** max_tree_depth - 1):.0f}% of draws; "
                  f"divergences {int(diverging.sum())}; {1e3 * per_step:.3f} ms per leapfrog step per device")
            lanes, its = 100 * 4, 2000
            projected = lanes * its * steps * per_step / fitter.n_devices + fitter.compile_seconds
            print(f"  projected 100-dataset SBC, 4 x (1000 + 1000): {projected / 60:.1f} min on "
                  f"{fitter.n_devices} device(s) at {steps:.0f} steps per iteration")
        print()
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
