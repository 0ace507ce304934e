r""":func:`classsize.model.class_size_experiment` conditioned on a cohort's data, or on both.

The ``structural`` and ``randomized`` analyses are this class: the same model, the
randomized one with the REGULAR cohort's assignment rule pinned (its cohort is
EXPERIMENTAL, where a coin assigned the class sizes).

**The forward model** (:meth:`ConditionedAnalysis.forward`).  For each draw the
model runs forward with the draw's parameters and school effects substituted and the
students' race, income, cohort and covariates as observed; their ability, classes,
teachers and schools are drawn anew.  Under an intervention (Pearl's do-operator,
``numpyro.handlers.do``) the arrows into the intervened sites are cut, and each
student stays in her own school: the model draws a school for every class it forms
(bookkeeping, not cause: :mod:`classsize.model.graph`), so the effect of that drawn
school is replaced by the effect of the student's own school, each draw's.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from classsize.model import class_size_experiment, default_priors
from classsize.model.design import Design
from classsize.model.noise import check_noise_ability
from classsize.model.pieces import (PARAMETERS, RACE_PARAMETERS, SCALAR_PARAMETERS, class_effects_on,
                                    free_class_effect_prior, free_noise_prior, pinned, sample_parameters)
from classsize.model.buckets import bucket, pad_class_slots
from classsize.model.pilot import padded_alike, pilot_estimates

from classsize.inference.analyses.base import FREE, Analysis, Problem
from classsize.inference.analyses.quantities import element_of, moments
from classsize.inference.data.checks import DataError
from classsize.inference.data.dataset import LoadedData
from classsize.inference.engine.programs import stored_jit

ESTIMANDS = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")

#: Parameters of the REGULAR cohort's assignment rule (no information without that cohort).
ASSIGNMENT_PARAMETERS = (
    "regular_small_intercept",
    "regular_small_income",
    "regular_small_ability",
    "regular_small_race_shift",
)
#: The sites a forward run substitutes from the draws.
FORWARD_SITES = PARAMETERS + ("school_effect", "extra_covariate_weights", "class_covariate_weights",
                              "class_effect_sd")
#: How the classes of a forward run get their class effects: ``"fresh"`` draws each
#: newly formed class's effect from Normal(0, sd) (the population effect: new classes,
#: new teachers); ``"observed"`` keeps each student's observed class's effect, each
#: draw's (the effect on these students with their own teachers).
CLASS_EFFECT_WORLDS = ("fresh", "observed")


def _pin(priors: dict, names, value: float = 0.0) -> dict:
    out = dict(priors)
    for name in names:
        shape = priors[name].event_shape
        out[name] = dist.Delta(jnp.full(shape, value), event_dim=len(shape))
    return out


@dataclasses.dataclass(frozen=True)
class ConditionedAnalysis(Analysis):
    """:func:`classsize.model.class_size_experiment` conditioned on a cohort's data (or both)."""

    #: pin the assignment rule (its cohort has no REGULAR students, or assignment is ignorable)
    pin_assignment: bool = False
    #: the scores' measurement-noise sd: ``None`` pins it to the configuration's
    #: ``score_noise_sd`` (a fitted folder's is 0 unless its dataset.json gives
    #: ``score_noise_sd``), a number pins it there, ``"free"`` samples it
    #: (prior :func:`~classsize.model.pieces.free_noise_prior`); see :meth:`with_score_noise`
    score_noise: float | str | None = None
    #: the students' data its likelihood explains (a student's pointwise log likelihood
    #: is their joint); the rest of the data is what it conditions on
    modeled_data: ClassVar[tuple[str, ...]] = ("small_class", "test_score")

    def with_score_noise(self, score_noise: float | str | None) -> "ConditionedAnalysis":
        """This analysis with the scores' measurement noise pinned to ``score_noise``
        (a number >= 0), sampled (``"free"``), or taken from the configuration (None)."""
        ok = score_noise is None or score_noise == "free" or (
            isinstance(score_noise, (int, float)) and not isinstance(score_noise, bool)
            and np.isfinite(score_noise) and score_noise >= 0)
        if not ok:
            raise ValueError(f"score_noise must be a number >= 0, 'free' or None (got {score_noise!r})")
        return dataclasses.replace(self, score_noise=score_noise)

    def knowing(self, config) -> "ConditionedAnalysis":
        """As :meth:`Analysis.knowing`; and the scores' noise sd, when the analysis
        leaves it open, is the simulation's: ``config.score_noise_sd``."""
        out = super().knowing(config)
        if out.score_noise is None and config.score_noise_sd != 0:
            return out.with_score_noise(config.score_noise_sd)
        return out

    def unfittable_schools(self, observed, n_schools: int) -> np.ndarray:
        """How many schools of each stacked dataset hold no students: the uniform
        ability's per-school extremes then do not exist."""
        school = np.take_along_axis(np.asarray(observed.school_of_class), np.asarray(observed.class_of_student),
                                    axis=1)
        out = np.empty(school.shape[0], dtype=np.int64)
        for i, s in enumerate(school):
            out[i] = int(np.sum(np.bincount(s, minlength=n_schools)[:n_schools] == 0))
        return out

    # ------------------------------------------------------------- binding data
    def problem(self, data: LoadedData, ability: str = "uniform") -> Problem:
        """This analysis bound to a loaded dataset; a ``score_noise_sd`` in its
        dataset.json (a number or ``"free"``) sets the noise unless the analysis does."""
        declared = data.metadata.get("score_noise_sd")
        if self.score_noise is not None:
            check_noise_ability(self.score_noise != 0, ability)
            return super().problem(data, ability)
        if declared is None:
            return super().problem(data, ability)
        where = Path(data.source) / data.metadata.get("score_noise_source", "dataset.json")
        try:
            spec = self.with_score_noise(declared)
        except ValueError:
            raise DataError(where, f"must be a number >= 0 or 'free' (got {declared!r})", key="score_noise_sd") from None
        try:
            check_noise_ability(declared != 0, ability)
        except ValueError as e:
            raise DataError(where, str(e), key="score_noise_sd") from None
        return Analysis.problem(spec, data, ability)

    def priors(self, design: Design, *, has_regular: bool = True, has_income: bool = True) -> dict:
        """:func:`~classsize.model.pieces.default_priors` on the data's score scale, with
        the scores' noise and the class effects' sd as the analysis sets them (free: the
        priors :func:`~classsize.model.pieces.free_noise_prior` and
        :func:`~classsize.model.pieces.free_class_effect_prior`) and the assignment rule
        (or the income weight) pinned where the data cannot inform it."""
        priors = default_priors(design, score_scale=self.score_scale)
        if self.score_noise == "free":
            priors["score_noise_sd"] = free_noise_prior(self.score_scale)
        elif self.score_noise is not None:
            priors["score_noise_sd"] = dist.Delta(jnp.asarray(float(self.score_noise)))
        if self.class_effects == FREE:
            priors["class_effect_sd"] = free_class_effect_prior(self.score_scale)
        elif self.class_effects is not None:
            priors["class_effect_sd"] = dist.Delta(jnp.asarray(float(self.class_effects)))
        if self.pin_assignment or not has_regular or design.n_regular == 0:
            priors = _pin(priors, ASSIGNMENT_PARAMETERS)
        if not has_income:
            priors = _pin(priors, ["ability_income_weight"])
        return priors

    def bind(self, design, observed, ability="uniform", *, has_regular=True, has_income=True) -> Problem:
        """The problem of one dataset; the sampler's copy of the data has its class slots
        padded to their bucket (:mod:`classsize.model.buckets`) unless the model has class
        effects (a padded slot would add a class-effect coordinate)."""
        priors = self.priors(design, has_regular=has_regular, has_income=has_income)
        observed = jax.tree.map(jnp.asarray, observed)
        sampled = observed
        if not class_effects_on(priors):
            sampled = pad_class_slots(observed, bucket(np.shape(observed.class_used)[-1]))
        pilot = pilot_estimates(design, priors, sampled, ability)
        return Problem(self, design, priors, {"data": sampled, "pilot": pilot}, observed, ability,
                       signature=self.signature(design, ability, has_regular, has_income, self.score_noise,
                                                self.class_effects, self.score_scale))

    def stack(self, problems: list[Problem]) -> Problem:
        pilots = padded_alike([p.inputs["pilot"] for p in problems])
        problems = [dataclasses.replace(p, inputs={**p.inputs, "pilot": pilot}) for p, pilot in zip(problems, pilots)]
        return super().stack(problems)

    # ------------------------------------------------------------------- model
    def model_function(self, problem: Problem) -> Callable:
        return partial(class_size_experiment, problem.design, problem.priors, ability=problem.ability)

    def estimands(self, draws):
        direct = np.asarray(draws["small_class_direct_effect"])
        ma = np.asarray(draws["teacher_ma_effect"])
        diff = np.asarray(draws["p_ma_small"]) - np.asarray(draws["p_ma_large"])
        return {
            "small_class_direct_effect": direct,
            "small_class_total_effect": direct + ma * diff,
            "teacher_ma_effect": ma,
        }

    def estimand_of(self, intervention: Mapping[str, int]) -> str:
        """The model draws each class's MA from its size, so setting the class size alone
        moves the MA too (the total effect); holding the MA gives the direct effect."""
        if "small_class" not in intervention:
            return "teacher_ma_effect"
        return "small_class_direct_effect" if "teacher_has_ma" in intervention else "small_class_total_effect"

    def forward(self, problem, draws, key, intervention=None, classes: str = "fresh") -> dict[str, np.ndarray]:
        """The forward model (module docstring) for each draw, students in the order of
        ``problem.observed``; each student's class covariates are her observed class's.
        With class effects, ``classes`` (:data:`CLASS_EFFECT_WORLDS`) says which effect
        the class a student is placed in has under an intervention: a fresh draw
        (``"fresh"``) or her observed class's (``"observed"``); replicates (no
        intervention) always draw fresh ones, as the model makes data."""
        if classes not in CLASS_EFFECT_WORLDS:
            raise ValueError(f"classes must be one of {', '.join(CLASS_EFFECT_WORLDS)} (got {classes!r})")
        obs = problem.observed
        experimental = np.asarray(obs.is_experimental).astype(bool)
        order = np.argsort(experimental, kind="stable")  # the model's order: REGULAR first
        n_regular = int(np.sum(~experimental))
        design = problem.design.replace(n_regular=n_regular, n_experimental=len(order) - n_regular)
        lo, hi = np.log(design.income_min), np.log(design.income_max)
        income = np.exp(lo + np.asarray(obs.income_scaled) * (hi - lo))
        own_class = np.asarray(obs.class_of_student)[order]
        covariates = None if obs.extra_covariates is None else jnp.asarray(np.asarray(obs.extra_covariates)[order])
        class_covariates = (None if obs.class_covariates is None
                            else jnp.asarray(np.asarray(obs.class_covariates)[own_class]))
        samples = {n: jnp.asarray(draws[n]) for n in FORWARD_SITES if n in draws}
        data = (jnp.asarray(np.asarray(obs.race)[order]), jnp.asarray(income[order]), covariates, class_covariates)
        sites = tuple(intervention or ())
        observed_classes = bool(sites) and classes == "observed" and "class_effect" in draws
        program = problem.programs.get(("forward", sites, observed_classes))
        if program is None:
            program = _forward_program(problem, design, sites, observed_classes)
            problem.programs[("forward", sites, observed_classes)] = program
        if not sites:
            out = program(key, samples, *data)
        else:
            school = np.asarray(obs.school_of_class)[np.asarray(obs.class_of_student)][order]
            own_effect = (jnp.asarray(np.asarray(draws["class_effect"])[:, own_class]) if observed_classes
                          else None)
            values = {k: jnp.int32(v) for k, v in intervention.items()}
            out = program(key, samples, *data, jnp.asarray(school), own_effect, values)
        back = np.argsort(order)
        return {k: np.asarray(v)[:, back] for k, v in out.items()}

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """The structural parameters, the school effects and the class effects' sd from
        the priors (the class effects themselves the forward model draws)."""
        return {k: np.asarray(v) for k, v in self._prior_program(problem, n)(key).items()}

    def prior_sampler(self, problem: Problem, key, n: int):
        """:meth:`prior_draws` of ``key`` and ``n`` as a function of nothing, its stored
        program loaded or traced now, so that another thread can compile and run it (None
        with the compilation cache off)."""
        program = self._prior_program(problem, n).prepare(key)
        if program is None:
            return None
        return lambda: {k: np.asarray(v) for k, v in program(key).items()}

    def _prior_program(self, problem: Problem, n: int):
        """One compiled program of ``n`` prior draws (not the sites one by one), stored."""
        from numpyro.infer import Predictive

        priors, n_schools = problem.priors, problem.design.n_schools

        def parameters():
            p = sample_parameters(priors)
            with numpyro.plate("schools", n_schools):
                numpyro.sample("school_effect", dist.Uniform(-p["school_effect_range"], p["school_effect_range"]))
            if class_effects_on(priors):
                numpyro.sample("class_effect_sd", priors["class_effect_sd"])

        program = problem.programs.get(("prior", n))
        if program is None:
            program = problem.programs[("prior", n)] = stored_jit(Predictive(parameters, num_samples=n),
                                                                  "prior", problem.signature, n)
        return program

    # ----------------------------------------------------------------- studies
    def study_quantities(self, design: Design, sbc: bool) -> tuple[str, ...]:
        """The estimands, and for SBC every structural parameter the analysis samples,
        a vector one element by element: each scalar parameter (and the class effects'
        sd when it is free), then ``race_probs[i]``
        and ``regular_small_race_shift[i]`` for race ``design.race_codes[i]``, and
        ``school_effect[k]`` for school ``k`` (see
        :func:`~classsize.inference.analyses.quantities.quantity_draws`)."""
        if not sbc:
            return self.estimand_names
        priors = self.priors(design)

        def sampled(name):
            return name in priors and not pinned(priors[name])

        extra = [p for p in SCALAR_PARAMETERS + ("class_effect_sd",) if sampled(p) and p not in self.estimand_names]
        extra += [f"{p}[{i}]" for p in RACE_PARAMETERS if sampled(p) for i in range(len(design.race_codes))]
        if "school_effect_range" in priors:  # the model draws an effect per school
            extra += [f"school_effect[{k}]" for k in range(design.n_schools)]
        return self.estimand_names + tuple(extra)

    def prior_variances(self, design: Design, names) -> dict[str, float]:
        """Prior variance of each quantity (exact: the parameters are independent a priori,
        ``total = direct + ma * (p_ma_small - p_ma_large)``, and a school effect is
        uniform on ``[-R, R]`` given the range ``R``, so its variance is ``E[R^2] / 3``)."""
        priors = self.priors(design)
        out = {}
        for name in names:
            site, index = element_of(name)
            if site == "school_effect":
                mean_r, var_r = moments(priors["school_effect_range"])
                out[name] = (var_r + mean_r**2) / 3.0
                continue
            if index is not None:
                out[name] = moments(priors[site], index)[1]
                continue
            if name == "small_class_total_effect":
                _, var_d = moments(priors["small_class_direct_effect"])
                mean_m, var_m = moments(priors["teacher_ma_effect"])
                mean_s, var_s = moments(priors["p_ma_small"])
                mean_l, var_l = moments(priors["p_ma_large"])
                mean_diff = mean_s - mean_l
                second_diff = var_s + var_l + mean_diff**2
                out[name] = var_d + (var_m + mean_m**2) * second_diff - (mean_m * mean_diff) ** 2
            else:
                out[name] = moments(priors[name])[1]
        return out


