r"""Scores with measurement noise: the rule, the score's density and the assignment rule given a noisy score.

A score with noise of sd :math:`\sigma` is the uniform ability convolved with the
noise (:class:`NoisyUniformScore`), so noisy scores are conditioned on with uniform
ability only (:func:`check_noise_ability`, the one home of that rule).  Given a noisy
score, the REGULAR cohort's assignment rule is averaged over ability's truncated
normal distribution given the score (:func:`expected_clipped_rule`).  The
differences of normal CDFs are taken from the tails each interval lies in
(:func:`_mass`), in log space only where they underflow (:func:`_log_mass`).

**What noise breaks.**  Without noise, given the parameters each student's ability part
:math:`U_i` is read off her score exactly and lies in [0, W], and under the model the
:math:`U_i` are independent Uniform(0, W): a share :math:`2b` of them falls in the
edge bands :math:`[0, bW) \cup (W - bW, W]` (:data:`EDGE_BAND` :math:`= b`).  Noise
softens the edges: each school's extreme scores then stretch :math:`W` over a ramp
where few students lie, and the share in the bands falls well below :math:`2b`.
:func:`edge_share` is that share, recorded for each posterior draw by the noise-free
model (site ``ability_edge_share``), and the posterior predictive check of
:mod:`classsize.inference.fit.checks` compares it with replicated data.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from .pieces import Observed, regular_small_probability


#: The half-share :math:`b` of [0, W] at each edge that :func:`edge_share` counts.
EDGE_BAND = 0.025
#: The site the noise-free model records :func:`edge_share` in, at every draw (read by
#: the check, kept out of the posterior's parameters)
EDGE_SITE = "ability_edge_share"


def edge_share(ability_uniform, width):
    """The share of students whose ability part lies within ``EDGE_BAND * width`` of 0
    or of ``width`` (:math:`2b` in expectation under the noise-free uniform model)."""
    u = ability_uniform / width
    return jnp.mean((u < EDGE_BAND) | (u > 1.0 - EDGE_BAND))


def check_noise_ability(noisy: bool, ability: str) -> None:
    """The rule of measurement noise: a score with noise is the uniform ability convolved
    with the noise (the module docstring), so noisy scores are conditioned on with
    uniform ability only.  Raises ValueError (one line) for noise with any other ability."""
    if noisy and ability != "uniform":
        raise ValueError(f"scores with measurement noise are fitted with uniform ability only (ability is {ability!r})")


class NoisyUniformScore(dist.Distribution):
    r"""``Uniform(low, low + width)`` plus :math:`\mathcal N(0, \sigma)` noise: density
    :math:`[\Phi((y - \mathrm{low})/\sigma) - \Phi((y - \mathrm{low} - \mathrm{width})/\sigma)]
    / \mathrm{width}`, its logarithm finite however far in a tail (:func:`_log_mass`)."""

    support = dist.constraints.real

    def __init__(self, low, width, noise_sd):
        self.low, self.width, self.noise_sd = low, width, noise_sd
        super().__init__(batch_shape=jnp.shape(low))

    def bounds(self, value):
        """The support of the uniform part, standardised around ``value``: ``(A, B)``."""
        return (self.low - value) / self.noise_sd, (self.low + self.width - value) / self.noise_sd

    def log_prob(self, value):
        return _log_mass(*self.bounds(value)) - jnp.log(self.width)

    def sample(self, key, sample_shape=()):
        k1, k2, shape = *jax.random.split(key), sample_shape + self.batch_shape
        return self.low + self.width * jax.random.uniform(k1, shape) + self.noise_sd * jax.random.normal(k2, shape)


def _log1mexp(x):
    r""":math:`\log(1 - e^x)` for :math:`x < 0`, accurate near 0 and far from it."""
    near = x > -0.6931471805599453
    return jnp.where(near, jnp.log(-jnp.expm1(jnp.where(near, x, -1.0))),
                     jnp.log1p(-jnp.exp(jnp.where(near, -1.0, x))))


def _log_diff_ndtr(a, b):
    r""":math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b`, from the tail away from the
    interval (relative accuracy near machine precision wherever the result is a
    normal number)."""
    flip = a > 0  # both in the upper tail: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)
    lo, hi = jnp.where(flip, -b, a), jnp.where(flip, -a, b)
    log_hi = jax.scipy.special.log_ndtr(hi)
    return log_hi + _log1mexp(jax.scipy.special.log_ndtr(lo) - log_hi)


#: Below this probability mass of the truncation interval (its bounds over 35 sd on one
#: side of 0) :func:`expected_clipped_rule` takes its far-tail limit.
_TINY_MASS = 1e-250


def _tails(x):
    r""":math:`(\Phi(x), 1 - \Phi(x))`, each from its own complementary error function
    (accurate in its own tail)."""
    return 0.5 * jax.lax.erfc(-x * 0.7071067811865476), 0.5 * jax.lax.erfc(x * 0.7071067811865476)


def _mass(lo, hi):
    r""":math:`\Phi(hi) - \Phi(lo)` for :math:`lo \le hi`, from the tails the interval lies
    in: upper tails when :math:`lo \ge 0`, lower when :math:`hi \le 0`, else :math:`1` less
    both (relative accuracy near machine precision unless the interval is narrow
    against its distance from 0, where it is absolute against the nearer tail)."""
    (p_lo, q_lo), (p_hi, q_hi) = _tails(lo), _tails(hi)
    return jnp.where(lo >= 0, q_lo - q_hi, jnp.where(hi <= 0, p_hi - p_lo, 1.0 - q_hi - p_lo))


def _tail_series(x):
    r""":math:`1 - x^{-2} + 3x^{-4} - 15x^{-6} + 105x^{-8}`, the series of Mills' ratio:
    :math:`\Phi(x) = \varphi(x)\,S(x)/|x|` as :math:`x \to -\infty` (relative error
    :math:`945 x^{-10}`: under :math:`10^{-12}` beyond 35 sd)."""
    inv = 1.0 / (x * x)
    return 1.0 - inv * (1.0 - inv * (3.0 - inv * (15.0 - 105.0 * inv)))


def _log_mass(lo, hi):
    r""":math:`\log(\Phi(hi) - \Phi(lo))` for :math:`lo < hi`: the logarithm of
    :func:`_mass` where that is above :data:`_TINY_MASS`; beyond (both bounds over 35 sd
    on one side of 0), from the tail's asymptotic series :math:`\log\Phi(x) = -x^2/2 -
    \log(-x) - \tfrac12\log 2\pi + \log(1 - x^{-2} + 3x^{-4} - 15x^{-6} + 105x^{-8})`
    (relative error under :math:`10^{-12}` there), as :math:`\log\Phi(b) +
    \log(1 - e^{\log\Phi(a) - \log\Phi(b)})` with :math:`a < b` the bounds mirrored into
    the lower tail."""
    mass = _mass(lo, hi)
    ok = mass > _TINY_MASS
    flip = lo > 0
    a = jnp.where(ok, -40.0, jnp.where(flip, -hi, lo))
    b = jnp.where(ok, -39.0, jnp.where(flip, -lo, hi))

    def log_tail(x):
        return -0.5 * x * x - jnp.log(-x) - 0.9189385332046727 + jnp.log(_tail_series(x))

    log_b = log_tail(b)
    far = log_b + _log1mexp(log_tail(a) - log_b)
    return jnp.where(ok, jnp.log(jnp.where(ok, mass, 1.0)), far)


def expected_clipped_rule(intercept, slope, lower, upper):
    r""":math:`E[\mathrm{clip}(a + \lambda X, 0, 1)]` for :math:`X` standard normal
    truncated to [``lower``, ``upper``] (``intercept`` :math:`a`, ``slope`` :math:`\lambda`).

    The clipped rule is linear between :math:`x_0 = -a/\lambda` and :math:`x_1 = (1 -
    a)/\lambda` and constant outside, so the expectation is exact in closed form:
    with :math:`[L, R]` the linear part within the bounds, :math:`[L_1, R_1]` the part
    where the rule is 1 and :math:`Z = \Phi(\mathrm{upper}) - \Phi(\mathrm{lower})`,

    .. math:: \big[a(\Phi(R) - \Phi(L)) + \lambda(\varphi(L) - \varphi(R))
              + \Phi(R_1) - \Phi(L_1)\big] / Z,

    each difference of :math:`\Phi` taken from the tails it lies in (:func:`_mass`), so
    the ratios to :math:`Z` are accurate to about :math:`10^{-15}` absolute even where
    the bounds lie far in a tail.  Where :math:`Z` underflows (the bounds more than
    about 35 sd on one side of 0) the truncated normal sits within about :math:`1/|B|`
    of the bound :math:`B` nearer 0, and the rule is evaluated at its mean: with
    :math:`F` the other bound, :math:`q = \varphi(F)/\varphi(B)` and :math:`S` the
    series of Mills' ratio (:func:`_tail_series`),

    .. math:: E[X] = \mathrm{sign}(B)\,(1 - q) / \big(S(B)/|B| - q\,S(F)/|F|\big),

    which is :math:`B/S(B)` for a far :math:`F` (:math:`B + 1/B` to first order).
    ``slope = 0`` gives :math:`\mathrm{clip}(a, 0, 1)`.  Linear-space differences cost a
    fifth of the log-space ones (:func:`_log_diff_ndtr`) per gradient.
    """
    flat = slope == 0
    safe = jnp.where(flat, 1.0, slope)
    x0, x1 = -intercept / safe, (1.0 - intercept) / safe
    lo = jnp.clip(jnp.minimum(x0, x1), lower, upper)
    hi = jnp.clip(jnp.maximum(x0, x1), lower, upper)
    one = jnp.clip(x1, lower, upper)
    z = _mass(lower, upper)
    ok = z > _TINY_MASS
    z = jnp.where(ok, z, 1.0)
    pdf = lambda x: jnp.exp(-0.5 * x * x) * 0.3989422804014327  # noqa: E731
    linear = (intercept * _mass(lo, hi) + safe * (pdf(lo) - pdf(hi))) / z
    top = _mass(jnp.where(safe > 0, one, lower), jnp.where(safe > 0, upper, one)) / z
    bound = jnp.where(ok, 1.0, jnp.where(upper < 0, upper, lower))  # (1.0: unused, away from 0)
    other = jnp.where(ok, 2.0, jnp.where(upper < 0, lower, upper))
    b, f = jnp.abs(bound), jnp.abs(other)
    log_q = -0.5 * (f - b) * (f + b)
    mean = jnp.sign(bound) * -jnp.expm1(log_q) / (_tail_series(b) / b - jnp.exp(log_q) * _tail_series(f) / f)
    far = jnp.clip(intercept + safe * mean, 0.0, 1.0)
    return jnp.where(flat, jnp.clip(intercept, 0.0, 1.0), jnp.where(ok, linear + top, far))


def noisy_small_probability(p: Mapping, data: Observed, ability_uniform, score: NoisyUniformScore, beta_a,
                             noise_sd, rule_has_ability: bool):
    r"""P(SMALL) given the score: the REGULAR rule averaged over ability's distribution
    given the score, :math:`U_i \sim \mathcal N(\tilde U_i, \sigma/\beta_A)` truncated
    to [0, W] (:math:`\tilde U_i` the score's noise-free reading), by
    :func:`expected_clipped_rule`; the EXPERIMENTAL coin as it is."""
    rule = regular_small_probability(p, data.income_scaled, data.race, 0.0)
    if rule_has_ability:
        lower, upper = score.bounds(data.test_score)  # U's bounds 0 and W, standardised
        slope = p["regular_small_ability"]
        rule = expected_clipped_rule(rule + slope * ability_uniform, slope * noise_sd / beta_a, lower, upper)
    return jnp.clip(jnp.where(data.is_experimental, p["experimental_p_small"], rule), 0.0, 1.0)
