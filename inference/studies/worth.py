r"""How many randomized students is the REGULAR cohort worth?  Pure functions of interval widths.

A design study fits many simulated datasets per design; each fit gives, for one
estimand, the width of its central 90% posterior interval.  The ``randomized``
analysis is fitted on a ladder of EXPERIMENTAL-only sizes ``n_1 < ... < n_J``
(``J >= 2``), the ``structural`` analysis on the combined design (REGULAR +
EXPERIMENTAL students).  The REGULAR cohort's worth is measured in randomized
students.

**Width curve** (:func:`width_curve`).  With ``w_j`` the mean width at size ``n_j``,
``log w_j = log a - b log n_j`` is fitted by least squares:
``b = -sum (x_j - xbar)(y_j - ybar) / sum (x_j - xbar)^2`` and
``log a = ybar + b xbar``, where ``x = log n`` and ``y = log w``; so
``width(n) = a n^(-b)`` (``b`` is about 1/2 for an estimator that is a mean).

**Matching size** (:func:`size_for_width`).  The size at which the curve meets the
structural analysis's mean width ``t`` is ``n* = exp((log a - log t) / b)``,
defined for ``b > 0``.  The cohort's worth is ``n* - n_E``, with ``n_E`` the
EXPERIMENTAL students of the combined design; it is negative when the structural
analysis is wider than the randomized analysis would be on those ``n_E`` alone.
``n*`` is *extrapolated* when it lies outside ``[n_1, n_J]``.

**Bootstrap** (:func:`worth`).  Failed fits (NaN widths) are dropped; each cell keeps
at least 2 widths.  In each of ``boots`` replicates the structural cell's datasets
and, independently, each ladder cell's datasets are resampled with replacement; the
means, the curve and ``n*`` are recomputed.  The interval at ``level`` is the
central percentile interval of the replicates (order statistics: numpy's
``inverted_cdf`` quantiles).  A replicate whose curve does not shrink (``b <= 0``)
has no size that meets the target and counts as ``n* = +inf``; the upper end is
infinite when more than ``(1 - level) / 2`` of the replicates do so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

__all__ = ["Worth", "size_for_width", "width_curve", "worth"]


def width_curve(sizes, mean_widths) -> tuple[float, float]:
    """``(log_a, b)`` of the least-squares line ``log w = log a - b log n`` through
    the mean widths ``w`` at the sizes ``n``."""
    n = np.asarray(sizes, dtype=float).ravel()
    w = np.asarray(mean_widths, dtype=float).ravel()
    if n.shape != w.shape:
        raise ValueError(f"{n.size} sizes but {w.size} mean widths")
    if np.unique(n).size < 2:
        raise ValueError("the width curve needs at least 2 distinct sizes")
    if not (np.all(np.isfinite(n)) and np.all(n > 0)):
        raise ValueError("sizes must be positive and finite")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError("mean widths must be positive and finite")
    log_a, b = _fit(np.log(n), np.log(w)[None, :])
    return float(log_a[0]), float(b[0])


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of each row of ``y`` on ``x``: ``(log_a, b)`` per row."""
    dx = x - x.mean()
    b = -((y - y.mean(axis=1, keepdims=True)) @ dx) / (dx @ dx)
    return y.mean(axis=1) + b * x.mean(), b


def size_for_width(log_a: float, b: float, width: float) -> float:
    """The size ``n = exp((log_a - log width) / b)`` at which ``a n^(-b)`` equals ``width``."""
    if not b > 0:
        raise ValueError(f"the width does not shrink with n (b = {b:.3g}): no size reaches the target")
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"the target width must be positive and finite, not {width!r}")
    with np.errstate(over="ignore"):
        return float(np.exp((log_a - math.log(width)) / b))


def _sizes_for_width(log_a: np.ndarray, b: np.ndarray, width: np.ndarray) -> np.ndarray:
    """:func:`size_for_width` per replicate, ``+inf`` where ``b <= 0``."""
    out = np.full(b.shape, np.inf)
    ok = b > 0
    with np.errstate(over="ignore"):
        out[ok] = np.exp((log_a[ok] - np.log(width[ok])) / b[ok])
    return out


def _cell(widths, name: str) -> np.ndarray:
    """A cell's finite widths (NaN dropped); refuses fewer than 2 or a non-positive one."""
    w = np.asarray(widths, dtype=float).ravel()
    w = w[~np.isnan(w)]
    if w.size < 2:
        raise ValueError(f"{name} has {w.size} finite widths; at least 2 are needed")
    if not (np.all(np.isfinite(w)) and np.all(w > 0)):
        raise ValueError(f"{name} has non-positive or infinite widths")
    return w


def _resampled_means(w: np.ndarray, boots: int, rng: np.random.Generator) -> np.ndarray:
    """``boots`` means of ``w`` resampled with replacement."""
    return w[rng.integers(0, w.size, size=(boots, w.size))].mean(axis=1)


