r"""The REGULAR cohort's assignment rule in the conditioned model: its slopes, its
intercept and each race's intercept, mapped into the window the race's students allow.

:func:`assignment_rule` is step 5 of :func:`~classsize.model.conditioned.condition_on_data`;
the maps and their log-Jacobians are stated there, in the module's section **Support**:
two-sided (a logistic map between the floor its SMALL students set and the ceiling its
LARGE students set), one-sided (exponential above the floor), bent at the wall (LARGE
students only: the flat side at the prior's scale, the steep side at the pilot's), and
affine (no REGULAR students).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpyro

from .coordinates import centred, standard
from .design import Design
from .groups import group_extreme
from .pieces import Observed, pinned
from .pilot import Pilot, prior_variance


def assignment_rule(design: Design, priors, pilot: Pilot, data: Observed, ability_uniform,
                    noisy_width=None) -> dict:
    r"""The REGULAR cohort's assignment slopes, intercept and race shifts, each race's
    intercept mapped into the window its SMALL and LARGE students allow
    (``ability_uniform(who)``: the implied :math:`U_i` of the students ``who``).

    With measurement noise (``noisy_width`` :math:`W`) a student's ability may lie
    anywhere in [0, W], so the window asks only that her rule be positive (SMALL) or
    below 1 (LARGE) somewhere there: :math:`\lambda U_i` is replaced by
    :math:`\max(\lambda W, 0)` for SMALL students and :math:`\min(\lambda W, 0)` for LARGE."""
    n_races = len(design.race_codes)
    alpha_prior, shift_prior = priors["regular_small_intercept"], priors["regular_small_race_shift"]
    coef, coef_scale = pilot.assignment
    income = centred("regular_small_income", priors["regular_small_income"], coef[n_races], coef_scale[n_races])
    slope = centred("regular_small_ability", priors["regular_small_ability"], coef[n_races + 1],
                    coef_scale[n_races + 1])
    out = {"regular_small_income": income, "regular_small_ability": slope}
    if pinned(shift_prior):
        alpha = centred("regular_small_intercept", alpha_prior, jnp.mean(coef[:n_races] - shift_prior.v),
                         jnp.sqrt(jnp.mean(coef_scale[:n_races] ** 2) / n_races))
        shift = numpyro.deterministic("regular_small_race_shift", shift_prior.v)
        return {**out, "regular_small_intercept": alpha, "regular_small_race_shift": shift}
    alpha_sd = jnp.sqrt(prior_variance(alpha_prior))
    alpha = centred("regular_small_intercept", alpha_prior, jnp.mean(coef[:n_races]) * n_races / (n_races + 1.0),
                     jnp.where(alpha_sd > 0, alpha_sd, 1.0) / jnp.sqrt(n_races + 1.0))
    xi = standard("regular_small_race_position", (n_races,))

    if noisy_width is None:
        def linear(who=slice(None)):
            return income * data.income_scaled[who] + slope * ability_uniform(who)

        values = linear()
        lowest = group_extreme(values, pilot.small_by_race, largest=False, evaluate=linear)
        highest = group_extreme(values, pilot.large_by_race, largest=True, evaluate=linear)
    else:
        def reach(who=slice(None), sign=1.0):
            return income * data.income_scaled[who] + sign * jnp.maximum(sign * slope * noisy_width, 0.0)

        values = income * data.income_scaled
        lowest = group_extreme(values, pilot.small_by_race, largest=False, evaluate=reach)
        highest = group_extreme(values, pilot.large_by_race, largest=True, evaluate=partial(reach, sign=-1.0))
    has_constraint, has_cap = pilot.has_constraint, pilot.has_cap
    two_sided = has_constraint & has_cap
    capped_only = has_cap & ~has_constraint
    floor = -jnp.where(has_constraint, lowest, 0.0)
    window = jnp.where(two_sided, jnp.maximum(1.0 - jnp.where(has_cap, highest, 0.0) - floor, 1e-9), 1.0)
    step = pilot.log_p_min_scale * xi
    eta = jnp.log(pilot.p_min) - jnp.log(window) + step
    # a race with LARGE but no SMALL students: flat below the wall, steep above it
    wall = -jnp.where(capped_only, highest, 0.0)
    flat_scale = jnp.sqrt(alpha_sd ** 2 + jnp.maximum(prior_variance(shift_prior), 1e-6))
    ratio = jnp.clip(coef_scale[:n_races] / flat_scale, 1e-3, 1.0)
    bend = ratio * xi - (1.0 - ratio) * (jax.nn.softplus(-xi) - jnp.log(2.0))
    race_intercept = jnp.where(
        has_constraint,
        floor + jnp.where(two_sided, window * jax.nn.sigmoid(eta), pilot.p_min * jnp.exp(step)),
        jnp.where(capped_only, wall + flat_scale * bend, coef[:n_races] + coef_scale[:n_races] * xi),
    )
    shift = numpyro.deterministic("regular_small_race_shift", race_intercept - alpha)
    log_jacobian = jnp.where(
        two_sided,
        jnp.log(window * pilot.log_p_min_scale) + jax.nn.log_sigmoid(eta) + jax.nn.log_sigmoid(-eta),
        jnp.where(has_constraint, jnp.log(pilot.p_min * pilot.log_p_min_scale) + step,
                  jnp.where(capped_only, jnp.log(flat_scale * (ratio + (1.0 - ratio) * jax.nn.sigmoid(-xi))),
                            jnp.log(coef_scale[:n_races]))),
    )
    numpyro.factor("race_reparameterisation", jnp.sum(log_jacobian) + shift_prior.log_prob(shift))
    return {**out, "regular_small_intercept": alpha, "regular_small_race_shift": shift}
