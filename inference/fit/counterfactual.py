r"""Counterfactuals from a fitted model: posterior predictive scores under an intervention.

``result.do(small_class=1)`` (:func:`intervene`) answers "what would the scores be if
every student were put in a SMALL class?" from a fit.  For each posterior draw the
analysis's model is run forward with the draw's parameters (and school effects)
substituted and Pearl's do-operator applied to the intervened sites
(``numpyro.handlers.do``): the arrows into them are cut, everything downstream
follows.  The same is done for the **baseline**, the opposite value of the
contrasted site with every other intervention unchanged, with the same random
numbers, and the difference of the two worlds' mean scores, one value per draw, is
the posterior of the **average effect** of the intervention.

What is held and what is drawn, for the analyses that condition the class-size model
(``structural``, ``randomized``):

* each student's race and family income (and further covariates, e.g. free lunch) are
  the observed ones;
* the unobserved part of her ability is drawn from its distribution (an interventional
  question about these students, not a statement about one student's own
  ability);
* classes are formed anew from the intervened class sizes, and each class's teacher's
  master's degree (MA) is drawn as the model draws it.  So ``do(small_class=1)`` lets
  the MA follow the class size (the **total** effect), and
  ``do(small_class=1, teacher_has_ma=m)`` holds it (the **direct** effect);
* each student stays in her own school.  The model draws a school for every class it
  forms (an arrow from the class size to the school that is bookkeeping, not cause:
  :mod:`classsize.model.graph`), so the effect of that drawn school is replaced by the
  effect of the student's own school, each posterior draw's.

The ``naive`` regression has no model of the MA or of the schools: its intervention
sets the class size (and, when given, the MA) in its regression equation, the observed
MA and school held, so its class-size contrast is a direct effect.

Sites that can be intervened on: ``small_class`` (1 = SMALL, 0 = LARGE) and
``teacher_has_ma`` (1 = the teacher holds an MA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

#: The sites an intervention may set, and what each value means.
INTERVENABLE = {
    "small_class": {1: "in a SMALL class", 0: "in a LARGE class"},
    "teacher_has_ma": {1: "with a teacher who holds an MA", 0: "with a teacher without an MA"},
}
#: Posterior draws used by default (evenly spaced over the chains' draws).
DEFAULT_DRAWS = 500
#: Central interval reported with the effect.
LEVEL = 0.90


@dataclass
class Counterfactual:
    """Posterior predictive scores of the chosen students in two worlds, the intervention
    and its baseline, and the average effect of the one against the other."""

    analysis: str
    intervention: dict[str, int]
    baseline: dict[str, int]
    #: the cohort the students belong to ("REGULAR", "EXPERIMENTAL") or None: every student in the fit
    cohort: str | None
    #: scores under the intervention, (draws, students)
    scores: np.ndarray
    #: scores under the baseline, (draws, students), the same random numbers
    baseline_scores: np.ndarray
    #: the students' observed scores, for reference
    observed_scores: np.ndarray
    #: the true average effect, when the data came with a truth
    truth: float | None = None
    #: the estimand the truth is (e.g. "small_class_total_effect"), with its sign
    truth_name: str | None = None
    units: str = "points"

    @property
    def effect(self) -> np.ndarray:
        """The average effect, one value per posterior draw: the mean score under the
        intervention minus the mean score under the baseline."""
        return self.scores.mean(axis=1) - self.baseline_scores.mean(axis=1)

    @property
    def students(self) -> str:
        return "every student" if self.cohort is None else f"every {self.cohort} student"

    def worlds(self) -> list[tuple[str, np.ndarray]]:
        """``[("do(...)", scores), ("do(...)", baseline scores)]``."""
        return [(_world(self.intervention), self.scores), (_world(self.baseline), self.baseline_scores)]

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        lo, hi = np.quantile(self.effect, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    def summary(self):
        """A table (DataFrame): the mean score of the students in each world and the
        average effect, each with mean, sd and 90% interval; the truth of the effect."""
        import pandas as pd

        rows = {}
        for label, x in [(label, x.mean(axis=1)) for label, x in self.worlds()] + [("average effect", self.effect)]:
            lo, hi = np.quantile(x, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
            rows[label] = {"mean": float(x.mean()), "sd": float(x.std(ddof=1)), "q05": float(lo), "q95": float(hi),
                           "truth": None}
        effect = rows["average effect"]
        effect["truth"] = self.truth
        effect["truth_in_90"] = None if self.truth is None else bool(effect["q05"] <= self.truth <= effect["q95"])
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = f"{self.analysis}, {self.students} ({self.scores.shape[1]}), {self.units}"
        return table

    def statement(self) -> str:
        """One sentence: the average effect, its 90% interval, and the truth when there is one."""
        lo, hi = self.interval()
        text = (f"{self.analysis}: the average effect of placing {self.students} {_phrase(self.intervention)} "
                f"rather than {_phrase(self.baseline)} is {self.effect.mean():.2f} {self.units}, "
                f"90% interval [{lo:.2f}, {hi:.2f}]")
        if self.truth is not None:
            text += f"; truth {self.truth:g} ({self.truth_name}, {'inside' if lo <= self.truth <= hi else 'OUTSIDE'})"
        return text + "."

    def __str__(self) -> str:
        return self.statement()

    def __repr__(self) -> str:
        return f"Counterfactual({self.statement()} {self.scores.shape[0]} draws; .summary(), .plot())"

    def plot(self, axes=None):
        """Two panels: the students' scores in both worlds (and as observed), and the
        posterior of the average effect with its 90% interval and the truth."""
        from classsize.inference.fit.figures import counterfactual_plot

        return counterfactual_plot(self, axes=axes)


def _world(values: Mapping[str, int]) -> str:
    return "do(" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"


def _phrase(values: Mapping[str, int]) -> str:
    return " ".join(INTERVENABLE[k][v] for k, v in values.items())


def _check(intervention: Mapping[str, int]) -> dict[str, int]:
    if not intervention:
        raise ValueError(f"do() needs an intervention, e.g. do(small_class=1); sites: {', '.join(INTERVENABLE)}")
    out = {}
    for name, value in intervention.items():
        if name not in INTERVENABLE:
            raise ValueError(f"cannot intervene on {name!r}; sites: {', '.join(INTERVENABLE)}")
        if value not in (0, 1):
            raise ValueError(f"{name} must be 0 or 1, got {value!r}")
        out[name] = int(value)
    return {k: out[k] for k in INTERVENABLE if k in out}  # a fixed order: one compiled program per set of sites


def contrast_site(intervention: Mapping[str, int]) -> str:
    """The site whose two values the effect compares: ``small_class`` when it is set,
    else ``teacher_has_ma``."""
    return "small_class" if "small_class" in intervention else "teacher_has_ma"


def _truth(result, intervention, contrast: str, mediated: bool) -> tuple[float | None, str | None]:
    """The estimand the contrast targets, signed, from the fit's ``truth.json``."""
    if contrast == "teacher_has_ma":
        name = "teacher_ma_effect"
    elif mediated and "teacher_has_ma" not in intervention:
        name = "small_class_total_effect"
    else:
        name = "small_class_direct_effect"
    value = ((result.truth or {}).get("estimands") or {}).get(name)
    if value is None or not math.isfinite(float(value)):
        return None, None
    sign = 1.0 if intervention[contrast] == 1 else -1.0
    return sign * float(value), name if sign > 0 else f"minus {name}"


