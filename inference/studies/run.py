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
structural parameter the analysis samples, vectors element by element) the rank of the true value among
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

**Fits.**  The datasets are cut into batches of ``batch_size`` consecutive ones
(:class:`~.batches.StudyPlan`); :func:`fit_batch` draws a batch's datasets in one
vectorised call, encodes them straight from the draws
(:func:`classsize.model.tables.observed_from_draw`, padded class slots with
``class_used`` masks), so all datasets share array shapes, and fits them with one
:class:`~.sampling.ChainRunner` (each chain of each dataset a lane of one compiled
NUTS program, the program of ``classsize fit``; see :mod:`.sampling`).  Every batch
has ``batch_size`` datasets' lanes (a short last batch is padded), so a study
compiles one program, and studies with the same design and chains share it
(:func:`chain_runner`).  Dataset ``k`` is simulated under the key ``PRNGKey(S + k)``
(at a fixed truth, exactly ``classsize simulate --seed S+k``'s dataset) and fitted
with ``PRNGKey(S + k + 2**32)``, the key of ``classsize fit --seed S+k+4294967296``
on that dataset; a tie of the truth with a rank draw is broken by a generator seeded
with ``(S, k)``.  A dataset's numbers therefore depend on nothing but ``S`` and
``k``: not on its batch, nor on the process or machine that fits it.  The batches
are fitted one after another in this process, or by a runner given to
:func:`run_study` (:class:`classsize.inference.studies.distributed.DaskRunner` spreads them
over a Dask cluster); with an output folder each finished batch is written there
at once (:mod:`.batches`), and a resumed study fits only the batches not there yet.
The tables, plots and verdict are assembled from the batches' records.
A dataset with a school that has no students (of the fitted
cohort) cannot be fitted by the uniform-ability model (its per-school minimum and
maximum do not exist): it is counted as unfittable and reported.  A fit is flagged
when it has divergent transitions, an R-hat above 1.01 or a bulk ESS below 400 (the
thresholds of ``classsize fit``); flagged fits are counted and kept in the
statistics.  A fit whose draws are not all finite counts against the verdict: its
intervals miss the truth and its ranks are the top rank (:func:`_summarise_fit`),
and the verdict lists it.

Outputs (:meth:`StudyResult.write`): ``recovery.csv`` (tidy: one row per dataset and
quantity, with the fit's diagnostics), ``summary.csv`` (one row per quantity, or per
estimand and level), ``recovery.nc`` (the same as an xarray Dataset),
``verdict.txt``, ``study.json`` (settings), ``config.toml`` and the plots
(``sbc_ecdf_diff.png`` and ``sbc_ranks.png``, or ``coverage.png`` and
``z_contraction.png``; :mod:`.plots`), written all together or not at all, beside
the folder ``batches`` (:mod:`.batches`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from classsize.model import Config
from classsize.model.pieces import PARAMETERS
from classsize.model.precision import float64
from classsize.model.tables import DRAW_SITES, observed_from_draw

from classsize.inference.analyses.base import Analysis

from classsize.inference.analyses.quantities import quantity_draws, quantity_label

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.studies.plan import (StudyPlan, batch_folder, finished_batches, plain, read_manifest, software_versions,
                      start_batches, write_batch)
from classsize.inference.studies.calibration import BAND_SEED, BAND_SIMULATIONS, FAMILY_ALPHA, LEVELS, RANK_DRAWS, EcdfBand, sbc_rank
from classsize.inference.engine.diagnostics import ESS_MIN, R_HAT_MAX, fit_diagnostics, fit_problems
from classsize.inference.outputs import FORMAT_VERSION, Progress, package_version, write_together
from classsize.inference.engine.sampling import ChainRunner
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from classsize.inference.studies.verdicts import coverage_verdict, sbc_verdict

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

    def __repr__(self) -> str:
        first = self.verdict.splitlines()[0] if self.verdict else ""
        return (f"StudyResult({self.model}, {self.mode}, {self.settings.get('datasets')} datasets: "
                f"{'PASS' if self.passed else 'FAIL'}; {first}; .table, .summary, .verdict, .write(folder))")

    def write(self, out: str | Path) -> list[Path]:
        """Write every output file into ``out``, all or none
        (:func:`~.outputs.write_together`); returns the paths.  Files of the other kind
        of study left in ``out`` by an earlier run are removed."""
        from classsize.inference.fit.figures import STUDY_PLOTS, save_figure

        def text(s: str):
            return lambda p: p.write_text(s)

        writers = {
            "recovery.csv": text(self.table.to_csv(index=False)),
            "summary.csv": text(self.summary.to_csv(index=False)),
            "verdict.txt": text(self.verdict + "\n"),
            "study.json": text(json.dumps({"format_version": FORMAT_VERSION, **self.settings}, indent=2) + "\n"),
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
        attrs = {"format_version": FORMAT_VERSION, "classsize_version": package_version(),
                 "model": self.model, "mode": self.mode, "settings": json.dumps(self.settings),
                 "verdict": self.verdict, "passed": int(self.passed)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


@lru_cache(maxsize=8)
def chain_runner(chains: int, warmup: int, samples: int) -> ChainRunner:
    """A :class:`~.sampling.ChainRunner`, shared by studies with the same settings (its
    compiled programs are reused: an SBC and a coverage study of one design compile once)."""
    return ChainRunner(chains, warmup, samples)


class InProcess:
    """Fits a study's batches one after another in this process (the default runner)."""

    description = "in-process"

    def devices_per_worker(self) -> int:
        import jax

        return len(jax.devices())

    def run(self, plan: StudyPlan, batches: Sequence[int]) -> Iterator[dict]:
        for b in batches:
            yield fit_batch(plan, b)


class StudyIncomplete(Exception):
    """Some batches of a study were not fitted (the finished ones are kept)."""


@float64
def run_study(model: str = "structural", n_datasets: int = 100, *, config: Config = Config(),
              from_prior: bool = False, seed: int = 0, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
              samples: int = DEFAULT_SAMPLES,
              batch_size: int | None = None, rank_draws: int = RANK_DRAWS,
              progress=None, out: str | Path | None = None, resume: bool = False,
              runner=None) -> StudyResult:
    """Simulate ``n_datasets`` datasets, fit each with the analysis ``model`` and check
    calibration: SBC when ``from_prior``, coverage at the fixed truth ``config`` otherwise.

    ``out``: write each finished batch into ``out/batches`` as it completes; with
    ``resume``, take the batches an earlier run of the same plan left there (another
    plan's are refused, :func:`~.batches.check_manifest`) and fit only the others.
    ``runner`` fits the batches (default :class:`InProcess`; its ``run(plan, batches)``
    yields one record of :func:`fit_batch` per batch, in any order).  ``batch_size``
    defaults to the resumed study's, else 4 per device of a worker.  ``progress``:
    a hook called as ``progress(datasets done, total)`` after each batch (such as
    :class:`~.outputs.Progress`), or True / False for a tqdm bar or none (default:
    a bar when standard error is a terminal).
    """
    analysis = get_analysis(model)
    analysis.check_design(config, sbc=from_prior)
    if n_datasets < 1:
        raise ValueError("the study needs at least one dataset")
    runner = InProcess() if runner is None else runner
    if batch_size is None:
        earlier = read_manifest(out) if (out is not None and resume) else None
        batch_size = int(earlier["batch_size"]) if earlier else 4 * runner.devices_per_worker()
    plan = StudyPlan(model, int(n_datasets), config, bool(from_prior), int(seed), int(chains), int(warmup),
                     int(samples), int(batch_size), int(rank_draws))

    start_all = time.perf_counter()
    records: dict[int, dict] = {}
    if out is not None:
        start_batches(out, plan, resume)
        if resume:
            records = {r["batch"]: r for r in finished_batches(out, plan)}
            if records and progress is not False and not getattr(progress, "quiet", False):
                print(f"resuming: {len(records)} of {plan.n_batches} batches already fitted in "
                      f"{batch_folder(out)}", file=sys.stderr)
    resumed = len(records)
    todo = [b for b in range(plan.n_batches) if b not in records]
    report = _progress_hook(progress, f"recover {model}")
    done = sum(len(r["records"]) for r in records.values())
    report(done, n_datasets)
    versions = plan.manifest["versions"]
    for record in runner.run(plan, todo):
        if record["versions"] != versions:
            raise StudyIncomplete(f"batch {record['batch']} was fitted by {record['host']} with "
                                  f"{record['versions']}, not {versions}: every worker must run the same versions")
        if out is not None:
            write_batch(out, record)
        records[int(record["batch"])] = record
        done += len(record["records"])
        report(done, n_datasets)
    missing = [b for b in range(plan.n_batches) if b not in records]
    if missing:
        raise StudyIncomplete(f"{len(missing)} batch(es) not fitted: {', '.join(map(str, missing[:10]))}")
    run = {"executor": getattr(runner, "description", type(runner).__name__), "resumed_batches": resumed,
           "wall_seconds": round(time.perf_counter() - start_all, 2)}
    return assemble(plan, [records[b] for b in range(plan.n_batches)], run)


def _progress_hook(progress, label: str):
    """``progress`` of :func:`run_study` as a ``hook(done, total)``."""
    if callable(progress):
        return progress
    quiet = not (sys.stderr.isatty() if progress is None else progress)
    return Progress(label, "datasets", quiet=quiet)


@lru_cache(maxsize=8)
def _encoder(config: Config, cohort: str | None):
    """The jitted encoding of stacked draws into stacked :class:`Observed` arrays."""
    import jax

    return jax.jit(lambda d: observed_from_draw(d, config, cohort))


def fit_batch(plan: StudyPlan, batch: int) -> dict:
    """Simulate and fit batch ``batch`` of the study ``plan``: its record, in plain
    JSON values (:func:`~.batches.plain`): the batch's timings, where it ran and
    the software versions, and per dataset the number of empty schools, the truths
    and the summary of the fit (None for an unfittable dataset)."""
    import os
    import socket

    import jax

    analysis = get_analysis(plan.model)
    config, names = plan.config, analysis.study_quantities(plan.config, sbc=plan.from_prior)
    ks = list(plan.datasets_of(batch))
    sim_seeds = [plan.seed + k for k in ks]
    start = time.perf_counter()
    # padded to the batch size: every batch runs one compiled sampler
    padded = sim_seeds + [sim_seeds[-1]] * (plan.batch_size - len(ks))
    draws = {k: v[:len(ks)] for k, v in simulate_study(plan.model, config, padded, plan.from_prior).items()}
    observed = _encoder(config, analysis.cohort)({k: draws[k] for k in DRAW_SITES})
    observed = type(observed)(*[None if a is None else np.asarray(a) for a in observed])
    empty = analysis.unfittable_schools(observed, config.n_schools)
    if plan.from_prior:
        truths = quantities_of(analysis, {p: draws[p] for p in (*PARAMETERS, "school_effect")}, names)
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
            sites = {s: v[j] for s, v in out.sites.items()}
            q = quantities_of(analysis, sites, names)
            diag = fit_diagnostics(sites, q, out.stats["diverging"][j], out.stats["n_steps"][j],
                                   analysis.kernel_settings.get("max_tree_depth", 10))
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


def assemble(plan: StudyPlan, batches: Sequence[dict], run: Mapping[str, Any]) -> StudyResult:
    """The study's table, summary and verdict from the records of all its batches
    (in order); ``run`` adds the settings of the run that finished it."""
    import os
    import socket
    import pandas as pd

    analysis = get_analysis(plan.model)
    internal = analysis.study_quantities(plan.config, sbc=plan.from_prior)
    label = {n: quantity_label(n, plan.config) for n in internal}  # the tables name the data's codes and ids
    names = [label[n] for n in internal]
    model, mode, cohort = plan.model, plan.mode, analysis.cohort
    here = (socket.gethostname(), os.getpid())
    devices = []
    for b in batches:
        where = "" if (b["host"], b["pid"]) == here else f"{b['host']}:{b['pid']}/"
        devices += [where + d for d in b["devices"] if where + d not in devices]
    rows = []
    for rec in (r for b in batches for r in b["records"]):
        k = rec["dataset"]
        base = {"study": mode, "model": model, "dataset": k, "sim_seed": plan.seed + k,
                "fit_seed": plan.seed + k + FIT_SEED_OFFSET}
        res = rec["fit"]
        if res is None:
            reason = f"unfittable: {rec['empty_schools']} school(s) without {cohort or ''} students".replace("  ", " ")
            for n in internal:
                rows.append({**base, "status": "unfittable", "fit_ok": False, "problems": reason,
                             "quantity": label[n], "truth": rec["truth"][n], **_empty_fit_columns()})
            continue
        status = "fitted" if res["diag"]["finite"] else "failed"
        problems = fit_problems(res["diag"])
        diag_columns = {c: res["diag"][c] for c in DIAGNOSTIC_COLUMNS}
        for n in internal:
            rows.append({**base, "status": status, "fit_ok": not problems, "problems": "; ".join(problems),
                         "quantity": label[n], **res["quantities"][n], **diag_columns})
    table = pd.DataFrame(rows)

    n, seed = plan.n_datasets, plan.seed
    settings = {
        "model": model, "mode": mode, "datasets": n, "seed": seed,
        "sim_seeds": f"{seed}..{seed + n - 1}",
        "fit_seeds": f"{seed + FIT_SEED_OFFSET}..{seed + n - 1 + FIT_SEED_OFFSET} (seed + k + 2**32)",
        "chains": plan.chains, "warmup": plan.warmup, "samples": plan.samples, "batch_size": plan.batch_size,
        "vectorize": batches[0]["vectorize"], "devices": devices,
        "rank_draws": plan.rank_draws if mode == "sbc" else None, "levels": list(LEVELS),
        "family_alpha": FAMILY_ALPHA, "band_simulations": BAND_SIMULATIONS, "band_seed": BAND_SEED,
        "r_hat_max": R_HAT_MAX, "ess_min": ESS_MIN, "quantities": list(names),
        "simulate_seconds": round(sum(b["simulate_seconds"] for b in batches), 2),
        "compile_seconds": round(sum(b["compile_seconds"] for b in batches), 2),
        "wall_seconds": run["wall_seconds"],
        "fit_seconds_total": round(sum(b["fit_seconds"] for b in batches), 2),
        "executor": run["executor"], "workers": len({(b["host"], b["pid"]) for b in batches}),
        "resumed_batches": run["resumed_batches"], "plan_hash": plan.plan_hash,
        "versions": plan.manifest["versions"],
        "config": plan.config.to_dict(),
    }
    if mode == "sbc":
        summary, verdict, passed, band, ranks = sbc_verdict(table, names, settings)
        return StudyResult(model, mode, plan.config, settings, table, summary, verdict, passed, band, ranks)
    summary, verdict, passed = coverage_verdict(table, names, settings)
    return StudyResult(model, mode, plan.config, settings, table, summary, verdict, passed)


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
