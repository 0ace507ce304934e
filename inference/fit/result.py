"""Fitting an analysis with NUTS: ``fit(data, analysis="structural") -> FitResult``.

A :class:`FitResult` holds the ArviZ InferenceData (an ``xarray.DataTree``;
:mod:`.idata`: posterior, sample_stats, log_likelihood, prior, predictive, observed and
constant data), the estimand summary, the sampler's diagnostics and the run's
provenance.  Sampler trouble is reported, never hidden: divergences, an R-hat above
1.01 or a bulk ESS below 400 for an estimand each give a warning line, and ``strict``
turns them into a failure.  :func:`~.runs.load_run` reads a written run folder back.

``summary.json`` has exactly this shape::

    {"format_version": 2,
     "analysis": NAME,
     "estimands": {"small_class_direct_effect": S, "small_class_total_effect": S,
                   "teacher_ma_effect": S},
     "diagnostics": {"divergences": int, "max_r_hat": float, "min_ess_bulk": float,
                     "seconds": float},
     "checks": {"score_edges": C, "class_effects": C},
     "warnings": [str, ...],
     "provenance": P}

with ``"classrooms": {"class_effect_sd": S, "intraclass_correlation": S}`` after the
estimands when the fit has class effects, ``"checks"`` only the model checks that
apply (:mod:`.checks`; each ``C`` is ``{"statistic", "expected", "p_value",
"threshold", "fired", "meaning", "fix"}``), where each ``S`` is ``{"mean", "sd", "q05", "q95", "r_hat", "ess_bulk"}`` (``q05`` and
``q95`` bound the 90% equal-tailed interval, the one interval of every summary) and
``P`` is what the root of ``posterior.nc`` holds too: ``classsize_version``,
``format_version``, ``analysis``, ``settings`` (ability, score noise, the NUTS
settings), ``seed``, ``chains``, ``warmup``, ``draws``, ``data_source`` and
``data_fingerprint`` (``sha256:`` of the data files).
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

from classsize.model.noise import EDGE_SITE
from classsize.model.precision import float64

from classsize.inference.analyses.base import Problem

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.diagnostics import one_fit, sampler_warnings
from classsize.inference.fit.checks import model_checks
from classsize.inference.fit.idata import inference_data, start_prior, write_netcdf
from classsize.inference.outputs import FORMAT_VERSION, Progress, package_version
from classsize.inference.engine.sampling import ChainRunner, Draws
from classsize.inference.engine.settings import CI_PROB, DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from classsize.inference.data.sources import as_loaded, fingerprint, source_label

#: whether a fit has said that it got fewer devices than chains and cores (said once per process)
_told_devices = False
#: The files of a run folder.
RUN_FILES = ("posterior.nc", "summary.json")


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
    #: with class effects: the summaries of their sd and of the intraclass correlation
    #: (:data:`CLASSROOM_QUANTITIES`), as of the estimands; empty without
    classrooms: dict = field(default_factory=dict)
    sampler: dict = field(default_factory=dict)
    #: the model checks run after the fit (:mod:`.checks`), by name: their statistic,
    #: expected value, p-value, threshold, whether they fired, meaning and fix
    checks: dict = field(default_factory=dict)
    #: the run's settings, seed, versions and data fingerprint (see the module's docstring)
    provenance: dict = field(default_factory=dict)
    #: why a loaded run has no model bound to its data (``problem`` None); "" otherwise
    unbound: str = ""

    def __repr__(self) -> str:
        d = self.diagnostics
        effects = "; ".join(f"{name} {s['mean']:.2f} [{s['q05']:.2f}, {s['q95']:.2f}]"
                            for name, s in self.estimand_summaries.items())
        p = self.provenance
        runs = (f"{p['chains']} chains x {p['draws']} draws, " if "chains" in p else "")
        trouble = f", {len(self.warnings)} sampler warning(s)" if self.warnings else ""
        return (f"FitResult({self.model}: {effects} (mean [90% interval], {self.units}); {runs}"
                f"{d['divergences']} divergences, max R-hat {d['max_r_hat']:.3f}, "
                f"min bulk ESS {d['min_ess_bulk']:.0f}{trouble}; .summary(), .plot(), .do(), .idata)")

    # ------------------------------------------------------------ summaries
    def summary_dict(self) -> dict:
        """The ``summary.json`` document."""
        return {
            "format_version": FORMAT_VERSION,
            "analysis": self.model,
            "estimands": self.estimand_summaries,
            **({"classrooms": self.classrooms} if self.classrooms else {}),
            "diagnostics": self.diagnostics,
            **({"checks": self.checks} if self.checks else {}),
            "warnings": list(self.warnings),
            "provenance": self.provenance,
        }

    def summary(self):
        """A table (DataFrame): estimand, mean, sd, 90% equal-tailed interval (``q05``,
        ``q95``), truth, R-hat, bulk ESS."""
        import pandas as pd

        rows = []
        truth = (self.truth or {}).get("estimands", {})
        for name, s in self.estimand_summaries.items():
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
        """``az.summary`` of the posterior: every parameter and estimand (mean, sd, the
        90% equal-tailed interval ``eti90_lb``/``eti90_ub``, MCSE, ESS, R-hat); keyword
        arguments go to ``az.summary``."""
        import arviz as az

        kwargs.setdefault("ci_kind", "eti")
        kwargs.setdefault("ci_prob", CI_PROB)
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
        lines = [f"model: {self.model} (effects in {self.units}; intervals 90% equal-tailed)", head]
        for name, r in df.iterrows():
            line = f"{name:<27} {r['mean']:8.3f} {r['sd']:7.3f} [{r['q05']:7.3f}, {r['q95']:7.3f}]"
            if has_truth:
                t = r["truth"]
                line += f" {t:7.3f} {('yes' if r['truth_in_90'] else 'NO'):>6}" if t is not None else " " * 15
            line += f" {r['r_hat']:6.3f} {r['ess_bulk']:6.0f}"
            lines.append(line)
        for name, c in self.classrooms.items():
            lines.append(f"{name:<27} {c['mean']:8.3f} {c['sd']:7.3f} [{c['q05']:7.3f}, {c['q95']:7.3f}]"
                         + (" " * 15 if has_truth else "") + f" {c['r_hat']:6.3f} {c['ess_bulk']:6.0f}")
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
        from classsize.inference.fit.figures import forest

        return forest({self.model: self}, ax=ax, units=self.units)

    @float64
    def do(self, cohort: str | None = None, draws: int = 500, seed: int = 0, classes: str = "fresh",
           **intervention):
        """Posterior predictive scores under an intervention, e.g. ``do(small_class=1)``,
        and its average effect (:func:`~.counterfactual.intervene`); with class effects,
        ``classes="fresh"`` gives the newly formed classes fresh effects (the population
        effect), ``"observed"`` keeps each student's observed class's effect."""
        from classsize.inference.fit.counterfactual import intervene

        if self.problem is None:
            raise RuntimeError(f"this {self.model} result cannot simulate interventions: "
                               f"{self.unbound or 'it holds no model bound to data'}")
        return intervene(self, intervention, cohort=cohort, draws=draws, seed=seed, classes=classes)

    # ------------------------------------------------------------------ files
    def write(self, run_dir: str | Path) -> list[Path]:
        """Write the run folder ``run_dir`` (``posterior.nc`` and ``summary.json``) as one
        set: built beside it and put in place by one rename, replacing an earlier run
        folder there (:class:`~classsize.inference.publish.OutputFolder`)."""
        from classsize.inference.publish import OutputFolder

        with OutputFolder(run_dir, "fit", force=True) as folder:
            self.write_files(folder.path)
            folder.commit()
        return [Path(run_dir) / RUN_FILES[0], Path(run_dir) / RUN_FILES[1]]

    def write_files(self, folder: str | Path) -> None:
        """Write ``posterior.nc`` and ``summary.json`` into ``folder`` (a folder that is
        not yet visible: :meth:`write` and the commands publish it)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_netcdf(self.idata, folder / RUN_FILES[0])
        (folder / RUN_FILES[1]).write_text(json.dumps(self.summary_dict(), indent=2) + "\n")