def posterior_draws(idata, n: int, names=None) -> dict[str, np.ndarray]:
    """At most ``n`` posterior draws, evenly spaced over chains and draws, of the
    variables ``names`` (default: all), each ``(draws, ...)``."""
    post = idata.posterior
    names = [k for k in (names or post.data_vars) if k in post.data_vars]
    total = post.sizes["chain"] * post.sizes["draw"]
    index = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))
    out = {}
    for k in names:
        v = np.asarray(post[k].transpose("chain", "draw", ...))
        out[k] = v.reshape((total,) + v.shape[2:])[index]
    return out


def intervene(result, intervention: Mapping[str, int], *, cohort: str | None = None, draws: int = DEFAULT_DRAWS,
              seed: int = 0) -> Counterfactual:
    """Posterior predictive scores of the fit's students under ``do(intervention)`` and
    under its baseline (the contrasted site flipped), for one cohort or every student."""
    intervention = _check(intervention)
    problem = result.problem
    if problem is None:
        raise ValueError("do() needs the fitted problem (a FitResult from fit())")
    contrast = contrast_site(intervention)
    baseline = {**intervention, contrast: 1 - intervention[contrast]}
    experimental = np.asarray(problem.observed.is_experimental).astype(bool)
    if cohort is None and experimental.all() != experimental.any():
        chosen = np.ones(experimental.shape, bool)
    elif cohort is None:  # the fit holds one cohort: name it
        cohort, chosen = ("EXPERIMENTAL" if experimental.all() else "REGULAR"), np.ones(experimental.shape, bool)
    elif cohort in ("REGULAR", "EXPERIMENTAL"):
        chosen = experimental if cohort == "EXPERIMENTAL" else ~experimental
        if not chosen.any():
            raise ValueError(f"the {problem.name} fit holds no {cohort} students")
    else:
        raise ValueError(f"cohort must be REGULAR, EXPERIMENTAL or None, got {cohort!r}")

    from classsize.inference.analyses.base import ConditionedAnalysis

    mediated = isinstance(problem.analysis, ConditionedAnalysis)  # the model draws the MA from the class size
    forward = _conditioned_worlds if mediated else _regression_worlds
    key = jax.random.PRNGKey(seed)
    scores, base = forward(problem, result.idata, draws, key, intervention, baseline)
    truth, truth_name = _truth(result, intervention, contrast, mediated)
    return Counterfactual(problem.name, intervention, baseline, cohort, scores[:, chosen], base[:, chosen],
                          np.asarray(problem.observed.test_score)[chosen], truth, truth_name,
                          getattr(result, "units", "points"))


