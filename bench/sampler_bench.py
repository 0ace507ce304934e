"""Sampler settings of the structural fit side by side, in one process.

Each argument is one setting, ``key=value`` pairs joined by commas: a NUTS setting
(``dense_mass=True``, ``target_accept_prob=0.9``, ...), ``warmup=N`` (default the fit's),
or ``vectorize=vmap|map`` (how a device runs its lanes).  For each, the structural
analysis of a data folder is fitted with the default chains through the fitting path
of ``classsize fit`` (``ChainRunner``), and the compile and sampling seconds, leapfrog
steps per draw, step size, divergences, bulk ESS and ESS per sampling second are
printed.  Usage::

    python bench/sampler_bench.py DATA "dense_mass=False" "dense_mass=True" "warmup=1000" "vectorize=vmap"
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np


def main(argv: list[str]) -> None:
    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset
    from classsize.inference.engine.diagnostics import fit_diagnostics
    from classsize.inference.engine.sampling import ChainRunner
    from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

    loaded = load_dataset(argv[0])
    base = get_analysis("structural")
    for spec in argv[1:]:
        settings, warmup, vectorize = dict(base.kernel_settings), DEFAULT_WARMUP, "map"
        for item in spec.split(","):
            key, value = item.split("=")
            if key == "warmup":
                warmup = int(value)
            elif key == "vectorize":
                vectorize = value
            else:
                settings[key] = eval(value)  # noqa: S307 (a benchmark's own arguments)
        analysis = dataclasses.replace(base, kernel_settings=settings)
        problem = analysis.problem(loaded)
        draws = ChainRunner(DEFAULT_CHAINS, warmup, DEFAULT_SAMPLES, vectorize=vectorize).run(
            analysis.stack([problem]), [0])
        sites = {k: v[0] for k, v in draws.sites.items()}
        diag = fit_diagnostics(sites, analysis.estimands(sites), draws.stats["diverging"][0],
                               draws.stats["n_steps"][0], settings.get("max_tree_depth", 10))
        ess = diag["per_quantity"]["small_class_direct_effect"][1]
        print(f"{spec:32s} compile {draws.compile_seconds:5.1f} s, sampling {draws.seconds:6.1f} s, "
              f"{draws.stats['n_steps'].mean():5.1f} steps/draw ({draws.warmup_steps.mean():5.1f} in warm-up), "
              f"step size {np.median(draws.stats['step_size']):.3f}, {diag['divergences']} divergences, "
              f"min bulk ESS {diag['min_ess_bulk']:.0f}, direct effect ESS {ess:.0f} "
              f"({ess / draws.seconds:.0f} per sampling second), max R-hat {diag['max_r_hat']:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