#: What a fit with class effects reports of them: their sd (score points) and the
#: intraclass correlation, :math:`\sigma_u^2 / (\sigma_u^2 + \sigma_w^2)` with
#: :math:`\sigma_w` the within-class sd of the scores given the covariates.
CLASSROOM_QUANTITIES = ("class_effect_sd", "intraclass_correlation")


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


@float64
def fit(
    data,
    analysis: str = "structural",
    classes=None,
    *,
    chains: int = DEFAULT_CHAINS,
    warmup: int = DEFAULT_WARMUP,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    ability: str | None = None,
    score_noise: float | str | None = None,
    class_effects: float | str | None = None,
    progress: bool | None = None,
    posterior_predictive: bool = True,
    runner: ChainRunner | None = None,
    metadata: dict | None = None,
) -> FitResult:
    """Fit the analysis called ``analysis`` (see :data:`~.analysis.ANALYSES`) to ``data``:
    a data folder, a simulated :class:`classsize.model.Dataset`, a students DataFrame
    with the classes DataFrame as ``classes`` (and ``metadata``, the mapping a folder's
    ``dataset.json`` would hold), or a loaded dataset (:func:`~.sources.as_loaded`).

    ``ability`` (the distribution of ability's unobserved part: ``"uniform"``, the
    simulation's, or ``"normal"``) defaults to the folder's ``dataset.json`` key
    ``ability`` when it has one, else ``"uniform"``.  ``score_noise`` (the scores'
    measurement-noise sd: a number pins it, ``"free"`` samples it) overrides the noise the
    folder declares (see :meth:`~.analysis.ConditionedAnalysis.with_score_noise`); the
    naive regression has a residual sd of its own and refuses it.  ``class_effects`` (the
    class effects' sd: a number pins it, 0 leaves them out, ``"free"`` samples it)
    overrides what the folder declares (``dataset.json``'s ``class_effect_sd``; a
    simulated folder whose configuration drew class effects fits them free; else 0; see
    :meth:`~.base.Analysis.with_class_effects`).  The chains run as lanes of one
    compiled program, one per JAX device at a time (:class:`~.sampling.ChainRunner`); pass a
    ``runner`` to reuse its compiled programs across fits.  ``progress`` (default: when
    standard error is a terminal) reports the iterations done on standard error.
    """
    from classsize.inference.engine.runtime import use_compilation_cache

    use_compilation_cache()
    spec = get_analysis(analysis)
    if score_noise is not None:
        spec = spec.with_score_noise(score_noise)
    if class_effects is not None:
        spec = spec.with_class_effects(class_effects)
    loaded = as_loaded(data, classes, metadata=metadata)
    if ability is None:
        ability = loaded.metadata.get("ability", "uniform")
    problem = spec.problem(loaded, ability=ability)
    spec = problem.analysis  # with what the data declare
    if runner is None:
        if progress is None:
            progress = sys.stderr.isatty()
        hook = Progress(f"fit {spec.name}") if progress else None
        runner = ChainRunner(chains, warmup, samples, progress=hook)
    global _told_devices
    from classsize.model.machine import machine_cores

    if len(runner.devices) < min(runner.chains, machine_cores()) and not _told_devices:
        _told_devices = True  # (said when more cores could run the chains side by side)
        print(f"classsize: {runner.chains} chains share {len(runner.devices)} JAX device(s) and run in turn; "
              f"call classsize.use_all_cores() before JAX starts to run them side by side", file=sys.stderr)
    start = time.perf_counter()
    # the prior draws compile and run on another core while the sampler compiles
    started_prior = start_prior(problem, runner.chains, runner.samples, seed) if posterior_predictive else None
    draws = runner.run(spec.stack([problem]), [seed])
    provenance = {
        "classsize_version": package_version(),
        "format_version": FORMAT_VERSION,
        "analysis": spec.name,
        "settings": {"ability": ability, "score_noise": getattr(spec, "score_noise", None),
                     "class_effects": spec.class_effects, **spec.kernel_settings},
        "seed": int(seed), "chains": runner.chains, "warmup": runner.warmup, "draws": runner.samples,
        "data_source": source_label(loaded), "data_fingerprint": fingerprint(loaded),
    }
    result = result_from_draws(problem, draws, time.perf_counter() - start, truth=loaded.truth,
                               posterior_predictive=posterior_predictive, seed=seed, provenance=provenance,
                               started_prior=started_prior)
    result.units = str(loaded.metadata.get("score_units", "points"))
    return result


