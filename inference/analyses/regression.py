r"""The naive analysis's NumPyro model: a normal regression of the score on the
observed covariates, with school fixed effects (:func:`naive_regression`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

#: The naive regression's prior scale of every coefficient.
NAIVE_COEFFICIENT_SD = 10.0


def naive_regression(income_scaled, race, small_class, teacher_has_ma, school, n_schools, n_races,
                     covariates=None, test_score=None):
    r"""What observational data give: a normal regression on the REGULAR cohort.

    .. math:: y_i \sim \mathcal N(\alpha_{k(i)} + \beta s_i + \rho_{race_i} + \delta S_i + \gamma M_i
              + x_i^\top\eta,\ \sigma)

    with school fixed effects :math:`\alpha_k` (an intercept per school, as an
    econometrician adjusts for school) and the first race as the reference level.
    ``delta`` is reported as ``small_class_direct_effect`` and ``gamma`` as
    ``teacher_ma_effect``; both are biased, because the unobserved part of ability
    raises the score and the chance of a SMALL class at once.
    """
    sd = NAIVE_COEFFICIENT_SD
    beta = numpyro.sample("log_income_weight", dist.Normal(0.0, sd))
    rho = numpyro.sample("race_effect", dist.Normal(jnp.zeros(n_races - 1), sd).to_event(1))
    rho = jnp.concatenate([jnp.zeros(1), rho])
    delta = numpyro.sample("small_class_direct_effect", dist.Normal(0.0, sd))
    gamma = numpyro.sample("teacher_ma_effect", dist.Normal(0.0, sd))
    sigma = numpyro.sample("score_sd", dist.HalfNormal(20.0))
    with numpyro.plate("schools", n_schools):
        school_intercept = numpyro.sample("school_intercept", dist.Normal(50.0, 20.0))
    mean = school_intercept[school] + beta * income_scaled + rho[race] + delta * small_class + gamma * teacher_has_ma
    if covariates is not None and covariates.shape[-1] > 0:
        eta = numpyro.sample("covariate_weights", dist.Normal(jnp.zeros(covariates.shape[-1]), sd).to_event(1))
        mean = mean + covariates @ eta
    with numpyro.plate("students", income_scaled.shape[0]):
        numpyro.sample("test_score", dist.Normal(mean, sigma), obs=test_score)