def _count(x: float) -> str:
    return f"{x:,.0f}" if math.isfinite(x) else ("infinity" if x > 0 else "minus infinity")


def _width(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


@dataclass(frozen=True)
class Worth:
    """The REGULAR cohort's worth in randomized students (see the module's docstring).

    ``n_star`` is the EXPERIMENTAL-only size at which the randomized analysis's mean
    width equals ``target_width``, the structural analysis's mean width on the
    combined design of ``n_regular`` REGULAR and ``n_experimental`` EXPERIMENTAL
    students; ``lower`` and ``upper`` bound it (central bootstrap interval at
    ``level``, from the replicates ``bootstrap``).  ``log_a`` and ``b`` are the width
    curve of the ladder ``sizes``."""

    target_width: float
    n_star: float
    lower: float
    upper: float
    level: float
    b: float
    log_a: float
    bootstrap: np.ndarray = field(repr=False)
    sizes: tuple[int, ...]
    extrapolated: bool
    n_experimental: int
    n_regular: int | None = None

    @property
    def value(self) -> float:
        """The worth in randomized students: ``n_star - n_experimental``."""
        return self.n_star - self.n_experimental

    @property
    def value_interval(self) -> tuple[float, float]:
        """The bootstrap interval of :attr:`value`: ``(lower, upper) - n_experimental``."""
        return self.lower - self.n_experimental, self.upper - self.n_experimental

    def statement(self, units: str = "points", interval: str = "90%") -> str:
        """One sentence: the worth, its interval, ``n*`` and the target width
        (``units``; ``interval`` names the posterior intervals whose widths were fitted)."""
        if self.n_regular is None:
            who, are, add, they = "The REGULAR cohort", "is", "adds", "it is"
        else:
            who, are, add, they = f"The {_count(self.n_regular)} REGULAR students", "are", "add", "they are"
        lo, hi = self.value_interval
        ci = f"{self.level:.0%} bootstrap interval {_count(lo)} to {_count(hi)}"
        value = _count(self.value)
        if lo > 0:
            head = f"{who} {are} worth about {value} randomized students ({ci})"
        elif hi >= 0:
            head = (f"{who} {add} nothing measurable: {they} worth about {value} "
                    f"randomized students ({ci}, which includes zero)")
        else:
            head = (f"{who} {are} worth less than nothing, about {value} randomized students "
                    f"({ci}): the structural analysis is wider than the randomized analysis "
                    f"would be on the design's {_count(self.n_experimental)} EXPERIMENTAL students alone")
        design = (f"REGULAR + {_count(self.n_experimental)} EXPERIMENTAL" if self.n_regular is None
                  else f"{_count(self.n_regular)} REGULAR + {_count(self.n_experimental)} EXPERIMENTAL")
        text = (f"{head}; the randomized analysis needs about {_count(self.n_star)} EXPERIMENTAL "
                f"students to match the structural analysis's mean {interval} interval width of "
                f"{_width(self.target_width)} {units} on the combined design ({design})")
        if self.extrapolated:
            text += (f", a size extrapolated beyond the ladder of {_count(min(self.sizes))} "
                     f"to {_count(max(self.sizes))} EXPERIMENTAL students")
        return text + "."


def worth(structural_widths, ladder_widths: Mapping[int, np.ndarray], *, n_experimental: int,
          n_regular: int | None = None, level: float = 0.90, boots: int = 2000,
          seed: int = 0) -> Worth:
    """The REGULAR cohort's :class:`Worth`: ``n*`` from the mean widths of the
    structural cell and of the ladder's cells (size -> widths of its datasets), and its
    percentile bootstrap interval over ``boots`` replicates (``default_rng(seed)``)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level!r}")
    if int(boots) < 1:
        raise ValueError(f"boots must be at least 1, not {boots!r}")
    sizes = tuple(sorted(int(n) for n in ladder_widths))
    if len(sizes) < 2:
        raise ValueError(f"the ladder has {len(sizes)} size(s); at least 2 are needed")
    target = _cell(structural_widths, "the structural cell")
    cells = [_cell(ladder_widths[n], f"the ladder cell of size {n}") for n in sizes]
    target_width = float(target.mean())
    log_a, b = width_curve(sizes, [c.mean() for c in cells])
    n_star = size_for_width(log_a, b, target_width)

    rng = np.random.default_rng(seed)
    t = _resampled_means(target, int(boots), rng)
    ladder = np.column_stack([_resampled_means(c, int(boots), rng) for c in cells])
    reps_log_a, reps_b = _fit(np.log(np.asarray(sizes, dtype=float)), np.log(ladder))
    reps = _sizes_for_width(reps_log_a, reps_b, t)
    lower, upper = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return Worth(target_width=target_width, n_star=n_star, lower=float(lower), upper=float(upper),
                 level=float(level), b=b, log_a=log_a, bootstrap=reps, sizes=sizes,
                 extrapolated=not sizes[0] <= n_star <= sizes[-1],
                 n_experimental=int(n_experimental),
                 n_regular=None if n_regular is None else int(n_regular))
