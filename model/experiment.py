r"""The class-size experiment as one NumPyro model.

One function, :func:`class_size_experiment`, is the data-generating process of the
notebook.  Called without data it samples forward (simulation); called with an
:class:`Observed` it conditions the same process on data (inference).  Its sites,
in the order the notebook draws them:

===========================  =========  ==============================================
site                         plate      meaning
===========================  =========  ==============================================
structural parameters        --         fixed (``Delta``) or drawn from priors
``race``                     students   index into ``config.race_codes``
``family_income``            students   DiscreteUniform[income_min, income_max)
``ability_uniform``          students   :math:`U_i \sim \mathrm{Uniform}(0, W)`, unobserved
``ability``                  students   deterministic, :math:`w\,s_i + U_i`
``small_class``              students   1 = SMALL; rule depends on the cohort
``class_of_student``         students   deterministic round-robin allocation
``teacher_has_ma``           classes    Bernoulli(p_ma_small or p_ma_large)
``school``                   classes    uniform over schools
``school_effect``            schools    Uniform(-school_effect_range, school_effect_range)
``test_score``               students   score equation (+ optional noise)
===========================  =========  ==============================================

with :math:`s_i = (\log \mathrm{income}_i - \log \mathrm{income\_min}) /
(\log \mathrm{income\_max} - \log \mathrm{income\_min})` the scaled log income.

**Class allocation.**  The number of classes depends on the data
(:math:`\lfloor n_\mathrm{SMALL}/15 \rfloor` SMALL, :math:`\lfloor n_\mathrm{LARGE}/30\rfloor`
LARGE), so the ``classes`` plate is padded to the most classes any dataset can have
(``config.max_small_classes + config.max_large_classes``; SMALL slots first) and the
slots a dataset does not use are masked out.  Shapes are then fixed, so the model
can be ``jit``-ed and ``vmap``-ed over seeds.  Student :math:`i` with rank
:math:`r_i` among students of its class size goes to slot :math:`r_i \bmod
n_\mathrm{classes}` of that size, the notebook's rule.  (The notebook divides by zero
when fewer students than one class's target size land in a size; here such a size
gets one class.)

**Conditioning.**  With data, ability is marginalised exactly (see
:func:`_condition_on_data`): the scores carry no noise beyond ability, so given the
parameters each student's ability is a deterministic function of her score.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .config import Config

#: Structural parameters that are scalars, in the order they are sampled.
SCALAR_PARAMETERS = (
    "ability_income_weight",
    "ability_uniform_width",
    "regular_small_intercept",
    "regular_small_income",
    "regular_small_ability",
    "experimental_p_small",
    "p_ma_small",
    "p_ma_large",
    "school_effect_range",
    "score_intercept",
    "score_ability_weight",
    "small_class_direct_effect",
    "teacher_ma_effect",
    "score_school_weight",
    "score_noise_sd",
)
#: Structural parameters that are vectors over race codes.
RACE_PARAMETERS = ("race_probs", "regular_small_race_shift")
PARAMETERS = RACE_PARAMETERS[:1] + SCALAR_PARAMETERS + RACE_PARAMETERS[1:]

#: P(SMALL) is clipped to [_P_FLOOR, 1 - _P_FLOOR] in the likelihood only, so that an
#: assignment the rule makes impossible is a finite (about -28 nats) penalty, not -inf.
_P_FLOOR = 1e-12


# --------------------------------------------------------------------------- priors
def fixed_parameters(config: Config) -> dict[str, Distribution]:
    """Every structural parameter pinned to the configuration (``Delta`` sites)."""
    values = {name: getattr(config, name) for name in SCALAR_PARAMETERS}
    values["race_probs"] = jnp.asarray(config.race_probs)
    values["regular_small_race_shift"] = jnp.asarray(config.race_shift_vector)
    out = {}
    for name in PARAMETERS:
        v = jnp.asarray(values[name], dtype=jnp.result_type(float))
        out[name] = dist.Delta(v, event_dim=v.ndim)
    return out


def default_priors(config: Config = Config()) -> dict[str, Distribution]:
    r"""Weakly informative priors, the ones inference and calibration use.

    The effects of interest are centred on zero (:math:`\mathcal N(0, 10)` points), so a
    fit owes nothing to the notebook's values.  Two weights are pinned, because the
    data cannot tell them apart from other parameters: ``score_ability_weight = 1``
    (ability is measured in score points: only the product of the weight with the
    ability's income weight and width is identified) and ``score_school_weight = 1``
    (likewise with ``school_effect_range``).  ``score_noise_sd = 0``: the notebook's
    scores carry no noise beyond ability.
    """
    k = len(config.race_codes)
    return {
        "race_probs": dist.Dirichlet(2.0 * jnp.ones(k)),
        "ability_income_weight": dist.Normal(0.0, 10.0),
        "ability_uniform_width": dist.LogNormal(jnp.log(25.0), 0.5),
        "regular_small_intercept": dist.Normal(0.0, 0.3),
        "regular_small_income": dist.Normal(0.0, 0.3),
        "regular_small_ability": dist.Normal(0.0, 0.03),
        "experimental_p_small": dist.Beta(2.0, 2.0),
        "p_ma_small": dist.Beta(2.0, 2.0),
        "p_ma_large": dist.Beta(2.0, 2.0),
        "school_effect_range": dist.LogNormal(jnp.log(5.0), 0.5),
        "score_intercept": dist.Normal(50.0, 20.0),
        "score_ability_weight": dist.Delta(1.0),
        "small_class_direct_effect": dist.Normal(0.0, 10.0),
        "teacher_ma_effect": dist.Normal(0.0, 10.0),
        "score_school_weight": dist.Delta(1.0),
        "score_noise_sd": dist.Delta(0.0),
        "regular_small_race_shift": dist.Normal(jnp.zeros(k), 0.3).to_event(1),
    }


def sample_parameters(
    priors: Mapping[str, Distribution], skip: tuple[str, ...] = (), pinned_as_deterministic: bool = False
) -> dict:
    """Sample every structural parameter site (in :data:`PARAMETERS` order).

    With ``pinned_as_deterministic`` a parameter whose distribution is a ``Delta`` is
    recorded as a deterministic site instead (MCMC has nothing to sample there).
    """
    out = {}
    for name in PARAMETERS:
        if name in skip:
            continue
        d = priors[name]
        if pinned_as_deterministic and isinstance(d, dist.Delta):
            out[name] = numpyro.deterministic(name, d.v)
        else:
            out[name] = numpyro.sample(name, d)
    return out


# ------------------------------------------------------------------ shared pieces
def scaled_log_income(income, config: Config):
    """:math:`s = (\\log x - \\log x_{min}) / (\\log x_{max} - \\log x_{min})`, in [0, 1)."""
    lo, hi = jnp.log(config.income_min), jnp.log(config.income_max)
    return (jnp.log(income) - lo) / (hi - lo)


def regular_small_probability(p: Mapping, income_scaled, race, ability_uniform):
    """The REGULAR cohort's assignment rule, unclipped (the notebook compares a uniform
    draw with it, so it acts clipped to [0, 1])."""
    return (
        p["regular_small_intercept"]
        + p["regular_small_income"] * income_scaled
        + p["regular_small_race_shift"][race]
        + p["regular_small_ability"] * ability_uniform
    )


def small_probability(p: Mapping, income_scaled, race, ability_uniform, is_experimental):
    """P(SMALL) for each student: the REGULAR rule or the EXPERIMENTAL coin, clipped."""
    rule = regular_small_probability(p, income_scaled, race, ability_uniform)
    return jnp.clip(jnp.where(is_experimental, p["experimental_p_small"], rule), 0.0, 1.0)


def teacher_ma_probability(p: Mapping, class_is_small):
    return jnp.where(class_is_small, p["p_ma_small"], p["p_ma_large"])


def score_without_ability(p: Mapping, small, has_ma, school_effect):
    """The part of the score equation that does not involve ability."""
    return (
        p["score_intercept"]
        + p["small_class_direct_effect"] * small
        + p["teacher_ma_effect"] * has_ma
        + p["score_school_weight"] * school_effect
    )


def allocate_to_classes(small, config: Config):
    """The notebook's round-robin allocation, on the padded ``classes`` plate.

    Returns ``(class_of_student, n_small_classes, n_large_classes)``: the slot of each
    student (SMALL slots ``0..max_small-1``, LARGE slots after them) and how many slots
    of each size are used.
    """
    small = small.astype(jnp.int32)
    n = small.shape[-1]
    rank_small = jnp.cumsum(small) - 1
    rank_large = jnp.arange(n) - rank_small - 1
    n_small = rank_small[-1] + 1
    n_large = n - n_small
    n_small_classes = _class_count(n_small, config.small_class_size)
    n_large_classes = _class_count(n_large, config.large_class_size)
    slot = jnp.where(
        small == 1,
        rank_small % jnp.maximum(n_small_classes, 1),
        config.max_small_classes + rank_large % jnp.maximum(n_large_classes, 1),
    )
    return slot, n_small_classes, n_large_classes


def _class_count(n_students, target_size: float):
    """``floor(n / target)`` classes, but one class when 0 < n < target, none when n = 0."""
    count = jnp.floor(n_students / target_size).astype(jnp.int32)
    return jnp.where(n_students > 0, jnp.maximum(count, 1), 0)


def class_slots(config: Config, n_small_classes, n_large_classes):
    """``(slot_is_small, slot_is_used)`` for the padded ``classes`` plate."""
    j = jnp.arange(config.max_small_classes + config.max_large_classes)
    is_small = j < config.max_small_classes
    used = jnp.where(is_small, j < n_small_classes, j - config.max_small_classes < n_large_classes)
    return is_small, used


# ------------------------------------------------------------------------ the model
class Observed(NamedTuple):
    """Data to condition :func:`class_size_experiment` on, encoded as arrays.

    Student arrays have one entry per student, class arrays one per class slot
    (``class_used`` masks padding), ``n_schools`` schools are indexed ``0..n_schools-1``.
    ``income_scaled`` is :func:`scaled_log_income` of the family income.
    """

    race: jax.Array  # int, index into race codes
    income_scaled: jax.Array  # float
    is_experimental: jax.Array  # bool
    small_class: jax.Array  # int 0/1
    class_of_student: jax.Array  # int, index into the class arrays
    test_score: jax.Array  # float
    class_is_small: jax.Array  # int 0/1
    teacher_has_ma: jax.Array  # int 0/1
    school_of_class: jax.Array  # int, 0..n_schools-1
    class_used: jax.Array  # bool
    #: further student covariates of the score (n x q), e.g. free lunch in real data
    extra_covariates: jax.Array | None = None


def class_size_experiment(
    config: Config = Config(),
    priors: Mapping[str, Distribution] | None = None,
    data: Observed | None = None,
    *,
    ability: str = "uniform",
):
    r"""The class-size experiment.

    :param config: the design (cohort sizes, races, income range, class sizes, number
        of schools) and, when ``priors`` is None, the parameter values.
    :param priors: a distribution for each name in :data:`PARAMETERS`;
        ``None`` pins them to ``config`` (the notebook's simulation).
    :param data: ``None`` to simulate; an :class:`Observed` to condition on it.
    :param ability: the distribution of the unobserved part of ability when
        conditioning: ``"uniform"`` (the process that generated the data) or
        ``"normal"`` (a misspecified alternative, to show how much the fit owes to the
        uniform's hard edges).
    """
    priors = fixed_parameters(config) if priors is None else priors
    if data is None:
        return _simulate(config, priors)
    return _condition_on_data(config, priors, data, ability)


def _simulate(config: Config, priors: Mapping[str, Distribution]):
    p = sample_parameters(priors)
    n = config.n_students
    is_experimental = jnp.arange(n) >= config.n_regular
    with numpyro.plate("students", n):
        race = numpyro.sample("race", dist.Categorical(probs=p["race_probs"]))
        income = numpyro.sample(
            "family_income", dist.DiscreteUniform(config.income_min, config.income_max - 1)
        )
        s = scaled_log_income(income, config)
        ability_uniform = numpyro.sample(
            "ability_uniform", dist.Uniform(0.0, p["ability_uniform_width"])
        )
        ability = numpyro.deterministic("ability", p["ability_income_weight"] * s + ability_uniform)
        small = numpyro.sample(
            "small_class",
            dist.Bernoulli(probs=small_probability(p, s, race, ability_uniform, is_experimental)),
        )
        slot, n_small_classes, n_large_classes = allocate_to_classes(small, config)
        slot = numpyro.deterministic("class_of_student", slot)
    numpyro.deterministic("n_small_classes", n_small_classes)
    numpyro.deterministic("n_large_classes", n_large_classes)
    slot_is_small, slot_used = class_slots(config, n_small_classes, n_large_classes)
    with numpyro.plate("classes", slot_is_small.shape[0]), numpyro.handlers.mask(mask=slot_used):
        has_ma = numpyro.sample(
            "teacher_has_ma", dist.Bernoulli(probs=teacher_ma_probability(p, slot_is_small))
        )
        school = numpyro.sample(
            "school", dist.Categorical(probs=jnp.ones(config.n_schools) / config.n_schools)
        )
    with numpyro.plate("schools", config.n_schools):
        school_effect = numpyro.sample(
            "school_effect",
            dist.Uniform(-p["school_effect_range"], p["school_effect_range"]),
        )
    with numpyro.plate("students", n):
        has_ma, school, school_effect = jnp.asarray(has_ma), jnp.asarray(school), jnp.asarray(school_effect)
        mean = score_without_ability(p, small, has_ma[slot], school_effect[school[slot]])
        mean = mean + p["score_ability_weight"] * ability
        if _pinned_to_zero(priors["score_noise_sd"]):
            return numpyro.sample("test_score", dist.Delta(mean))
        return numpyro.sample("test_score", dist.Normal(mean, p["score_noise_sd"]))


def _pinned_to_zero(d: Distribution) -> bool:
    """Whether ``d`` is a Delta at a known 0 (the notebook's noise-free scores)."""
    if not isinstance(d, dist.Delta):
        return False
    try:
        return bool(jnp.all(jnp.asarray(d.v) == 0))
    except jax.errors.ConcretizationTypeError:
        return False


def _condition_on_data(config: Config, priors: Mapping[str, Distribution], data: Observed, ability: str):
    r"""The model conditioned on data, with ability marginalised exactly.

    **Likelihood.**  The scores carry no noise beyond ability (``score_noise_sd`` is
    pinned to 0), so given the parameters each student's unobserved ability part is a
    deterministic function of her score,

    .. math:: U_i = r_i - b_{k(i)},\qquad
              r_i = (y_i - \delta S_i - \gamma M_i)/\beta_A - w s_i - x_i^\top \eta,\qquad
              b_k = (c + \beta_S e_k)/\beta_A,

    and the joint density of a student's class size and score is
    :math:`p_U(U_i)\,P(S_i \mid U_i)/\beta_A`: no latent variable per student and no
    quadrature (the REGULAR cohort's rule :math:`P(S_i{=}1 \mid U_i) = \mathrm{clip}(
    \alpha_{g(i)} + \beta s_i + \lambda U_i, 0, 1)`, with :math:`\alpha_g = \alpha +
    \rho_g` the intercept of race :math:`g`, is evaluated at the implied :math:`U_i`).

    **Support.**  With :math:`U \sim \mathrm{Uniform}(0, W)` the posterior density is
    positive only on a polytope: with :math:`h_k, \ell_k` the largest and smallest
    :math:`r_i` in school :math:`k` and :math:`\rho_k = h_k - \ell_k` its spread,
    :math:`b_k \in [h_k - W, \ell_k]`, hence :math:`W \ge \max_k \rho_k`; the school
    effects need :math:`|e_k| \le R`; and, because the assignment probability is
    clipped to [0, 1], every SMALL student of the REGULAR cohort needs
    :math:`\alpha_{g(i)} + \beta s_i + \lambda U_i > 0` and every LARGE one
    :math:`< 1`.  NUTS cannot move on a polytope,
    so the parameters are sampled in coordinates that satisfy every constraint by
    construction (with :math:`\Phi, \varphi` the standard normal cdf and density):

    .. math::
        W &= \max_k \rho_k + u_W e^{v}, \\
        b_k &= h_k - W + (W - \rho_k)\,\Phi(z_k), \\
        R &= H/\beta_S + u_R e^{t},\qquad c = m + \beta_S u_R e^{t}\,(2\Phi(s) - 1),
            \qquad e_k = (\beta_A b_k - c)/\beta_S, \\
        \alpha_g &= \ell_g + \omega_g\,\mathrm{logistic}\big(\log(\hat p_g/\omega_g)
            + \varsigma_g \xi_g\big),\qquad \rho_g = \alpha_g - \alpha, \\
        \ell_g &= -\min_{i:\ \mathrm{SMALL,\ REGULAR},\ g(i) = g}(\beta s_i + \lambda U_i),\qquad
        \omega_g = 1 - \max_{i:\ \mathrm{LARGE,\ REGULAR},\ g(i) = g}(\beta s_i + \lambda U_i) - \ell_g,

    where :math:`H, m` are the half range and midpoint of the levels
    :math:`\beta_A b_k` (sites ``ability_uniform_width_excess`` :math:`v`,
    ``school_position`` :math:`z_k`, ``school_effect_range_excess`` :math:`t`,
    ``score_intercept_position`` :math:`s`, ``regular_small_race_position``
    :math:`\xi_g`; a race without SMALL REGULAR students has :math:`\alpha_g =
    \hat\alpha_g + \hat\sigma_g \xi_g`; one without LARGE REGULAR students has
    :math:`\alpha_g = \ell_g + \hat p_g e^{\varsigma_g \xi_g}`, the limit of the map as
    :math:`\omega_g \to \infty`).  The assignment probabilities of a race's REGULAR
    students then lie strictly between 0 and 1 for the SMALL ones at the bottom and the
    LARGE ones at the top (by :math:`\omega_g(1 - \mathrm{logistic})` from 1), so
    neither clipped wall ``_P_FLOOR`` is met; where the slopes leave no room
    (:math:`\omega_g \le 0`) the window is held at :math:`10^{-9}` and the Jacobian
    penalises it.  (Measured: with the floor alone, 73 of 200 SBC fits from the prior
    had divergences, in datasets where the rule brings LARGE students near
    :math:`P = 1`; the three worst, 51, 47 and 37 divergences, have none with the
    window.)  Each map is a bijection onto the
    support given the coordinates before it, so the log-Jacobian is the sum
    :math:`\log u_W + v + \sum_k[\log(W - \rho_k) + \log\varphi(z_k)] + 2(\log u_R + t)
    + \log(2\beta_S) + \log\varphi(s) + K\log(\beta_A/\beta_S) + \sum_g[\log(\omega_g
    \varsigma_g) + \log\sigma(\eta_g) + \log\sigma(-\eta_g)]` (:math:`\eta_g` the logistic's
    argument), added by ``numpyro.factor`` together with the
    priors of :math:`W, c, R, e_k, \rho_g`.  Using :math:`\Phi` makes :math:`z_k` and
    :math:`s` exactly standard normal where the data leave a level flat in its window.

    **Standardised coordinates.**  Every other parameter :math:`x` with prior
    :math:`p(x)` is sampled as ``x_std`` :math:`= \xi` with :math:`x = T(\hat x + \hat
    \sigma \xi)`, ``T`` the bijection onto the prior's support that NUTS would use
    anyway, adding :math:`\log p(x) + \log|T'| + \log\hat\sigma` (an affine change of
    the unconstrained coordinate: the posterior is unchanged).  The centres and scales
    (:math:`\hat x, \hat\sigma, u_W, u_R, \hat p_g, \varsigma_g`) are pilot estimates,
    functions of the data alone (:func:`_pilot_estimates`): the score effects by
    within-school least squares, refined for uniform ability by Newton steps on the
    soft (log-sum-exp) sum of the schools' spreads, whose limit is the linear program
    :math:`\min \sum_k \rho_k` near the posterior mode, with scale :math:`3W/(n\,
    \mathrm{sd}_j)` (the uniform posterior contracts like :math:`1/n`); :math:`u_W =
    \hat W/n` from the largest residual spread and :math:`u_R = (H + 1)/(K + 1)`;
    the assignment coefficients from a ridge linear-probability regression of SMALL on
    race, income and the pilot :math:`U_i` (scales: its standard errors); the race,
    MA and EXPERIMENTAL probabilities from their counts.  All posterior scales are
    then near 1 and the chains start near the mode, so warm-up is short and a
    diagonal mass matrix suffices (:data:`NUTS_SETTINGS`, :func:`recommended_kernel`).
    The pilot is computed once when the data are concrete; under a transformation
    that traces the data it is loop-invariant and hoisted out of the sampler's loops.

    **What is left.**  The log density is continuous and smooth except on the sets
    where the student attaining a school's extreme, the school with the largest
    spread, the school with the extreme level, or the student with a race's smallest
    assignment probability changes.  Those kinks belong to the posterior itself (the
    marginal density of the score effects is pyramid-shaped, roughly
    :math:`\exp(-n \max_k \rho_k/W)`, which no smooth reparameterisation removes); in
    standardised coordinates they are mild and NUTS crosses them without divergences.
    What made the sampler fail before was (1) the clipped linear assignment
    probability: trajectories stepped past :math:`P = 0` for some SMALL student onto a
    plateau at the floor (:math:`\log 10^{-12}`, zero gradient), which forced step
    sizes of 0.003-0.05 and 1023-step trees (the map for :math:`\alpha_g` removes that
    boundary exactly), and (2) posterior scales from 0.0008 to 2 with chains started
    far from the mode.

    With ``ability="normal"`` the unobserved part of ability is instead
    :math:`\mathcal N(W/2, W/\sqrt{12})` (the uniform's mean and sd), the score model is
    a normal regression, :math:`b_k = \hat b_k + \hat\sigma_k z_k` and :math:`W` is a
    standardised coordinate; the map of :math:`(t, s)` to :math:`(R, c)` and of
    :math:`\xi_g` to :math:`\alpha_g` are the same.
    """
    if ability not in ("uniform", "normal"):
        raise ValueError(f"ability must be 'uniform' or 'normal', got {ability!r}")
    uniform = ability == "uniform"
    n_schools, n_races = config.n_schools, len(config.race_codes)
    n = data.test_score.shape[-1]
    extra = data.extra_covariates is not None and data.extra_covariates.shape[-1] > 0
    eta_prior = None
    if extra:
        q = data.extra_covariates.shape[-1]
        eta_prior = priors.get("extra_covariate_weights", dist.Normal(jnp.zeros(q), 10.0).to_event(1))
    weights = sample_parameters(
        priors, skip=tuple(k for k in PARAMETERS if k not in _SCORE_WEIGHTS), pinned_as_deterministic=True
    )
    beta_a, beta_s = weights["score_ability_weight"], weights["score_school_weight"]
    effect_priors = [priors[k] for k in _SCORE_EFFECTS]
    free = tuple(j for j, d in enumerate(effect_priors) if not _pinned(d))
    alpha_prior, shift_prior = priors["regular_small_intercept"], priors["regular_small_race_shift"]
    slope_priors = (priors["regular_small_income"], priors["regular_small_ability"])

    # ---- pilot estimates, functions of the data alone (computed once when the data are concrete)
    with jax.ensure_compile_time_eval():
        pilot = pilot_estimates(config, priors, data, ability)
    student_ma, student_school, constrained, has_constraint = (
        pilot.student_ma, pilot.student_school, pilot.constrained, pilot.has_constraint)

    # ---- parameters informed by counts alone
    p = {
        "race_probs": _centred("race_probs", priors["race_probs"], *pilot.race_probs),
        "experimental_p_small": _centred("experimental_p_small", priors["experimental_p_small"], *pilot.experimental_p_small),
        "p_ma_small": _centred("p_ma_small", priors["p_ma_small"], *pilot.p_ma_small),
        "p_ma_large": _centred("p_ma_large", priors["p_ma_large"], *pilot.p_ma_large),
    }

    # ---- score effects, and r_i = U_i + b_k(i) in ability units
    effects = {}
    for j, name in enumerate(_SCORE_EFFECTS):
        loc, scale = (pilot.effects[free.index(j)], pilot.effect_scales[free.index(j)]) if j in free else (0.0, 1.0)
        effects[name] = _centred(name, effect_priors[j], loc, scale)
    covariate_term = 0.0
    if extra:
        eta = _centred("extra_covariate_weights", eta_prior, pilot.effects[len(free):], pilot.effect_scales[len(free):])
        covariate_term = data.extra_covariates @ eta
    r = (
        (data.test_score - effects["small_class_direct_effect"] * data.small_class - effects["teacher_ma_effect"] * student_ma)
        / beta_a
        - effects["ability_income_weight"] * data.income_scaled
        - covariate_term
    )

    # ---- width W of ability's uniform part and school levels b_k (ability units)
    with numpyro.plate("schools", n_schools):
        z = _standard("school_position")
    if uniform:
        lo = jax.ops.segment_min(r, student_school, num_segments=n_schools)
        hi = jax.ops.segment_max(r, student_school, num_segments=n_schools)
        spread = hi - lo
        v = _standard("ability_uniform_width_excess")
        width = numpyro.deterministic("ability_uniform_width", jnp.max(spread) + pilot.width_unit * jnp.exp(v))
        base = hi - width + (width - spread) * jax.scipy.special.ndtr(z)
        log_jacobian = jnp.log(pilot.width_unit) + v + jnp.sum(jnp.log(width - spread) - 0.5 * z * z)
        log_jacobian = log_jacobian + priors["ability_uniform_width"].log_prob(width)
    else:
        width = _centred("ability_uniform_width", priors["ability_uniform_width"], *pilot.width)
        base = pilot.levels + pilot.level_scales * z
        log_jacobian = jnp.sum(jnp.log(pilot.level_scales))
    level = beta_a * base  # a_k = c + beta_S e_k, score units
    log_jacobian = log_jacobian + n_schools * jnp.log(beta_a)

    # ---- intercept c and school-effect range R, given the levels
    half_range = (jnp.max(level) - jnp.min(level)) / 2.0
    midpoint = (jnp.max(level) + jnp.min(level)) / 2.0
    t = _standard("school_effect_range_excess")
    s = _standard("score_intercept_position")
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
    ability_uniform = r - base[student_school]
    location = data.test_score - beta_a * ability_uniform

    # ---- the REGULAR cohort's assignment rule
    coef, coef_scale = pilot.assignment
    p["regular_small_income"] = _centred("regular_small_income", slope_priors[0], coef[n_races], coef_scale[n_races])
    p["regular_small_ability"] = _centred("regular_small_ability", slope_priors[1], coef[n_races + 1], coef_scale[n_races + 1])
    if _pinned(shift_prior):
        alpha = _centred("regular_small_intercept", alpha_prior, jnp.mean(coef[:n_races] - shift_prior.v),
                         jnp.sqrt(jnp.mean(coef_scale[:n_races] ** 2) / n_races))
        shift = numpyro.deterministic("regular_small_race_shift", shift_prior.v)
    else:
        alpha_sd = jnp.sqrt(_prior_variance(alpha_prior))
        alpha = _centred("regular_small_intercept", alpha_prior, jnp.mean(coef[:n_races]) * n_races / (n_races + 1.0),
                         jnp.where(alpha_sd > 0, alpha_sd, 1.0) / jnp.sqrt(n_races + 1.0))
        xi = _standard("regular_small_race_position", (n_races,))
        linear = p["regular_small_income"] * data.income_scaled + p["regular_small_ability"] * ability_uniform
        lowest = jax.ops.segment_min(jnp.where(constrained, linear, jnp.inf), data.race, num_segments=n_races)
        # the LARGE students of the REGULAR cohort bound the intercept from above (P(SMALL) < 1)
        capped = ~data.is_experimental & (data.small_class == 0)
        has_cap = jax.ops.segment_max(capped.astype(jnp.int32), data.race, num_segments=n_races) > 0
        highest = jax.ops.segment_max(jnp.where(capped, linear, -jnp.inf), data.race, num_segments=n_races)
        two_sided = has_constraint & has_cap
        floor = -jnp.where(has_constraint, lowest, 0.0)
        window = jnp.where(two_sided, jnp.maximum(1.0 - jnp.where(has_cap, highest, 0.0) - floor, 1e-9), 1.0)
        step = pilot.log_p_min_scale * xi
        eta = jnp.log(pilot.p_min) - jnp.log(window) + step
        race_intercept = jnp.where(
            has_constraint,
            floor + jnp.where(two_sided, window * jax.nn.sigmoid(eta), pilot.p_min * jnp.exp(step)),
            coef[:n_races] + coef_scale[:n_races] * xi,
        )
        shift = numpyro.deterministic("regular_small_race_shift", race_intercept - alpha)
        log_jacobian = jnp.where(
            two_sided,
            jnp.log(window * pilot.log_p_min_scale) + jax.nn.log_sigmoid(eta) + jax.nn.log_sigmoid(-eta),
            jnp.where(has_constraint, jnp.log(pilot.p_min * pilot.log_p_min_scale) + step, jnp.log(coef_scale[:n_races])),
        )
        numpyro.factor("race_reparameterisation", jnp.sum(log_jacobian) + shift_prior.log_prob(shift))
    p["regular_small_intercept"], p["regular_small_race_shift"] = alpha, shift

    with numpyro.plate("students", n):
        numpyro.sample("race", dist.Categorical(probs=p["race_probs"]), obs=data.race)
        p_small = small_probability(p, data.income_scaled, data.race, ability_uniform, data.is_experimental)
        numpyro.sample(
            "small_class",
            dist.Bernoulli(probs=jnp.clip(p_small, _P_FLOOR, 1.0 - _P_FLOOR)),
            obs=data.small_class,
        )
        if uniform:
            score_dist = dist.Uniform(location, location + beta_a * width)
        else:
            score_dist = dist.Normal(location + beta_a * width / 2.0, beta_a * width / jnp.sqrt(12.0))
        numpyro.sample("test_score", score_dist, obs=data.test_score)
    with numpyro.plate("classes", data.class_is_small.shape[-1]), numpyro.handlers.mask(mask=data.class_used):
        numpyro.sample(
            "teacher_has_ma", dist.Bernoulli(probs=teacher_ma_probability(p, data.class_is_small)), obs=data.teacher_has_ma
        )
        numpyro.sample("school", dist.Categorical(probs=jnp.ones(n_schools) / n_schools), obs=data.school_of_class)


# ------------------------------------------------- pieces of the conditioned model
#: Score effects that multiply a student covariate in the score equation, in column order.
_SCORE_EFFECTS = ("small_class_direct_effect", "teacher_ma_effect", "ability_income_weight")
#: Score weights sampled (if not pinned) as plain sites.
_SCORE_WEIGHTS = ("score_ability_weight", "score_school_weight", "score_noise_sd")
#: Temperatures, in units of the residual sd, of the pilot's Newton steps on the soft spread (two steps each).
_PILOT_TEMPERATURES = (0.3, 0.1, 0.03, 0.01)
#: Bernoulli variance the linear-probability pilot of the assignment rule assumes.
_PILOT_BERNOULLI_VARIANCE = 0.2
#: Range of the pilot's smallest P(SMALL) of a race, the scale of ``regular_small_race_position`` ...
_PILOT_P_MIN_RANGE = (0.01, 0.3)
#: ... and of the sd of its logarithm.
_PILOT_LOG_P_MIN_SCALE_RANGE = (0.05, 0.5)

#: NUTS settings for the conditioned model.  Every sampled coordinate is standardised by
#: the pilot (see :func:`_condition_on_data`), so a diagonal mass matrix suffices and is
#: estimated well from the first adaptation window on.
NUTS_SETTINGS = {"dense_mass": False, "target_accept_prob": 0.8, "max_tree_depth": 10}


def recommended_kernel(model, ability: str = "uniform"):
    """The NUTS kernel to fit :func:`class_size_experiment` to data (``NUTS_SETTINGS``)."""
    from numpyro.infer import NUTS

    return NUTS(model, **NUTS_SETTINGS)


class _Pilot(NamedTuple):
    """Data-only quantities that centre and scale the sampled coordinates."""

    student_ma: jax.Array
    student_school: jax.Array
    constrained: jax.Array  # SMALL students of the REGULAR cohort (their P(SMALL) must be > 0)
    has_constraint: jax.Array  # per race: has such students
    effects: jax.Array  # free score effects, then extra covariate weights
    effect_scales: jax.Array
    width_unit: jax.Array  # W / n, the scale of W - max_k spread_k
    width: tuple  # (log W, sd of log W), normal ability
    levels: jax.Array  # b_k
    level_scales: jax.Array  # sd of b_k, normal ability
    range_unit: jax.Array  # scale of R - half range of the levels
    assignment: tuple  # (race intercepts, income, ability) and their scales
    p_min: jax.Array  # per race: smallest P(SMALL) of a constrained student
    log_p_min_scale: jax.Array
    race_probs: tuple
    experimental_p_small: tuple
    p_ma_small: tuple
    p_ma_large: tuple


def _pinned(d: Distribution) -> bool:
    return isinstance(d, dist.Delta)


def _prior_variance(d: Distribution, default: float = 1.0):
    """The prior's variance (0 when pinned, ``default`` when the distribution has none)."""
    if _pinned(d):
        return jnp.zeros(d.event_shape)
    try:
        return jnp.broadcast_to(jnp.asarray(d.variance, dtype=jnp.result_type(float)), d.batch_shape + d.event_shape)
    except (NotImplementedError, AttributeError):
        return jnp.full(d.batch_shape + d.event_shape, default)


def _standard(name: str, shape: tuple = ()):
    """A standardised coordinate: a flat site on the real line whose density is added by factors."""
    return numpyro.sample(name, dist.ImproperUniform(dist.constraints.real, (), tuple(shape)))


def _centred(name: str, prior: Distribution, loc, scale):
    r"""Site ``name`` with distribution ``prior``, sampled as ``name_std``: :math:`x =
    T(\mathrm{loc} + \mathrm{scale}\,\xi)` with ``T`` the bijection onto the prior's support
    (the one NUTS uses anyway); a pinned (``Delta``) prior gives a deterministic site."""
    if _pinned(prior):
        return numpyro.deterministic(name, prior.v)
    transform = dist.biject_to(prior.support)
    shape = transform.inverse_shape(prior.shape())
    xi = _standard(f"{name}_std", shape)
    scale = jnp.broadcast_to(scale, shape)
    u = loc + scale * xi
    value = numpyro.deterministic(name, transform(u))
    log_density = jnp.sum(prior.log_prob(value)) + jnp.sum(transform.log_abs_det_jacobian(u, value))
    numpyro.factor(f"{name}_density", log_density + jnp.sum(jnp.log(scale)))
    return value


def _logit_pilot(successes, trials):
    """Centre and scale of a Bernoulli probability's logit, from counts."""
    p = (successes + 1.0) / (trials + 2.0)
    return jnp.log(p) - jnp.log1p(-p), 1.0 / jnp.sqrt((trials + 2.0) * p * (1.0 - p))


def _simplex_pilot(counts):
    """Centre and scale of categorical probabilities in stick-breaking coordinates, from counts."""
    k = counts.shape[-1]
    total = jnp.sum(counts) + k
    loc = dist.transforms.StickBreakingTransform().inv((counts + 1.0) / total)
    remaining = total - jnp.concatenate([jnp.zeros(1), jnp.cumsum(counts + 1.0)[:-1]])
    q = (counts + 1.0) / remaining
    return loc, (1.0 / jnp.sqrt(remaining * q * (1.0 - q)))[:-1]


def _segment_mean(a, segment, k: int):
    count = jax.ops.segment_sum(jnp.ones(segment.shape[0]), segment, num_segments=k)
    return jax.ops.segment_sum(a, segment, num_segments=k) / jnp.maximum(count, 1.0).reshape((k,) + (1,) * (a.ndim - 1))


def _score_pilot(y, X, school, n_schools: int, uniform: bool):
    r"""Pilot location and scale of the score effects (columns of ``X``, score units) and W.

    Within-school least squares; for uniform ability refined by Newton steps on
    :math:`\sum_k \tau[\mathrm{LSE}_{i \in k}(r_i/\tau) + \mathrm{LSE}_{i \in k}(-r_i/\tau)]`,
    the soft sum of the schools' spreads, at decreasing temperatures :math:`\tau`: the
    limit is the linear program :math:`\min \sum_k \rho_k`, close to the posterior mode.
    Scales: least-squares standard errors (normal ability), :math:`3W/(n\,\mathrm{sd}_j)`
    (uniform ability, whose posterior contracts like :math:`1/n`).
    """
    n, q = X.shape
    yd = y - _segment_mean(y, school, n_schools)[school]
    if q == 0:
        theta, scale, r = jnp.zeros(0), jnp.zeros(0), y
        sigma = jnp.sqrt(jnp.mean(yd**2))
    else:
        Xd = X - _segment_mean(X, school, n_schools)[school]
        gram = Xd.T @ Xd
        gram = gram + (1e-9 * jnp.trace(gram) / q + 1e-300) * jnp.eye(q)
        theta = jnp.linalg.solve(gram, Xd.T @ yd)
        sigma = jnp.sqrt(jnp.mean((yd - Xd @ theta) ** 2))
        if not uniform:
            return theta, sigma * jnp.sqrt(jnp.diag(jnp.linalg.inv(gram))), jnp.sqrt(12.0) * sigma
        outer = (X[:, :, None] * X[:, None, :]).reshape(n, q * q)
        cap = 3.0 * sigma * jnp.sqrt(jnp.diag(jnp.linalg.inv(gram)))

        def newton_step(i, th):
            tau = sigma * jnp.asarray(_PILOT_TEMPERATURES)[i // 2]
            r = y - X @ th
            grad, hess = jnp.zeros(q), jnp.zeros((q, q))
            for sign in (1.0, -1.0):  # tau LSE_k(sign r / tau): softmax weights within each school
                top = jax.ops.segment_max(sign * r, school, num_segments=n_schools)
                e = jnp.exp((sign * r - top[school]) / tau)
                sums = jax.ops.segment_sum(
                    jnp.concatenate([e[:, None], e[:, None] * X, e[:, None] * outer], axis=1), school, num_segments=n_schools
                )
                occupied = sums[:, :1] > 0
                mean = jnp.where(occupied, sums[:, 1 : 1 + q] / jnp.where(occupied, sums[:, :1], 1.0), 0.0)
                second = jnp.where(occupied, sums[:, 1 + q :] / jnp.where(occupied, sums[:, :1], 1.0), 0.0)
                grad = grad - sign * jnp.sum(mean, axis=0)
                hess = hess + jnp.sum(second.reshape(-1, q, q) - mean[:, :, None] * mean[:, None, :], axis=0) / tau
            hess = hess + (1e-9 * jnp.trace(hess) / q + 1e-300) * jnp.eye(q)
            return th - jnp.clip(jnp.linalg.solve(hess, grad), -cap, cap)

        theta = jax.lax.fori_loop(0, 2 * len(_PILOT_TEMPERATURES), newton_step, theta)
        r = y - X @ theta
    if not uniform:
        return theta, jnp.zeros(0), jnp.sqrt(12.0) * sigma
    spread = jax.ops.segment_max(r, school, num_segments=n_schools) - jax.ops.segment_min(r, school, num_segments=n_schools)
    width = jnp.max(spread)
    scale = 3.0 * width / (n * jnp.sqrt(jnp.diag(gram) / n)) if q else jnp.zeros(0)
    return theta, scale, width


def pilot_estimates(config: Config, priors: Mapping[str, Distribution], data: Observed, ability: str) -> _Pilot:
    """The pilot quantities :func:`_condition_on_data` centres and scales its coordinates
    with: :func:`_pilot_estimates` with the pinned values and prior variances of ``priors``."""
    n_races = len(config.race_codes)
    effect_priors = [priors[k] for k in _SCORE_EFFECTS]
    alpha_prior, shift_prior = priors["regular_small_intercept"], priors["regular_small_race_shift"]
    slope_priors = (priors["regular_small_income"], priors["regular_small_ability"])

    def pinned_value(d, shape=()):
        return jnp.asarray(d.v if _pinned(d) else jnp.zeros(shape), dtype=float)

    return _pilot_estimates(
        data,
        jnp.stack([pinned_value(d) for d in effect_priors]),
        jnp.asarray(priors["score_ability_weight"].v if _pinned(priors["score_ability_weight"]) else 1.0, dtype=float),
        pinned_value(alpha_prior) + pinned_value(shift_prior, (n_races,)),
        jnp.stack([pinned_value(d) for d in slope_priors]),
        jnp.concatenate([
            jnp.broadcast_to(_prior_variance(alpha_prior) + _prior_variance(shift_prior), (n_races,)),
            jnp.reshape(_prior_variance(slope_priors[0]), (1,)),
            jnp.reshape(_prior_variance(slope_priors[1]), (1,)),
        ]),
        n_schools=config.n_schools, n_races=n_races, uniform=ability == "uniform",
        free=tuple(j for j, d in enumerate(effect_priors) if not _pinned(d)),
        assignment_pins=(_pinned(alpha_prior) and _pinned(shift_prior),) + tuple(_pinned(d) for d in slope_priors),
    )


@partial(jax.jit, static_argnames=("n_schools", "n_races", "uniform", "free", "assignment_pins"))
def _pilot_estimates(data, effect_pins, ability_weight, intercept_pins, slope_pins, assignment_prior_variance, *,
                     n_schools, n_races, uniform, free, assignment_pins) -> _Pilot:
    """Every pilot quantity in one compiled function of the data (see :func:`_condition_on_data`)."""
    n = data.test_score.shape[-1]
    student_ma = data.teacher_has_ma[data.class_of_student]
    student_school = data.school_of_class[data.class_of_student]
    regular = ~data.is_experimental
    columns = [data.small_class.astype(float), student_ma.astype(float), ability_weight * data.income_scaled]
    y = data.test_score - sum(effect_pins[j] * columns[j] for j in range(3) if j not in free)
    extra = [] if data.extra_covariates is None else [ability_weight * c for c in data.extra_covariates.T]
    X = jnp.stack([columns[j] for j in free] + extra, axis=-1) if free or extra else jnp.zeros((n, 0))
    effects, effect_scales, width = _score_pilot(y, X, student_school, n_schools, uniform)
    width = width / ability_weight
    r = (y - X @ effects) / ability_weight
    if uniform:
        u = r - jax.ops.segment_min(r, student_school, num_segments=n_schools)[student_school]
    else:
        u = r - _segment_mean(r, student_school, n_schools)[student_school] + width / 2.0
    levels = _segment_mean(r - u, student_school, n_schools)
    count = jax.ops.segment_sum(jnp.ones(n), student_school, num_segments=n_schools)
    level_hat = ability_weight * levels
    range_unit = ((jnp.max(level_hat) - jnp.min(level_hat)) / 2.0 + 1.0) / (n_schools + 1.0)

    # assignment: ridge linear-probability regression of SMALL on race, income and u (REGULAR cohort)
    response = data.small_class.astype(float)
    if assignment_pins[0]:
        response = response - intercept_pins[data.race]
    for j, column in enumerate((data.income_scaled, u)):
        if assignment_pins[1 + j]:
            response = response - slope_pins[j] * column
    Z = jnp.concatenate([jax.nn.one_hot(data.race, n_races), data.income_scaled[:, None], u[:, None]], axis=-1)
    Zw = Z * regular[:, None]
    gram = Zw.T @ Z + jnp.diag(_PILOT_BERNOULLI_VARIANCE / jnp.maximum(assignment_prior_variance, 1e-12))
    coef = jnp.linalg.solve(gram, Zw.T @ response)
    coef_scale = jnp.sqrt(_PILOT_BERNOULLI_VARIANCE * jnp.diag(jnp.linalg.inv(gram)))
    constrained = regular & (data.small_class == 1)
    has_constraint = jax.ops.segment_max(constrained.astype(jnp.int32), data.race, num_segments=n_races) > 0
    slopes = [slope_pins[j] if assignment_pins[1 + j] else coef[n_races + j] for j in range(2)]
    lowest = jax.ops.segment_min(
        jnp.where(constrained, slopes[0] * data.income_scaled + slopes[1] * u, jnp.inf), data.race, num_segments=n_races
    )
    p_min = jnp.clip(coef[:n_races] + jnp.where(has_constraint, lowest, 0.0), *_PILOT_P_MIN_RANGE)
    log_p_min_scale = jnp.clip(coef_scale[:n_races] / p_min, *_PILOT_LOG_P_MIN_SCALE_RANGE)

    slot_small = data.class_is_small == 1
    ma = data.class_used & (data.teacher_has_ma == 1)
    return _Pilot(
        student_ma=student_ma,
        student_school=student_school,
        constrained=constrained,
        has_constraint=has_constraint,
        effects=effects,
        effect_scales=effect_scales,
        width_unit=width / n,
        width=(jnp.log(width), 1.0 / jnp.sqrt(2.0 * n)),
        levels=levels,
        level_scales=width / jnp.sqrt(12.0 * jnp.maximum(count, 1.0)),
        range_unit=range_unit,
        assignment=(coef, coef_scale),
        p_min=p_min,
        log_p_min_scale=log_p_min_scale,
        race_probs=_simplex_pilot(jax.ops.segment_sum(jnp.ones(n), data.race, num_segments=n_races)),
        experimental_p_small=_logit_pilot(
            jnp.sum(data.is_experimental & (data.small_class == 1)), jnp.sum(data.is_experimental)
        ),
        p_ma_small=_logit_pilot(jnp.sum(ma & slot_small), jnp.sum(data.class_used & slot_small)),
        p_ma_large=_logit_pilot(jnp.sum(ma & ~slot_small), jnp.sum(data.class_used & ~slot_small)),
    )