def _conditioned_worlds(problem, idata, n_draws, key, intervention, baseline):
    """Both worlds from :func:`classsize.model.class_size_experiment` run forward, ``(draws, students)``
    each, students in the order of ``problem.observed``."""
    from numpyro import handlers
    from numpyro.infer import Predictive

    from classsize.model import class_size_experiment
    from classsize.model.pieces import PARAMETERS

    obs = problem.observed
    experimental = np.asarray(obs.is_experimental).astype(bool)
    order = np.argsort(experimental, kind="stable")  # the model's order: REGULAR first
    n_regular = int(np.sum(~experimental))
    config = problem.config.replace(n_regular=n_regular, n_experimental=len(order) - n_regular)
    n, n_slots = config.n_students, config.max_small_classes + config.max_large_classes
    lo, hi = np.log(config.income_min), np.log(config.income_max)
    income = np.exp(lo + np.asarray(obs.income_scaled) * (hi - lo))
    covariates = None if obs.extra_covariates is None else jnp.asarray(np.asarray(obs.extra_covariates)[order])
    samples = posterior_draws(idata, n_draws, PARAMETERS + ("school_effect", "extra_covariate_weights"))
    sizes = {"small_class": n, "teacher_has_ma": n_slots}

    school_of_student = np.asarray(obs.school_of_class)[np.asarray(obs.class_of_student)][order]
    sites = ["test_score", "class_of_student", "school", "school_effect", "score_school_weight"]

    @jax.jit
    def world(key, samples, race, income, covariates, school, values):
        fixed = {k: jnp.full(sizes[k], v, dtype=jnp.int32) for k, v in values.items()}
        model = handlers.do(handlers.condition(class_size_experiment, {"race": race, "family_income": income}), fixed)
        predictive = Predictive(model, posterior_samples=samples, return_sites=sites, parallel=True)
        out = predictive(key, config, problem.priors, ability=problem.ability, covariates=covariates)
        # each student stays in her own school: swap the drawn class school's effect for hers
        drawn = jnp.take_along_axis(out["school"], out["class_of_student"], axis=1)
        effect = out["school_effect"]
        own = effect[:, school] - jnp.take_along_axis(effect, drawn, axis=1)
        return out["test_score"] + jnp.reshape(out["score_school_weight"], (-1, 1)) * own

    args = (jax.tree.map(jnp.asarray, samples), jnp.asarray(np.asarray(obs.race)[order]), jnp.asarray(income[order]),
            covariates, jnp.asarray(school_of_student))
    back = np.argsort(order)
    return tuple(np.asarray(world(key, *args, {k: jnp.int32(v) for k, v in values.items()}))[:, back]
                 for values in (intervention, baseline))


def _regression_worlds(problem, idata, n_draws, key, intervention, baseline):
    """Both worlds from the regression's equation with its inputs set, ``(draws, students)`` each."""
    from numpyro.infer import Predictive

    samples = posterior_draws(idata, n_draws)
    samples = {k: jnp.asarray(v) for k, v in samples.items() if k not in ("test_score",)}
    model = problem.analysis.model_function(problem)

    @jax.jit
    def world(key, samples, inputs, values):
        inputs = {**inputs, "test_score": None}
        for k, v in values.items():
            inputs[k] = jnp.full_like(inputs[k], v)
        predictive = Predictive(model, posterior_samples=samples, return_sites=["test_score"], parallel=True)
        return predictive(key, **inputs)["test_score"]

    inputs = {k: v for k, v in problem.inputs.items() if k != "test_score"}
    return tuple(np.asarray(world(key, samples, inputs, {k: jnp.int32(v) for k, v in values.items()}))
                 for values in (intervention, baseline))
