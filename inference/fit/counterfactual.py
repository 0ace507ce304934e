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

What is held and what is drawn is the analysis's own answer (its
:meth:`~classsize.inference.analyses.base.Analysis.forward`): the class-size model
keeps each student's race, income, covariates and school, draws her ability, forms
the classes anew and draws each class's MA from its size, so ``do(small_class=1)`` is
the **total** effect and ``do(small_class=1, teacher_has_ma=m)`` the **direct** one;
the ``naive`` regression holds the observed MA and school, so its class-size contrast
is a direct effect.  Which estimand a contrast targets is also the analysis's answer
(:meth:`~classsize.inference.analyses.base.Analysis.estimand_of`).

Sites that can be intervened on: ``small_class`` (1 = SMALL, 0 = LARGE) and
``teacher_has_ma`` (1 = the teacher holds an MA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import jax
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
    #: with class effects, which the classes of the two worlds have: ``"fresh"`` draws
    #: (new classes, new teachers: the population effect) or each student's
    #: ``"observed"`` class's (her own teacher's)
    classes: str = "fresh"

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


def _truth(result, intervention, contrast: str, name: str) -> tuple[float | None, str | None]:
    """The estimand ``name`` that the contrast targets, signed, from the fit's ``truth.json``."""
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
              seed: int = 0, classes: str = "fresh") -> Counterfactual:
    """Posterior predictive scores of the fit's students under ``do(intervention)`` and
    under its baseline (the contrasted site flipped), for one cohort or every student.
    With class effects, ``classes`` says whether the classes the students are placed in
    have fresh effects (``"fresh"``: the population effect) or each keeps her observed
    class's effect (``"observed"``); both worlds of a contrast have the same choice."""
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

    analysis = problem.analysis
    draws = posterior_draws(result.idata, draws)
    key = jax.random.PRNGKey(seed)
    scores, base = (np.asarray(analysis.forward(problem, draws, key, values, classes=classes)["test_score"])
                    for values in (intervention, baseline))
    truth, truth_name = _truth(result, intervention, contrast, analysis.estimand_of(intervention))
    return Counterfactual(problem.name, intervention, baseline, cohort, scores[:, chosen], base[:, chosen],
                          np.asarray(problem.observed.test_score)[chosen], truth, truth_name,
                          getattr(result, "units", "points"), classes)
