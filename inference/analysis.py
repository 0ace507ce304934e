r"""The three analysis models, built from the pieces of :mod:`classsize.model`.

===============  ==========================================================================
name             what it is
===============  ==========================================================================
``structural``   :func:`classsize.model.class_size_experiment` conditioned on all the data:
                 both cohorts, the REGULAR cohort's assignment rule with ability latent
                 (marginalised exactly).  Recovers the effects despite the confounding.
``randomized``   the same model on the EXPERIMENTAL cohort alone: class size was assigned
                 by a coin, so the assignment is ignorable and needs no model.
``naive``        a normal regression on the REGULAR cohort adjusting for what an analyst
                 observes (log income, race, school, MA): what observational data give,
                 biased because the unobserved part of ability drives assignment.
===============  ==========================================================================

Every analysis reports the estimands of :meth:`classsize.model.Config.estimands`
(``naive`` has no model of the MA probability, so it reports no total effect).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from classsize.model import Config, Observed, class_size_experiment, default_priors
from classsize.model.experiment import scaled_log_income  # noqa: F401  (re-exported for users)

from .data import LoadedData

ANALYSES = ("structural", "randomized", "naive")
ESTIMANDS = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")

#: Parameters of the REGULAR cohort's assignment rule (no information without that cohort).
ASSIGNMENT_PARAMETERS = (
    "regular_small_intercept",
    "regular_small_income",
    "regular_small_ability",
    "regular_small_race_shift",
)


@dataclass
class Analysis:
    """One analysis: a NumPyro model with its arguments, and how to read the estimands."""

    name: str
    model: Callable
    args: tuple
    kwargs: dict
    description: str
    estimands: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    n_students: int
    config: Config
    observed: Observed | None = None
    info: dict = field(default_factory=dict)


def structural_estimands(samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Direct, total (through the MA probability) and MA effects from posterior draws."""
    direct = np.asarray(samples["small_class_direct_effect"])
    ma = np.asarray(samples["teacher_ma_effect"])
    diff = np.asarray(samples["p_ma_small"]) - np.asarray(samples["p_ma_large"])
    return {
        "small_class_direct_effect": direct,
        "small_class_total_effect": direct + ma * diff,
        "teacher_ma_effect": ma,
    }


def _fit_config(data: LoadedData, cohort: str | None) -> Config:
    """The design a fit needs: the data's schools and race coding; income units of the notebook."""
    race_codes = data.race_coding(Config())
    n = len(race_codes)
    return Config(
        n_schools=len(data.school_ids_in(cohort)),
        race_codes=race_codes,
        race_probs=tuple([1.0 / n] * n),
        regular_small_race_shift={},
    )


def _pin(priors: dict, names, value: float = 0.0) -> dict:
    out = dict(priors)
    for name in names:
        shape = priors[name].event_shape
        out[name] = dist.Delta(jnp.full(shape, value), event_dim=len(shape))
    return out


