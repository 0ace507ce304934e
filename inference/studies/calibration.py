r"""Calibration statistics of the recovery studies: pure functions of ranks and counts.

**Ranks** (simulation-based calibration; Talts et al. 2018, "Validating Bayesian
inference algorithms with simulation-based calibration").  The rank of the true value
is taken among :data:`RANK_DRAWS` = 99 draws thinned evenly from the pooled chains
(:func:`thin_indices`, :func:`sbc_rank`; ties broken at random), so ranks run over
0..99, 100 values.  If the fit is right, the ranks are uniform.

**Uniformity** is tested twice: a chi-square test on the ranks binned into
``min(20, N // 5)`` near-equal bins (at least 2; :func:`chi_square_uniformity`), and
the simultaneous ECDF band test of Säilynoja, Bürkner and Vehtari (2022, "Graphical
test for discrete uniformity and its applications in goodness-of-fit evaluation and
multiple sample comparison"; :func:`ecdf_band`, :func:`ecdf_test`): the statistic is
the smallest, over the 99 inner rank values, of the two-sided binomial tail
probability of the ECDF count; the pointwise level ``gamma`` is adjusted by
simulation (:data:`BAND_SIMULATIONS` uniform rank sets from a fixed seed) so that the
ECDF of uniform ranks leaves the band with probability ``alpha``, and the p-value is
the share of simulated statistics at or below the observed one.  A quantity's p-value
is ``min(1, 2 min(p_chi2, p_ecdf))`` (:func:`combined_p`, Bonferroni over its two
tests), and the quantities are corrected together by Holm's method (:func:`holm`).

**Coverage** counts are given exact (Clopper-Pearson) intervals
(:func:`clopper_pearson`, from ``scipy.stats.binomtest``).

**Power.**  A study's verdict fails when the smallest of its ``m`` quantities'
p-values is at most ``FAMILY_ALPHA / m`` (Holm's first step).  :func:`rank_test_power`
gives, by simulation, the chance that it flags one quantity whose fitted posterior
is miscalibrated: if the quantity's posterior is normal, ``N(mu, sigma)``, and the
fit returns ``N(mu + shift * sigma, sd_scale * sigma)`` instead, the truth drawn
from the posterior has rank ``Binomial(L, Phi((z - shift) / sd_scale))`` among
``L`` fitted draws, ``z`` standard normal (:func:`miscalibrated_ranks`).  The p-values
of many rank sets at once come from :func:`rank_set_p_values`, the tests of the
verdict vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from classsize.inference.engine.settings import RANK_DRAWS

#: Central interval levels of the coverage study.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Family-wise false-alarm rate of each study's verdict.
FAMILY_ALPHA = 0.05
#: Uniform rank sets simulated to set the ECDF band's pointwise level (fixed seed).
BAND_SIMULATIONS = 10_000
BAND_SEED = 2022
#: Most bins of the chi-square test (each bin expects at least 5 ranks when N allows).
MAX_CHI2_BINS = 20


def thin_indices(total: int, n: int) -> np.ndarray:
    """``min(n, total)`` indices spread evenly over ``0..total-1`` (first and last included)."""
    n = min(int(n), int(total))
    if n <= 0:
        raise ValueError("nothing to thin")
    if n == 1:
        return np.array([total - 1])
    return np.round(np.linspace(0, total - 1, n)).astype(np.int64)


def sbc_rank(truth: float, draws: np.ndarray, n_rank_draws: int = RANK_DRAWS, rng=None) -> tuple[int, int]:
    """The rank of ``truth`` among ``n_rank_draws`` draws thinned evenly from ``draws``
    (pooled in the given order), ties broken uniformly at random.

    Returns ``(rank, L)``: the rank is in ``0..L``, with ``L`` the number of draws used.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = np.asarray(draws, dtype=float).ravel()
    x = x[thin_indices(x.size, n_rank_draws)]
    below = int(np.sum(x < truth))
    ties = int(np.sum(x == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0), int(x.size)


@dataclass(frozen=True)
class ChiSquare:
    """Pearson's chi-square test of binned ranks: statistic, degrees of freedom,
    p-value, and the observed and expected counts per bin."""

    statistic: float
    df: int
    p_value: float
    observed: np.ndarray
    expected: np.ndarray


def chi_square_bins(n_ranks: int, n_values: int) -> int:
    """Bins of the chi-square test: ``min(20, N // 5)`` (expected count >= 5), at least 2,
    at most the number of rank values."""
    return int(max(2, min(MAX_CHI2_BINS, n_ranks // 5, n_values)))


def chi_square_uniformity(ranks: Sequence[int], n_values: int, n_bins: int | None = None) -> ChiSquare:
    """Pearson's chi-square test that ``ranks`` (integers in ``0..n_values-1``) are uniform.

    The values are split into ``n_bins`` contiguous bins of near-equal width (the
    expected count of a bin is proportional to its width); ``df = n_bins - 1``.
    """
    from scipy import stats

    r = np.asarray(ranks, dtype=np.int64)
    if r.size == 0:
        raise ValueError("no ranks")
    if r.min() < 0 or r.max() >= n_values:
        raise ValueError(f"ranks must lie in 0..{n_values - 1}")
    n_bins = chi_square_bins(r.size, n_values) if n_bins is None else int(n_bins)
    if not 2 <= n_bins <= n_values:
        raise ValueError(f"n_bins must be in 2..{n_values}, got {n_bins}")
    edges = np.round(np.linspace(0, n_values, n_bins + 1)).astype(np.int64)
    observed = np.histogram(r, bins=edges)[0].astype(float)
    expected = r.size * np.diff(edges) / n_values
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return ChiSquare(statistic, n_bins - 1, float(stats.chi2.sf(statistic, n_bins - 1)), observed, expected)


@dataclass(frozen=True)
class EcdfBand:
    """Simultaneous band for the ECDF of ``n`` ranks uniform on ``0..n_values-1``.

    At the evaluation points ``z_k = k / n_values`` (``k = 1..n_values-1``) the ECDF is
    ``#{rank < k} / n``; the band is ``[lower_k, upper_k]`` (as fractions of ``n``).
    ``gamma`` is the adjusted pointwise level; ``null_statistics`` the simulated
    statistics (sorted).
    """

    n: int
    n_values: int
    alpha: float
    z: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    gamma: float
    null_statistics: np.ndarray
    tail: np.ndarray = field(repr=False)  # (k, count) -> two-sided binomial tail probability


def _tail_table(n: int, n_values: int) -> np.ndarray:
    """``T[k-1, c] = min(1, 2 min(P(X <= c), P(X >= c)))`` for ``X ~ Binomial(n, k/n_values)``."""
    from scipy import stats

    z = np.arange(1, n_values) / n_values
    c = np.arange(n + 1)
    cdf = stats.binom.cdf(c[None, :], n, z[:, None])
    sf = stats.binom.sf(c[None, :] - 1, n, z[:, None])  # P(X >= c)
    return np.minimum(1.0, 2.0 * np.minimum(cdf, sf))


@lru_cache(maxsize=32)
def ecdf_band(n: int, n_values: int, alpha: float = 0.05, n_sim: int = BAND_SIMULATIONS,
              seed: int = BAND_SEED) -> EcdfBand:
    """The simultaneous ``1 - alpha`` band of Säilynoja, Bürkner and Vehtari (2022) for
    the ECDF of ``n`` discrete-uniform ranks, by simulation with a fixed seed.

    The statistic of a rank set is the smallest tail probability (:func:`_tail_table`)
    of its ECDF counts over the evaluation points; ``gamma`` is the ``alpha`` quantile
    of the statistic over ``n_sim`` uniform rank sets (the largest level at which at
    most ``alpha`` of them leave the band), and the band at each point holds the
    counts whose tail probability is at least ``gamma``.
    """
    if n < 1 or n_values < 2:
        raise ValueError("need n >= 1 ranks over n_values >= 2 values")
    tail = _tail_table(n, n_values)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n_values, 1.0 / n_values), size=n_sim)
    below = np.cumsum(counts, axis=1)[:, :-1]  # #{rank < k}, k = 1..n_values-1
    stat = np.sort(tail[np.arange(n_values - 1)[None, :], below].min(axis=1))
    gamma = float(stat[int(math.floor(alpha * n_sim))])
    inside = tail >= gamma
    c = np.arange(n + 1)
    lower = np.where(inside, c[None, :], n + 1).min(axis=1) / n
    upper = np.where(inside, c[None, :], -1).max(axis=1) / n
    z = np.arange(1, n_values) / n_values
    return EcdfBand(n, n_values, alpha, z, lower, upper, gamma, stat, tail)


def ecdf_counts(ranks: Sequence[int], n_values: int) -> np.ndarray:
    """``#{rank < k}`` for ``k = 1..n_values-1``."""
    r = np.asarray(ranks, dtype=np.int64)
    return np.cumsum(np.bincount(r, minlength=n_values))[:-1]


def ecdf_test(ranks: Sequence[int], band: EcdfBand) -> tuple[float, bool]:
    """``(p_value, inside)``: the ECDF band test of uniformity for ``ranks``.

    ``inside`` is whether the ECDF stays in the band (the test at level ``band.alpha``
    does not reject); the p-value is ``(1 + #{simulated statistic <= observed}) / (n_sim + 1)``.
    """
    r = np.asarray(ranks, dtype=np.int64)
    if r.size != band.n:
        raise ValueError(f"the band is for {band.n} ranks, got {r.size}")
    below = ecdf_counts(r, band.n_values)
    stat = float(band.tail[np.arange(band.n_values - 1), below].min())
    n_le = int(np.searchsorted(band.null_statistics, stat, side="right"))
    return (1 + n_le) / (band.null_statistics.size + 1), bool(stat >= band.gamma)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a binomial proportion ``k / n``
    (NaN for ``n = 0``)."""
    from scipy import stats

    if n <= 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def holm(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: ``(adjusted p-values, rejected)``; NaN p-values are ignored."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        running = 0.0
        for i, j in enumerate(order):
            running = max(running, min(1.0, (m - i) * p[j]))
            adjusted[j] = running
    return adjusted, np.where(np.isnan(adjusted), False, adjusted <= alpha)


def combined_p(p_chi2: float, p_ecdf: float) -> float:
    """A quantity's p-value from its two uniformity tests (Bonferroni over the two)."""
    return float(min(1.0, 2.0 * min(p_chi2, p_ecdf)))


# ============================================================================ power
def verdict_band(n: int, n_values: int, n_quantities: int) -> EcdfBand:
    """The ECDF band of a verdict over ``n_quantities`` quantities: simultaneous at
    ``1 - FAMILY_ALPHA / (2 m)``, so that leaving it implies a Holm-adjusted p below
    ``FAMILY_ALPHA``."""
    return ecdf_band(int(n), int(n_values), FAMILY_ALPHA / (2 * int(n_quantities)))


def rank_set_p_values(ranks: np.ndarray, n_values: int, band: EcdfBand) -> np.ndarray:
    """The combined p-value (:func:`combined_p` of the chi-square and ECDF tests) of
    each rank set: ``ranks`` is ``(sets, n)``, integers in ``0..n_values-1``; the
    result is ``(sets,)``, equal to what the verdict computes set by set."""
    from scipy import stats

    r = np.asarray(ranks, dtype=np.int64)
    sets, n = r.shape
    if n != band.n or n_values != band.n_values:
        raise ValueError(f"the band is for {band.n} ranks over {band.n_values} values")
    offsets = (np.arange(sets) * n_values)[:, None]
    counts = np.bincount((r + offsets).ravel(), minlength=sets * n_values).reshape(sets, n_values)
    # chi-square on the verdict's bins
    n_bins = chi_square_bins(n, n_values)
    edges = np.round(np.linspace(0, n_values, n_bins + 1)).astype(np.int64)
    observed = np.add.reduceat(counts, edges[:-1], axis=1).astype(float)
    expected = n * np.diff(edges) / n_values
    p_chi2 = stats.chi2.sf(np.sum((observed - expected) ** 2 / expected, axis=1), n_bins - 1)
    # ECDF band statistic and its simulated p-value
    below = np.cumsum(counts, axis=1)[:, :-1]
    stat = band.tail[np.arange(n_values - 1)[None, :], below].min(axis=1)
    n_le = np.searchsorted(band.null_statistics, stat, side="right")
    p_ecdf = (1 + n_le) / (band.null_statistics.size + 1)
    return np.minimum(1.0, 2.0 * np.minimum(p_chi2, p_ecdf))


def miscalibrated_ranks(rng, sets: int, n_datasets: int, rank_draws: int, *, sd_scale: float = 1.0,
                        shift: float = 0.0) -> np.ndarray:
    """``(sets, n_datasets)`` ranks of the truth among ``rank_draws`` independent draws of
    a fit whose posterior is the true one shifted by ``shift`` posterior sd and scaled
    by ``sd_scale`` (both normal); ``sd_scale = 1, shift = 0`` gives uniform ranks."""
    from scipy import stats

    z = rng.standard_normal((sets, n_datasets))
    return rng.binomial(int(rank_draws), stats.norm.cdf((z - shift) / sd_scale))


def rank_test_power(n_datasets: int, n_quantities: int, rank_draws: int = RANK_DRAWS, *, sd_scale: float = 1.0,
                    shift: float = 0.0, sets: int = 4000, seed: int = 0) -> float:
    """The chance that a study's verdict flags one quantity (of ``n_quantities``) whose
    fitted posterior is miscalibrated (see :func:`miscalibrated_ranks`), with
    ``n_datasets`` ranks among ``rank_draws`` draws: the share of ``sets`` simulated
    rank sets whose p-value is at most ``FAMILY_ALPHA / n_quantities``.

    This is the probability that the miscalibrated quantity fails its Holm step
    whatever the other quantities do, hence a lower bound on the chance that the
    verdict fails.  With ``sd_scale = 1, shift = 0`` it is the per-quantity false-alarm
    rate, at most ``FAMILY_ALPHA / n_quantities`` when the tests hold their level.
    """
    rng = np.random.default_rng(seed)
    ranks = miscalibrated_ranks(rng, sets, n_datasets, rank_draws, sd_scale=sd_scale, shift=shift)
    band = verdict_band(n_datasets, rank_draws + 1, n_quantities)
    p = rank_set_p_values(ranks, rank_draws + 1, band)
    return float(np.mean(p <= FAMILY_ALPHA / n_quantities))
