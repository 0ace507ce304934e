r"""The analyses: one object each, entries of one registry (:data:`ANALYSES`).

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

An :class:`Analysis` knows its cohort, its priors, its NUTS settings, its estimands,
how to replicate data from its posterior and its InferenceData dims.  Bound to one
dataset it gives a :class:`Problem`: the model function and the arrays it is fitted
to, which :mod:`classsize.inference.engine.sampling` runs.  Adding an analysis means adding
one entry to :data:`ANALYSES`; no other module branches on an analysis's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from classsize.model import Config, Observed, class_size_experiment, default_priors
from classsize.model.conditioned import NUTS_SETTINGS
from classsize.model.pieces import (
    PARAMETERS,
    RACE_PARAMETERS,
    SCALAR_PARAMETERS,
    free_noise_prior,
    pinned,
    sample_parameters,
)
from classsize.model.pilot import padded_alike, pilot_estimates

from classsize.inference.data.read import DataError, LoadedData
from classsize.inference.analyses.regression import NAIVE_COEFFICIENT_SD, naive_regression

ESTIMANDS = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")

#: Parameters of the REGULAR cohort's assignment rule (no information without that cohort).
ASSIGNMENT_PARAMETERS = (
    "regular_small_intercept",
    "regular_small_income",
    "regular_small_ability",
    "regular_small_race_shift",
)


@dataclass
class Problem:
    """An analysis bound to one dataset (or a stack of datasets of one shape).

    ``model(**inputs)`` is the NumPyro model; ``inputs`` are its array arguments (a
    pytree, stacked along a leading axis for a batch), ``observed`` the encoded data.
    """

    analysis: "Analysis"
    config: Config
    priors: dict | None
    inputs: dict
    observed: Observed
    ability: str = "uniform"
    static: dict = field(default_factory=dict)
    #: what the compiled program depends on besides the arrays' shapes
    signature: tuple = ()
    #: the dataset it was bound to (its ids label the InferenceData); None for studies
    data: LoadedData | None = None

    @property
    def name(self) -> str:
        return self.analysis.name

    @property
    def n_students(self) -> int:
        return int(np.shape(self.observed.test_score)[-1])

    def model(self, **inputs):
        return self.analysis.model_function(self)(**inputs)

    def kernel(self):
        from numpyro.infer import NUTS

        return NUTS(self.model, **self.analysis.kernel_settings)

    def estimands(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.analysis.estimands(draws)


def _stack(trees):
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


@dataclass(frozen=True)
class Analysis:
    """What every analysis has; subclasses say how its model is built."""

    name: str
    cohort: str | None  # None: both cohorts
    description: str
    estimand_names: tuple[str, ...]
    kernel_settings: Mapping[str, Any]
    #: whether data can be simulated from its priors (simulation-based calibration)
    generative: bool = True
    #: whether every school must hold students of its cohort (the uniform ability's
    #: per-school extremes must exist)
    needs_every_school: bool = True
    #: what a coverage study's verdict adds when coverage holds, and when it fails
    coverage_note: tuple[str, str] | None = None
    #: whether the model has a measurement-noise sd for the scores (see
    #: :meth:`ConditionedAnalysis.with_score_noise`)
    fits_score_noise: ClassVar[bool] = False

    def with_score_noise(self, score_noise: float | str | None) -> "Analysis":
        """This analysis with the scores' measurement noise set: refused (ValueError)
        by a model without a noise parameter."""
        raise ValueError(f"the {self.name} analysis has no measurement-noise parameter (its residual sd "
                         f"absorbs the noise)")

    def check_design(self, config: Config, sbc: bool) -> None:
        """Raise ValueError (one line) when a study of ``config`` cannot use this analysis."""
        if sbc and not self.generative:
            raise ValueError(f"--from-prior needs an analysis with a generative prior; the {self.name} analysis "
                             "has no generative prior of the data (use a fixed truth: the default Config or "
                             "--config FILE)")
        cohort_size = {"REGULAR": config.n_regular, "EXPERIMENTAL": config.n_experimental}
        if self.cohort is not None and cohort_size[self.cohort] == 0:
            raise ValueError(f"the {self.name} analysis needs {self.cohort} students "
                             f"(n_{self.cohort.lower()} > 0)")

    # ------------------------------------------------------------- binding data
    def check(self, data: LoadedData) -> None:
        """Raise :class:`DataError` (one line) when ``data`` cannot support the analysis."""
        if self.cohort is not None and not (data.students["cohort"] == self.cohort).any():
            raise DataError(Path(data.source) / "students.csv",
                            f"the {self.name} analysis needs {self.cohort} students; the data have none",
                            column="cohort")

    def fit_config(self, data: LoadedData) -> Config:
        """The design a fit needs: the data's schools and race coding; income units of the notebook."""
        race_codes = data.race_coding(Config())
        n = len(race_codes)
        return Config(n_schools=len(data.school_ids_in(self.cohort)), race_codes=race_codes,
                      race_probs=tuple([1.0 / n] * n), regular_small_race_shift={})

    def problem(self, data: LoadedData, ability: str = "uniform") -> Problem:
        """This analysis bound to a loaded dataset."""
        self.check(data)
        config = self.fit_config(data)
        observed = data.observed(config, cohort=self.cohort)
        has_regular = bool(np.any(~np.asarray(observed.is_experimental)))
        problem = self.bind(config, observed, ability, has_regular=has_regular, has_income=data.has_income)
        return dataclasses.replace(problem, data=data)

    def bind(self, config: Config, observed: Observed, ability: str = "uniform", *, has_regular: bool = True,
             has_income: bool = True) -> Problem:
        raise NotImplementedError

    def bind_many(self, config: Config, observed: Observed, ability: str = "uniform") -> Problem:
        """A problem for a stack of datasets of one shape (leading axis), as studies fit them."""
        n = int(np.shape(observed.test_score)[0])
        ones = [self.bind(config, jax.tree.map(lambda a: np.asarray(a)[i], observed), ability)
                for i in range(n)]
        return self.stack(ones)

    def stack(self, problems: list[Problem]) -> Problem:
        first = problems[0]
        inputs = _stack([p.inputs for p in problems])
        return Problem(self, first.config, first.priors, inputs, _stack([p.observed for p in problems]),
                       first.ability, first.static, first.signature)

    # ------------------------------------------------------------------- model
    def priors(self, config: Config, *, has_regular: bool = True, has_income: bool = True) -> dict | None:
        """The priors of the model's structural parameters (None: the model has its own)."""
        return None

    def model_function(self, problem: Problem) -> Callable:
        raise NotImplementedError

    def estimands(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def replicate(self, problem: Problem, draws: Mapping[str, np.ndarray], key) -> dict[str, np.ndarray]:
        """Replicated ``test_score`` and ``small_class`` for each draw, ``(draws, students)``."""
        raise NotImplementedError

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """``n`` draws of the model's parameters from its prior, each ``(n, ...)``, under
        the names of the posterior's sites (so :meth:`replicate` turns them into the
        prior predictive)."""
        raise NotImplementedError

    def study_quantities(self, config: Config, sbc: bool) -> tuple[str, ...]:
        """What a recovery study checks: the estimands, and for SBC every structural
        parameter the analysis samples, a vector one element by element: each scalar
        parameter, then ``race_probs[i]`` and ``regular_small_race_shift[i]`` for race
        ``config.race_codes[i]``, and ``school_effect[k]`` for school ``k`` (see
        :func:`quantity_draws`)."""
        if not sbc:
            return self.estimand_names
        priors = self.priors(config) or {}

        def sampled(name):
            return name in priors and not pinned(priors[name])

        extra = [p for p in SCALAR_PARAMETERS if sampled(p) and p not in self.estimand_names]
        extra += [f"{p}[{i}]" for p in RACE_PARAMETERS if sampled(p) for i in range(len(config.race_codes))]
        if "school_effect_range" in priors:  # the model draws an effect per school
            extra += [f"school_effect[{k}]" for k in range(config.n_schools)]
        return self.estimand_names + tuple(extra)

    def prior_variances(self, config: Config, names) -> dict[str, float]:
        raise NotImplementedError


def _pin(priors: dict, names, value: float = 0.0) -> dict:
    out = dict(priors)
    for name in names:
        shape = priors[name].event_shape
        out[name] = dist.Delta(jnp.full(shape, value), event_dim=len(shape))
    return out


def _moments(d, index: int | None = None) -> tuple[float, float]:
    """Mean and variance of a prior, or of its element ``index`` (a vector prior)."""
    mean, var = np.asarray(d.mean), np.asarray(d.variance)
    if index is not None:
        mean, var = mean[..., index], var[..., index]
    return float(mean), float(var)


def element_of(name: str) -> tuple[str, int | None]:
    """``("race_probs", 2)`` for the quantity ``"race_probs[2]"``; ``(name, None)`` for a
    quantity that is not an element of a vector site."""
    if name.endswith("]") and "[" in name:
        site, index = name[:-1].split("[", 1)
        return site, int(index)
    return name, None


def quantity_label(name: str, config: Config) -> str:
    """The name a study's tables and plots give the quantity ``name``: an element of a
    vector site labelled as the data label it, ``race_probs[WHITE]`` for
    ``race_probs[0]`` (the race codes) and ``school_effect[9001]`` for
    ``school_effect[0]`` (the school ids, :data:`~classsize.model.format.FIRST_SCHOOL_ID` + k)."""
    from classsize.model.format import FIRST_SCHOOL_ID

    site, index = element_of(name)
    if index is None:
        return name
    label = FIRST_SCHOOL_ID + index if site == "school_effect" else config.race_codes[index]
    return f"{site}[{label}]"


def quantity_draws(draws: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The draws of a site, or of element ``i`` (its last axis) of a vector site for a
    quantity named ``site[i]``."""
    site, index = element_of(name)
    v = np.asarray(draws[site])
    return v if index is None else v[..., index]


@dataclass(frozen=True)
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
    fits_score_noise: ClassVar[bool] = True

    def with_score_noise(self, score_noise: float | str | None) -> "ConditionedAnalysis":
        """This analysis with the scores' measurement noise pinned to ``score_noise``
        (a number >= 0), sampled (``"free"``), or taken from the configuration (None)."""
        ok = score_noise is None or score_noise == "free" or (
            isinstance(score_noise, (int, float)) and not isinstance(score_noise, bool)
            and np.isfinite(score_noise) and score_noise >= 0)
        if not ok:
            raise ValueError(f"score_noise must be a number >= 0, 'free' or None (got {score_noise!r})")
        return dataclasses.replace(self, score_noise=score_noise)

    def problem(self, data: LoadedData, ability: str = "uniform") -> Problem:
        """This analysis bound to a loaded dataset; a ``score_noise_sd`` in its
        dataset.json (a number or ``"free"``) sets the noise unless the analysis does."""
        declared = data.metadata.get("score_noise_sd")
        if self.score_noise is not None:
            if self.score_noise != 0 and ability != "uniform":
                raise ValueError(f"scores with measurement noise are fitted with uniform ability only "
                                 f"(ability is {ability!r})")
            return super().problem(data, ability)
        if declared is None:
            return super().problem(data, ability)
        where = Path(data.source) / data.metadata.get("score_noise_source", "dataset.json")
        try:
            spec = self.with_score_noise(declared)
        except ValueError:
            raise DataError(where, f"must be a number >= 0 or 'free' (got {declared!r})", key="score_noise_sd") from None
        if declared != 0 and ability != "uniform":
            raise DataError(where, f"scores with measurement noise are fitted with uniform ability only "
                            f"(ability is {ability!r})", key="score_noise_sd")
        return Analysis.problem(spec, data, ability)

    def priors(self, config: Config, *, has_regular: bool = True, has_income: bool = True) -> dict:
        priors = default_priors(config)
        if self.score_noise == "free":
            priors["score_noise_sd"] = free_noise_prior()
        elif self.score_noise is not None:
            priors["score_noise_sd"] = dist.Delta(jnp.asarray(float(self.score_noise)))
        if self.pin_assignment or not has_regular or config.n_regular == 0:
            priors = _pin(priors, ASSIGNMENT_PARAMETERS)
        if not has_income:
            priors = _pin(priors, ["ability_income_weight"])
        return priors

    def bind(self, config, observed, ability="uniform", *, has_regular=True, has_income=True) -> Problem:
        priors = self.priors(config, has_regular=has_regular, has_income=has_income)
        observed = jax.tree.map(jnp.asarray, observed)
        pilot = pilot_estimates(config, priors, observed, ability)
        return Problem(self, config, priors, {"data": observed, "pilot": pilot}, observed, ability,
                       signature=(self.name, config, ability, has_regular, has_income, self.score_noise))

    def stack(self, problems: list[Problem]) -> Problem:
        pilots = padded_alike([p.inputs["pilot"] for p in problems])
        problems = [dataclasses.replace(p, inputs={**p.inputs, "pilot": pilot}) for p, pilot in zip(problems, pilots)]
        return super().stack(problems)

    def model_function(self, problem: Problem) -> Callable:
        return partial(class_size_experiment, problem.config, problem.priors, ability=problem.ability)

    def replicate(self, problem: Problem, draws: Mapping[str, np.ndarray], key) -> dict[str, np.ndarray]:
        """Replicated class sizes and scores of the observed students, ``(draws, students)``:
        the forward model run with each posterior draw's parameters and school effects
        substituted and the students' race, income, cohort and covariates as observed
        (their classes, teachers and schools drawn anew)."""
        from numpyro import handlers
        from numpyro.infer import Predictive

        obs = problem.observed
        experimental = np.asarray(obs.is_experimental)
        order = np.argsort(experimental, kind="stable")  # the model's order: REGULAR first
        n_regular = int(np.sum(~experimental))
        config = problem.config.replace(n_regular=n_regular, n_experimental=len(order) - n_regular)
        lo, hi = np.log(config.income_min), np.log(config.income_max)
        income = np.exp(lo + np.asarray(obs.income_scaled) * (hi - lo))
        covariates = None if obs.extra_covariates is None else jnp.asarray(np.asarray(obs.extra_covariates)[order])
        names = [n for n in PARAMETERS + ("school_effect", "extra_covariate_weights") if n in draws]

        @jax.jit
        def forward(key, samples, race, income, covariates):
            model = handlers.condition(class_size_experiment, {"race": race, "family_income": income})
            predictive = Predictive(model, posterior_samples=samples, return_sites=["small_class", "test_score"],
                                    parallel=True)
            return predictive(key, config, problem.priors, ability=problem.ability, covariates=covariates)

        out = forward(key, {n: jnp.asarray(draws[n]) for n in names}, jnp.asarray(np.asarray(obs.race)[order]),
                      jnp.asarray(income[order]), covariates)
        back = np.argsort(order)
        return {"test_score": np.asarray(out["test_score"])[:, back].astype(np.float32),
                "small_class": np.asarray(out["small_class"])[:, back].astype(np.int8)}

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """The structural parameters and the school effects from the priors (the
        forward model's first and last sample sites)."""
        from numpyro.infer import Predictive

        priors, n_schools = problem.priors, problem.config.n_schools

        def parameters():
            p = sample_parameters(priors)
            with numpyro.plate("schools", n_schools):
                numpyro.sample("school_effect", dist.Uniform(-p["school_effect_range"], p["school_effect_range"]))

        out = Predictive(parameters, num_samples=n)(key)
        return {k: np.asarray(v) for k, v in out.items()}

    def estimands(self, draws):
        direct = np.asarray(draws["small_class_direct_effect"])
        ma = np.asarray(draws["teacher_ma_effect"])
        diff = np.asarray(draws["p_ma_small"]) - np.asarray(draws["p_ma_large"])
        return {
            "small_class_direct_effect": direct,
            "small_class_total_effect": direct + ma * diff,
            "teacher_ma_effect": ma,
        }

    def prior_variances(self, config: Config, names) -> dict[str, float]:
        """Prior variance of each quantity (exact: the parameters are independent a priori,
        ``total = direct + ma * (p_ma_small - p_ma_large)``, and a school effect is
        uniform on ``[-R, R]`` given the range ``R``, so its variance is ``E[R^2] / 3``)."""
        priors = self.priors(config)
        out = {}
        for name in names:
            site, index = element_of(name)
            if site == "school_effect":
                mean_r, var_r = _moments(priors["school_effect_range"])
                out[name] = (var_r + mean_r**2) / 3.0
                continue
            if index is not None:
                out[name] = _moments(priors[site], index)[1]
                continue
            if name == "small_class_total_effect":
                _, var_d = _moments(priors["small_class_direct_effect"])
                mean_m, var_m = _moments(priors["teacher_ma_effect"])
                mean_s, var_s = _moments(priors["p_ma_small"])
                mean_l, var_l = _moments(priors["p_ma_large"])
                mean_diff = mean_s - mean_l
                second_diff = var_s + var_l + mean_diff**2
                out[name] = var_d + (var_m + mean_m**2) * second_diff - (mean_m * mean_diff) ** 2
            else:
                out[name] = _moments(priors[name])[1]
        return out


# ------------------------------------------------------------------------ naive
@dataclass(frozen=True)
class RegressionAnalysis(Analysis):
    """:func:`naive_regression` on one cohort's data."""

    #: the regression explains the scores; class sizes are its covariates
    modeled_data: ClassVar[tuple[str, ...]] = ("test_score",)

    def bind(self, config, observed, ability="uniform", *, has_regular=True, has_income=True) -> Problem:
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
        static = {"n_schools": config.n_schools, "n_races": len(config.race_codes)}
        return Problem(self, config, None, inputs, observed, ability, static, (self.name, config))

    def model_function(self, problem: Problem) -> Callable:
        return partial(naive_regression, **problem.static)

    def replicate(self, problem: Problem, draws: Mapping[str, np.ndarray], key) -> dict[str, np.ndarray]:
        """Replicated scores from the regression's likelihood, the observed class sizes kept."""
        from numpyro.infer import Predictive

        inputs = {**problem.inputs, "test_score": None}
        names = [n for n in draws if n != "test_score"]

        @jax.jit
        def forward(key, samples, inputs):
            predictive = Predictive(self.model_function(problem), posterior_samples=samples,
                                    return_sites=["test_score"], parallel=True)
            return predictive(key, **inputs)["test_score"]

        score = np.asarray(forward(key, {n: jnp.asarray(draws[n]) for n in names}, inputs), dtype=np.float32)
        small = np.broadcast_to(np.asarray(problem.observed.small_class, np.int8), score.shape)
        return {"test_score": score, "small_class": small}

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """The regression's coefficients from their priors."""
        from numpyro.infer import Predictive

        inputs = {**problem.inputs, "test_score": None}
        out = Predictive(self.model_function(problem), num_samples=n)(key, **inputs)
        return {k: np.asarray(v) for k, v in out.items() if k != "test_score"}

    def estimands(self, draws):
        return {name: np.asarray(draws[name]) for name in self.estimand_names}

    def prior_variances(self, config: Config, names) -> dict[str, float]:
        return {name: NAIVE_COEFFICIENT_SD**2 for name in names}


#: The registry: every analysis by name.
ANALYSES: dict[str, Analysis] = {
    "structural": ConditionedAnalysis(
        "structural", None, "the full process, both cohorts, ability latent (marginalised)",
        ESTIMANDS, NUTS_SETTINGS),
    "randomized": ConditionedAnalysis(
        "randomized", "EXPERIMENTAL", "the outcome model on the EXPERIMENTAL cohort (assignment ignorable)",
        ESTIMANDS, NUTS_SETTINGS, pin_assignment=True),
    "naive": RegressionAnalysis(
        "naive", "REGULAR", "normal regression on the REGULAR cohort adjusting for log income, race, school, MA",
        ("small_class_direct_effect", "teacher_ma_effect"), {}, generative=False, needs_every_school=False,
        coverage_note=(
            "naive: coverage holds at this truth: here assignment does not depend on the unobserved\n"
            "  ability enough to bias the regression",
            "naive: fails, as expected: in the REGULAR cohort the unobserved part of ability raises\n"
            "  both the score and the chance of a SMALL class, so the regression is confounded\n"
            "  (see the bias above)")),
}


def get_analysis(name: str | Analysis) -> Analysis:
    """The analysis called ``name`` (an :class:`Analysis` is returned as it is)."""
    if isinstance(name, Analysis):
        return name
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    return ANALYSES[name]


def build_analysis(name: str, data: LoadedData, ability: str = "uniform") -> Problem:
    """The analysis ``name`` bound to a loaded dataset."""
    return get_analysis(name).problem(data, ability)
