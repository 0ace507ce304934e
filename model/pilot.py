r"""Pilot estimates: functions of the data alone that centre and scale the coordinates
the conditioned model (:mod:`classsize.model.conditioned`) samples.

:func:`pilot_estimates` computes them once per dataset, before sampling:

* the score effects by within-school least squares, refined for uniform ability and
  noise-free scores by Newton steps on the soft (log-sum-exp) sum of the schools'
  spreads (:func:`_score_pilot`), and the width :math:`\hat W` of ability's uniform
  part (with measurement noise, from the residual variance less the noise's);
* the assignment rule's coefficients by a ridge linear-probability regression of
  SMALL on race, income and the pilot :math:`U_i` (REGULAR cohort);
* the race, MA and EXPERIMENTAL probabilities from their counts;
* the **group layouts** (:class:`~classsize.model.groups.Groups`): the students of
  each school and of each class, and the SMALL and LARGE REGULAR students of each race,
  in blocks of a padded index matrix (:mod:`classsize.model.groups`).

None of these values changes the posterior: the centres and scales enter through
affine changes of variables whose Jacobians the model adds, and the layouts only
say who belongs to which group.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .design import Design
from .groups import Groups, empty_layout, group_layout
from .pieces import class_effects_on, noise_free, pinned

#: Score effects that multiply a student covariate in the score equation, in column order.
SCORE_EFFECTS = ("small_class_direct_effect", "teacher_ma_effect", "ability_income_weight")
_PILOT_TEMPERATURES = (0.3, 0.1, 0.03, 0.01)
#: Bernoulli variance the linear-probability pilot of the assignment rule assumes.
_PILOT_BERNOULLI_VARIANCE = 0.2
#: Range of the pilot's smallest P(SMALL) of a race, the scale of ``regular_small_race_position`` ...
_PILOT_P_MIN_RANGE = (0.01, 0.3)
#: ... and of the sd of its logarithm.
_PILOT_LOG_P_MIN_SCALE_RANGE = (0.05, 0.5)



class Pilot(NamedTuple):
    """Data-only quantities that centre and scale the sampled coordinates, and the
    group layouts the conditioned density reduces over."""

    student_ma: jax.Array
    student_school: jax.Array
    constrained: jax.Array  # SMALL students of the REGULAR cohort (their P(SMALL) must be > 0)
    has_constraint: jax.Array  # per race: has such students
    capped: jax.Array  # LARGE students of the REGULAR cohort (their P(SMALL) must be < 1)
    has_cap: jax.Array  # per race: has such students
    schools: Groups  # students of each school
    classes: Groups  # students of each class slot (with class effects; else one empty group)
    small_by_race: Groups  # SMALL REGULAR students of each race
    large_by_race: Groups  # LARGE REGULAR students of each race
    effects: jax.Array  # free score effects, then extra covariate weights
    effect_scales: jax.Array
    width_unit: jax.Array  # W / n, the scale of W - max_k spread_k
    width: tuple  # (log W, sd of log W), normal ability
    levels: jax.Array  # b_k
    level_scales: jax.Array  # sd of b_k, normal ability
    range_unit: jax.Array  # scale of R - half range of the levels
    assignment: tuple  # (race intercepts, income, ability) and their scales
    p_min: jax.Array  # per race: distance of the race intercept from its floor (see conditioned.py)
    log_p_min_scale: jax.Array
    race_probs: tuple
    experimental_p_small: tuple
    p_ma_small: tuple
    p_ma_large: tuple
    class_counts: jax.Array  # students of each class slot
    class_effect_sd: tuple  # (log sd, its scale), score units, with class effects


def prior_variance(d: Distribution, default: float = 1.0, xp=jnp):
    """The prior's variance (0 when pinned, ``default`` when the distribution has none),
    with the array module ``xp`` (NumPy for a concrete prior, as the pilot's arguments)."""
    if pinned(d):
        return xp.zeros(d.event_shape)
    try:
        return xp.broadcast_to(xp.asarray(d.variance, dtype=jnp.result_type(float)), d.batch_shape + d.event_shape)
    except (NotImplementedError, AttributeError):
        return xp.full(d.batch_shape + d.event_shape, default)

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


def pilot_estimates(design: Design, priors: Mapping[str, Distribution], data, ability: str = "uniform") -> Pilot:
    """The pilot of one dataset (concrete arrays of an :class:`~classsize.model.pieces.Observed`):
    the compiled :func:`_pilot_estimates` with the pinned values and prior variances of
    ``priors``, and the group layouts (schools, SMALL and
    LARGE REGULAR students by race, when given)."""
    n_races = len(design.race_codes)
    effect_priors = [priors[k] for k in SCORE_EFFECTS]
    alpha_prior, shift_prior = priors["regular_small_intercept"], priors["regular_small_race_shift"]
    slope_priors = (priors["regular_small_income"], priors["regular_small_ability"])

    # (the arguments are built with NumPy: concrete values, no small programs to compile)
    def pinned_value(d, shape=()):
        return np.asarray(d.v if pinned(d) else np.zeros(shape), dtype=np.float64)

    noise_prior = priors["score_noise_sd"]
    noisy = ability == "uniform" and not noise_free(noise_prior)
    classrooms = class_effects_on(priors)
    numbers = _pilot_estimates(
        data,
        np.stack([pinned_value(d) for d in effect_priors]),
        np.asarray(priors["score_ability_weight"].v if pinned(priors["score_ability_weight"]) else 1.0,
                   dtype=np.float64),
        pinned_value(alpha_prior) + pinned_value(shift_prior, (n_races,)),
        np.stack([pinned_value(d) for d in slope_priors]),
        np.concatenate([
            np.broadcast_to(prior_variance(alpha_prior, xp=np) + prior_variance(shift_prior, xp=np), (n_races,)),
            np.reshape(prior_variance(slope_priors[0], xp=np), (1,)),
            np.reshape(prior_variance(slope_priors[1], xp=np), (1,)),
        ]),
        np.asarray(noise_prior.v if pinned(noise_prior) else 0.0, dtype=np.float64),
        n_schools=design.n_schools, n_races=n_races, uniform=ability == "uniform", noisy=noisy,
        free=tuple(j for j, d in enumerate(effect_priors) if not pinned(d)),
        assignment_pins=(pinned(alpha_prior) and pinned(shift_prior),) + tuple(pinned(d) for d in slope_priors),
        classrooms=classrooms,
    )
    school = np.asarray(numbers["student_school"])
    race = np.asarray(data.race)
    constrained, capped = np.asarray(numbers["constrained"]), np.asarray(numbers["capped"])
    regular = int(np.sum(constrained | capped))  # the REGULAR cohort: its size is the design's
    layouts = dict(
        schools=group_layout(school, design.n_schools),
        small_by_race=group_layout(race, n_races, constrained, capacity=regular),
        large_by_race=group_layout(race, n_races, capped, capacity=regular),
        classes=(group_layout(np.asarray(data.class_of_student), int(np.shape(data.class_used)[-1])) if classrooms
                 else empty_layout()),
    )
    return Pilot(**numbers, **layouts)


#: The fields of :class:`Pilot` that are group layouts.
LAYOUTS = ("schools", "small_by_race", "large_by_race", "classes")


def padded_alike(pilots: list[Pilot]) -> list[Pilot]:
    """The pilots with their group layouts padded to as many blocks as the largest, so
    they stack.  Every dataset of one design already has the same number of blocks
    (:func:`~classsize.model.buckets.layout_blocks`); padding does not change the group
    extremes (padding blocks have no valid member)."""
    blocks = {name: max(getattr(p, name).n_blocks for p in pilots) for name in LAYOUTS}
    return [p._replace(**{name: getattr(p, name).padded(blocks[name]) for name in LAYOUTS}) for p in pilots]


def _class_pilot(y, X, within, data, n_schools: int, uniform: bool):
    r"""Pilot of the score effects with class effects: the columns that vary within a
    class (``within``: income, student covariates) by :func:`_score_pilot` within
    classes, then the class-level columns (class size, MA, class covariates) by least
    squares of the class means of the rest on them, within schools, with the standard
    errors of that class-level regression (the clustered ones).  Returns the effects,
    their scales, W (score units) and the class-level residual variance."""
    n, q = X.shape
    n_slots = data.class_used.shape[-1]
    cls = data.class_of_student
    inside = [j for j in range(q) if j in within]
    between = [j for j in range(q) if j not in within]
    theta_w, scale_w, width = _score_pilot(y, X[:, inside], cls, n_slots, uniform)
    rest = y - X[:, inside] @ theta_w
    count = jax.ops.segment_sum(jnp.ones(n), cls, num_segments=n_slots)
    used = (count > 0).astype(float)
    school = data.school_of_class
    per_school = jnp.maximum(jax.ops.segment_sum(used, school, num_segments=n_schools), 1.0)

    def demeaned(a):  # class-level values less their school's mean over the classes with students
        a = a * used.reshape((-1,) + (1,) * (a.ndim - 1))
        mean = jax.ops.segment_sum(a, school, num_segments=n_schools) / per_school.reshape((-1,) + (1,) * (a.ndim - 1))
        return (a - mean[school]) * used.reshape((-1,) + (1,) * (a.ndim - 1))

    md = demeaned(_segment_mean(rest, cls, n_slots))
    Xb = demeaned(_segment_mean(X[:, between], cls, n_slots)) if between else jnp.zeros((n_slots, 0))
    k = len(between)
    if k:
        gram = Xb.T @ Xb
        gram = gram + (1e-9 * jnp.trace(gram) / k + 1e-300) * jnp.eye(k)
        theta_b = jnp.linalg.solve(gram, Xb.T @ md)
    else:
        gram, theta_b = jnp.zeros((0, 0)), jnp.zeros(0)
    n_used_schools = jnp.sum(jax.ops.segment_sum(used, school, num_segments=n_schools) > 0)
    dof = jnp.maximum(jnp.sum(used) - n_used_schools - k, 1.0)
    between_var = jnp.sum((md - Xb @ theta_b) ** 2) / dof
    scale_b = jnp.sqrt(between_var * jnp.diag(jnp.linalg.inv(gram))) if k else jnp.zeros(0)
    effects = jnp.zeros(q).at[jnp.asarray(inside, int)].set(theta_w).at[jnp.asarray(between, int)].set(theta_b)
    scales = jnp.ones(q).at[jnp.asarray(inside, int)].set(scale_w).at[jnp.asarray(between, int)].set(scale_b)
    return effects, scales, width, between_var, count


@partial(jax.jit, static_argnames=("n_schools", "n_races", "uniform", "noisy", "free", "assignment_pins",
                                   "classrooms"))
def _pilot_estimates(data, effect_pins, ability_weight, intercept_pins, slope_pins, assignment_prior_variance,
                     noise_sd, *, n_schools, n_races, uniform, noisy, free, assignment_pins,
                     classrooms=False) -> dict:
    """Every numeric pilot quantity in one compiled function of the data.

    With ``noisy`` (uniform ability, scores with measurement noise of sd ``noise_sd``,
    0 when the noise is sampled) the scores have no hard edges: the score effects are
    the least-squares ones, the levels and ability parts come from school means, and
    the width from the residual variance less the noise's.  With ``classrooms`` (class
    effects) the score effects come from :func:`_class_pilot`, and the class effects'
    sd from the class-level residual variance less the part the students' own
    variation explains."""
    n = data.test_score.shape[-1]
    student_ma = data.teacher_has_ma[data.class_of_student]
    student_school = data.school_of_class[data.class_of_student]
    regular = ~data.is_experimental
    columns = [data.small_class.astype(float), student_ma.astype(float), ability_weight * data.income_scaled]
    y = data.test_score - sum(effect_pins[j] * columns[j] for j in range(3) if j not in free)
    extra = [] if data.extra_covariates is None else [ability_weight * c for c in data.extra_covariates.T]
    by_class = [] if data.class_covariates is None else list(data.class_covariates[data.class_of_student].T)
    X = (jnp.stack([columns[j] for j in free] + extra + by_class, axis=-1) if free or extra or by_class
         else jnp.zeros((n, 0)))
    n_slots = data.class_used.shape[-1]
    class_sd = (jnp.zeros(()), jnp.ones(()))
    class_counts = jnp.zeros(n_slots)
    if classrooms:
        within = ((free.index(2),) if 2 in free else ()) + tuple(range(len(free), len(free) + len(extra)))
        effects, effect_scales, width, between_var, class_counts = _class_pilot(
            y, X, within, data, n_schools, uniform and not noisy)
    else:
        effects, effect_scales, width = _score_pilot(y, X, student_school, n_schools, uniform and not noisy)
    if noisy:  # the residual variance is W^2 / 12 + noise variance (score units)
        width = jnp.sqrt(jnp.maximum(width**2 - 12.0 * noise_sd**2, 0.25 * width**2))
    if classrooms:  # class-level variance = class sd^2 + (W^2 / 12 + noise^2) / class size
        used = class_counts > 0
        own = jnp.sum(jnp.where(used, (width**2 / 12.0 + noise_sd**2) / jnp.maximum(class_counts, 1.0), 0.0))
        own = own / jnp.maximum(jnp.sum(used), 1.0)
        sd = jnp.sqrt(jnp.maximum(between_var - own, 0.05 * between_var + 1e-6))
        class_sd = (jnp.log(sd), jnp.maximum(jnp.sqrt(2.0 / jnp.maximum(jnp.sum(used), 1.0)), 0.1))
    width = width / ability_weight
    r = (y - X @ effects) / ability_weight
    if uniform and not noisy:
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
    # the floor of a race's intercept: its SMALL REGULAR students' rule must be positive
    # at their implied ability (noise-free) or somewhere in [0, W] (noisy)
    reach = jnp.maximum(slopes[1] * width, 0.0) if noisy else slopes[1] * u
    lowest = jax.ops.segment_min(
        jnp.where(constrained, slopes[0] * data.income_scaled + reach, jnp.inf), data.race, num_segments=n_races
    )
    p_min = jnp.clip(coef[:n_races] + jnp.where(has_constraint, lowest, 0.0), *_PILOT_P_MIN_RANGE)
    log_p_min_scale = jnp.clip(coef_scale[:n_races] / p_min, *_PILOT_LOG_P_MIN_SCALE_RANGE)

    slot_small = data.class_is_small == 1
    ma = data.class_used & (data.teacher_has_ma == 1)
    capped = regular & (data.small_class == 0)
    return dict(
        capped=capped,
        has_cap=jax.ops.segment_max(capped.astype(jnp.int32), data.race, num_segments=n_races) > 0,
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
        class_counts=class_counts,
        class_effect_sd=class_sd,
    )
