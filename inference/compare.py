"""``classsize compare``: fit the three analyses to one dataset, side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from classsize.model.files import atomic_write_text

from .analysis import ANALYSES
from .data import load_dataset
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
                   quick=False, strict=False, models=ANALYSES) -> int:
    """Fit every analysis, write each run, the table (CSV) and the forest plot (PNG)."""
    if quick:
        warmup, samples = min(warmup, 300), min(samples, 300)
    loaded = load_dataset(data_dir)
    out = Path(out_dir)
    results = {}
    warnings = []
    for name in models:
        r = fit(loaded, name, chains=chains, warmup=warmup, samples=samples, seed=seed, ability=ability)
        r.write(out / name)
        results[name] = r
        print(r.table())
        print()
        warnings += r.warnings
    table = comparison_table(results)
    atomic_write_text(out / "comparison.csv", table.to_csv(index=False))
    units = next(iter(results.values())).units
    save(forest(results, units=units), out / "forest.png")
    if "structural" in results:
        save(ppc_plot(results["structural"].idata, units=units), out / "ppc_structural.png")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out / 'comparison.csv'}, {out / 'forest.png'} and one run folder per model")
    return 1 if (strict and warnings) else 0
