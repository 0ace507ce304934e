"""Plots: forest plot of estimands across analyses, posterior predictive check."""

from __future__ import annotations

from typing import Mapping

import numpy as np

LABELS = {
    "small_class_direct_effect": "SMALL class, direct\n(MA held fixed)",
    "small_class_total_effect": "SMALL class, total\n(through MA probability)",
    "teacher_ma_effect": "teacher's MA",
}
COLOURS = {"structural": "#1b7837", "randomized": "#2166ac", "naive": "#b2182b"}


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _interactive() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def forest(results: Mapping[str, object], ax=None, units: str = "test-score points"):
    """One row per (estimand, analysis): mean, 50% and 90% intervals, truth as a dashed line."""
    plt = _pyplot()
    estimands = [e for e in LABELS if any(e in r.estimand_draws for r in results.values())]
    names = list(results)
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 1.0 + 0.45 * len(estimands) * len(names)))
    y, ticks, ticklabels = 0.0, [], []
    truth_drawn = False
    for e in estimands:
        top = y
        for name in names:
            r = results[name]
            if e not in r.estimand_draws:
                continue
            x = np.asarray(r.estimand_draws[e]).ravel()
            q05, q25, q50, q75, q95 = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
            c = COLOURS.get(name, "k")
            ax.plot([q05, q95], [y, y], color=c, lw=1.5)
            ax.plot([q25, q75], [y, y], color=c, lw=4)
            ax.plot([x.mean()], [y], "o", color=c, ms=5, label=name if e == estimands[0] else None)
            ticks.append(y)
            ticklabels.append(f"{LABELS[e].splitlines()[0]} - {name}")
            y -= 1
        truth = next((r.truth["estimands"].get(e) for r in results.values() if r.truth), None)
        if truth is not None:
            ax.plot([truth, truth], [top + 0.4, y + 0.6], "k--", lw=1, label="truth" if not truth_drawn else None)
            truth_drawn = True
        y -= 0.5
    ax.set_yticks(ticks)
    ax.set_yticklabels(ticklabels, fontsize=8)
    ax.set_xlabel(f"effect ({units}); thick: 50% interval, thin: 90% interval")
    ax.set_title("Posterior of each effect, by analysis")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return ax


def ppc_plot(idata, ax=None, units: str = "test-score points"):
    """Observed score means by cohort x class size against their replicated distribution."""
    from .ppc import ppc_table

    plt = _pyplot()
    t = ppc_table(idata)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.2))
    for i, row in t.iterrows():
        ax.plot([row.replicated_mean_q05, row.replicated_mean_q95], [i, i], color="0.5", lw=6,
                label="replicated mean, 90%" if i == 0 else None)
        ax.plot([row.observed_mean], [i], "o", color="k", label="observed mean" if i == 0 else None)
    ax.set_yticks(range(len(t)))
    ax.set_yticklabels([f"{r.cohort} {r.class_size} (n={r.n})" for r in t.itertuples()], fontsize=8)
    ax.set_xlabel(f"mean test score ({units})")
    ax.set_title("Posterior predictive check")
    ax.legend(fontsize=8)
    return ax


def save(ax, path) -> None:
    from classsize.model.files import atomic_write

    fig = ax.figure
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    _pyplot().close(fig)
