r"""Parameter recovery at scale: simulate many datasets, fit each, check calibration.

:func:`run_study` (the Python side of ``classsize recover``) simulates ``N``
datasets with the model, fits each with one analysis and checks that the posteriors
are calibrated.  Two kinds of study:

**Simulation-based calibration** (``from_prior=True``).  Dataset ``k``'s parameters
are drawn from the analysis model's own prior (:meth:`~.analysis.Analysis.priors`:
structural, :func:`~classsize.model.default_priors`; randomized, the same with the
REGULAR cohort's assignment parameters pinned to 0) and the data simulated from them
by the same model; the design (cohort sizes, schools, races, income range, class
sizes) is that of ``config``, whose parameter values are then unused.  For each
quantity (:meth:`~.analysis.Analysis.study_quantities`: the three estimands and every
scalar structural parameter the analysis samples) the rank of the true value among
:data:`~.calibration.RANK_DRAWS` = 99 draws thinned evenly from the pooled chains is
recorded; the statistics that test the ranks for uniformity are in
:mod:`.calibration`, the verdict in :mod:`.verdicts`.  With the default 4 x 1000
draws the thinning keeps every 40th draw of a chain; the table records each
quantity's bulk ESS so that ESS < 99 (thinning too light) can be seen.

**Coverage at a fixed truth** (``config``'s parameters).  Every dataset comes from
the same parameters; for each estimand, the share of datasets whose central
50/80/90/95% posterior interval contains the truth is compared with the nominal
level.  Bias, RMSE of the posterior mean, the mean posterior z-score and the
posterior contraction ``1 - var_post / var_prior`` are reported too.  ``naive`` is
fitted here as well; its regression ignores the unobserved ability that drives the
REGULAR cohort's assignment, so at the default truth it is expected to fail, and the
verdict says so.

**Fits.**  Datasets are drawn in one vectorised call and encoded straight from the
draws (:func:`classsize.model.tables.observed_from_draw`, padded class slots with
``class_used`` masks), so all datasets share array shapes, and fitted in batches by
one :class:`~.sampling.ChainRunner` (each chain of each dataset a lane of one
compiled NUTS program, the program of ``classsize fit``; see :mod:`.sampling`).
Every batch has ``batch_size`` datasets' lanes (a short last batch is padded), so a
study compiles one program, and studies with the same design and chains share it
(:func:`chain_runner`).  Dataset ``k`` is simulated under the key ``PRNGKey(S + k)``
(at a fixed truth, exactly ``classsize simulate --seed S+k``'s dataset) and fitted
with ``PRNGKey(S + k + 2**32)``, the key of ``classsize fit --seed S+k+4294967296``
on that dataset.  A dataset with a school that has no students (of the fitted
cohort) cannot be fitted by the uniform-ability model (its per-school minimum and
maximum do not exist): it is counted as unfittable and reported.  A fit is flagged
when it has divergent transitions, an R-hat above 1.01 or a bulk ESS below 400 (the
thresholds of ``classsize fit``); flagged fits are counted and kept in the
statistics.  Fits whose draws are not finite are excluded from the statistics and
counted.

Outputs (:meth:`StudyResult.write`): ``recovery.csv`` (tidy: one row per dataset and
quantity, with the fit's diagnostics), ``summary.csv`` (one row per quantity, or per
estimand and level), ``recovery.nc`` (the same as an xarray Dataset),
``verdict.txt``, ``study.json`` (settings), ``config.toml`` and the plots
(``sbc_ecdf_diff.png`` and ``sbc_ranks.png``, or ``coverage.png`` and
``z_contraction.png``; :mod:`.plots`), written all together or not at all.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from classsize.model import Config
from classsize.model.experiment import PARAMETERS
from classsize.model.tables import DRAW_SITES, observed_from_draw

from .analysis import Analysis, get_analysis, quantity_draws
from .calibration import BAND_SEED, BAND_SIMULATIONS, FAMILY_ALPHA, LEVELS, RANK_DRAWS, EcdfBand, sbc_rank
from .diagnostics import ESS_MIN, R_HAT_MAX, fit_diagnostics, fit_problems
from .outputs import write_together
from .sampling import ChainRunner
from .settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from .verdicts import coverage_verdict, sbc_verdict

#: Dataset k is fitted with PRNGKey(seed + k + FIT_SEED_OFFSET): a key apart from the simulation's.
FIT_SEED_OFFSET = 2**32
#: Columns of the table about a dataset's fit (the same on each of its rows).
DIAGNOSTIC_COLUMNS = ("divergences", "max_r_hat", "min_ess_bulk", "mean_steps", "tree_depth_hits", "seconds")


# ============================================================================== simulation
@lru_cache(maxsize=8)
def _prior_sampler(model: str, config: Config):
    """The forward sampler with parameters from the analysis's priors (cached per study design)."""
    from classsize.model.simulate import forward_sampler

    return forward_sampler(config, get_analysis(model).priors(config))


