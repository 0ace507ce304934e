r"""A normal regression of the score on what an analyst observes, with school fixed
effects: the ``naive`` analysis (:class:`RegressionAnalysis`, model :func:`naive_regression`).

The regression takes the class sizes, the MA and the schools as given (its
covariates), so its forward model replicates the scores alone, and an intervention
sets those covariates in its equation, the observed MA and school held: its
class-size contrast is a direct effect.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from classsize.model.design import Design

from classsize.inference.analyses.base import Analysis, Problem

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


@dataclasses.dataclass(frozen=True)
class RegressionAnalysis(Analysis):
    """:func:`naive_regression` on one cohort's data."""

    #: the regression explains the scores; class sizes are its covariates
    modeled_data: ClassVar[tuple[str, ...]] = ("test_score",)

    def check_design(self, design: Design, sbc: bool) -> None:
        """A regression has no generative prior of the data, so no SBC."""
        if sbc:
            raise ValueError(f"--from-prior needs an analysis with a generative prior; the {self.name} analysis "
                             "has no generative prior of the data (use a fixed truth: the default Design or "
                             "--design FILE)")
        super().check_design(design, sbc)

    def coverage_note(self, passed: bool) -> str:
        if passed:
            return (f"{self.name}: coverage holds at this truth: here assignment does not depend on the unobserved\n"
                    "  ability enough to bias the regression")
        return (f"{self.name}: fails, as expected: in the REGULAR cohort the unobserved part of ability raises\n"
                "  both the score and the chance of a SMALL class, so the regression is confounded\n"
                "  (see the bias above)")

    def bind(self, design, observed, ability="uniform", *, has_regular=True, has_income=True) -> Problem:
        o = observed
        inputs = dict(
            income_scaled=jnp.asarray(o.income_scaled),
            race=jnp.asarray(o.race),
            small_class=jnp.asarray(o.small_class),
            teacher_has_ma=jnp.asarray(o.teacher_has_ma)[jnp.asarray(o.class_of_student)],
            school=jnp.asarray(o.school_of_class)[jnp.asarray(o.class_of_student)],
            covariates=o.extra_covariates,
            test_score=jnp.asarray(o.test_score),
        )
        static = {"n_schools": design.n_schools, "n_races": len(design.race_codes)}
        return Problem(self, design, None, inputs, observed, ability, static, self.signature(design, "uniform"))

    def model_function(self, problem: Problem) -> Callable:
        return partial(naive_regression, **problem.static)

    def estimands(self, draws):
        return {name: np.asarray(draws[name]) for name in self.estimand_names}

    def estimand_of(self, intervention: Mapping[str, int]) -> str:
        """The MA is a covariate held as observed: the class-size contrast is direct."""
        return "small_class_direct_effect" if "small_class" in intervention else "teacher_ma_effect"

    def forward(self, problem, draws, key, intervention=None) -> dict[str, np.ndarray]:
        """Scores from the regression's likelihood for each draw, its covariates as
        observed or as ``intervention`` sets them; the class sizes are not modelled,
        so they are the observed (or the intervened) ones."""
        sites = tuple(intervention or ())
        program = problem.programs.get(("forward", sites))
        if program is None:
            program = problem.programs[("forward", sites)] = self._forward_program(problem)
        samples = {n: jnp.asarray(v) for n, v in draws.items() if n != "test_score"}
        inputs = {k: v for k, v in problem.inputs.items() if k != "test_score"}
        values = {k: jnp.int32(v) for k, v in (intervention or {}).items()}
        score = np.asarray(program(key, samples, inputs, values))
        small = (np.full(score.shape, intervention["small_class"]) if "small_class" in values
                 else np.broadcast_to(np.asarray(problem.observed.small_class), score.shape))
        return {"test_score": score, "small_class": small}

    def _forward_program(self, problem: Problem):
        from numpyro.infer import Predictive

        model = self.model_function(problem)

        @jax.jit
        def forward(key, samples, inputs, values):
            inputs = {**inputs, "test_score": None}
            for k, v in values.items():
                inputs[k] = jnp.full_like(inputs[k], v)
            predictive = Predictive(model, posterior_samples=samples, return_sites=["test_score"], parallel=True)
            return predictive(key, **inputs)["test_score"]

        return forward

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """The regression's coefficients from their priors."""
        from numpyro.infer import Predictive

        inputs = {**problem.inputs, "test_score": None}
        out = Predictive(self.model_function(problem), num_samples=n)(key, **inputs)
        return {k: np.asarray(v) for k, v in out.items() if k != "test_score"}

    def prior_variances(self, design: Design, names) -> dict[str, float]:
        return {name: NAIVE_COEFFICIENT_SD**2 for name in names}
