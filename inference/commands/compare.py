"""Fitting the analyses to one dataset side by side: :func:`compare` (Python) returns a
:class:`Comparison`; :func:`compare_models` is ``classsize compare``, which also prints
and writes them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from classsize.model.files import atomic_write_text
from classsize.model.precision import float64

from classsize.inference.analyses.base import NoNoiseParameter
from classsize.inference.analyses.registry import ANALYSES, get_analysis
from classsize.inference.data.read import DataError
from classsize.inference.fit.result import FitResult, fit
from classsize.inference.fit.figures import forest, ppc_plot, save
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from classsize.inference.data.sources import as_loaded


@dataclass
class Comparison:
    """The fits of several analyses to one dataset: ``results[name]`` is a
    :class:`~.fit.FitResult`; ``skipped[name]`` says why the data cannot support an analysis."""

    results: dict[str, FitResult]
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self):
        """One table (DataFrame) of every analysis's estimands (90% equal-tailed intervals)."""
        return comparison_table(self.results)

    def plot(self, ax=None):
        """Forest plot of every analysis's estimands."""
        return forest(self.results, ax=ax, units=next(iter(self.results.values())).units)

    def __getitem__(self, name: str) -> FitResult:
        return self.results[name]

    def __repr__(self) -> str:
        effects = "; ".join(f"{name} direct {r.estimand_summaries['small_class_direct_effect']['mean']:.2f}"
                            for name, r in self.results.items())
        skipped = f"; skipped: {', '.join(self.skipped)}" if self.skipped else ""
        return f"Comparison({effects}{skipped}; .summary(), .plot(), [name] for each FitResult)"


@float64
def compare(data, analyses=ANALYSES, classes=None, *, chains=DEFAULT_CHAINS, warmup=DEFAULT_WARMUP,
            samples=DEFAULT_SAMPLES, seed=0, ability=None, score_noise=None, class_effects=None, metadata=None,
            report=None) -> Comparison:
    """Fit each of ``analyses`` that the data can support to ``data`` (any form
    :func:`~.fit.fit` takes), with one set of chains settings.

    An analysis the data cannot support (:meth:`~.analysis.Analysis.check`: no students
    of its cohort) is skipped, with the reason in ``skipped``; when none can be fitted
    the data are refused (:class:`~.data.DataError`).  ``score_noise`` applies to the
    analyses with a measurement-noise parameter: one setting, or a list of them (such
    as ``[0, "free"]``), each fitted side by side as ``NAME_noise_SETTING``;
    ``class_effects`` applies to every analysis (see :func:`~.fit.fit`).  ``report``
    (the command line's) is
    told ``start(fitted, skipped, loaded, runner)``, then ``before(name, runner)`` and
    ``done(name, result)`` around each fit.
    """
    from classsize.inference.engine.sampling import ChainRunner

    loaded = as_loaded(data, classes, metadata=metadata)
    fitted, skipped = [], {}
    for name in analyses:
        try:
            get_analysis(name).check(loaded)
        except DataError as e:
            skipped[name] = str(e)
        else:
            fitted.append(name)
    if not fitted:
        raise DataError(Path(loaded.source), "no analysis can use these data: " + "; ".join(skipped.values()))
    runner = ChainRunner(chains, warmup, samples)
    report = report or _Silent()
    report.start(fitted, skipped, loaded, runner)
    settings = list(score_noise) if isinstance(score_noise, (list, tuple)) else [score_noise]
    results = {}
    for name in fitted:
        noises = [v for v in settings if _has_noise_parameter(get_analysis(name), v)] or [None]
        for noise in noises:
            label = name if len(noises) == 1 else f"{name}_noise_{_noise_tag(noise)}"
            report.before(label, runner)
            results[label] = fit(loaded, name, chains=chains, warmup=warmup, samples=samples, seed=seed,
                                 ability=ability, score_noise=noise, class_effects=class_effects, runner=runner)
            report.done(label, results[label])
    return Comparison(results, skipped)


def _noise_tag(noise) -> str:
    """A noise setting as it names a run folder: ``free``, ``declared`` (None) or the sd."""
    return "declared" if noise is None else str(noise) if isinstance(noise, str) else f"{float(noise):g}"


