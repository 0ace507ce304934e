r"""Parameter recovery at scale: simulate many datasets, fit each, check calibration.

:func:`run_study` (the Python side of ``classsize recover``) simulates ``N``
datasets with the model, fits each with one analysis and checks that the posteriors
are calibrated.  Two kinds of study:

**Simulation-based calibration** (``from_prior=True``, :class:`~.result.SBCStudy`).
Dataset ``k``'s parameters are drawn from the analysis model's own prior
(:meth:`~classsize.inference.analyses.base.Analysis.priors`: structural,
:func:`~classsize.model.default_priors`; randomized, the same with the REGULAR cohort's
assignment parameters pinned to 0) and the data simulated from them by the same model;
the design (cohort sizes, schools, races, income range, class sizes) is that of
``config``, whose parameter values are then unused.  For each quantity
(:meth:`~classsize.inference.analyses.base.Analysis.study_quantities`: the three
estimands and every structural parameter the analysis samples, vectors element by
element) the rank of the true value among :data:`~.calibration.RANK_DRAWS` = 99 draws
thinned evenly from the pooled chains is recorded; the statistics that test the ranks for uniformity are in
:mod:`.calibration`, the verdict in :mod:`.verdicts`.  With the default 4 x 1000
draws the thinning keeps every 40th draw of a chain; the table records each
quantity's bulk ESS so that ESS < 99 (thinning too light) can be seen.

**Coverage at a fixed truth** (``config``'s parameters, :class:`~.result.CoverageStudy`).
Every dataset comes from the same parameters; for each estimand, the share of datasets
whose central 50/80/90/95% posterior interval contains the truth is compared with the
nominal level.  Bias, RMSE of the posterior mean, the mean posterior z-score and the
posterior contraction ``1 - var_post / var_prior`` are reported too.  ``naive`` is
fitted here as well; its regression ignores the unobserved ability that drives the
REGULAR cohort's assignment, so at the default truth it is expected to fail, and the
verdict says so (:meth:`~classsize.inference.analyses.base.Analysis.coverage_note`).

**Fits.**  The datasets are cut into batches of ``batch_size`` consecutive ones
(:class:`~.plan.StudyPlan`, which carries the analysis itself), each simulated and
fitted in one vectorised call (:func:`~.fitting.fit_batch`, where the seeds are
explained: dataset ``k`` of seed ``S`` is simulated under ``PRNGKey(S + k)`` and
fitted under ``PRNGKey(S + k + 2**32)``, so its numbers depend on ``S`` and ``k``
alone).  The batches are fitted one after another in this process
(:class:`~.fitting.InProcess`), or by a runner given to :func:`run_study`
(:class:`~.distributed.DaskRunner` spreads them over a Dask cluster); with an output
folder each finished batch is written there at once (:mod:`.plan`), and a resumed
study fits only the batches not there yet.  The tables, figures and verdict are
assembled from the batches' records (:func:`~.result.assemble`).

A dataset with a school that has no students (of the fitted cohort) cannot be fitted
by the uniform-ability model (its per-school minimum and maximum do not exist): it is
counted as unfittable and reported.  A fit is flagged when it has divergent
transitions, an R-hat above 1.01 or a bulk ESS below 400 (the thresholds of
``classsize fit``); flagged fits are counted and kept in the statistics.  A fit whose
draws are not all finite counts against the verdict: its intervals miss the truth and
its ranks are the top rank (:func:`~.fitting._summarise_fit`), and the verdict lists it.

Outputs (:meth:`~.result.StudyResult.write`): ``recovery.csv`` (tidy: one row per
dataset and quantity, with the fit's diagnostics), ``summary.csv`` (one row per
quantity, or per estimand and level), ``recovery.nc`` (the same as an xarray
Dataset), ``verdict.txt``, ``study.json`` (settings), ``config.toml`` and the study's
figures (``sbc_ecdf_diff.png`` and ``sbc_ranks.png`` for the estimands, with
``sbc_ecdf_diff_other.png`` and ``sbc_ranks_other.png`` for the other quantities, or
``coverage.png`` and ``z_contraction.png``; :mod:`.figures`), written all together or
not at all, beside the folder ``batches`` (:mod:`.plan`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from classsize.model import Config
from classsize.model.precision import float64

from classsize.inference.analyses.base import Analysis
from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP, RANK_DRAWS
from classsize.inference.outputs import Progress
from classsize.inference.studies.fitting import InProcess
from classsize.inference.studies.plan import (StudyPlan, batch_folder, finished_batches, read_manifest, start_batches,
                                              write_batch)
from classsize.inference.studies.result import StudyResult, assemble


class StudyIncomplete(Exception):
    """Some batches of a study were not fitted (the finished ones are kept)."""


@float64
def run_study(model: str | Analysis = "structural", n_datasets: int = 100, *, config: Config = Config(),
              from_prior: bool = False, seed: int = 0, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
              samples: int = DEFAULT_SAMPLES,
              batch_size: int | None = None, rank_draws: int = RANK_DRAWS,
              progress=None, out: str | Path | None = None, resume: bool = False,
              runner=None) -> StudyResult:
    """Simulate ``n_datasets`` datasets, fit each with the analysis ``model`` (its name or
    the :class:`~classsize.inference.analyses.base.Analysis`) and check calibration: SBC
    when ``from_prior`` (an :class:`~.result.SBCStudy`), coverage at the fixed truth
    ``config`` otherwise (a :class:`~.result.CoverageStudy`).

    ``out``: write each finished batch into ``out/batches`` as it completes; with
    ``resume``, take the batches an earlier run of the same plan left there (another
    plan's are refused, :func:`~.plan.check_manifest` and :func:`~.plan.read_batch`;
    a damaged batch file is reported and fitted again) and fit only the others.
    ``runner`` fits the batches (default :class:`~.fitting.InProcess`; its
    ``run(plan, batches)`` yields one record of :func:`~.fitting.fit_batch` per batch, in
    any order).  ``batch_size`` defaults to the resumed study's, else 4 per device of a
    worker.  ``progress``: a hook called as ``progress(datasets done, total)`` after each
    batch (such as :class:`~classsize.inference.outputs.Progress`), or True / False for a
    tqdm bar or none (default: a bar when standard error is a terminal).

    Like :func:`~classsize.inference.fit.result.fit`, it turns on the package's
    persistent compilation cache, so a later process loads the study's programs.
    """
    from classsize.inference.engine.runtime import use_compilation_cache

    use_compilation_cache()
    analysis = get_analysis(model).knowing(config)
    analysis.check_design(config, sbc=from_prior)
    if n_datasets < 1:
        raise ValueError("the study needs at least one dataset")
    runner = InProcess() if runner is None else runner
    if batch_size is None:
        earlier = read_manifest(out) if (out is not None and resume) else None
        batch_size = int(earlier["batch_size"]) if earlier else 4 * runner.devices_per_worker()
    plan = StudyPlan(analysis, int(n_datasets), config, bool(from_prior), int(seed), int(chains), int(warmup),
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
    report = _progress_hook(progress, f"recover {analysis.name}")
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
