"""The worth of the REGULAR cohort in randomized students (:mod:`classsize.inference.studies.worth`).

Every test has fixed seeds, so each is deterministic.  All but one are exact checks
(they fail only when the code is wrong).  The statistical one, the coverage of the
bootstrap interval, simulates 200 studies whose true ``n*`` is known and asserts that
the 99.9% Clopper-Pearson interval of the covering count contains 0.90: over seeds, an
interval that covers exactly 90% of the time fails with probability 0.00087
(computed in the test: it passes for 165 to 192 covering studies of 200), and one that
covers 80% (or 75%) of the time fails with probability 0.78 (or 0.99).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from classsize.inference.studies.calibration import clopper_pearson
from classsize.inference.studies.worth import Worth, size_for_width, width_curve, worth

C = 3.0
SIZES = (100, 200, 400, 800)


def exact_cells(n_target: float, c: float = C, k: int = 3):
    """Widths exactly ``c / sqrt(n)`` (``k`` identical datasets per cell)."""
    return (np.full(k, c / math.sqrt(n_target)),
            {n: np.full(k, c / math.sqrt(n)) for n in SIZES})


def noisy_cells(rng, n_target: float, k: int = 50, sd: float = 0.15):
    """Widths ``c / sqrt(n) * (1 + sd * z)``, ``z`` standard normal: mean ``c / sqrt(n)``."""
    cell = lambda n: C / math.sqrt(n) * (1 + sd * rng.standard_normal(k))
    return cell(n_target), {n: cell(n) for n in SIZES}


# ------------------------------------------------------------------ exact recovery
def test_exact_recovery():
    target, ladder = exact_cells(500)
    w = worth(target, ladder, n_experimental=300, n_regular=700, boots=50)
    assert w.b == pytest.approx(0.5, rel=1e-12)
    assert w.log_a == pytest.approx(math.log(C), rel=1e-12)
    assert w.n_star == pytest.approx(500, rel=1e-10)
    assert w.value == pytest.approx(200, rel=1e-9)
    # identical widths: every replicate is the same study
    np.testing.assert_allclose(w.bootstrap, 500, rtol=1e-10)
    assert w.lower == pytest.approx(500, rel=1e-10) and w.upper == pytest.approx(500, rel=1e-10)
    assert w.sizes == SIZES and not w.extrapolated and w.level == 0.90


def test_curve_and_size_other_exponent():
    sizes = np.array([50.0, 120.0, 900.0])
    log_a, b = width_curve(sizes, 7.0 * sizes ** -0.3)
    assert b == pytest.approx(0.3, rel=1e-12) and log_a == pytest.approx(math.log(7.0), rel=1e-12)
    assert size_for_width(log_a, b, 7.0 * 333.0 ** -0.3) == pytest.approx(333.0, rel=1e-10)


def test_nan_widths_are_dropped():
    rng = np.random.default_rng(1)
    target, ladder = noisy_cells(rng, 500, k=20)
    clean = worth(target, ladder, n_experimental=300, boots=50)
    dirty = worth(np.append(target, np.nan), {n: np.append(w, [np.nan, np.nan]) for n, w in ladder.items()},
                  n_experimental=300, boots=50)
    assert dirty.n_star == pytest.approx(clean.n_star, rel=1e-12)
    assert np.all(np.isfinite(dirty.bootstrap))


# ------------------------------------------------------------------ monotonicity
def test_wider_structural_width_gives_smaller_n_star():
    target, ladder = noisy_cells(np.random.default_rng(2), 500)
    base = worth(target, ladder, n_experimental=300, boots=200, seed=5)
    wider = worth(1.1 * target, ladder, n_experimental=300, boots=200, seed=5)
    assert wider.n_star < base.n_star
    # same seed, same resamples: every replicate's target is 10% wider
    assert np.all(wider.bootstrap < base.bootstrap)
    assert wider.lower < base.lower and wider.upper < base.upper


def test_wider_ladder_gives_larger_n_star():
    target, ladder = noisy_cells(np.random.default_rng(3), 500)
    base = worth(target, ladder, n_experimental=300, boots=200, seed=5)
    wider = worth(target, {n: 1.1 * w for n, w in ladder.items()}, n_experimental=300, boots=200, seed=5)
    assert wider.n_star > base.n_star
    assert np.all(wider.bootstrap > base.bootstrap)
    assert wider.b == pytest.approx(base.b, rel=1e-10)


# ------------------------------------------------------------------ bootstrap coverage
def test_bootstrap_interval_covers_true_n_star():
    n_true, n_studies = 500, 200
    covered = 0
    for rep in range(n_studies):
        target, ladder = noisy_cells(np.random.default_rng(1000 + rep), n_true, k=50)
        w = worth(target, ladder, n_experimental=300, boots=300, seed=rep)
        assert w.lower <= w.n_star <= w.upper
        covered += w.lower <= n_true <= w.upper
    # the band and its rates, as stated in the module docstring: the 99.9% Clopper-Pearson
    # interval contains 0.90 for 165 to 192 covering studies (its bounds grow with k)
    contains = lambda k: clopper_pearson(k, n_studies, 0.999)[0] <= 0.90 <= clopper_pearson(k, n_studies, 0.999)[1]
    assert [contains(k) for k in (164, 165, 192, 193)] == [False, True, True, False]
    fail_rate = lambda p: 1 - (stats.binom.cdf(192, n_studies, p) - stats.binom.cdf(164, n_studies, p))
    assert fail_rate(0.90) < 0.001
    assert fail_rate(0.80) > 0.75 and fail_rate(0.75) > 0.99
    lo, hi = clopper_pearson(covered, n_studies, 0.999)
    assert lo <= 0.90 <= hi, f"{covered}/{n_studies} bootstrap intervals cover the true n*"


# ------------------------------------------------------------------ refusals
def test_refusals():
    with pytest.raises(ValueError, match="2 distinct sizes"):
        width_curve([100], [0.3])
    with pytest.raises(ValueError, match="2 distinct sizes"):
        width_curve([100, 100], [0.3, 0.2])
    with pytest.raises(ValueError, match="positive"):
        width_curve([100, 200], [0.3, 0.0])
    with pytest.raises(ValueError, match="positive"):
        width_curve([100, 200], [0.3, -0.1])
    with pytest.raises(ValueError, match="does not shrink"):
        size_for_width(0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="does not shrink"):
        size_for_width(0.0, -0.2, 0.1)
    target, ladder = exact_cells(500)
    with pytest.raises(ValueError, match="at least 2"):
        worth(target, {100: ladder[100]}, n_experimental=300)
    with pytest.raises(ValueError, match="structural cell has 1 finite"):
        worth(np.array([np.nan, 0.1, np.nan]), ladder, n_experimental=300)
    with pytest.raises(ValueError, match="size 200 has 1 finite"):
        worth(target, {**ladder, 200: np.array([0.2, np.nan])}, n_experimental=300)
    with pytest.raises(ValueError, match="non-positive"):
        worth(target, {**ladder, 200: np.array([0.2, -0.1])}, n_experimental=300)
    with pytest.raises(ValueError, match="does not shrink"):  # widths grow with n
        worth(target, {n: np.full(3, 0.01 * n) for n in SIZES}, n_experimental=300)
    with pytest.raises(ValueError) as refused:
        width_curve([100], [0.3])
    assert "\n" not in str(refused.value)  # one line


# ------------------------------------------------------------------ statement
def test_statement_numbers():
    target, ladder = exact_cells(500)
    text = worth(target, ladder, n_experimental=300, n_regular=700, boots=20).statement()
    assert text.startswith("The 700 REGULAR students are worth about 200 randomized students")
    assert "90% bootstrap interval 200 to 200" in text
    assert "needs about 500 EXPERIMENTAL students" in text
    assert f"width of {C / math.sqrt(500):.3g} points" in text
    assert "(700 REGULAR + 300 EXPERIMENTAL)" in text
    assert "extrapolated" not in text
    assert text.endswith(".") and ". " not in text and "\n" not in text  # one sentence


def test_statement_extrapolated():
    for n_target in (2000, 50):
        target, ladder = exact_cells(n_target)
        w = worth(target, ladder, n_experimental=30, n_regular=1000, boots=20)
        assert w.extrapolated
        assert f"about {n_target:,} EXPERIMENTAL" in w.statement()
        assert "extrapolated beyond the ladder of 100 to 800" in w.statement()


def make(n_star, lower, upper, n_regular=700):
    return Worth(target_width=3.21, n_star=n_star, lower=lower, upper=upper, level=0.9, b=0.5,
                 log_a=0.0, bootstrap=np.array([lower, upper]), sizes=SIZES,
                 extrapolated=not 100 <= n_star <= 800, n_experimental=700, n_regular=n_regular)


def test_statement_cases():
    text = make(1180, 1110, 1260).statement()
    assert text.startswith("The 700 REGULAR students are worth about 480 randomized students "
                           "(90% bootstrap interval 410 to 560)")
    assert "1,180 EXPERIMENTAL" in text and "3.21 points" in text and "extrapolated" in text
    zero = make(750, 650, 820).statement()
    assert "add nothing measurable" in zero and "-50 to 120" in zero and "includes zero" in zero
    below = make(600, 520, 680).statement()
    assert "less than nothing, about -100" in below and "structural analysis is wider" in below
    assert "extrapolated" not in below
    cohort = make(1180, 1110, 1260, n_regular=None).statement()
    assert cohort.startswith("The REGULAR cohort is worth about 480")
    assert "(REGULAR + 700 EXPERIMENTAL)" in cohort
    assert "to infinity" in make(1180, 1110, math.inf).statement()
