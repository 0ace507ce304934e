"""How often the model checks fire, and what they cost.

For the notebook's design (6,000 students, 20 schools): ``--null`` datasets without
noise or class effects (the false alarms of both checks), ``--per-level`` datasets at
each measurement-noise sd of ``--noise`` (the power of the score-edge check) and with
class effects of sd 2.5 (the power of the class-effect check), each fitted with the
structural analysis as data that declare nothing are (noise-free, no class effects),
1 chain x (200 + 200) draws, in batches of one compiled program
(:func:`classsize.inference.studies.checks.check_rates`).  Also times the two checks
on one fit's draws.  Run: ``python bench/checks_bench.py [--null N] [--per-level N]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from classsize.model.precision import float64


@float64
def main() -> None:
    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.sources import as_loaded
    from classsize.inference.fit.checks import class_check, edge_check
    from classsize.inference.studies.checks import check_rates
    from classsize.model import Config, simulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--null", type=int, default=40)
    parser.add_argument("--per-level", type=int, default=10)
    parser.add_argument("--noise", default="1,2,3")
    args = parser.parse_args()
    structural = get_analysis("structural")
    cases = [("no noise, no class effects", Config(), args.null, 0)]
    cases += [(f"noise sd {sd:g}", Config(score_noise_sd=float(sd)), args.per_level, 1000)
              for sd in map(float, args.noise.split(","))]
    cases += [("class effects sd 2.5", Config(class_effect_sd=2.5), args.per_level, 2000)]
    print(f"{'data':<28} {'datasets':>8} {'score edges fired':>18} {'class effects fired':>20} "
          f"{'median p (edges)':>17} {'seconds':>8}")
    for label, config, n, seed in cases:
        r = check_rates(structural, config, n, seed=seed)
        print(f"{label:<28} {n:8d} {r.count('score_edges'):18d} {r.count('class_effects'):20d} "
              f"{np.median(r.p_values['score_edges']):17.4f} {r.seconds:8.0f}", flush=True)
    data = simulate(Config(), 1)
    observed = as_loaded(data).observed(Config().design)
    start = time.perf_counter()
    class_check(observed)
    mid = time.perf_counter()
    edge_check(np.full(4000, 0.05), 6000)
    print(f"\nchecks on one fit (6,000 students, 4,000 draws): class effects {mid - start:.2f} s, "
          f"score edges {time.perf_counter() - mid:.3f} s")


if __name__ == "__main__":
    main()