def build_analysis(name: str, data: LoadedData, ability: str = "uniform") -> Analysis:
    """The analysis ``name`` (one of :data:`ANALYSES`) of a loaded dataset."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    if name == "naive":
        return _naive(data)
    cohort = None if name == "structural" else "EXPERIMENTAL"
    config = _fit_config(data, cohort)
    observed = data.observed(config, cohort=cohort)
    n_students = int(observed.test_score.shape[0])
    if n_students == 0:
        raise ValueError(f"the data have no {cohort or ''} students to fit")
    priors = default_priors(config)
    if name == "randomized" or not bool(np.any(~np.asarray(observed.is_experimental))):
        priors = _pin(priors, ASSIGNMENT_PARAMETERS)
    if not data.has_income:
        priors = _pin(priors, ["ability_income_weight"])
    if name == "structural":
        description = "the full process, both cohorts, ability latent (marginalised)"
    else:
        description = "the outcome model on the EXPERIMENTAL cohort (assignment ignorable)"
    return Analysis(
        name=name,
        model=class_size_experiment,
        args=(config, priors, observed),
        kwargs={"ability": ability},
        description=description,
        estimands=structural_estimands,
        n_students=n_students,
        config=config,
        observed=observed,
        info={"ability": ability, "cohort": cohort or "both"},
    )


# ------------------------------------------------------------------------ naive
def naive_regression(income_scaled, race, small_class, teacher_has_ma, school, n_schools, n_races,
                     covariates=None, test_score=None):
    r"""What observational data give: a normal regression on the REGULAR cohort.

    .. math:: y_i \sim \mathcal N(\alpha_{k(i)} + \beta s_i + \rho_{race_i} + \delta S_i + \gamma M_i
              + x_i^\top\eta,\ \sigma)

    with school fixed effects :math:`\alpha_k` (an intercept per school, as an
    econometrician adjusts for school) and the first race as the reference level.
    ``delta`` is reported as ``small_class_direct_effect`` and ``gamma`` as
    ``teacher_ma_effect``; both are biased, because the unobserved part of ability
    raises the score and the chance of a SMALL class at once.  (Random school effects
    around a common intercept, non-centred or centred, gave divergences in 1 of 20
    fits and R-hat above 1.01 in 7 to 13 of 20 on 800-student datasets, from the ridge
    between the intercept and the mean school effect; the fixed effects have neither.)
    """
    beta = numpyro.sample("log_income_weight", dist.Normal(0.0, 10.0))
    rho = numpyro.sample("race_effect", dist.Normal(jnp.zeros(n_races - 1), 10.0).to_event(1))
    rho = jnp.concatenate([jnp.zeros(1), rho])
    delta = numpyro.sample("small_class_direct_effect", dist.Normal(0.0, 10.0))
    gamma = numpyro.sample("teacher_ma_effect", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("score_sd", dist.HalfNormal(20.0))
    with numpyro.plate("schools", n_schools):
        school_intercept = numpyro.sample("school_intercept", dist.Normal(50.0, 20.0))
    mean = school_intercept[school] + beta * income_scaled + rho[race] + delta * small_class + gamma * teacher_has_ma
    if covariates is not None and covariates.shape[-1] > 0:
        eta = numpyro.sample("covariate_weights", dist.Normal(jnp.zeros(covariates.shape[-1]), 10.0).to_event(1))
        mean = mean + covariates @ eta
    with numpyro.plate("students", income_scaled.shape[0]):
        numpyro.sample("test_score", dist.Normal(mean, sigma), obs=test_score)


def naive_estimands(samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "small_class_direct_effect": np.asarray(samples["small_class_direct_effect"]),
        "teacher_ma_effect": np.asarray(samples["teacher_ma_effect"]),
    }


def _naive(data: LoadedData) -> Analysis:
    cohort = "REGULAR"
    config = _fit_config(data, cohort)
    obs = data.observed(config, cohort=cohort)
    n_students = int(obs.test_score.shape[0])
    if n_students == 0:
        raise ValueError("the data have no REGULAR students: the naive analysis needs the observational cohort")
    kwargs = dict(
        income_scaled=obs.income_scaled,
        race=obs.race,
        small_class=obs.small_class,
        teacher_has_ma=obs.teacher_has_ma[obs.class_of_student],
        school=obs.school_of_class[obs.class_of_student],
        n_schools=config.n_schools,
        n_races=len(config.race_codes),
        covariates=obs.extra_covariates,
        test_score=obs.test_score,
    )
    return Analysis(
        name="naive",
        model=naive_regression,
        args=(),
        kwargs=kwargs,
        description="normal regression on the REGULAR cohort adjusting for log income, race, school, MA",
        estimands=naive_estimands,
        n_students=n_students,
        config=config,
        observed=obs,
        info={"cohort": "REGULAR"},
    )
