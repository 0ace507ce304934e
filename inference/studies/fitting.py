r"""The datasets of a recovery study and their fits, one batch at a time.

:func:`fit_batch` is what every runner calls for batch ``b`` of a :class:`~.plan.StudyPlan`
(:class:`InProcess` here, :class:`~.distributed.DaskRunner` on Dask workers).  It

1. draws the batch's datasets in one vectorised call (:func:`simulate_study`):
   dataset ``k`` under ``PRNGKey(S + k)``, from the parameters of ``config`` (coverage:
   exactly ``classsize simulate --seed S+k``'s dataset) or from the analysis's priors
   (SBC, :meth:`~classsize.inference.analyses.base.Analysis.priors`);
2. encodes them straight from the draws (:func:`classsize.model.tables.observed_from_draw`:
   padded class slots with ``class_used`` masks), so all datasets share array shapes;
   a dataset with a school the analysis cannot fit
   (:meth:`~classsize.inference.analyses.base.Analysis.unfittable_schools`) is not fitted;
3. fits the others with one :class:`~classsize.inference.engine.sampling.ChainRunner`
   (each chain of each dataset a lane of one compiled NUTS program), dataset ``k`` under
   ``PRNGKey(S + k + 2**32)``, the key of ``classsize fit --seed S+k+4294967296``.  The
   program runs one lane per device, so every batch runs the same compiled program
   whatever its size and chains, and so does ``classsize fit`` on data of the same
   shapes (:func:`chain_runner`);
4. summarises each fit per quantity (:func:`_summarise_fit`).

A tie of the truth with a rank draw is broken by a generator seeded with ``(S, k)``, so
a dataset's numbers depend on nothing but ``S`` and ``k``: not on its batch, nor on the
process or machine that fits it.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from classsize.model import Config
from classsize.model.pieces import PARAMETERS
from classsize.model.tables import CLASS_SITES, DRAW_SITES, observed_from_draw

from classsize.inference.analyses.base import Analysis
from classsize.inference.analyses.quantities import quantity_draws
from classsize.inference.engine.diagnostics import one_fit
from classsize.inference.engine.sampling import ChainRunner
from classsize.inference.studies.calibration import LEVELS, sbc_rank
from classsize.inference.studies.plan import StudyPlan, plain, software_versions

#: Dataset k is fitted with PRNGKey(seed + k + FIT_SEED_OFFSET): a key apart from the simulation's.
FIT_SEED_OFFSET = 2**32
#: Columns of the table about a dataset's fit (the same on each of its rows).
DIAGNOSTIC_COLUMNS = ("divergences", "max_r_hat", "min_ess_bulk", "mean_steps", "tree_depth_hits", "seconds")


# ============================================================================== simulation
#: Forward samplers with prior parameters, newest first: ``(analysis, config, sampler)``.
_PRIOR_SAMPLERS: list[tuple[Analysis, Config, Any]] = []


def _prior_sampler(analysis: Analysis, config: Config):
    """The forward sampler with parameters from the analysis's priors, kept for the last
    8 designs (an analysis holds mappings, so it is found by equality, not by hash)."""
    from classsize.model.simulate import forward_sampler

    for a, c, sampler in _PRIOR_SAMPLERS:
        if a == analysis and c == config:
            return sampler
    sampler = forward_sampler(config, analysis.priors(config))
    _PRIOR_SAMPLERS.insert(0, (analysis, config, sampler))
    del _PRIOR_SAMPLERS[8:]
    return sampler


def simulate_study(analysis: Analysis, config: Config, seeds: Sequence[int],
                   from_prior: bool) -> dict[str, np.ndarray]:
    """Forward draws for every dataset in one vectorised call, stacked along axis 0.

    ``from_prior``: parameters from the priors of ``analysis``
    (:meth:`~classsize.inference.analyses.base.Analysis.priors`), drawn by the model under
    ``seed(PRNGKey(s))``; otherwise the parameters of ``config`` (exactly
    ``classsize simulate --seed s``'s datasets).
    """
    import jax

    from classsize.model.simulate import draw_many, keys_of

    if not from_prior:
        return draw_many(config, seeds)
    analysis.check_design(config, sbc=True)
    out = _prior_sampler(analysis, config)(keys_of(seeds))
    return {k: np.asarray(v) for k, v in jax.block_until_ready(out).items()}


def quantities_of(analysis: Analysis, sites: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named quantities (estimands, parameters, or elements ``site[i]`` of vector
    sites: :func:`~classsize.inference.analyses.quantities.quantity_draws`) of posterior
    or prior draws of the sites."""
    est = analysis.estimands(sites)
    return {n: np.asarray(est[n] if n in est else quantity_draws(sites, n), dtype=float) for n in names}


# ==================================================================================== fits
@lru_cache(maxsize=8)
def chain_runner(chains: int, warmup: int, samples: int) -> ChainRunner:
    """A :class:`~classsize.inference.engine.sampling.ChainRunner`, shared by studies with
    the same settings (its compiled programs are reused: an SBC and a coverage study of
    one design compile once)."""
    return ChainRunner(chains, warmup, samples)


@lru_cache(maxsize=8)
def _encoder(config: Config, cohort: str | None):
    """The jitted encoding of stacked draws into stacked :class:`Observed` arrays."""
    import jax

    return jax.jit(lambda d: observed_from_draw(d, config, cohort))


class InProcess:
    """Fits a study's batches one after another in this process (the default runner)."""

    description = "in-process"

    def devices_per_worker(self) -> int:
        import jax

        return len(jax.devices())

    def run(self, plan: StudyPlan, batches: Sequence[int]) -> Iterator[dict]:
        for b in batches:
            yield fit_batch(plan, b)


def fit_batch(plan: StudyPlan, batch: int) -> dict:
    """Simulate and fit batch ``batch`` of the study ``plan``: its record, in plain
    JSON values (:func:`~.plan.plain`): the batch's timings, where it ran and the
    software versions, and per dataset the number of empty schools, the truths and the
    summary of the fit (:func:`_summarise_fit`; None for an unfittable dataset)."""
    import os
    import socket

    import jax

    analysis, config = plan.analysis, plan.config
    names = analysis.study_quantities(config, sbc=plan.from_prior)
    ks = list(plan.datasets_of(batch))
    sim_seeds = [plan.seed + k for k in ks]
    start = time.perf_counter()
    # padded to the batch size: every batch runs one compiled simulation
    padded = sim_seeds + [sim_seeds[-1]] * (plan.batch_size - len(ks))
    draws = {k: v[:len(ks)] for k, v in simulate_study(analysis, config, padded, plan.from_prior).items()}
    observed = _encoder(config, analysis.cohort)({k: draws[k] for k in DRAW_SITES})
    observed = type(observed)(*[None if a is None else np.asarray(a) for a in observed])
    empty = analysis.unfittable_schools(observed, config.n_schools)
    if plan.from_prior:
        truths = quantities_of(analysis, {p: draws[p] for p in (*PARAMETERS, "school_effect", *CLASS_SITES)
                                          if p in draws}, names)
    else:
        fixed = config.estimands()
        truths = {n: np.full(len(ks), fixed[n]) for n in names}
    simulate_seconds = time.perf_counter() - start

    fitter = chain_runner(plan.chains, plan.warmup, plan.samples)
    fittable = np.flatnonzero(empty == 0)
    fits: dict[int, dict] = {}
    seconds = compile_seconds = 0.0
    if fittable.size:
        prior_var = analysis.prior_variances(config, tuple(names))
        batch_obs = type(observed)(*[None if a is None else a[fittable] for a in observed])
        out = fitter.run(analysis.bind_many(config, batch_obs), [sim_seeds[i] + FIT_SEED_OFFSET for i in fittable],
                         batch_size=plan.batch_size)
        seconds, compile_seconds = out.seconds, out.compile_seconds
        for j, i in enumerate(fittable):
            _, _, q, diag = one_fit(out, j, analysis, lambda sites: quantities_of(analysis, sites, names))
            diag["seconds"] = out.seconds / len(fittable)
            rng = np.random.default_rng([plan.seed, ks[i]])
            fits[int(i)] = _summarise_fit(q, {n: truths[n][i] for n in names}, prior_var, diag, plan.rank_draws,
                                         rng, diag.pop("per_quantity"))
    records = [{"dataset": k, "empty_schools": int(empty[i]), "truth": {n: float(truths[n][i]) for n in names},
                "fit": fits.get(i)} for i, k in enumerate(ks)]
    return plain({"batch": batch, "plan_hash": plan.plan_hash, "records": records,
                  "simulate_seconds": simulate_seconds, "fit_seconds": seconds, "compile_seconds": compile_seconds,
                  "batch_seconds": time.perf_counter() - start,
                  "host": socket.gethostname(), "pid": os.getpid(), "vectorize": fitter.vectorize,
                  "devices": [str(d) for d in jax.devices()], "versions": software_versions()})


# ============================================================================ summaries
def _summarise_fit(q, truth, prior_var, diag, rank_draws, rng, qdiag) -> dict:
    r"""One fit's row values per quantity and its diagnostics ``diag``.

    For the draws ``x`` of a quantity with truth ``t`` (``qdiag``: its R-hat and bulk
    ESS): the mean, the sd (``ddof=1``), the median, the central intervals at each of
    :data:`~.calibration.LEVELS` (``lower_50``, ``upper_50``, ``covered_50``, ...: the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles, and whether ``t`` lies in
    between), the z-score ``(mean - t) / sd``, the contraction ``1 - sd^2 / var_prior``
    (``prior_var``), and the rank of ``t`` among ``rank_draws`` draws thinned evenly from
    the chains pooled chain after chain (:func:`~.calibration.sbc_rank`, ties broken by
    ``rng``).

    A fit with draws that are not all finite (any site: ``diag["finite"]`` false) counts
    against calibration, not out of it: each of its quantities gets intervals that miss
    the truth and the top rank (the truth above every rank draw), and no moments."""
    quantities = {}
    for n, v in q.items():
        x = np.asarray(v, dtype=float).ravel()
        t = float(truth[n])
        row: dict[str, Any] = {"truth": t}
        if not diag["finite"] or not np.all(np.isfinite(x)):
            row.update(_failed_fit_columns(min(int(rank_draws), x.size)))
            quantities[n] = row
            continue
        mean, sd = float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0
        row.update({"mean": mean, "sd": sd, "median": float(np.median(x)),
                    "z_score": (mean - t) / sd if sd > 0 else float("nan"),
                    "contraction": 1.0 - sd**2 / prior_var[n] if prior_var[n] > 0 else float("nan")})
        for lv in LEVELS:
            lo, hi = np.quantile(x, [(1 - lv) / 2, (1 + lv) / 2])
            row[f"lower_{int(100 * lv)}"] = float(lo)
            row[f"upper_{int(100 * lv)}"] = float(hi)
            row[f"covered_{int(100 * lv)}"] = bool(lo <= t <= hi)
        # chain-major pooling: (chains, samples) -> chain 0's draws, then chain 1's, ...
        rank, used = sbc_rank(t, np.asarray(v), rank_draws, rng)
        row["rank"], row["rank_draws"] = rank, used
        row["r_hat"], row["ess_bulk"] = qdiag[n]
        quantities[n] = row
    return {"quantities": quantities, "diag": diag}


def _failed_fit_columns(n_rank_draws: int) -> dict:
    """The row values of a quantity of a fit with non-finite draws: no moments or
    interval bounds, every interval missing the truth, the top rank."""
    cols = {c: v for c, v in empty_fit_columns().items() if c not in DIAGNOSTIC_COLUMNS}
    cols.update({f"covered_{int(100 * lv)}": False for lv in LEVELS})
    cols.update({"rank": n_rank_draws, "rank_draws": n_rank_draws})
    return cols


def empty_fit_columns() -> dict:
    """The row values of a quantity without a usable fit (NaN, coverage unknown)."""
    cols: dict[str, Any] = {c: float("nan") for c in ("mean", "sd", "median", "z_score", "contraction",
                                                     "rank", "rank_draws", "r_hat", "ess_bulk")}
    for lv in LEVELS:
        cols[f"lower_{int(100 * lv)}"] = float("nan")
        cols[f"upper_{int(100 * lv)}"] = float("nan")
        cols[f"covered_{int(100 * lv)}"] = None
    return {**cols, **{c: np.nan for c in DIAGNOSTIC_COLUMNS}}
