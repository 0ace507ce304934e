"""``classsize compare``: fit the three analyses to one dataset, side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from classsize.model.files import atomic_write_text

from .analysis import ANALYSES, get_analysis
from .data import DataError, load_dataset
from .fit import FitResult, fit
from .plots import forest, ppc_plot, save
from .settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP


def comparison_table(results: dict[str, FitResult]):
    import pandas as pd

    frames = []
    for name, r in results.items():
        df = r.summary().reset_index()
        df.insert(0, "model", name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def compare_models(data_dir, out_dir, *, chains=DEFAULT_CHAINS, warmup=DEFAULT_WARMUP, samples=DEFAULT_SAMPLES, seed=0, ability=None,
                   score_noise=None, quick=False, strict=False, models=ANALYSES, quiet=False) -> int:
    """Fit every analysis the data can support, write each run, the table (CSV) and the
    forest plot (PNG).

    An analysis the data cannot support (:meth:`~.analysis.Analysis.check`: no students
    of its cohort) is skipped, with the reason printed; when none can be fitted the
    data are refused (:class:`~.data.DataError`).  Before each fit a line on standard
    error says what runs, and its progress follows there (nothing when ``quiet``).
    ``score_noise`` (see :func:`~.fit.fit`) applies to the analyses with a
    measurement-noise parameter; the naive regression's residual sd absorbs the noise.
    """
    from .outputs import Progress, announce, run_plan
    from .sampling import ChainRunner

    if quick:
        warmup, samples = min(warmup, 300), min(samples, 300)
    loaded = load_dataset(data_dir)
    out = Path(out_dir)
    fitted, skipped = [], {}
    for name in models:
        try:
            get_analysis(name).check(loaded)
        except DataError as e:
            skipped[name] = str(e)
        else:
            fitted.append(name)
    if not fitted:
        raise DataError(Path(loaded.source), "no analysis can use these data: " + "; ".join(skipped.values()))
    runner = ChainRunner(chains, warmup, samples)
    announce(f"comparing {', '.join(fitted)} on {len(loaded.students)} students: each "
             f"{run_plan(chains, warmup, samples, runner.devices)}", quiet)
    for name, reason in skipped.items():
        print(f"{name}: skipped, the data cannot support it ({reason})")
    if skipped:
        print()
    results = {}
    warnings = []
    for name in fitted:
        runner.progress = Progress(f"compare: {name}", quiet=quiet)
        noise = score_noise if get_analysis(name).fits_score_noise else None
        r = fit(loaded, name, chains=chains, warmup=warmup, samples=samples, seed=seed, ability=ability,
                score_noise=noise, runner=runner)
        r.write(out / name)
        results[name] = r
        print(r.table())
        print()
        warnings += r.warnings
    table = comparison_table(results)
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    units = next(iter(results.values())).units
    save(forest(results, units=units), out / "forest.png")
    for name, r in results.items():  # the posterior predictive check of the analysis of both cohorts
        if get_analysis(name).cohort is None:
            save(ppc_plot(r.idata, units=units), out / f"ppc_{name}.png")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    skipped_note = f" ({', '.join(skipped)} skipped)" if skipped else ""
    print(f"wrote {out / 'comparison.csv'}, {out / 'forest.png'} and one run folder per model{skipped_note}")
    return 1 if (strict and warnings) else 0
