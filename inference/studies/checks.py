"""How often the model checks fire (:mod:`classsize.inference.fit.checks`).

:func:`check_rates` simulates ``n`` datasets of a design at a truth, fits each with
an analysis as data that declare nothing are fitted (noise-free scores, no class
effects unless the analysis sets them), and runs the checks that apply on each fit:
on data the fitted model describes, the share that fire is the false-alarm rate; on
data with measurement noise or class effects, it is the power.  The datasets are
fitted in batches of one compiled program, as a recovery study's are
(:func:`~.fitting.simulate_study`, :meth:`~classsize.inference.analyses.base.Analysis.bind_many`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classsize.model import Config
from classsize.model.tables import DRAW_SITES

from classsize.inference.analyses.base import Analysis
from classsize.inference.fit.checks import model_checks
from classsize.inference.studies.fitting import FIT_SEED_OFFSET, _encoder, chain_runner, simulate_study


@dataclass(frozen=True)
class CheckRates:
    """The p-values of each check over the datasets, and the share that fired."""

    p_values: dict[str, np.ndarray]
    fired: dict[str, np.ndarray]
    seconds: float

    def rate(self, name: str) -> float:
        return float(np.mean(self.fired[name]))

    def count(self, name: str) -> int:
        return int(np.sum(self.fired[name]))


def check_rates(analysis: Analysis, config: Config, n: int, *, seed: int = 0, chains: int = 1, warmup: int = 200,
                samples: int = 200, batch_size: int = 4) -> CheckRates:
    """Fit ``n`` datasets simulated from ``config`` (seeds ``seed .. seed + n - 1``) with
    ``analysis`` as it stands (what the simulation fixed is not passed on) and run the
    model checks on each."""
    import time

    from classsize.inference.analyses.base import Problem

    start = time.perf_counter()
    runner = chain_runner(chains, warmup, samples)
    p_values: dict[str, list[float]] = {}
    fired: dict[str, list[bool]] = {}
    for lo in range(seed, seed + n, batch_size):
        seeds = list(range(lo, min(lo + batch_size, seed + n)))
        padded = seeds + [seeds[-1]] * (batch_size - len(seeds))
        draws = {k: v[:len(seeds)] for k, v in simulate_study(analysis, config, padded, False).items()}
        observed = _encoder(config, analysis.cohort)({k: draws[k] for k in DRAW_SITES})
        observed = type(observed)(*[None if a is None else np.asarray(a) for a in observed])
        stacked = analysis.bind_many(config, observed)
        out = runner.run(stacked, [s + FIT_SEED_OFFSET for s in seeds], batch_size=batch_size)
        for j in range(len(seeds)):
            one = type(observed)(*[None if a is None else a[j] for a in observed])
            problem = Problem(analysis, stacked.design, stacked.priors, {}, one, stacked.ability)
            sites = {k: v[j] for k, v in out.sites.items()}
            for name, check in model_checks(problem, sites, seed=seeds[j]).items():
                p_values.setdefault(name, []).append(check.p_value)
                fired.setdefault(name, []).append(check.fired)
    return CheckRates({k: np.asarray(v) for k, v in p_values.items()}, {k: np.asarray(v) for k, v in fired.items()},
                      time.perf_counter() - start)
