"""The figures of fits: forest plot of estimands across analyses, posterior predictive
check, counterfactual scores under an intervention (the recovery studies' figures are
in :mod:`classsize.inference.studies.figures`).

Figures are made with ``matplotlib.pyplot`` under whatever backend the user has chosen
(:mod:`classsize.inference.plotting`), so ``result.plot()`` followed by ``plt.show()``
shows the figure.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from classsize.model import palette

from classsize.inference.plotting import label_axes, pyplot, save_figure

LABELS = {
    "small_class_direct_effect": "SMALL class, direct\n(MA held fixed)",
    "small_class_total_effect": "SMALL class, total\n(through MA probability)",
    "teacher_ma_effect": "teacher's MA",
}
COLOURS = palette.ANALYSES
#: Colours of the two class sizes.
SIZE_COLOURS = palette.CLASS_SIZES


def forest(results: Mapping[str, object], ax=None, units: str = "test-score points"):
    """One row per (estimand, analysis): mean, 50% and 90% intervals, truth as a dashed line."""
    plt = pyplot()
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


def ppc_plot(idata, axes=None, units: str = "points"):
    """The posterior predictive check as pictures: for each cohort, the observed score
    distribution of SMALL and of LARGE classes (thick lines) against the 90% band of the
    same histogram over the replicated datasets (class sizes replicated too, where the
    analysis models them), and the share of students in a SMALL class by cohort,
    observed against its replicated 50% and 90% ranges.  Returns the figure (``axes``:
    one per cohort, then one for the shares)."""
    from classsize.inference.fit.ppc import ppc_arrays, small_rate_table

    a = ppc_arrays(idata)
    cohorts = [c for c in ("REGULAR", "EXPERIMENTAL") if np.any(a["cohort"] == c)]
    if axes is None:
        fig, axes = pyplot().subplots(1, len(cohorts) + 1, figsize=(4.2 * len(cohorts) + 3.6, 3.4),
                                       gridspec_kw={"width_ratios": [4] * len(cohorts) + [3]})
    axes = list(np.ravel(axes))
    fig = axes[0].figure
    for ax, cohort in zip(axes, cohorts):
        in_cohort = a["cohort"] == cohort
        y = a["test_score"][in_cohort]
        n_bins = int(np.clip(np.sqrt(y.size), 10, 40))
        bins = np.linspace(y.min() - 0.05 * np.ptp(y), y.max() + 0.05 * np.ptp(y), n_bins + 1)
        rep_y, rep_s = a["replicated_score"][:, in_cohort], a["replicated_small"][:, in_cohort]
        for size, flag in (("SMALL", 1), ("LARGE", 0)):
            colour = SIZE_COLOURS[size]
            dens = np.array([np.histogram(r[s == flag], bins, density=True)[0]
                             for r, s in zip(rep_y, rep_s) if np.any(s == flag)])
            if len(dens):
                lo, hi = np.quantile(dens, [0.05, 0.95], axis=0)
                ax.fill_between(bins, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color=colour,
                                alpha=0.25, lw=0, label=f"replicated {size}, 90% band")
            g = y[a["small_class"][in_cohort] == flag]
            if g.size:
                ax.stairs(np.histogram(g, bins, density=True)[0], bins, color=colour, lw=2,
                          label=f"observed {size} (n={g.size}, mean {g.mean():.1f})")
        label_axes(ax, f"{cohort}: scores by class size", f"test score ({units})", "density")
        ax.legend(fontsize=6, loc="upper left")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend
    ax = axes[len(cohorts)]
    rates = small_rate_table(idata)
    for i, r in enumerate(rates.itertuples()):
        ax.plot([100 * r.replicated_q05, 100 * r.replicated_q95], [i, i], color="0.75", lw=8,
                label="replicated, 90%" if i == 0 else None, solid_capstyle="butt")
        ax.plot([100 * r.replicated_q25, 100 * r.replicated_q75], [i, i], color="0.45", lw=8,
                label="replicated, 50%" if i == 0 else None, solid_capstyle="butt")
        ax.plot([100 * r.observed_rate], [i], "o", color="k", label="observed" if i == 0 else None)
        if not r.replicated:
            ax.annotate("class sizes taken as given", (100 * r.observed_rate, i), xytext=(0, 9),
                        textcoords="offset points", ha="center", fontsize=6)
    ax.set_yticks(range(len(rates)), [f"{r.cohort}\n(n={r.n})" for r in rates.itertuples()], fontsize=7)
    ax.set_ylim(-0.7, len(rates) - 0.3)
    label_axes(ax, "Students in a SMALL class", "share of the cohort (%)", "")
    ax.legend(fontsize=6, loc="best")
    fig.suptitle("Posterior predictive check: the data (thick, dots) against data replicated from the posterior",
                 fontsize=9)
    return fig


def counterfactual_plot(counterfactual, axes=None, units: str | None = None):
    """The students' scores under the intervention and under its baseline (pooled over
    posterior draws) beside their observed scores, and the posterior of the average
    effect with its 90% interval and the truth.  Returns the figure."""
    cf = counterfactual
    units = units or cf.units
    if axes is None:
        fig, axes = pyplot().subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    ax1, ax2 = np.ravel(axes)[:2]
    rng = np.random.default_rng(0)
    pooled = {}
    for label, x in cf.worlds():
        flat = x.ravel()
        pooled[label] = flat[rng.choice(flat.size, min(flat.size, 200_000), replace=False)]
    everything = np.concatenate([*pooled.values(), cf.observed_scores])
    bins = np.linspace(*np.quantile(everything, [0.001, 0.999]), 50)
    for (label, x), colour in zip(pooled.items(), (palette.CLASS_SIZES["SMALL"], palette.CLASS_SIZES["LARGE"])):
        ax1.hist(x, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=colour,
                 label=f"{label}: mean {x.mean():.1f}")
    ax1.hist(cf.observed_scores, bins=bins, density=True, histtype="step", color="k", lw=1.2,
             label=f"observed: mean {cf.observed_scores.mean():.1f}")
    label_axes(ax1, f"{cf.analysis}: scores of {cf.students} ({cf.scores.shape[1]}) in both worlds",
           f"test score ({units})", "density")
    ax1.legend(fontsize=7)
    effect = cf.effect
    lo, hi = cf.interval()
    ax2.hist(effect, bins=40, density=True, color="0.55")
    ax2.axvspan(lo, hi, color=palette.MAIN, alpha=0.15, label=f"90% interval [{lo:.2f}, {hi:.2f}]")
    ax2.axvline(effect.mean(), color=palette.MAIN, lw=2, label=f"mean {effect.mean():.2f}")
    if cf.truth is not None:
        ax2.axvline(cf.truth, color="k", ls="--", label=f"truth {cf.truth:g}")
    label_axes(ax2, "Average effect, one value per posterior draw", f"mean score difference ({units})",
           "posterior density")
    ax2.legend(fontsize=7)
    return ax1.figure


def _figure_of(fig_or_ax):
    from matplotlib.figure import Figure

    return fig_or_ax if isinstance(fig_or_ax, Figure) else fig_or_ax.figure


def save(fig_or_ax, path) -> None:
    """Write the figure (or the figure of the axes) to ``path`` as PNG, atomically."""
    from classsize.model.files import atomic_write

    atomic_write(path, lambda p: save_figure(_figure_of(fig_or_ax), p))
