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

**Conditioning.**  With data, ability is marginalised exactly
(:mod:`classsize.model.conditioned`): the scores carry no noise beyond ability, so
given the parameters each student's ability is a deterministic function of her score.
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
    pilot=None,
    covariates=None,
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
    :param covariates: further student covariates of ability (students x q, e.g. free
        lunch in real data), with weights ``extra_covariate_weights``; simulation only
        (conditioning reads them from ``data.extra_covariates``).
    :param pilot: :func:`classsize.model.pilot.pilot_estimates` of ``data``, when the
        caller has computed it (a fit does, once); otherwise it is computed here.
    """
    priors = fixed_parameters(config) if priors is None else priors
    if data is None:
        return _simulate(config, priors, ability, covariates)
    from .conditioned import condition_on_data

    return condition_on_data(config, priors, data, ability, pilot)


def _simulate(config: Config, priors: Mapping[str, Distribution], ability_kind: str = "uniform", covariates=None):
    p = sample_parameters(priors)
    covariate_term = 0.0
    if covariates is not None and covariates.shape[-1] > 0:
        q = covariates.shape[-1]
        eta = numpyro.sample("extra_covariate_weights",
                             priors.get("extra_covariate_weights", dist.Normal(jnp.zeros(q), 10.0).to_event(1)))
        covariate_term = covariates @ eta
    n = config.n_students
    is_experimental = jnp.arange(n) >= config.n_regular
    with numpyro.plate("students", n):
        race = numpyro.sample("race", dist.Categorical(probs=p["race_probs"]))
        income = numpyro.sample(
            "family_income", dist.DiscreteUniform(config.income_min, config.income_max - 1)
        )
        s = scaled_log_income(income, config)
        width = p["ability_uniform_width"]
        unobserved = (dist.Uniform(0.0, width) if ability_kind == "uniform"
                      else dist.Normal(width / 2.0, width / jnp.sqrt(12.0)))
        ability_uniform = numpyro.sample("ability_uniform", unobserved)
        ability = numpyro.deterministic("ability", p["ability_income_weight"] * s + covariate_term + ability_uniform)
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
