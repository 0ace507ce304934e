r"""The figures of the recovery studies (:mod:`.result`): each function takes a finished
study and returns a matplotlib figure, one panel per quantity.

For an SBC study (:class:`~.result.SBCStudy`):

* :func:`plot_ecdf_difference`: for each quantity, the ECDF of the fractional ranks
  ``r / L`` minus the uniform CDF, :math:`F_N(z) - z`, with the simultaneous band of
  Säilynoja, Bürkner and Vehtari (2022) at the level the verdict uses
  (:func:`~.calibration.verdict_band`): uniform ranks leave it anywhere with
  probability ``alpha / (2m)`` at most;
* :func:`plot_rank_histograms`: the ranks in the chi-square test's bins
  (:func:`~.calibration.chi_square_bins`), with the 0.5% and 99.5% quantiles of a
  bin's count, ``Binomial(N, width / (L + 1))``, and its expected count.

Each SBC figure comes in two parts (``part``): the analysis's estimands, which a
reader looks at first, and the other quantities the study ranks (priors' parameters,
school effects), on a figure of their own.

For a coverage study (:class:`~.result.CoverageStudy`):

* :func:`plot_coverage`: the share of datasets whose central interval covers the
  truth against the nominal level, with the 95% and the family (Bonferroni)
  Clopper-Pearson bands of the summary table;
* :func:`plot_z_contraction`: per dataset, the posterior z-score
  ``(mean - truth) / sd`` against the contraction ``1 - var_post / var_prior``.

Each study class names its figures' files (``PLOTS``); figures are made under the
user's matplotlib backend (:mod:`classsize.inference.plotting`).
"""

from __future__ import annotations

import numpy as np

from classsize.model import palette

from classsize.inference.plotting import label_axes, pyplot
from classsize.inference.studies.calibration import chi_square_bins, ecdf_counts


def _panels(n: int, width: float, height: float, per_row: int | None = None):
    """A figure of ``n`` panels, at most ``per_row`` a row (default: one row), unused ones
    hidden; returns ``(fig, flat array of axes)``.  The layout is matplotlib's constrained
    one, which keeps the figure's title clear of the panels' titles."""
    ncol = min(per_row or n, n)
    nrow = -(-n // ncol)
    fig, axes = pyplot().subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False,
                                  layout="constrained")
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes


def _verdict(ok) -> str:
    return "pass" if ok else "FAIL"


#: The two parts of an SBC figure: the estimands, and every other quantity ranked.
PARTS = ("estimands", "other quantities")


def _ranked(result, part: str) -> list[str]:
    """The quantities of ``result.ranks`` in ``part`` (one of :data:`PARTS`), in the study's order."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, not {part!r}")
    estimands = set(result.analysis.estimand_names)
    return [q for q in result.ranks if (q in estimands) == (part == PARTS[0])]


def _nothing_to_show(title: str):
    fig, axes = _panels(1, 4.0, 1.2)
    axes[0].axis("off")
    axes[0].text(0.5, 0.5, "no quantity of this part was ranked", ha="center", va="center", fontsize=9)
    fig.suptitle(title, fontsize=9)
    return fig


def plot_ecdf_difference(result, part: str = PARTS[0]):
    """ECDF of the fractional ranks minus the uniform CDF, one panel per quantity of
    ``part`` (:data:`PARTS`), with the simultaneous band (Säilynoja, Bürkner and Vehtari
    2022) at the level the verdict uses."""
    names = _ranked(result, part)
    title = f"SBC of {result.analysis.name}, {part}: ECDF difference of the ranks"
    if not names:
        return _nothing_to_show(title)
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
        ax.step(band.z, ecdf - band.z, where="post", color=palette.MAIN, lw=1.2, label="ranks")
        ax.axhline(0.0, color="k", lw=0.6)
        label_axes(ax, f"{q} ({_verdict(passed[q])})", "fractional rank of the truth", "ECDF - uniform CDF")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{title} ({len(result.ranks[names[0]])} datasets)", fontsize=9)
    return fig


def plot_rank_histograms(result, part: str = PARTS[0]):
    """Histograms of the ranks of each quantity of ``part`` (:data:`PARTS`), with the 99%
    pointwise binomial range of a bin's count."""
    from scipy import stats

    names = _ranked(result, part)
    title = f"SBC of {result.analysis.name}, {part}: rank histograms"
    if not names:
        return _nothing_to_show(title)
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
            ax.stairs(n * p, edges, color="0.5", lw=0.8, label="expected count")
            ax.hist(r, bins=edges, color=palette.MAIN, alpha=0.8, label="ranks")
        label_axes(ax, q, "rank of the truth", "datasets")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(title, fontsize=9)
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
        ax.plot(lv, s["coverage"], "o", color=palette.ALERT, label="observed")
        ax.set_xlim(0.4, 1.0)
        ax.set_ylim(-0.02, 1.02)
        label_axes(ax, f"{q} ({_verdict(s['pass'].all())})", "nominal level of the central interval",
                   "share of datasets covered")
    axes[0].legend(fontsize=6, loc="lower right")
    n = int(result.summary["n"].max()) if len(result.summary) else 0
    fig.suptitle(f"Coverage of {result.analysis.name} at a fixed truth ({n} datasets)", fontsize=9)
    return fig


def plot_z_contraction(result):
    """Posterior z-score against posterior contraction, one point per dataset."""
    names = list(dict.fromkeys(result.table["quantity"]))
    fig, axes = _panels(len(names), 3.4, 3.2)
    t = result.table[result.table["status"] == "fitted"]
    for ax, q in zip(axes, names):
        u = t[t["quantity"] == q]
        ok = u["fit_ok"].astype(bool)
        ax.scatter(u.loc[ok, "contraction"], u.loc[ok, "z_score"], s=10, color=palette.MAIN, label="fit passes")
        ax.scatter(u.loc[~ok, "contraction"], u.loc[~ok, "z_score"], s=14, marker="x", color=palette.ALERT,
                   label="fit flagged")
        for y in (-2, 2):
            ax.axhline(y, color="0.6", lw=0.7, ls="--")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlim(min(0.0, float(u["contraction"].min()) if len(u) else 0.0), 1.02)
        label_axes(ax, q, "posterior contraction 1 - var_post / var_prior", "posterior z-score (mean - truth) / sd")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{result.analysis.name}: z-score vs contraction", fontsize=9)
    return fig