def simulate_study(model: str, config: Config, seeds: Sequence[int], from_prior: bool) -> dict[str, np.ndarray]:
    """Forward draws for every dataset in one vectorised call, stacked along axis 0.

    ``from_prior``: parameters from the analysis priors (:meth:`~.analysis.Analysis.priors`),
    drawn by the model under ``seed(PRNGKey(s))``; otherwise the parameters of ``config``
    (exactly ``classsize simulate --seed s``'s datasets).
    """
    import jax

    from classsize.model.simulate import draw_many, keys_of

    if not from_prior:
        return draw_many(config, seeds)
    get_analysis(model).check_design(config, sbc=True)
    out = _prior_sampler(model, config)(keys_of(seeds))
    return {k: np.asarray(v) for k, v in jax.block_until_ready(out).items()}


def empty_school_counts(observed, n_schools: int) -> np.ndarray:
    """For a stacked :class:`Observed`, how many schools have no students (per dataset)."""
    school = np.take_along_axis(np.asarray(observed.school_of_class), np.asarray(observed.class_of_student), axis=1)
    out = np.empty(school.shape[0], dtype=np.int64)
    for i, s in enumerate(school):
        out[i] = int(np.sum(np.bincount(s, minlength=n_schools)[:n_schools] == 0))
    return out


