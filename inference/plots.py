"""Plots: forest plot of estimands across analyses, posterior predictive check, and the
figures of the recovery studies (:data:`STUDY_PLOTS`, one set per kind of study)."""

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


def save_figure(fig, path, dpi: int = 120) -> None:
    """Lay the figure out, write it to ``path`` as PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    _pyplot().close(fig)


def save(ax, path) -> None:
    """Write the figure of ``ax`` to ``path`` as PNG, atomically."""
    from classsize.model.files import atomic_write

    atomic_write(path, lambda p: save_figure(ax.figure, p))


# ============================================================================ recovery studies
# Each takes a finished study (:class:`~classsize.inference.study.StudyResult`) and returns a figure.
def _panels(n: int, width: float, height: float, per_row: int | None = None):
    """A figure of ``n`` panels, at most ``per_row`` a row (default: one row), unused ones
    hidden; returns ``(fig, flat array of axes)``."""
    ncol = min(per_row or n, n)
    nrow = -(-n // ncol)
    fig, axes = _pyplot().subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes


def _label(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)


def _verdict(ok) -> str:
    return "pass" if ok else "FAIL"


def plot_ecdf_difference(result):
    """ECDF of the fractional ranks minus the uniform CDF, one panel per quantity, with the
    simultaneous band (Säilynoja, Bürkner and Vehtari 2022) at the level the verdict uses."""
    from .calibration import ecdf_counts

    names = list(result.ranks)
    fig, axes = _panels(len(names), 3.3, 2.6, per_row=4)
    band = result.band
    passed = result.summary.set_index("quantity")["pass"]
    for ax, q in zip(axes, names):
        r = result.ranks[q]
        if band is None or r.size == 0:
            ax.set_title(f"{q}\n(no fitted datasets)", fontsize=8)
            continue
        ecdf = ecdf_counts(r, band.n_values) / r.size
        ax.fill_between(band.z, band.lower - band.z, band.upper - band.z, step="post", color="0.85",
                        label=f"{1 - band.alpha:.2%} simultaneous band")
        ax.step(band.z, ecdf - band.z, where="post", color="#2166ac", lw=1.2, label="ranks")
        ax.axhline(0.0, color="k", lw=0.6)
        _label(ax, f"{q} ({_verdict(passed[q])})", "fractional rank of the truth", "ECDF - uniform CDF")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"SBC of {result.model}: ECDF difference of the ranks ({len(result.ranks[names[0]])} datasets)",
                 fontsize=9)
    return fig


def plot_rank_histograms(result):
    """Histograms of the ranks with the 99% pointwise binomial range of a bin's count."""
    from scipy import stats

    from .calibration import chi_square_bins

    names = list(result.ranks)
    fig, axes = _panels(len(names), 3.3, 2.4, per_row=4)
    n_values = result.band.n_values if result.band is not None else int(result.settings["rank_draws"]) + 1
    for ax, q in zip(axes, names):
        r = result.ranks[q]
        n = r.size
        bins = chi_square_bins(max(n, 1), n_values)
        edges = np.round(np.linspace(0, n_values, bins + 1))
        if n:
            p = np.diff(edges) / n_values  # bins of unequal width when n_values is not a multiple
            lo, hi = stats.binom.ppf(0.005, n, p), stats.binom.ppf(0.995, n, p)
            ax.bar(edges[:-1], hi - lo, width=np.diff(edges), bottom=lo, align="edge", color="0.85",
                   label="99% range per bin")
            ax.stairs(n * p, edges, color="0.5", lw=0.8)
            ax.hist(r, bins=edges, color="#2166ac", alpha=0.8, label="ranks")
        _label(ax, q, "rank of the truth", "datasets")
    fig.suptitle(f"SBC of {result.model}: rank histograms", fontsize=9)
    return fig


def plot_coverage(result):
    """Observed coverage against the nominal level, with the Clopper-Pearson bands."""
    names = list(dict.fromkeys(result.summary["quantity"]))
    fig, axes = _panels(len(names), 3.4, 3.2)
    for ax, q in zip(axes, names):
        s = result.summary[result.summary["quantity"] == q]
        lv = s["level"].to_numpy(float)
        ax.plot([0.4, 1.0], [0.4, 1.0], "k--", lw=0.8, label="nominal")
        ax.vlines(lv, s["band_lower"], s["band_upper"], color="0.6", lw=6, label="family band")
        ax.vlines(lv, s["cp95_lower"], s["cp95_upper"], color="0.3", lw=2, label="95% band")
        ax.plot(lv, s["coverage"], "o", color="#b2182b", label="observed")
        ax.set_xlim(0.4, 1.0)
        ax.set_ylim(-0.02, 1.02)
        _label(ax, f"{q} ({_verdict(s['pass'].all())})", "nominal level of the central interval",
               "share of datasets covered")
    axes[0].legend(fontsize=6, loc="lower right")
    n = int(result.summary["n"].max()) if len(result.summary) else 0
    fig.suptitle(f"Coverage of {result.model} at a fixed truth ({n} datasets)", fontsize=9)
    return fig


def plot_z_contraction(result):
    """Posterior z-score against posterior contraction, one point per dataset."""
    names = list(dict.fromkeys(result.table["quantity"]))
    fig, axes = _panels(len(names), 3.4, 3.2)
    t = result.table[result.table["status"] == "fitted"]
    for ax, q in zip(axes, names):
        u = t[t["quantity"] == q]
        ok = u["fit_ok"].astype(bool)
        ax.scatter(u.loc[ok, "contraction"], u.loc[ok, "z_score"], s=10, color="#2166ac", label="fit passes")
        ax.scatter(u.loc[~ok, "contraction"], u.loc[~ok, "z_score"], s=14, marker="x", color="#b2182b",
                   label="fit flagged")
        for y in (-2, 2):
            ax.axhline(y, color="0.6", lw=0.7, ls="--")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlim(min(0.0, float(u["contraction"].min()) if len(u) else 0.0), 1.02)
        _label(ax, q, "posterior contraction 1 - var_post / var_prior", "posterior z-score (mean - truth) / sd")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{result.model}: z-score vs contraction", fontsize=9)
    return fig


#: The figures of each kind of study, by file name (``sbc``: from the prior; ``fixed``: coverage).
STUDY_PLOTS = {
    "sbc": {"sbc_ecdf_diff.png": plot_ecdf_difference, "sbc_ranks.png": plot_rank_histograms},
    "fixed": {"coverage.png": plot_coverage, "z_contraction.png": plot_z_contraction},
}