def result_from_draws(problem: Problem, draws: Draws, seconds: float, truth=None, posterior_predictive=True,
                      seed=0, provenance: dict | None = None, started_prior=None) -> FitResult:
    """The :class:`FitResult` of dataset 0 of ``draws``; with class effects its
    ``classrooms`` summarise their sd and the intraclass correlation, whose R-hat and
    ESS the sampler's warnings cover as the estimands'.  ``started_prior``: the
    :func:`~.idata.start_prior` of this fit, if it was begun."""

    def quantities(sites):
        varied = {n: sites[n] for n in CLASSROOM_QUANTITIES if n in sites and np.ptp(sites[n]) > 0}
        return {**problem.estimands(sites), **varied}  # (a pinned sd is no quantity)

    sites, stats, q, diag = one_fit(draws, 0, problem.analysis, quantities)
    estimands = {k: v for k, v in q.items() if k not in CLASSROOM_QUANTITIES}
    summaries = {k: _estimand_summary(v, *diag["per_quantity"][k]) for k, v in estimands.items()}
    classrooms = {k: _estimand_summary(q[k], *diag["per_quantity"][k]) for k in CLASSROOM_QUANTITIES if k in q}
    diagnostics = {
        "divergences": diag["divergences"],
        "max_r_hat": diag["max_r_hat"],
        "min_ess_bulk": diag["min_ess_bulk"],
        "seconds": float(seconds),
    }
    provenance = dict(provenance or {})
    attrs = {k: (json.dumps(v) if isinstance(v, (dict, list)) or v is None else v) for k, v in provenance.items()}
    checks = model_checks(problem, sites, seed=seed)  # (their statistics are no parameters of the posterior)
    idata = inference_data(problem, {k: v for k, v in sites.items() if k != EDGE_SITE}, stats, estimands,
                           posterior_predictive=posterior_predictive, prior=posterior_predictive, seed=seed,
                           attrs=attrs, started_prior=started_prior)
    result = FitResult(problem.name, idata, estimands, diagnostics, truth, problem, provenance=provenance)
    result.estimand_summaries = summaries
    result.classrooms = classrooms
    result.sampler = {"mean_steps": diag["mean_steps"], "tree_depth_hits": diag["tree_depth_hits"],
                      "compile_seconds": draws.compile_seconds, "sampling_seconds": draws.seconds}
    result.checks = {name: c.as_dict() for name, c in checks.items()}
    result.warnings = sampler_warnings(problem.name, diag) + [c.line(problem.name) for c in checks.values()
                                                              if c.fired]
    return result