def quantities_of(analysis: Analysis, sites: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named quantities (estimands, parameters, or elements ``site[i]`` of vector
    sites: :func:`~.analysis.quantity_draws`) of posterior or prior draws of the sites."""
    est = analysis.estimands(sites)
    return {n: np.asarray(est[n] if n in est else quantity_draws(sites, n), dtype=float) for n in names}


# ================================================================================== study
@dataclass
class StudyResult:
    """A finished study: the tidy table, the summary, and the verdict."""

    model: str
    mode: str
    config: Config
    settings: dict
    table: Any  # pandas DataFrame, one row per (dataset, quantity)
    summary: Any  # pandas DataFrame
    verdict: str
    passed: bool
    band: EcdfBand | None = None
    ranks: dict[str, np.ndarray] | None = None

    #: Every file a study writes, by mode (``--force`` removes the other mode's files).
    FILES = {
        "sbc": ("recovery.csv", "summary.csv", "verdict.txt", "study.json", "config.toml", "recovery.nc",
                "sbc_ecdf_diff.png", "sbc_ranks.png"),
        "fixed": ("recovery.csv", "summary.csv", "verdict.txt", "study.json", "config.toml", "recovery.nc",
                  "coverage.png", "z_contraction.png"),
    }

    def write(self, out: str | Path) -> list[Path]:
        """Write every output file into ``out``, all or none
        (:func:`~.outputs.write_together`); returns the paths.  Files of the other kind
        of study left in ``out`` by an earlier run are removed."""
        from .plots import STUDY_PLOTS, save_figure

        def text(s: str):
            return lambda p: p.write_text(s)

        writers = {
            "recovery.csv": text(self.table.to_csv(index=False)),
            "summary.csv": text(self.summary.to_csv(index=False)),
            "verdict.txt": text(self.verdict + "\n"),
            "study.json": text(json.dumps(self.settings, indent=2) + "\n"),
            "config.toml": text(self.config.to_toml()),
            "recovery.nc": lambda p: self.to_xarray().to_netcdf(str(p), engine="netcdf4"),
        }
        for name, plot in STUDY_PLOTS[self.mode].items():
            writers[name] = lambda p, plot=plot: save_figure(plot(self), p, dpi=110)
        others = [name for mode, files in self.FILES.items() if mode != self.mode for name in files]
        return write_together(out, writers, remove=others)

    def to_xarray(self):
        """The table and the summary as one xarray Dataset (dims dataset, quantity, level)."""
        import xarray as xr

        t = self.table
        datasets = np.sort(t["dataset"].unique())
        quantities = list(dict.fromkeys(t["quantity"]))
        t = t.set_index(["dataset", "quantity"])
        coords = {"dataset": datasets, "quantity": quantities, "level": np.asarray(LEVELS)}
        data_vars = {}
        per_q = ["truth", "mean", "sd", "z_score", "contraction", "r_hat", "ess_bulk", "rank"]
        for col in per_q:
            if col in t:
                arr = t[col].unstack("quantity").reindex(index=datasets, columns=quantities).to_numpy(float)
                data_vars[col] = (("dataset", "quantity"), arr)
        for name in ("lower", "upper", "covered"):
            cols = [f"{name}_{int(100 * lv)}" for lv in LEVELS]
            arr = np.stack([t[c].astype(float).unstack("quantity").reindex(index=datasets, columns=quantities)
                            .to_numpy(float) for c in cols], axis=-1)
            data_vars[name] = (("dataset", "quantity", "level"), arr)
        first = self.table.drop_duplicates("dataset").set_index("dataset").reindex(datasets)
        for col in ("sim_seed", "fit_seed", *DIAGNOSTIC_COLUMNS):
            data_vars[col] = (("dataset",), first[col].to_numpy(float))
        data_vars["status"] = (("dataset",), first["status"].astype(str).to_numpy())
        data_vars["fit_ok"] = (("dataset",), first["fit_ok"].astype(bool).to_numpy())
        s = self.summary
        if self.mode == "sbc":
            s = s.set_index("quantity").reindex(quantities)
            for col in ("chi2", "chi2_p", "ecdf_p", "p", "p_holm"):
                data_vars[f"summary_{col}"] = (("quantity",), s[col].to_numpy(float))
            data_vars["summary_pass"] = (("quantity",), s["pass"].astype(bool).to_numpy())
        else:
            s = s.set_index(["quantity", "level"])
            for col in ("covered", "n", "coverage", "cp95_lower", "cp95_upper", "band_lower", "band_upper"):
                arr = s[col].unstack("level").reindex(index=quantities, columns=list(LEVELS)).to_numpy(float)
                data_vars[f"summary_{col}"] = (("quantity", "level"), arr)
        attrs = {"model": self.model, "mode": self.mode, "settings": json.dumps(self.settings),
                 "verdict": self.verdict, "passed": int(self.passed)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


@lru_cache(maxsize=8)
def chain_runner(chains: int, warmup: int, samples: int) -> ChainRunner:
    """A :class:`~.sampling.ChainRunner`, shared by studies with the same settings (its
    compiled programs are reused: an SBC and a coverage study of one design compile once)."""
    return ChainRunner(chains, warmup, samples)


def run_study(model: str = "structural", n_datasets: int = 100, *, config: Config = Config(),
              from_prior: bool = False, seed: int = 0, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
              samples: int = DEFAULT_SAMPLES,
              batch_size: int | None = None, rank_draws: int = RANK_DRAWS,
              progress: bool | None = None) -> StudyResult:
    """Simulate ``n_datasets`` datasets, fit each with the analysis ``model`` and check
    calibration: SBC when ``from_prior``, coverage at the fixed truth ``config`` otherwise."""
    import jax
    import pandas as pd
    from tqdm.auto import tqdm

    analysis = get_analysis(model)
    analysis.check_design(config, sbc=from_prior)
    if n_datasets < 1:
        raise ValueError("the study needs at least one dataset")
    cohort = analysis.cohort
    mode = "sbc" if from_prior else "fixed"
    names = analysis.study_quantities(config, sbc=from_prior)
    fitter = chain_runner(int(chains), int(warmup), int(samples))
    compile_before = fitter.compile_seconds
    if batch_size is None:
        batch_size = 4 * fitter.n_devices
    sim_seeds = [seed + k for k in range(n_datasets)]
    fit_seeds = [s + FIT_SEED_OFFSET for s in sim_seeds]

    start_all = time.perf_counter()
    draws = simulate_study(model, config, sim_seeds, from_prior)
    simulate_seconds = time.perf_counter() - start_all
    observed = jax.jit(lambda d: observed_from_draw(d, config, cohort))({k: draws[k] for k in DRAW_SITES})
    observed = type(observed)(*[None if a is None else np.asarray(a) for a in observed])
    empty = (empty_school_counts(observed, config.n_schools) if analysis.needs_every_school
             else np.zeros(n_datasets, int))
    if from_prior:
        truths = quantities_of(analysis, {p: draws[p] for p in (*PARAMETERS, "school_effect")}, names)
    else:
        fixed = config.estimands()
        truths = {n: np.full(n_datasets, fixed[n]) for n in names}
    prior_var = analysis.prior_variances(config, tuple(names))

    fittable = np.flatnonzero(empty == 0)
    per_dataset: dict[int, dict] = {}
    rng = np.random.default_rng(seed)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=n_datasets, desc=f"recover {model}", unit="dataset", disable=not progress)
    bar.update(n_datasets - fittable.size)
    for lo in range(0, fittable.size, batch_size):
        idx = fittable[lo:lo + batch_size]
        batch = type(observed)(*[None if a is None else a[idx] for a in observed])
        out = fitter.run(analysis.bind_many(config, batch), [fit_seeds[i] for i in idx], batch_size=batch_size)
        for j, k in enumerate(idx):
            sites = {s: v[j] for s, v in out.sites.items()}
            q = quantities_of(analysis, sites, names)
            diag = fit_diagnostics(sites, q, out.stats["diverging"][j], out.stats["n_steps"][j],
                                   analysis.kernel_settings.get("max_tree_depth", 10))
            diag["seconds"] = out.seconds / len(idx)
            per_dataset[int(k)] = _summarise_fit(q, {n: truths[n][k] for n in names}, prior_var, diag,
                                                 rank_draws, rng, diag.pop("per_quantity"))
        bar.update(len(idx))
    bar.close()
    wall = time.perf_counter() - start_all

    rows = []
    for k in range(n_datasets):
        base = {"study": mode, "model": model, "dataset": k, "sim_seed": sim_seeds[k], "fit_seed": fit_seeds[k]}
        if k not in per_dataset:
            reason = f"unfittable: {int(empty[k])} school(s) without {cohort or ''} students".replace("  ", " ")
            for n in names:
                rows.append({**base, "status": "unfittable", "fit_ok": False, "problems": reason, "quantity": n,
                             "truth": float(truths[n][k]), **_empty_fit_columns()})
            continue
        res = per_dataset[k]
        status = "fitted" if res["diag"]["finite"] else "failed"
        problems = fit_problems(res["diag"])
        diag_columns = {c: res["diag"][c] for c in DIAGNOSTIC_COLUMNS}
        for n in names:
            rows.append({**base, "status": status, "fit_ok": not problems, "problems": "; ".join(problems),
                         "quantity": n, **res["quantities"][n], **diag_columns})
    table = pd.DataFrame(rows)

    settings = {
        "model": model, "mode": mode, "datasets": n_datasets, "seed": seed,
        "sim_seeds": f"{sim_seeds[0]}..{sim_seeds[-1]}",
        "fit_seeds": f"{fit_seeds[0]}..{fit_seeds[-1]} (seed + k + 2**32)",
        "chains": chains, "warmup": warmup, "samples": samples, "batch_size": batch_size,
        "vectorize": fitter.vectorize, "devices": [str(d) for d in fitter.devices],
        "rank_draws": rank_draws if mode == "sbc" else None, "levels": list(LEVELS),
        "family_alpha": FAMILY_ALPHA, "band_simulations": BAND_SIMULATIONS, "band_seed": BAND_SEED,
        "r_hat_max": R_HAT_MAX, "ess_min": ESS_MIN, "quantities": list(names),
        "simulate_seconds": round(simulate_seconds, 2),
        "compile_seconds": round(fitter.compile_seconds - compile_before, 2), "wall_seconds": round(wall, 2),
        "fit_seconds_total": round(float(sum(r["diag"]["seconds"] for r in per_dataset.values())), 2),
        "config": config.to_dict(),
    }
    if mode == "sbc":
        summary, verdict, passed, band, ranks = sbc_verdict(table, names, settings)
        return StudyResult(model, mode, config, settings, table, summary, verdict, passed, band, ranks)
    summary, verdict, passed = coverage_verdict(table, names, settings)
    return StudyResult(model, mode, config, settings, table, summary, verdict, passed)


def _summarise_fit(q, truth, prior_var, diag, rank_draws, rng, qdiag) -> dict:
    """One fit's row values per quantity (mean, sd, intervals, coverage, rank, z-score,
    contraction, R-hat, ESS) and its diagnostics.

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
    cols = {c: v for c, v in _empty_fit_columns().items() if c not in DIAGNOSTIC_COLUMNS}
    cols.update({f"covered_{int(100 * lv)}": False for lv in LEVELS})
    cols.update({"rank": n_rank_draws, "rank_draws": n_rank_draws})
    return cols


def _empty_fit_columns() -> dict:
    """The row values of a quantity without a usable fit (NaN, coverage unknown)."""
    cols: dict[str, Any] = {c: float("nan") for c in ("mean", "sd", "median", "z_score", "contraction",
                                                     "rank", "rank_draws", "r_hat", "ess_bulk")}
    for lv in LEVELS:
        cols[f"lower_{int(100 * lv)}"] = float("nan")
        cols[f"upper_{int(100 * lv)}"] = float("nan")
        cols[f"covered_{int(100 * lv)}"] = None
    return {**cols, **{c: np.nan for c in DIAGNOSTIC_COLUMNS}}
