r"""The pieces of the class-size process that the forward model
(:mod:`classsize.model.experiment`) and the conditioned density
(:mod:`classsize.model.conditioned`) share: the structural parameters and their
priors (and whether a prior pins its parameter: :func:`pinned`, :func:`pinned_to_zero`),
the assignment rule, the MA probability, the score equation without ability,
the allocation to classes, and :class:`Observed`, the data a fit conditions on.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .config import Config
from .design import Design

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
    """Every structural parameter pinned to the configuration (``Delta`` sites), and
    ``class_effect_sd`` when it is not 0 (no class effects without it)."""
    values = {name: getattr(config, name) for name in SCALAR_PARAMETERS}
    values["race_probs"] = jnp.asarray(config.race_probs)
    values["regular_small_race_shift"] = jnp.asarray(config.race_shift_vector)
    out = {}
    for name in PARAMETERS:
        v = jnp.asarray(values[name], dtype=jnp.result_type(float))
        out[name] = dist.Delta(v, event_dim=v.ndim)
    if config.class_effect_sd != 0:  # (left out at 0, a value known even inside jax.jit)
        out["class_effect_sd"] = dist.Delta(jnp.asarray(config.class_effect_sd, dtype=jnp.result_type(float)))
    return out


def default_priors(design: Design = Design(), score_noise_sd: float = 0.0,
                   score_scale: float = 1.0) -> dict[str, Distribution]:
    r"""Weakly informative priors, the ones inference and calibration use.

    The effects of interest are centred on zero (:math:`\mathcal N(0, 10)` points), so a
    fit owes nothing to the notebook's values.  Two weights are pinned, because the
    data cannot tell them apart from other parameters: ``score_ability_weight = 1``
    (ability is measured in score points: only the product of the weight with the
    ability's income weight and width is identified) and ``score_school_weight = 1``
    (likewise with ``school_effect_range``).  ``score_noise_sd`` is pinned to
    ``score_noise_sd``: 0 (the notebook's scores carry no noise beyond ability) unless
    the caller knows otherwise; :func:`free_noise_prior` is the prior that samples it
    instead.  ``class_effect_sd`` is pinned to 0 (no class effects, the notebook's
    process); :func:`free_class_effect_prior` samples it.  Of the design only the race
    codes enter (one probability and one assignment shift per race).

    ``score_scale`` :math:`k` is the data's score unit against the simulation's (1: the
    simulation's points; STAR's percentile scores declare theirs in ``dataset.json``):
    every prior of a quantity in score points is :math:`k` times wider (the scales of
    the effects, the income weight and the intercept, and the medians of the ability
    width and the school-effect range), and the assignment rule's ability slope, per
    point, :math:`k` times narrower.
    """
    k = len(design.race_codes)
    u = float(score_scale)
    return {
        "race_probs": dist.Dirichlet(2.0 * jnp.ones(k)),
        "ability_income_weight": dist.Normal(0.0, 10.0 * u),
        "ability_uniform_width": dist.LogNormal(jnp.log(25.0 * u), 0.5),
        "regular_small_intercept": dist.Normal(0.0, 0.3),
        "regular_small_income": dist.Normal(0.0, 0.3),
        "regular_small_ability": dist.Normal(0.0, 0.03 / u),
        "experimental_p_small": dist.Beta(2.0, 2.0),
        "p_ma_small": dist.Beta(2.0, 2.0),
        "p_ma_large": dist.Beta(2.0, 2.0),
        "school_effect_range": dist.LogNormal(jnp.log(5.0 * u), 0.5),
        "score_intercept": dist.Normal(50.0, 20.0 * u),
        "score_ability_weight": dist.Delta(1.0),
        "small_class_direct_effect": dist.Normal(0.0, 10.0 * u),
        "teacher_ma_effect": dist.Normal(0.0, 10.0 * u),
        "score_school_weight": dist.Delta(1.0),
        "score_noise_sd": dist.Delta(jnp.asarray(score_noise_sd, dtype=jnp.result_type(float))),
        "regular_small_race_shift": dist.Normal(jnp.zeros(k), 0.3).to_event(1),
        "class_effect_sd": dist.Delta(jnp.asarray(0.0)),
    }


#: Scale (score points) of :func:`free_noise_prior`.
NOISE_PRIOR_SCALE = 5.0


def free_noise_prior(scale: float = 1.0) -> Distribution:
    r"""The prior of ``score_noise_sd`` when it is sampled: :math:`\mathrm{HalfNormal}(5\,k)`
    points (``scale`` :math:`k`, as in :func:`default_priors`), positive down to 0, so
    noise-free scores can pull it there."""
    return dist.HalfNormal(NOISE_PRIOR_SCALE * scale)


#: Scale (score points) of :func:`free_class_effect_prior`.
CLASS_EFFECT_PRIOR_SCALE = 3.7


def free_class_effect_prior(scale: float = 1.0) -> Distribution:
    r"""The prior of ``class_effect_sd`` when it is sampled: :math:`\mathrm{HalfNormal}(3.7\,k)`
    points (``scale`` :math:`k`).  At :math:`k = 1` its median, 2.5 points, is an
    intraclass correlation of about 0.1 beside the notebook's within-class score sd
    (:math:`\sqrt{25^2/12 + \ldots} \approx 7.5` points); it reaches down to 0, so data
    without class effects can pull the sd there."""
    return dist.HalfNormal(CLASS_EFFECT_PRIOR_SCALE * scale)


def class_effects_on(priors: Mapping[str, Distribution]) -> bool:
    """Whether the model has class effects: a ``class_effect_sd`` prior that does not
    pin the sd to 0 (absent or pinned to 0: none, the notebook's process)."""
    d = priors.get("class_effect_sd")
    return d is not None and not pinned_to_zero(d)


def pinned(prior: Distribution) -> bool:
    r"""Whether a prior pins its parameter: a ``Delta`` at ``v = prior.v``, the
    distribution :math:`p(\theta) = \delta(\theta - v)` whose one value :math:`\theta = v`
    has probability 1, so the parameter is known and nothing is sampled there."""
    return isinstance(prior, dist.Delta)


def pinned_to_zero(prior: Distribution) -> bool:
    r"""Whether a prior pins its parameter to a known 0: :func:`pinned` with a concrete
    value :math:`v = 0` (every entry, for a vector).  A value that is not concrete
    (traced inside ``jax.jit``) is not known to be 0, so this is False for it."""
    if not pinned(prior):
        return False
    try:
        return bool(np.all(np.asarray(prior.v) == 0))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return False


def noise_free(prior: Distribution) -> bool:
    """Whether a ``score_noise_sd`` prior makes the scores noise-free (the notebook's
    scores): the noise sd :func:`pinned_to_zero`."""
    return pinned_to_zero(prior)


def sample_parameters(
    priors: Mapping[str, Distribution], skip: tuple[str, ...] = (), pinned_as_deterministic: bool = False
) -> dict:
    """Sample every structural parameter site (in :data:`PARAMETERS` order).

    With ``pinned_as_deterministic`` a parameter whose prior is :func:`pinned` is
    recorded as a deterministic site instead (MCMC has nothing to sample there).
    """
    out = {}
    for name in PARAMETERS:
        if name in skip:
            continue
        d = priors[name]
        if pinned_as_deterministic and pinned(d):
            out[name] = numpyro.deterministic(name, d.v)
        else:
            out[name] = numpyro.sample(name, d)
    return out


# ------------------------------------------------------------------ shared pieces
def scaled_log_income(income, design: Design):
    """:math:`s = (\\log x - \\log x_{min}) / (\\log x_{max} - \\log x_{min})`, in [0, 1)."""
    lo, hi = jnp.log(design.income_min), jnp.log(design.income_max)
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


def allocate_to_classes(small, design: Design):
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
    n_small_classes = _class_count(n_small, design.small_class_size)
    n_large_classes = _class_count(n_large, design.large_class_size)
    slot = jnp.where(
        small == 1,
        rank_small % jnp.maximum(n_small_classes, 1),
        design.max_small_classes + rank_large % jnp.maximum(n_large_classes, 1),
    )
    return slot, n_small_classes, n_large_classes


def _class_count(n_students, target_size: float):
    """``floor(n / target)`` classes, but one class when 0 < n < target, none when n = 0."""
    count = jnp.floor(n_students / target_size).astype(jnp.int32)
    return jnp.where(n_students > 0, jnp.maximum(count, 1), 0)


def class_slots(design: Design, n_small_classes, n_large_classes):
    """``(slot_is_small, slot_is_used)`` for the padded ``classes`` plate."""
    j = jnp.arange(design.max_small_classes + design.max_large_classes)
    is_small = j < design.max_small_classes
    used = jnp.where(is_small, j < n_small_classes, j - design.max_small_classes < n_large_classes)
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
    #: class-level covariates of the score (class slots x q), e.g. an aide or the
    #: teacher's experience, with weights ``class_covariate_weights``
    class_covariates: jax.Array | None = None
