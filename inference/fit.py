"""Fitting an analysis with NUTS: ``fit(data, analysis="structural") -> FitResult``.

A :class:`FitResult` holds the ArviZ InferenceData (:mod:`.idata`: posterior,
sample_stats, log_likelihood, prior, predictive, observed and constant data), the
estimand summary, and the sampler's diagnostics.  Sampler trouble is reported, never hidden: divergences, an
R-hat above 1.01 or a bulk ESS below 400 for an estimand each give a warning line,
and ``strict`` turns them into a failure.

``summary.json`` has exactly this shape::

    {"model": NAME,
     "estimands": {"small_class_direct_effect": S, "small_class_total_effect": S,
                   "teacher_ma_effect": S},
     "diagnostics": {"divergences": int, "max_r_hat": float, "min_ess_bulk": float,
                     "seconds": float}}

where each ``S`` is ``{"mean", "sd", "q05", "q95", "r_hat", "ess_bulk"}``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classsize.model.files import atomic_write, atomic_write_text

from .analysis import Problem, get_analysis
from .data import LoadedData, load_dataset
from .diagnostics import fit_diagnostics, sampler_warnings
from .sampling import ChainRunner, Draws
from .idata import inference_data
from .outputs import Progress
from .settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP


@dataclass
class FitResult:
    """The outcome of one fit; ``summary()`` and ``plot()`` in the style of CausalPy."""

    model: str
    idata: Any
    estimand_draws: dict[str, np.ndarray]
    diagnostics: dict
    truth: dict | None = None
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)
    units: str = "points"
    estimand_summaries: dict = field(default_factory=dict)
    sampler: dict = field(default_factory=dict)

    # ------------------------------------------------------------ summaries
    def summary_dict(self) -> dict:
        """The ``summary.json`` document."""
        return {
            "model": self.model,
            "estimands": self.estimand_summaries,
            "diagnostics": self.diagnostics,
        }

    def summary(self):
        """A table (DataFrame): estimand, mean, sd, 90% interval, truth, R-hat, bulk ESS."""
        import pandas as pd

        rows = []
        truth = (self.truth or {}).get("estimands", {})
        for name, s in self.summary_dict()["estimands"].items():
            t = truth.get(name)
            rows.append(
                {
                    "estimand": name,
                    "mean": s["mean"],
                    "sd": s["sd"],
                    "q05": s["q05"],
                    "q95": s["q95"],
                    "truth": t,
                    "truth_in_90": None if t is None else bool(s["q05"] <= t <= s["q95"]),
                    "r_hat": s["r_hat"],
                    "ess_bulk": s["ess_bulk"],
                }
            )
        return pd.DataFrame(rows).set_index("estimand")

    def parameter_summary(self, **kwargs):
        """``az.summary`` of the posterior: every parameter and estimand (mean, sd, HDI,
        MCSE, ESS, R-hat); keyword arguments go to ``az.summary``."""
        import arviz as az

        return az.summary(self.idata, **kwargs)

    def effect_summary(self) -> str:
        """Plain sentences: each effect, its 90% interval, and what it means."""
        meaning = {
            "small_class_direct_effect": "a SMALL class, the teacher's MA held fixed",
            "small_class_total_effect": "a SMALL class, including its higher chance of an MA teacher",
            "teacher_ma_effect": "a teacher with a master's degree",
        }
        lines = []
        for name, row in self.summary().iterrows():
            line = (
                f"{self.model}: the effect of {meaning[name]} is {row['mean']:.2f} {self.units} "
                f"(90% interval {row['q05']:.2f} to {row['q95']:.2f}): given this model and the data, "
                f"there is a 90% probability that it lies in that range."
            )
            if row["truth"] is not None and not math.isnan(row["truth"]):
                verdict = "inside" if row["truth_in_90"] else "OUTSIDE"
                line += f" The truth, {row['truth']:g}, is {verdict} the interval."
            lines.append(line)
        return "\n".join(lines)

    def table(self) -> str:
        df = self.summary()
        has_truth = df["truth"].notna().any()
        head = f"{'estimand':<27} {'mean':>8} {'sd':>7} {'90% interval':>19}"
        head += f" {'truth':>7} {'in 90%':>6}" if has_truth else ""
        head += f" {'R-hat':>6} {'ESS':>6}"
        lines = [f"model: {self.model} (effects in {self.units})", head]
        for name, r in df.iterrows():
            line = f"{name:<27} {r['mean']:8.3f} {r['sd']:7.3f} [{r['q05']:7.3f}, {r['q95']:7.3f}]"
            if has_truth:
                t = r["truth"]
                line += f" {t:7.3f} {('yes' if r['truth_in_90'] else 'NO'):>6}" if t is not None else " " * 15
            line += f" {r['r_hat']:6.3f} {r['ess_bulk']:6.0f}"
            lines.append(line)
        d = self.diagnostics
        lines.append(
            f"divergences {d['divergences']}, max R-hat {d['max_r_hat']:.3f}, "
            f"min bulk ESS {d['min_ess_bulk']:.0f}, {d['seconds']:.1f} s"
        )
        for name, r in df.iterrows():
            if r["truth_in_90"] is False:
                lines.append(
                    f"{self.model} misses: the 90% interval for {name} "
                    f"[{r['q05']:.2f}, {r['q95']:.2f}] excludes the truth {r['truth']:g}."
                )
        return "\n".join(lines)

    def plot(self, ax=None):
        """Forest plot of the estimands (posterior mean, 50% and 90% intervals, truth)."""
        from .plots import forest

        return forest({self.model: self}, ax=ax, units=self.units)

    def do(self, cohort: str | None = None, draws: int = 500, seed: int = 0, **intervention):
        """Posterior predictive scores under an intervention, e.g. ``do(small_class=1)``,
        and its average effect (:func:`~.counterfactual.intervene`)."""
        from .counterfactual import intervene

        return intervene(self, intervention, cohort=cohort, draws=draws, seed=seed)

    # ------------------------------------------------------------------ files
    def write(self, run_dir: str | Path) -> None:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / "posterior.nc", lambda p: self.idata.to_netcdf(str(p)))
        atomic_write_text(run / "summary.json", json.dumps(self.summary_dict(), indent=2) + "\n")


def _estimand_summary(draws: np.ndarray, r_hat: float, ess_bulk: float) -> dict:
    x = np.asarray(draws, dtype=float)  # (chains, draws)
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "q05": float(np.quantile(x, 0.05)),
        "q95": float(np.quantile(x, 0.95)),
        "r_hat": float(r_hat),
        "ess_bulk": float(ess_bulk),
    }


def fit(
    data: LoadedData | str | Path,
    analysis: str = "structural",
    *,
    chains: int = DEFAULT_CHAINS,
    warmup: int = DEFAULT_WARMUP,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    ability: str | None = None,
    score_noise: float | str | None = None,
    progress: bool | None = None,
    posterior_predictive: bool = True,
    runner: ChainRunner | None = None,
) -> FitResult:
    """Fit the analysis called ``analysis`` (see :data:`~.analysis.ANALYSES`) to a data
    folder (or a loaded dataset).

    ``ability`` (the distribution of ability's unobserved part: ``"uniform"``, the
    simulation's, or ``"normal"``) defaults to the folder's ``dataset.json`` key
    ``ability`` when it has one, else ``"uniform"``.  ``score_noise`` (the scores'
    measurement-noise sd: a number pins it, ``"free"`` samples it) overrides the noise the
    folder declares (see :meth:`~.analysis.ConditionedAnalysis.with_score_noise`); the
    naive regression has a residual sd of its own and refuses it.  The chains run as lanes of one
    compiled program over every JAX device (:class:`~.sampling.ChainRunner`); pass a
    ``runner`` to reuse its compiled programs across fits.  ``progress`` (default: when
    standard error is a terminal) reports the iterations done on standard error.
    """
    spec = get_analysis(analysis)
    if score_noise is not None:
        spec = spec.with_score_noise(score_noise)
    loaded = data if isinstance(data, LoadedData) else load_dataset(data)
    if ability is None:
        ability = loaded.metadata.get("ability", "uniform")
    problem = spec.problem(loaded, ability=ability)
    if runner is None:
        if progress is None:
            progress = sys.stderr.isatty()
        hook = Progress(f"fit {spec.name}") if progress else None
        runner = ChainRunner(chains, warmup, samples, progress=hook)
    start = time.perf_counter()
    draws = runner.run(spec.stack([problem]), [seed])
    result = result_from_draws(problem, draws, time.perf_counter() - start, truth=loaded.truth,
                               posterior_predictive=posterior_predictive, seed=seed)
    result.units = str(loaded.metadata.get("score_units", "points"))
    return result


def result_from_draws(problem: Problem, draws: Draws, seconds: float, truth=None, posterior_predictive=True,
                      seed=0) -> FitResult:
    """The :class:`FitResult` of dataset 0 of ``draws``."""
    sites = {k: v[0] for k, v in draws.sites.items()}  # (chains, samples, ...)
    stats = {k: v[0] for k, v in draws.stats.items()}
    estimands = problem.estimands(sites)
    diag = fit_diagnostics(sites, estimands, stats["diverging"], stats["n_steps"],
                           problem.analysis.kernel_settings.get("max_tree_depth", 10))
    summaries = {k: _estimand_summary(v, *diag["per_quantity"][k]) for k, v in estimands.items()}
    diagnostics = {
        "divergences": diag["divergences"],
        "max_r_hat": diag["max_r_hat"],
        "min_ess_bulk": diag["min_ess_bulk"],
        "seconds": float(seconds),
    }
    idata = inference_data(problem, sites, stats, estimands, posterior_predictive=posterior_predictive,
                           prior=posterior_predictive, seed=seed)
    result = FitResult(problem.name, idata, estimands, diagnostics, truth, problem)
    result.estimand_summaries = summaries
    result.sampler = {"mean_steps": diag["mean_steps"], "tree_depth_hits": diag["tree_depth_hits"],
                      "compile_seconds": draws.compile_seconds, "sampling_seconds": draws.seconds}
    result.warnings = sampler_warnings(problem.name, diag)
    return result
