r"""The class-size experiment conditioned on data, with ability marginalised exactly.

:func:`condition_on_data` is what :func:`classsize.model.class_size_experiment` runs
when it is given data.  It reads as a short sequence of named steps:

1. :func:`_count_parameters`: the race, EXPERIMENTAL and MA probabilities;
2. :func:`_score_effects`: the score effects and each student's residual
   :math:`r_i = U_i + b_{k(i)}` in ability units;
3. :func:`_width_and_levels`: the width :math:`W` of ability's uniform part and the
   school levels :math:`b_k`;
4. :func:`_intercept_and_range`: the score intercept :math:`c`, the school-effect
   range :math:`R` and the school effects :math:`e_k`;
5. :func:`~classsize.model.assignment.assignment_rule`: the REGULAR cohort's assignment
   intercepts and slopes;
6. :func:`_observations`: the observed sites (race, class size, score, MA, school).

**Likelihood.**  When the scores carry no noise beyond ability (``score_noise_sd``
pinned to 0, the notebook's process), given the parameters each student's unobserved
ability part is a deterministic function of her score,

.. math:: U_i = r_i - b_{k(i)},\qquad
          r_i = (y_i - \delta S_i - \gamma M_i)/\beta_A - w s_i - x_i^\top \eta,\qquad
          b_k = (c + \beta_S e_k)/\beta_A,

and the joint density of a student's class size and score is
:math:`p_U(U_i)\,P(S_i \mid U_i)/\beta_A`: no latent variable per student and no
quadrature.  The REGULAR cohort's rule :math:`P(S_i{=}1 \mid U_i) = \mathrm{clip}(
\alpha_{g(i)} + \beta s_i + \lambda U_i, 0, 1)`, with :math:`\alpha_g = \alpha +
\rho_g` the intercept of race :math:`g`, is evaluated at the implied :math:`U_i`.

**Support.**  With :math:`U \sim \mathrm{Uniform}(0, W)` the posterior density is
positive only on a polytope: with :math:`h_k, \ell_k` the largest and smallest
:math:`r_i` in school :math:`k` and :math:`\rho_k = h_k - \ell_k` its spread,
:math:`b_k \in [h_k - W, \ell_k]`, hence :math:`W \ge \max_k \rho_k`; the school
effects need :math:`|e_k| \le R`; and, because the assignment probability is clipped
to [0, 1], every SMALL student of the REGULAR cohort needs :math:`\alpha_{g(i)} +
\beta s_i + \lambda U_i > 0` and every LARGE one :math:`< 1`.  The parameters are
therefore sampled in coordinates that satisfy every constraint by construction (with
:math:`\Phi, \varphi` the standard normal cdf and density):

.. math::
    W &= \max_k \rho_k + u_W e^{v}, \\
    b_k &= h_k - W + (W - \rho_k)\,\Phi(z_k), \\
    R &= H/\beta_S + u_R e^{t},\qquad c = m + \beta_S u_R e^{t}\,(2\Phi(s) - 1),
        \qquad e_k = (\beta_A b_k - c)/\beta_S, \\
    \alpha_g &= \ell_g + \omega_g\,\mathrm{logistic}\big(\log(\hat p_g/\omega_g)
        + \varsigma_g \xi_g\big),\qquad \rho_g = \alpha_g - \alpha, \\
    \ell_g &= -\min_{i:\ \mathrm{SMALL,\ REGULAR},\ g(i) = g}(\beta s_i + \lambda U_i),\qquad
    \omega_g = 1 - \max_{i:\ \mathrm{LARGE,\ REGULAR},\ g(i) = g}(\beta s_i + \lambda U_i) - \ell_g,

where :math:`H, m` are the half range and midpoint of the levels :math:`\beta_A b_k`
(sites ``ability_uniform_width_excess`` :math:`v`, ``school_position`` :math:`z_k`,
``school_effect_range_excess`` :math:`t`, ``score_intercept_position`` :math:`s`,
``regular_small_race_position`` :math:`\xi_g`).  The assignment probabilities of a
race's REGULAR students then lie strictly between 0 and 1, so neither clipped wall is
met; where the slopes leave no room (:math:`\omega_g \le 0`) the window is held at
:math:`10^{-9}` and the Jacobian penalises it.  Three kinds of race map otherwise:

* without LARGE REGULAR students, :math:`\alpha_g = \ell_g + \hat p_g e^{\varsigma_g
  \xi_g}`, the limit of the map as :math:`\omega_g \to \infty`;
* with LARGE but no SMALL REGULAR students there is no floor: the likelihood is flat
  while every LARGE student's rule is at most 0 and falls steeply once one is positive,
  past the wall :math:`w_g = -\max_{i:\ \mathrm{LARGE,\ REGULAR},\ g(i) = g}(\beta
  s_i + \lambda U_i)`, so the intercept is bent there, :math:`\alpha_g = w_g +
  F[r\xi_g - (1 - r)(\log(1 + e^{-\xi_g}) - \log 2)]`, with slope :math:`F` on the
  flat side (:math:`F^2` the prior variance of :math:`\alpha + \rho_g`) and
  :math:`rF = \hat\sigma_g` on the steep side;
* without REGULAR students, :math:`\alpha_g = \hat\alpha_g + \hat\sigma_g \xi_g`.

Each map is a bijection onto the support given the coordinates before it, so the
log-Jacobian is the sum :math:`\log u_W + v + \sum_k[\log(W - \rho_k) +
\log\varphi(z_k)] + 2(\log u_R + t) + \log(2\beta_S) + \log\varphi(s) +
K\log(\beta_A/\beta_S) + \sum_g[\log(\omega_g \varsigma_g) + \log\sigma(\eta_g) +
\log\sigma(-\eta_g)]` (:math:`\eta_g` the logistic's argument; a bent race adds
:math:`\log F + \log(r + (1 - r)\sigma(-\xi_g))` instead), added by ``numpyro.factor``
together with the priors of :math:`W, c, R, e_k, \rho_g`. Using :math:`\Phi` makes
:math:`z_k` and :math:`s` exactly standard normal where the data leave a level flat in
its window.

**Standardised coordinates.**  Every other parameter :math:`x` with prior
:math:`p(x)` is sampled as ``x_std`` :math:`= \xi` with :math:`x = T(\hat x + \hat
\sigma \xi)`, ``T`` the bijection onto the prior's support that NUTS would use
anyway, adding :math:`\log p(x) + \log|T'| + \log\hat\sigma` (an affine change of the
unconstrained coordinate: the posterior is unchanged).  The centres and scales are
the pilot estimates of :mod:`classsize.model.pilot`, functions of the data alone.
All posterior scales are then near 1 and the chains start near the mode, so a
diagonal mass matrix suffices (:data:`NUTS_SETTINGS`).

**Kinks.**  The log density is continuous and smooth except where the student
attaining a school's extreme, the school with the largest spread, the school with
the extreme level, or the student with a race's smallest assignment probability
changes.  Those kinks belong to the posterior itself (the marginal density of the
score effects is pyramid-shaped, roughly :math:`\exp(-n \max_k \rho_k/W)`); in
standardised coordinates NUTS crosses them.

**Measurement noise.**  When ``score_noise_sd`` is pinned above 0 or sampled, a
score is :math:`\beta_A U_i` plus the rest of the score equation plus
:math:`\mathcal N(0, \sigma)` noise, so :math:`\tilde U_i = r_i - b_{k(i)}` above is
only the score's noise-free reading.  Ability is still marginalised exactly, in
closed form: the score's density is the uniform convolved with the noise,

.. math:: p(y_i \mid \ldots) = \big[\Phi(\tilde U_i/\tau) - \Phi((\tilde U_i - W)/\tau)\big]
          / (\beta_A W),\qquad \tau = \sigma/\beta_A,

(:class:`NoisyUniformScore`, in log space), and given the score :math:`U_i` is
:math:`\mathcal N(\tilde U_i, \tau)` truncated to [0, W], over which the REGULAR
rule is averaged: :math:`P(S_i{=}1 \mid y_i) = E[\mathrm{clip}(\alpha_{g(i)} + \beta
s_i + \lambda U_i, 0, 1) \mid y_i]`.  The clipped rule is piecewise linear in
:math:`U_i`, so this expectation is exact in closed form
(:func:`expected_clipped_rule`; no quadrature).  Every score is then possible, so
:math:`W` and the levels :math:`b_k` lose their windows: :math:`W` is a standardised
coordinate and :math:`b_k = \hat b_k + \hat\sigma_k z_k` (pilot centres and scales,
as for normal ability); :math:`(t, s) \to (R, c)` is unchanged.  The race
intercepts keep their windows, relaxed to what the noise allows: a SMALL student's
rule must be positive somewhere in [0, W] (:math:`\lambda U_i` replaced by
:math:`\max(\lambda W, 0)` in :math:`\ell_g`) and a LARGE student's below 1 somewhere
(:math:`\min(\lambda W, 0)` in :math:`\omega_g`).  The density is exact wherever each
student's probability of her class size exceeds :data:`P_FLOOR`.  Noise needs
uniform ability.

**Normal ability.**  With ``ability="normal"`` the unobserved part of ability is
:math:`\mathcal N(W/2, W/\sqrt{12})` (the uniform's mean and sd), the score model is a
normal regression, :math:`b_k = \hat b_k + \hat\sigma_k z_k` and :math:`W` is a
standardised coordinate; the maps of :math:`(t, s)` to :math:`(R, c)` and of
:math:`\xi_g` to :math:`\alpha_g` are the same.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .design import Design
from .pieces import (
    PARAMETERS,
    Observed,
    class_effects_on,
    noise_free,
    pinned,
    sample_parameters,
    small_probability,
)
from .assignment import assignment_rule
from .classrooms import class_levels
from .coordinates import centred, standard
from .noise import EDGE_SITE, NoisyUniformScore, check_noise_ability, edge_share, noisy_small_probability
from .groups import group_extremes
from .pilot import SCORE_EFFECTS, Pilot, pilot_estimates

#: Score weights sampled (if not pinned) as plain sites.
SCORE_WEIGHTS = ("score_ability_weight", "score_school_weight", "score_noise_sd")

#: P(SMALL) is clipped to [P_FLOOR, 1 - P_FLOOR] in the likelihood only, so that an
#: assignment the rule makes impossible (or, with noisy scores, all but impossible) is a
#: finite (about -28 nats) penalty, not -inf.
P_FLOOR = 1e-12

#: NUTS settings for the conditioned model.  Every sampled coordinate is standardised by
#: the pilot, so a diagonal mass matrix suffices.
NUTS_SETTINGS = {"dense_mass": False, "target_accept_prob": 0.8, "max_tree_depth": 10}


def condition_on_data(design: Design, priors: Mapping[str, Distribution], data: Observed,
                      ability: str = "uniform", pilot: Pilot | None = None):
    """The model conditioned on ``data`` (see the module docstring for the math).

    ``pilot`` is :func:`~classsize.model.pilot.pilot_estimates` of the same data and
    priors; it is computed here when not given, which needs concrete (not traced)
    data.  A fit computes it once and passes it in, so the sampler's loop holds the
    density alone.
    """
    if ability not in ("uniform", "normal"):
        raise ValueError(f"ability must be 'uniform' or 'normal', got {ability!r}")
    noisy = not noise_free(priors["score_noise_sd"])
    check_noise_ability(noisy, ability)
    if pilot is None:
        with jax.ensure_compile_time_eval():
            pilot = pilot_estimates(design, priors, data, ability)
    uniform = ability == "uniform"
    weights = sample_parameters(
        priors, skip=tuple(k for k in PARAMETERS if k not in SCORE_WEIGHTS), pinned_as_deterministic=True
    )
    beta_a, beta_s = weights["score_ability_weight"], weights["score_school_weight"]
    p = _count_parameters(priors, pilot)
    residual = _score_effects(priors, pilot, data, beta_a)
    noise_sd = weights["score_noise_sd"] if noisy else None
    if class_effects_on(priors):
        width, base, level, group, log_jacobian = _width_and_class_levels(
            design, priors, pilot, data, residual, beta_a, uniform and not noisy, noise_sd)
    else:
        width, base, log_jacobian = _width_and_levels(design, priors, pilot, residual, beta_a, uniform and not noisy)
        level, group = base, pilot.student_school
    _intercept_and_range(design, priors, pilot, beta_a * base, beta_s, log_jacobian)

    def ability_uniform(who=slice(None)):
        return residual(who) - level[group[who]]

    p.update(assignment_rule(design, priors, pilot, data, ability_uniform, width if noisy else None))
    ability_uniform = ability_uniform()
    if uniform and not noisy:  # the statistic of the edge check (noise.edge_share)
        numpyro.deterministic(EDGE_SITE, edge_share(ability_uniform, width))
    _observations(design, p, data, ability_uniform, beta_a, width, uniform, noise_sd,
                  rule_has_ability=not (pinned(priors["regular_small_ability"])
                                        and bool(np.all(np.asarray(priors["regular_small_ability"].v) == 0))))


# ---------------------------------------------------------------------------- pieces
class _Bernoulli(dist.BernoulliProbs):
    """``Bernoulli(probs)`` whose log density takes one logarithm per value (the
    library's takes two, each guarded); ``probs`` must lie strictly inside (0, 1)."""

    def log_prob(self, value):
        return jnp.log(jnp.where(value == 1, self.probs, 1.0 - self.probs))


class _Categorical(dist.CategoricalProbs):
    """``Categorical(probs)`` whose log density gathers from ``log(probs)`` (the
    library's broadcasts the log probabilities to every value first)."""

    def log_prob(self, value):
        return jnp.log(self.probs)[value]


class _ClassSlots(Distribution):
    r"""The observed values :math:`v_c` of the used class slots as one event, each
    drawn from row :math:`k_c` of the log-probability table ``log_table``
    (:math:`L[k, v]`): :math:`\log p = \sum_{k, v} n_{kv} L[k, v]`, with
    :math:`n_{kv}` the number of used slots of kind :math:`k` and value :math:`v`.
    The counts are integer sums, so slots padded to a bucket
    (:mod:`classsize.model.buckets`, ``used`` False) change the density not even in
    its last bit."""

    def __init__(self, log_table, kind, used):
        self.log_table, self.kind, self.used = log_table, kind, used
        super().__init__(batch_shape=(), event_shape=jnp.shape(kind)[-1:])

    def sample(self, key, sample_shape=()):
        draws = jax.random.categorical(key, self.log_table[self.kind], shape=sample_shape + jnp.shape(self.kind))
        return jnp.where(self.used, draws, 0)

    def log_prob(self, value):
        shape = jnp.shape(self.log_table)
        counts = jnp.zeros(shape, jnp.int32).at[self.kind, value].add(self.used.astype(jnp.int32))
        return jnp.sum(jnp.where(counts > 0, counts * self.log_table, 0.0))


class _UniformScore(dist.Uniform):
    r"""``Uniform(low, low + width)`` with a scalar ``width``: its log density is
    :math:`-\log` width for every value (the conditioned model places every observed
    score inside its support by construction)."""

    def __init__(self, low, width):
        self._log_width = jnp.log(width)
        super().__init__(low, low + width)

    def log_prob(self, value):
        return jnp.broadcast_to(-self._log_width, jnp.shape(value))


def _count_parameters(priors, pilot: Pilot) -> dict:
    """Step 1: parameters informed by counts alone."""
    names = ("race_probs", "experimental_p_small", "p_ma_small", "p_ma_large")
    return {name: centred(name, priors[name], *getattr(pilot, name)) for name in names}


def _score_effects(priors, pilot: Pilot, data: Observed, beta_a):
    """Step 2: the score effects, and the residual :math:`r_i = U_i + b_{k(i)}` in
    ability units, as a function ``residual(who)`` of the students ``who`` (all by
    default)."""
    effect_priors = [priors[k] for k in SCORE_EFFECTS]
    free = tuple(j for j, d in enumerate(effect_priors) if not pinned(d))
    effects = {}
    for j, name in enumerate(SCORE_EFFECTS):
        loc, scale = (pilot.effects[free.index(j)], pilot.effect_scales[free.index(j)]) if j in free else (0.0, 1.0)
        effects[name] = centred(name, effect_priors[j], loc, scale)
    start = len(free)

    def weights(name, covariates):
        nonlocal start
        if covariates is None or covariates.shape[-1] == 0:
            return None
        q = covariates.shape[-1]
        prior = priors.get(name, dist.Normal(jnp.zeros(q), 10.0).to_event(1))
        start += q
        return centred(name, prior, pilot.effects[start - q:start], pilot.effect_scales[start - q:start])

    eta = weights("extra_covariate_weights", data.extra_covariates)
    theta = weights("class_covariate_weights", data.class_covariates)

    def residual(who=slice(None)):
        score = data.test_score[who] - effects["small_class_direct_effect"] * data.small_class[who]
        score = score - effects["teacher_ma_effect"] * pilot.student_ma[who]
        if theta is not None:
            score = score - data.class_covariates[data.class_of_student[who]] @ theta
        r = score / beta_a - effects["ability_income_weight"] * data.income_scaled[who]
        return r if eta is None else r - data.extra_covariates[who] @ eta

    return residual


def _width_and_levels(design: Design, priors, pilot: Pilot, residual, beta_a, windowed: bool):
    """Step 3: the width :math:`W` and the school levels :math:`b_k` (ability units),
    with the log-Jacobian of their maps (and, in the windows of noise-free uniform
    ability, the prior of W)."""
    with numpyro.plate("schools", design.n_schools):
        z = standard("school_position")
    if windowed:
        r = residual()
        lo, hi = group_extremes(r, pilot.schools, evaluate=residual)
        spread = hi - lo
        v = standard("ability_uniform_width_excess")
        width = numpyro.deterministic("ability_uniform_width", jnp.max(spread) + pilot.width_unit * jnp.exp(v))
        base = hi - width + (width - spread) * jax.scipy.special.ndtr(z)
        log_jacobian = jnp.log(pilot.width_unit) + v + jnp.sum(jnp.log(width - spread) - 0.5 * z * z)
        log_jacobian = log_jacobian + priors["ability_uniform_width"].log_prob(width)
    else:
        width = centred("ability_uniform_width", priors["ability_uniform_width"], *pilot.width)
        base = pilot.levels + pilot.level_scales * z
        log_jacobian = jnp.sum(jnp.log(pilot.level_scales))
    return width, base, log_jacobian + design.n_schools * jnp.log(beta_a)


def _width_and_class_levels(design: Design, priors, pilot: Pilot, data: Observed, residual, beta_a,
                            windowed: bool, noise_sd=None):
    """Step 3 with class effects (:mod:`classsize.model.classrooms`): the width, the
    school levels, the class levels and which class each student is in, with the
    log-Jacobian of the maps of :math:`W` and :math:`b_k` (and the prior of W)."""
    if windowed:
        v = standard("ability_uniform_width_excess")

        def width_above(spread):
            return numpyro.deterministic("ability_uniform_width", spread + pilot.width_unit * jnp.exp(v))

        level, base, log_jacobian, width = class_levels(priors, pilot, data, residual, width_above, beta_a, True)
        log_jacobian = log_jacobian + jnp.log(pilot.width_unit) + v + priors["ability_uniform_width"].log_prob(width)
    else:
        width = centred("ability_uniform_width", priors["ability_uniform_width"], *pilot.width)
        level, base, log_jacobian, width = class_levels(priors, pilot, data, residual, width, beta_a, False, noise_sd)
    return width, base, level, data.class_of_student, log_jacobian + design.n_schools * jnp.log(beta_a)


def _intercept_and_range(design: Design, priors, pilot: Pilot, level, beta_s, log_jacobian) -> None:
    """Step 4: the intercept :math:`c` and range :math:`R` given the levels
    :math:`a_k = c + \\beta_S e_k` (score units), the school effects, and the factor
    holding every Jacobian and prior of steps 3 and 4."""
    n_schools = design.n_schools
    half_range = (jnp.max(level) - jnp.min(level)) / 2.0
    midpoint = (jnp.max(level) + jnp.min(level)) / 2.0
    t = standard("school_effect_range_excess")
    s = standard("score_intercept_position")
    excess = pilot.range_unit * jnp.exp(t)
    effect_range = numpyro.deterministic("school_effect_range", half_range / beta_s + excess)
    intercept = numpyro.deterministic(
        "score_intercept", midpoint + beta_s * excess * (2.0 * jax.scipy.special.ndtr(s) - 1.0)
    )
    school_effect = numpyro.deterministic("school_effect", (level - intercept) / beta_s)
    log_jacobian = log_jacobian + 2.0 * (jnp.log(pilot.range_unit) + t) + jnp.log(2.0 * beta_s) - 0.5 * s * s
    log_prior = (
        priors["school_effect_range"].log_prob(effect_range)
        + priors["score_intercept"].log_prob(intercept)
        + jnp.sum(dist.Uniform(-effect_range, effect_range).log_prob(school_effect))
        - n_schools * jnp.log(beta_s)
    )
    numpyro.factor("reparameterisation", log_jacobian + log_prior)


def _observations(design: Design, p: Mapping, data: Observed, ability_uniform, beta_a, width, uniform: bool,
                  noise_sd=None, rule_has_ability: bool = True) -> None:
    """Step 6: the observed sites, given the implied ability parts :math:`U_i` (with
    measurement noise of sd ``noise_sd``: the noise-free reading of each score)."""
    location = data.test_score - beta_a * ability_uniform
    if noise_sd is not None:
        score = NoisyUniformScore(location, beta_a * width, noise_sd)
    elif uniform:
        score = _UniformScore(location, beta_a * width)
    else:
        score = dist.Normal(location + beta_a * width / 2.0, beta_a * width / jnp.sqrt(12.0))
    with numpyro.plate("students", data.test_score.shape[-1]):
        numpyro.sample("race", _Categorical(p["race_probs"]), obs=data.race)
        if noise_sd is None:
            p_small = small_probability(p, data.income_scaled, data.race, ability_uniform, data.is_experimental)
        else:
            p_small = noisy_small_probability(p, data, ability_uniform, score, beta_a, noise_sd, rule_has_ability)
        numpyro.sample("small_class", _Bernoulli(jnp.clip(p_small, P_FLOOR, 1.0 - P_FLOOR)),
                       obs=data.small_class)
        numpyro.sample("test_score", score, obs=data.test_score)
    p_ma = jnp.stack([p["p_ma_large"], p["p_ma_small"]])
    numpyro.sample("teacher_has_ma", _ClassSlots(jnp.log(jnp.stack([1.0 - p_ma, p_ma], axis=-1)),
                                                 data.class_is_small, data.class_used), obs=data.teacher_has_ma)
    numpyro.sample("school", _ClassSlots(jnp.full((1, design.n_schools), -jnp.log(design.n_schools)),
                                         jnp.zeros_like(data.school_of_class), data.class_used),
                   obs=data.school_of_class)