def _forward_program(problem: Problem, design: Design, sites: tuple[str, ...], observed_classes: bool = False):
    """The jitted forward run of ``problem`` with the do-operator on ``sites`` (none:
    the replicates), the intervened values its traced arguments; with
    ``observed_classes`` each student's score carries her observed class's effect
    instead of the drawn class's."""
    from numpyro import handlers
    from numpyro.infer import Predictive

    def predictive(model, samples, return_sites):
        return Predictive(model, posterior_samples=samples, return_sites=return_sites, parallel=True)

    def run(model, samples, returned, key, covariates, class_covariates):
        return predictive(model, samples, returned)(key, design, problem.priors, ability=problem.ability,
                                                    covariates=covariates, class_covariates=class_covariates)

    if not sites:
        def replicate(key, samples, race, income, covariates, class_covariates):
            model = handlers.condition(class_size_experiment, {"race": race, "family_income": income})
            return run(model, samples, ["small_class", "test_score"], key, covariates, class_covariates)

        # stored: a later process of the same design loads it instead of tracing the model
        return stored_jit(replicate, "replicate", problem.signature, design.design)

    sizes = {"small_class": design.n_students,
             "teacher_has_ma": design.max_small_classes + design.max_large_classes}
    returned = ["test_score", "small_class", "class_of_student", "school", "school_effect", "score_school_weight"]
    if observed_classes:
        returned.append("class_effect")

    @jax.jit
    def world(key, samples, race, income, covariates, class_covariates, school, own_effect, values):
        fixed = {k: jnp.full(sizes[k], v, dtype=jnp.int32) for k, v in values.items()}
        model = handlers.do(handlers.condition(class_size_experiment, {"race": race, "family_income": income}), fixed)
        out = run(model, samples, returned, key, covariates, class_covariates)
        # each student stays in her own school: swap the drawn class school's effect for hers
        drawn = jnp.take_along_axis(out["school"], out["class_of_student"], axis=1)
        effect = out["school_effect"]
        own = effect[:, school] - jnp.take_along_axis(effect, drawn, axis=1)
        score = out["test_score"] + jnp.reshape(out["score_school_weight"], (-1, 1)) * own
        if observed_classes:  # and keeps her own class's effect
            score = score + own_effect - jnp.take_along_axis(out["class_effect"], out["class_of_student"], axis=1)
        small = (jnp.broadcast_to(values["small_class"], score.shape) if "small_class" in values
                 else out["small_class"])
        return {"test_score": score, "small_class": small}

    return world
