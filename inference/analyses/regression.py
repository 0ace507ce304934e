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
from classsize.model.pieces import free_class_effect_prior, pinned

from classsize.inference.analyses.base import FREE, Analysis, Problem

#: The naive regression's prior scale of every coefficient.
NAIVE_COEFFICIENT_SD = 10.0


def naive_regression(income_scaled, race, small_class, teacher_has_ma, school, n_schools, n_races,
                     covariates=None, class_covariates=None, class_of_student=None, n_classes=0,
                     class_effect_sd=None, scale=1.0, test_score=None):
    r"""What observational data give: a normal regression on the REGULAR cohort.

    .. math:: y_i \sim \mathcal N(\alpha_{k(i)} + \beta s_i + \rho_{race_i} + \delta S_i + \gamma M_i
              + x_i^\top\eta + z_{c(i)}^\top\theta + u_{c(i)},\ \sigma)

    with school fixed effects :math:`\alpha_k` (an intercept per school, as an
    econometrician adjusts for school), the first race as the reference level, class
    covariates :math:`z_c` (``class_covariates``: each student's class's) and, when
    ``class_effect_sd`` is given (a prior; a ``Delta`` pins the sd), class random
    intercepts :math:`u_c = \tau\,\epsilon_c`, :math:`\epsilon_c \sim \mathcal N(0, 1)`
    (``class_position``; the ``classes`` plate has ``n_classes`` slots), which make the
    students of one class alike instead of independent.  ``delta`` is reported as
    ``small_class_direct_effect`` and ``gamma`` as ``teacher_ma_effect``; both are
    biased, because the unobserved part of ability raises the score and the chance of
    a SMALL class at once.  ``scale`` widens the priors of score-scale quantities
    (the data's score unit against the simulation's).
    """
    sd = NAIVE_COEFFICIENT_SD * scale
    beta = numpyro.sample("log_income_weight", dist.Normal(0.0, sd))
    rho = numpyro.sample("race_effect", dist.Normal(jnp.zeros(n_races - 1), sd).to_event(1))
    rho = jnp.concatenate([jnp.zeros(1), rho])
    delta = numpyro.sample("small_class_direct_effect", dist.Normal(0.0, sd))
    gamma = numpyro.sample("teacher_ma_effect", dist.Normal(0.0, sd))
    sigma = numpyro.sample("score_sd", dist.HalfNormal(20.0 * scale))
    with numpyro.plate("schools", n_schools):
        school_intercept = numpyro.sample("school_intercept", dist.Normal(50.0, 20.0 * scale))
    mean = school_intercept[school] + beta * income_scaled + rho[race] + delta * small_class + gamma * teacher_has_ma
    for name, x in (("covariate_weights", covariates), ("class_covariate_weights", class_covariates)):
        if x is not None and x.shape[-1] > 0:
            mean = mean + x @ numpyro.sample(name, dist.Normal(jnp.zeros(x.shape[-1]), sd).to_event(1))
    if class_effect_sd is not None:
        tau = (numpyro.deterministic("class_effect_sd", class_effect_sd.v) if pinned(class_effect_sd)
               else numpyro.sample("class_effect_sd", class_effect_sd))
        with numpyro.plate("classes", n_classes):
            position = numpyro.sample("class_position", dist.Normal(0.0, 1.0))
        mean = mean + numpyro.deterministic("class_effect", tau * position)[class_of_student]
        numpyro.deterministic("intraclass_correlation", tau**2 / (tau**2 + sigma**2))
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
        own = jnp.asarray(o.class_of_student)
        inputs = dict(
            income_scaled=jnp.asarray(o.income_scaled),
            race=jnp.asarray(o.race),
            small_class=jnp.asarray(o.small_class),
            teacher_has_ma=jnp.asarray(o.teacher_has_ma)[own],
            school=jnp.asarray(o.school_of_class)[own],
            covariates=o.extra_covariates,
            class_covariates=None if o.class_covariates is None else jnp.asarray(o.class_covariates)[own],
            class_of_student=own,
            test_score=jnp.asarray(o.test_score),
        )
        static = {"n_schools": design.n_schools, "n_races": len(design.race_codes),
                  "n_classes": int(np.shape(o.class_is_small)[-1]), "scale": self.score_scale,
                  "class_effect_sd": self.class_effect_prior()}
        return Problem(self, design, None, inputs, observed, ability, static,
                       self.signature(design, "uniform", self.class_effects, self.score_scale))

    def class_effect_prior(self):
        """The prior of the class effects' sd (None: no class effects): free, the
        conditioned model's :func:`~classsize.model.pieces.free_class_effect_prior`."""
        if self.class_effects == FREE:
            return free_class_effect_prior(self.score_scale)
        if self.class_effects:
            return dist.Delta(jnp.asarray(float(self.class_effects)))
        return None

    def model_function(self, problem: Problem) -> Callable:
        return partial(naive_regression, **problem.static)

    def estimands(self, draws):
        return {name: np.asarray(draws[name]) for name in self.estimand_names}

    def estimand_of(self, intervention: Mapping[str, int]) -> str:
        """The MA is a covariate held as observed: the class-size contrast is direct."""
        return "small_class_direct_effect" if "small_class" in intervention else "teacher_ma_effect"

    def forward(self, problem, draws, key, intervention=None, classes: str = "fresh") -> dict[str, np.ndarray]:
        """Scores from the regression's likelihood for each draw, its covariates as
        observed or as ``intervention`` sets them; the class sizes are not modelled,
        so they are the observed (or the intervened) ones, and each student stays in
        her class.  With class effects, ``classes="observed"`` keeps each class's
        fitted effect under an intervention; otherwise (and in replicates) the classes
        get fresh effects from Normal(0, sd)."""
        sites = tuple(intervention or ())
        program = problem.programs.get(("forward", sites))
        if program is None:
            program = problem.programs[("forward", sites)] = self._forward_program(problem)
        fresh = not (sites and classes == "observed")
        samples = {n: jnp.asarray(v) for n, v in draws.items()
                   if n != "test_score" and not (fresh and n in ("class_position", "class_effect"))}
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