def _has_noise_parameter(analysis, score_noise) -> bool:
    """Whether ``analysis`` takes ``score_noise`` (one without a noise parameter is
    fitted without it: its residual sd absorbs the noise)."""
    try:
        analysis.with_score_noise(score_noise)
    except NoNoiseParameter:
        return False
    return True


def comparison_table(results: dict[str, FitResult]):
    import pandas as pd

    frames = []
    for name, r in results.items():
        df = r.summary().reset_index()
        df.insert(0, "analysis", name)
        for check, c in r.checks.items():  # the model checks run after the fit
            df[f"check_{check}_p"] = c["p_value"]
        df["checks_fired"] = ", ".join(check for check, c in r.checks.items() if c["fired"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


class _Silent:
    """What :func:`compare` says by default: nothing."""

    def start(self, fitted, skipped, loaded, runner) -> None:
        pass

    def before(self, name, runner) -> None:
        pass

    def done(self, name, result) -> None:
        pass


class _Report(_Silent):
    """What ``classsize compare`` says while :func:`compare` runs."""

    def __init__(self, plan: tuple[int, int, int], quiet: bool):
        self.plan, self.quiet = plan, quiet

    def start(self, fitted, skipped, loaded, runner) -> None:
        from classsize.inference.outputs import announce, run_plan

        announce(f"comparing {', '.join(fitted)} on {len(loaded.students)} students: each "
                 f"{run_plan(*self.plan, runner.devices)}", self.quiet)
        for name, reason in skipped.items():
            print(f"{name}: skipped, the data cannot support it ({reason})")
        if skipped:
            print()

    def before(self, name, runner) -> None:
        from classsize.inference.outputs import Progress

        runner.progress = Progress(f"compare: {name}", quiet=self.quiet)

    def done(self, name, result) -> None:
        print(result.table())
        print()


def compare_models(data_dir, out_dir, *, chains=DEFAULT_CHAINS, warmup=DEFAULT_WARMUP, samples=DEFAULT_SAMPLES,
                   seed=0, ability=None, score_noise=None, class_effects=None, quick=False, strict=False,
                   models=ANALYSES, quiet=False, shown=None, commit=None) -> int:
    """``classsize compare``: :func:`compare`, printing each analysis's table, then write
    each run, the table (CSV) and the forest plot (PNG) into ``out_dir``; exit status 1
    with ``strict`` and sampler warnings.

    The commands give ``out_dir`` as the staging folder of their output
    (:class:`~classsize.inference.publish.OutputFolder`), ``commit`` as the call that
    publishes it once every file is written, and ``shown`` as the folder's name to print.
    """
    if quick:
        warmup, samples = min(warmup, 300), min(samples, 300)
    comparison = compare(data_dir, models, chains=chains, warmup=warmup, samples=samples, seed=seed,
                         ability=ability, score_noise=score_noise, class_effects=class_effects,
                         report=_Report((chains, warmup, samples), quiet))
    results, skipped = comparison.results, comparison.skipped
    out = Path(out_dir)
    shown = Path(shown) if shown is not None else out
    warnings = []
    for name, r in results.items():
        # each line names the run it is about (structural_noise_free, not structural)
        warnings += [f"{name}:{w.removeprefix(r.model + ':')}" if w.startswith(r.model + ":") else w
                     for w in r.warnings]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for name, r in results.items():
        r.write_files(out / name)
    table = comparison.summary()
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    units = next(iter(results.values())).units
    save(comparison.plot(), out / "forest.png")
    for name, r in results.items():  # the posterior predictive check of the analysis of both cohorts
        if get_analysis(r.model).cohort is None:
            save(ppc_plot(r.idata, units=units), out / f"ppc_{name}.png")
    if commit is not None:
        commit()
    skipped_note = f" ({', '.join(skipped)} skipped)" if skipped else ""
    print(f"wrote {shown / 'comparison.csv'}, {shown / 'forest.png'} and one run folder per model{skipped_note}")
    return 1 if (strict and warnings) else 0
