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

#: Scale of the free coordinate of a race's assignment intercept above its lower bound.
_P_MIN_SCALE = 0.1


def recommended_kernel(model, ability: str = "uniform"):
    """NUTS settings for the conditioned model: a dense mass matrix (the effects, the
    ability weight and the width are correlated) and chains started at the prior median."""
    from numpyro.infer import NUTS, init_to_median

    return NUTS(model, dense_mass=True, init_strategy=init_to_median)


#: An unconstrained site whose density is added by hand (see :func:`_condition_on_data`).
_FREE = dist.ImproperUniform(dist.constraints.real, (), ())


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

    The scores carry no noise beyond ability (``score_noise_sd`` must be pinned to 0),
    so given the parameters each student's unobserved ability part is a deterministic
    function of her score,

    .. math:: U_i = r_i - b_{k(i)},\qquad
              r_i = (y_i - \delta S_i - \gamma M_i)/\beta_A - w s_i - x_i^\top \eta,\qquad
              b_k = (c + \beta_S e_k)/\beta_A,

    and the joint density of a student's class size and score is
    :math:`p_U(U_i)\,P(S_i \mid U_i)/\beta_A`: no latent variable is sampled, and no
    quadrature is needed (the REGULAR cohort's assignment rule is evaluated at the
    implied :math:`U_i`).

    **Geometry of the uniform's hard edges.**  With :math:`U \sim \mathrm{Uniform}(0, W)`
    the likelihood is zero unless every :math:`U_i \in [0, W]`: a polytope in
    parameter space that NUTS cannot explore by bouncing off its walls.  The
    parameters are therefore sampled in coordinates that satisfy every constraint by
    construction.  With :math:`\ell_k, h_k` the smallest and largest :math:`r_i` in
    school :math:`k` and :math:`\rho_k = h_k - \ell_k`,

    .. math:: W = \max_k \rho_k + e^{v},\qquad
              b_k = h_k - W + (W - \rho_k)\,\mathrm{logistic}(z_k),

    for free :math:`v, z_k` (sites ``ability_uniform_width_excess``,
    ``school_position``).  The school levels :math:`a_k = \beta_A b_k = c + \beta_S e_k`
    with :math:`e_k \sim \mathrm{Uniform}(-R, R)` then fix the intercept and range
    only up to a cone; with :math:`m, h` the midpoint and half-range of the levels,

    .. math:: R = h/\beta_S + e^{t},\qquad c = m + \beta_S e^{t}\tanh(y)

    for free :math:`t, y` (``school_effect_range_excess``, ``score_intercept_position``).

    **Geometry of the assignment rule.**  The REGULAR cohort's P(SMALL) is linear and
    acts clipped, so a SMALL student whose rule falls to 0 makes the likelihood zero:
    another wall, and the one that made NUTS diverge (measured: with the effects
    held at the truth and the assignment free, 81 divergences and 245 leapfrog steps
    per draw on 1,500 students; with it held fixed, none and 19).  Per race :math:`r`
    the intercept :math:`\kappa_r = \alpha + \mathrm{shift}_r` is therefore placed above
    the bound its SMALL students need,

    .. math:: \kappa_r = -\min_{i \in r,\,S_i = 1} (\alpha_s s_i + \alpha_u U_i)
              + 0.1\,e^{q_r}

    (site ``regular_small_race_position``), with :math:`\alpha` sampled from its prior.

    Every map is a bijection onto the support with a triangular Jacobian; the
    log-determinants (:math:`v + \sum_k [\log(W-\rho_k) + \log\sigma(\pm z_k)] + 2t +
    \log\mathrm{sech}^2 y + \sum_r q_r` and constants) are added as factors together
    with the priors of the parameters they replace.  The log density is then finite on
    the whole space, continuous, and smooth except where the student attaining a
    minimum or maximum changes.  The clip to :math:`[10^{-12}, 1 - 10^{-12}]` only
    acts on the upper wall (a LARGE student with P(SMALL) = 1), far from the data.

    With ``ability="normal"`` the unobserved part of ability is instead
    :math:`\mathcal N(W/2, W/\sqrt{12})` (the uniform's mean and sd), the score model
    is a normal regression, and the school effects are sampled directly.
    """
    if ability not in ("uniform", "normal"):
        raise ValueError(f"ability must be 'uniform' or 'normal', got {ability!r}")
    reparam_assign = not isinstance(priors["regular_small_intercept"], dist.Delta) and not isinstance(
        priors["regular_small_race_shift"], dist.Delta
    )
    skip = ("ability_uniform_width", "school_effect_range", "score_intercept")
    if reparam_assign:
        skip = skip + ("regular_small_intercept", "regular_small_race_shift")
    p = sample_parameters(priors, skip=skip, pinned_as_deterministic=True)
    n_schools = config.n_schools
    n = data.test_score.shape[-1]
    beta_a, beta_s = p["score_ability_weight"], p["score_school_weight"]
    student_ma = data.teacher_has_ma[data.class_of_student]
    student_school = data.school_of_class[data.class_of_student]
    covariate_term = 0.0
    if data.extra_covariates is not None and data.extra_covariates.shape[-1] > 0:
        q = data.extra_covariates.shape[-1]
        eta = numpyro.sample(
            "extra_covariate_weights", priors.get("extra_covariate_weights", dist.Normal(jnp.zeros(q), 10.0).to_event(1))
        )
        covariate_term = data.extra_covariates @ eta
    r = (  # U_i + b_k(i): the score net of everything but the school and ability's uniform part
        (data.test_score - p["small_class_direct_effect"] * data.small_class - p["teacher_ma_effect"] * student_ma)
        / beta_a
        - p["ability_income_weight"] * data.income_scaled
        - covariate_term
    )
    if ability == "uniform":
        lo = jax.ops.segment_min(r, student_school, num_segments=n_schools)
        hi = jax.ops.segment_max(r, student_school, num_segments=n_schools)
        spread = hi - lo
        v = numpyro.sample("ability_uniform_width_excess", _FREE)
        width = numpyro.deterministic("ability_uniform_width", jnp.max(spread) + jnp.exp(v))
        with numpyro.plate("schools", n_schools):
            z = numpyro.sample("school_position", _FREE)
        level = beta_a * (hi - width + (width - spread) * jax.nn.sigmoid(z))
        log_jacobian = v + jnp.sum(
            jnp.log(width - spread) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z)
        ) + n_schools * jnp.log(beta_a)
        log_jacobian = log_jacobian + priors["ability_uniform_width"].log_prob(width)
    else:
        width = numpyro.sample("ability_uniform_width", priors["ability_uniform_width"])
        with numpyro.plate("schools", n_schools):
            level = numpyro.sample("school_level", _FREE)
        log_jacobian = 0.0
    # the school levels a_k = c + beta_S e_k, e_k ~ Uniform(-R, R): (c, R) from (y, t)
    half_range = (jnp.max(level) - jnp.min(level)) / 2.0
    midpoint = (jnp.max(level) + jnp.min(level)) / 2.0
    t = numpyro.sample("school_effect_range_excess", _FREE)
    y = numpyro.sample("score_intercept_position", _FREE)
    effect_range = numpyro.deterministic("school_effect_range", half_range / beta_s + jnp.exp(t))
    intercept = numpyro.deterministic("score_intercept", midpoint + beta_s * jnp.exp(t) * jnp.tanh(y))
    school_effect = numpyro.deterministic("school_effect", (level - intercept) / beta_s)
    log_jacobian = log_jacobian + 2.0 * t + jnp.log(beta_s) + 2.0 * (jnp.log(2.0) - jnp.logaddexp(y, -y))
    log_prior = (
        priors["school_effect_range"].log_prob(effect_range)
        + priors["score_intercept"].log_prob(intercept)
        + jnp.sum(dist.Uniform(-effect_range, effect_range).log_prob(school_effect))
        - n_schools * jnp.log(beta_s)
    )
    numpyro.factor("reparameterisation", log_jacobian + log_prior)
    p = {**p, "score_intercept": intercept}

    location = score_without_ability(p, data.small_class, student_ma, school_effect[student_school]) + beta_a * (
        p["ability_income_weight"] * data.income_scaled + covariate_term
    )
    ability_uniform = (data.test_score - location) / beta_a
    if reparam_assign:
        # the REGULAR rule's per-race intercepts kappa_r = alpha + shift_r, placed above the
        # bound every SMALL student of race r needs (P(SMALL) > 0)
        alpha = numpyro.sample("regular_small_intercept", priors["regular_small_intercept"])
        k = priors["regular_small_race_shift"].event_shape[0]
        base = p["regular_small_income"] * data.income_scaled + p["regular_small_ability"] * ability_uniform
        constrained = (~data.is_experimental) & (data.small_class == 1)
        member = constrained[:, None] & (data.race[:, None] == jnp.arange(k))
        has = jnp.any(member, axis=0)
        lowest = jnp.min(jnp.where(member, base[:, None], 1e300), axis=0)
        kappa = numpyro.sample("regular_small_race_position", dist.ImproperUniform(dist.constraints.real, (), (k,)))
        race_intercept = jnp.where(has, -jnp.where(has, lowest, 0.0) + _P_MIN_SCALE * jnp.exp(kappa), kappa)
        shift = numpyro.deterministic("regular_small_race_shift", race_intercept - alpha)
        numpyro.factor(
            "assignment_reparameterisation",
            jnp.sum(jnp.where(has, kappa, 0.0)) + priors["regular_small_race_shift"].log_prob(shift),
        )
        p = {**p, "regular_small_intercept": alpha, "regular_small_race_shift": shift}
    with numpyro.plate("students", n):
        numpyro.sample("race", dist.Categorical(probs=p["race_probs"]), obs=data.race)
        p_small = small_probability(p, data.income_scaled, data.race, ability_uniform, data.is_experimental)
        numpyro.sample(
            "small_class",
            dist.Bernoulli(probs=jnp.clip(p_small, _P_FLOOR, 1.0 - _P_FLOOR)),
            obs=data.small_class,
        )
        if ability == "uniform":
            score_dist = dist.Uniform(location, location + beta_a * width)
        else:
            score_dist = dist.Normal(location + beta_a * width / 2.0, beta_a * width / jnp.sqrt(12.0))
        numpyro.sample("test_score", score_dist, obs=data.test_score)
    with numpyro.plate("classes", data.class_is_small.shape[-1]), numpyro.handlers.mask(mask=data.class_used):
        numpyro.sample(
            "teacher_has_ma", dist.Bernoulli(probs=teacher_ma_probability(p, data.class_is_small)), obs=data.teacher_has_ma
        )
        numpyro.sample("school", dist.Categorical(probs=jnp.ones(n_schools) / n_schools), obs=data.school_of_class)
