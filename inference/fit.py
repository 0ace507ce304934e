"""Fitting an analysis with NUTS: ``fit(data, model="structural") -> FitResult``.

A :class:`FitResult` holds the ArviZ InferenceData (posterior, sample_stats,
observed_data, log_likelihood, posterior_predictive), the estimand summary, and the
sampler's diagnostics.  Sampler trouble is reported, never hidden: divergences, an
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
from typing import Any, Mapping

import numpy as np

from classsize.model.files import atomic_write, atomic_write_text

from .analysis import ANALYSES, ESTIMANDS, Analysis, build_analysis
from .data import LoadedData, load_dataset

R_HAT_MAX = 1.01
ESS_MIN = 400.0
#: At most this many draws go into the stored log_likelihood and posterior_predictive.
STORED_DRAWS = 500


@dataclass
class FitResult:
    """The outcome of one fit; ``summary()`` and ``plot()`` in the style of CausalPy."""

    model: str
    idata: Any
    estimand_draws: dict[str, np.ndarray]
    diagnostics: dict
    truth: dict | None = None
    analysis: Analysis | None = None
    warnings: list[str] = field(default_factory=list)
    units: str = "points"

    # ------------------------------------------------------------ summaries
    def summary_dict(self) -> dict:
        """The ``summary.json`` document."""
        return {
            "model": self.model,
            "estimands": {k: _estimand_summary(v) for k, v in self.estimand_draws.items()},
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

    # ------------------------------------------------------------------ files
    def write(self, run_dir: str | Path) -> None:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        atomic_write(run / "posterior.nc", lambda p: self.idata.to_netcdf(str(p)))
        atomic_write_text(run / "summary.json", json.dumps(self.summary_dict(), indent=2) + "\n")


def _estimand_summary(draws: np.ndarray) -> dict:
    import arviz as az

    x = np.asarray(draws, dtype=float)  # (chains, draws)
    return {
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)),
        "q05": float(np.quantile(x, 0.05)),
        "q95": float(np.quantile(x, 0.95)),
        "r_hat": float(az.rhat(x)) if x.shape[0] > 1 else float("nan"),
        "ess_bulk": float(az.ess(x, method="bulk")),
    }


def _kernel(analysis: Analysis):
    from numpyro.infer import NUTS

    from classsize.model.experiment import recommended_kernel

    if analysis.name == "naive":
        return NUTS(analysis.model)
    return recommended_kernel(analysis.model, analysis.kwargs.get("ability", "uniform"))


def _chain_method(chains: int) -> str:
    import jax

    return "parallel" if jax.local_device_count() >= chains else "sequential"


def run_mcmc(analysis: Analysis, chains=4, warmup=1000, samples=1000, seed=0, progress=None):
    """Run NUTS; returns the MCMC object and the wall seconds (compilation included)."""
    import jax
    from numpyro.infer import MCMC

    if progress is None:
        progress = sys.stderr.isatty()
    mcmc = MCMC(
        _kernel(analysis),
        num_warmup=warmup,
        num_samples=samples,
        num_chains=chains,
        chain_method=_chain_method(chains),
        progress_bar=progress,
    )
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), *analysis.args, **analysis.kwargs)
    jax.block_until_ready(mcmc.get_samples())
    return mcmc, time.perf_counter() - start


def fit(
    data: LoadedData | str | Path,
    model: str = "structural",
    *,
    chains: int = 4,
    warmup: int = 1000,
    samples: int = 1000,
    seed: int = 0,
    ability: str | None = None,
    progress: bool | None = None,
    posterior_predictive: bool = True,
) -> FitResult:
    """Fit the analysis ``model`` to a data folder (or a loaded dataset).

    ``ability`` (the distribution of ability's unobserved part: ``"uniform"``, the
    simulation's, or ``"normal"``) defaults to the folder's ``dataset.json`` key
    ``ability`` when it has one, else ``"uniform"``.
    """
    if model not in ANALYSES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(ANALYSES)}")
    loaded = data if isinstance(data, LoadedData) else load_dataset(data)
    if ability is None:
        ability = loaded.metadata.get("ability", "uniform")
    analysis = build_analysis(model, loaded, ability=ability)
    mcmc, seconds = run_mcmc(analysis, chains, warmup, samples, seed, progress)
    result = result_from_mcmc(analysis, mcmc, seconds, truth=loaded.truth,
                              posterior_predictive=posterior_predictive, seed=seed)
    result.units = str(loaded.metadata.get("score_units", "points"))
    return result


def result_from_mcmc(analysis: Analysis, mcmc, seconds: float, truth=None, posterior_predictive=True, seed=0):
    import arviz as az

    grouped = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    estimands = analysis.estimands(grouped)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    divergences = int(np.asarray(extra["diverging"]).sum())
    idata = _inference_data(analysis, mcmc, grouped, estimands, posterior_predictive, seed)
    scalar = {k: v for k, v in grouped.items() if v.ndim >= 2 and np.issubdtype(v.dtype, np.floating)}
    r_hats, esses = [], []
    for name, v in {**scalar, **estimands}.items():
        if np.all(np.ptp(v, axis=(0, 1)) == 0):
            continue  # pinned (deterministic) parameters
        ds = az.convert_to_dataset(v)
        esses.append(np.nanmin(az.ess(ds, method="bulk").to_array().values))
        if v.shape[0] > 1:
            r_hats.append(np.nanmax(az.rhat(ds).to_array().values))
    diagnostics = {
        "divergences": divergences,
        "max_r_hat": float(np.nanmax(r_hats)) if r_hats else float("nan"),
        "min_ess_bulk": float(np.nanmin(esses)) if esses else float("nan"),
        "seconds": float(seconds),
    }
    result = FitResult(analysis.name, idata, estimands, diagnostics, truth, analysis)
    result.warnings = sampler_warnings(result)
    return result


def sampler_warnings(result: FitResult) -> list[str]:
    """One line for each sampler problem, with its figures."""
    out = []
    d = result.diagnostics
    if d["divergences"] > 0:
        out.append(f"{result.model}: {d['divergences']} divergent transitions after warm-up")
    for name, s in result.summary_dict()["estimands"].items():
        if s["r_hat"] > R_HAT_MAX:
            out.append(f"{result.model}: R-hat of {name} is {s['r_hat']:.3f} (> {R_HAT_MAX})")
        if s["ess_bulk"] < ESS_MIN:
            out.append(f"{result.model}: bulk ESS of {name} is {s['ess_bulk']:.0f} (< {ESS_MIN:.0f})")
    if d["max_r_hat"] > R_HAT_MAX:
        out.append(f"{result.model}: the largest R-hat over all parameters is {d['max_r_hat']:.3f} (> {R_HAT_MAX})")
    return out


def _inference_data(analysis: Analysis, mcmc, grouped, estimands, posterior_predictive: bool, seed: int):
    import arviz as az
    import jax
    from numpyro.infer import log_likelihood

    posterior = {k: v for k, v in grouped.items()}
    posterior.update(estimands)
    chains, draws = next(iter(grouped.values())).shape[:2]
    step = max(1, (chains * draws) // STORED_DRAWS)
    flat = {k: v.reshape((chains * draws,) + v.shape[2:])[::step] for k, v in grouped.items()}
    ll = log_likelihood(analysis.model, flat, *analysis.args, **analysis.kwargs)
    ll = {k: np.asarray(v, dtype=np.float32)[None] for k, v in ll.items()}
    sample_stats = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
    if "diverging" in sample_stats:
        sample_stats["diverging"] = sample_stats["diverging"].astype(bool)
    observed = {"test_score": np.asarray(analysis.observed.test_score),
                "small_class": np.asarray(analysis.observed.small_class),
                "is_experimental": np.asarray(analysis.observed.is_experimental)}
    groups = dict(posterior=posterior, sample_stats=sample_stats, log_likelihood=ll, observed_data=observed)
    if posterior_predictive:
        from .ppc import replicate_scores

        reps = replicate_scores(analysis, flat, seed + 1)
        groups["posterior_predictive"] = {k: np.asarray(v)[None] for k, v in reps.items()}
    idata = az.from_dict(
        **groups,
        dims={"test_score": ["student"], "small_class": ["student"], "is_experimental": ["student"],
              "school_effect": ["school"], "race_probs": ["race"],
              "regular_small_race_shift": ["race"]},
        attrs={"analysis": analysis.name, "description": analysis.description,
               "thinned_groups": f"log_likelihood and posterior_predictive keep every {step}th draw"},
    )
    return idata


# --------------------------------------------------------------------------- CLI
def _add_sampler_args(p) -> None:
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ability", choices=["uniform", "normal"], default=None,
                   help="distribution of ability's unobserved part in the structural/randomized models "
                        "(default: the data folder's dataset.json, else uniform)")
    p.add_argument("--strict", action="store_true", help="exit 1 on divergences, R-hat > 1.01 or ESS < 400")
    p.add_argument("--force", action="store_true", help="write into a non-empty RUN_DIR")


def _check_sampler_args(args) -> None:
    from .cli import UsageError

    for name in ("chains", "warmup", "samples"):
        v = getattr(args, name)
        if v < (1 if name != "warmup" else 0):
            raise UsageError(f"--{name} must be >= {1 if name != 'warmup' else 0}, got {v}")


def cmd_fit(args) -> int:
    from .cli import _prepare_out_dir

    _check_sampler_args(args)
    loaded = load_dataset(args.data_dir)
    out = _prepare_out_dir(args.out, args.force, [])
    result = fit(loaded, args.model, chains=args.chains, warmup=args.warmup, samples=args.samples,
                 seed=args.seed, ability=args.ability)
    result.write(out)
    print(result.table())
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out / 'posterior.nc'} and {out / 'summary.json'}")
    return 1 if (args.strict and result.warnings) else 0


def register_cli(sub) -> None:
    p = sub.add_parser("fit", help="fit an analysis model to a data folder")
    p.add_argument("data_dir")
    p.add_argument("--model", choices=list(ANALYSES), default="structural")
    p.add_argument("--out", required=True, help="run folder for posterior.nc and summary.json")
    _add_sampler_args(p)
    p.set_defaults(func=cmd_fit)
