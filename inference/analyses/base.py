r"""What every analysis has (:class:`Analysis`), and an analysis bound to data (:class:`Problem`).

An :class:`Analysis` knows its cohort, its priors, its NUTS settings, its estimands,
its forward model (:meth:`Analysis.forward`, which replicates data, answers
interventions and draws the posterior predictive check's replicates) and its prior
draws.  Bound to one dataset it gives a :class:`Problem`: the model function and the
arrays it is fitted to, which :mod:`classsize.inference.engine.sampling` runs.

The subclasses are :class:`~classsize.inference.analyses.conditioned.ConditionedAnalysis`
(the class-size model conditioned on data) and
:class:`~classsize.inference.analyses.regression.RegressionAnalysis` (a normal
regression); the registry (:mod:`classsize.inference.analyses.registry`) holds one
object per analysis.  What differs between them is answered by their own methods;
nothing outside this package asks which class it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np

from classsize.model import Observed
from classsize.model.design import Design
from classsize.model.format import STUDENTS_FILE

from classsize.inference.data.checks import DataError
from classsize.inference.data.dataset import LoadedData


#: What :attr:`Analysis.class_effects` takes besides a number >= 0 and None.
FREE = "free"


def check_class_effects(value) -> float | str | None:
    """``value`` as :attr:`Analysis.class_effects` takes it (a float >= 0, ``"free"`` or
    None); ValueError (one line) otherwise."""
    if value is None or value == FREE:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value >= 0:
        return float(value)
    raise ValueError(f"class effects must be a number >= 0 or 'free' (got {value!r})")


def check_score_scale(value) -> float:
    """``value`` as :attr:`Analysis.score_scale` takes it (a finite number > 0)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    raise ValueError(f"must be a number > 0 (got {value!r})")


def _simulated_class_effect_sd(truth) -> float:
    """The class effects' sd of the configuration in a simulated folder's truth (0 when
    it has none)."""
    config = truth.get("config") if isinstance(truth, dict) else None
    sd = config.get("class_effect_sd", 0) if isinstance(config, dict) else 0
    return float(sd) if isinstance(sd, (int, float)) and not isinstance(sd, bool) else 0.0


class NoNoiseParameter(ValueError):
    """The analysis's model has no measurement-noise sd (its residual sd absorbs the noise)."""


@dataclass
class Problem:
    """An analysis bound to one dataset (or a stack of datasets of one shape).

    ``model(**inputs)`` is the NumPyro model; ``inputs`` are its array arguments (a
    pytree, stacked along a leading axis for a batch), ``observed`` the encoded data.
    """

    analysis: "Analysis"
    #: the design the data are encoded in (its schools, race codes, income range)
    design: Design
    priors: dict | None
    inputs: dict
    observed: Observed
    ability: str = "uniform"
    static: dict = field(default_factory=dict)
    #: what the compiled program depends on besides the arrays' shapes
    #: (:meth:`Analysis.signature`)
    signature: tuple = ()
    #: the dataset it was bound to (its ids label the InferenceData); None for studies
    data: LoadedData | None = None
    #: compiled forward programs of this problem, by the intervened sites (:meth:`Analysis.forward`)
    programs: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.analysis.name

    @property
    def n_students(self) -> int:
        return int(np.shape(self.observed.test_score)[-1])

    def model(self, **inputs):
        return self.analysis.model_function(self)(**inputs)

    def kernel(self, **overrides):
        """The analysis's NUTS kernel on this problem (its ``kernel_settings``, then ``overrides``)."""
        from numpyro.infer import NUTS

        return NUTS(self.model, **{**self.analysis.kernel_settings, **overrides})

    def estimands(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.analysis.estimands(draws)


def _stack(trees):
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


@dataclass(frozen=True)
class Analysis:
    """What every analysis has; subclasses say how its model is built and run."""

    name: str
    cohort: str | None  # None: both cohorts
    description: str
    estimand_names: tuple[str, ...]
    kernel_settings: Mapping[str, Any]
    #: the class (teacher) effects' sd: a number pins it (0: no class effects, the
    #: notebook's process), ``"free"`` samples it, None takes what the data declare
    #: (``dataset.json`` key ``class_effect_sd``, else 0); see :meth:`with_class_effects`
    class_effects: float | str | None = None
    #: the data's score unit against the simulation's (``dataset.json`` key
    #: ``score_scale``, else 1): the priors of score-scale quantities are this many
    #: times wider (see :func:`classsize.model.pieces.default_priors`)
    score_scale: float = 1.0

    # ------------------------------------------------------------- what it takes
    def with_score_noise(self, score_noise: float | str | None) -> "Analysis":
        """This analysis with the scores' measurement noise set; :class:`NoNoiseParameter`
        from a model without a noise parameter."""
        raise NoNoiseParameter(f"the {self.name} analysis has no measurement-noise parameter (its residual sd "
                               f"absorbs the noise)")

    def with_class_effects(self, class_effects: float | str | None) -> "Analysis":
        """This analysis with the class effects' sd pinned to ``class_effects`` (a
        number >= 0; 0 leaves class effects out), sampled (``"free"``), or taken from
        the data (None)."""
        return dataclasses.replace(self, class_effects=check_class_effects(class_effects))

    def knowing(self, config) -> "Analysis":
        """The analysis as it fits data simulated from ``config`` (a study's truth): what
        the simulation fixed and the analysis leaves open, it takes from ``config`` (as a
        fit takes it from a folder's ``dataset.json``).  A simulation with class effects
        (``config.class_effect_sd > 0``) is fitted with class effects, their sd free:
        the design is known, the sd is not."""
        if self.class_effects is None and config.class_effect_sd != 0:
            return self.with_class_effects(FREE)
        return self

    def declared(self, data: LoadedData) -> "Analysis":
        """This analysis with what ``data``'s ``dataset.json`` declares and the analysis
        leaves open: ``class_effect_sd`` (a number >= 0 or ``"free"``) and
        ``score_scale`` (a number > 0); :class:`DataError` naming the key otherwise."""
        out = self
        meta = data.metadata
        where = Path(data.source) / "dataset.json"
        if self.class_effects is None and meta.get("class_effect_sd") is not None:
            try:
                out = out.with_class_effects(meta["class_effect_sd"])
            except ValueError:
                raise DataError(where, f"must be a number >= 0 or 'free' (got {meta['class_effect_sd']!r})",
                                key="class_effect_sd") from None
        elif self.class_effects is None and _simulated_class_effect_sd(data.truth):
            out = out.with_class_effects(FREE)
        if "score_scale" in meta:
            try:
                out = dataclasses.replace(out, score_scale=check_score_scale(meta["score_scale"]))
            except ValueError as e:
                raise DataError(where, str(e), key="score_scale") from None
        return out

    def class_effects_fitted(self) -> bool:
        """Whether the analysis's model has class effects (their sd free or above 0)."""
        return self.class_effects == FREE or bool(self.class_effects)

    def check_design(self, design: Design, sbc: bool) -> None:
        """Raise ValueError (one line) when a study of ``design`` cannot use this analysis."""
        cohort_size = {"REGULAR": design.n_regular, "EXPERIMENTAL": design.n_experimental}
        if self.cohort is not None and cohort_size[self.cohort] == 0:
            raise ValueError(f"the {self.name} analysis needs {self.cohort} students "
                             f"(n_{self.cohort.lower()} > 0)")

    def unfittable_schools(self, observed: Observed, n_schools: int) -> np.ndarray:
        """For a stack of encoded datasets, how many schools of each keep the analysis
        from fitting it (0: fittable)."""
        return np.zeros(np.shape(observed.test_score)[0], dtype=np.int64)

    def coverage_note(self, passed: bool) -> str | None:
        """What a coverage study's verdict adds when coverage holds (``passed``) or fails."""
        return None

    # ------------------------------------------------------------- binding data
    def check(self, data: LoadedData) -> None:
        """Raise :class:`DataError` (one line) when ``data`` cannot support the analysis."""
        if self.cohort is not None and not (data.students["cohort"] == self.cohort).any():
            raise DataError(Path(data.source) / STUDENTS_FILE,
                            f"the {self.name} analysis needs {self.cohort} students; the data have none",
                            column="cohort")

    def fit_design(self, data: LoadedData) -> Design:
        """The design a fit needs: the data's schools and race coding; the income range
        (its units) and class-size targets of the notebook."""
        return Design(n_schools=len(data.school_ids_in(self.cohort)), race_codes=data.race_coding())

    def problem(self, data: LoadedData, ability: str = "uniform") -> Problem:
        """This analysis bound to a loaded dataset (with what its ``dataset.json``
        declares: :meth:`declared`)."""
        analysis = self.declared(data)
        analysis.check(data)
        design = analysis.fit_design(data)
        observed = data.observed(design, cohort=analysis.cohort)
        has_regular = bool(np.any(~np.asarray(observed.is_experimental)))
        problem = analysis.bind(design, observed, ability, has_regular=has_regular, has_income=data.has_income)
        return dataclasses.replace(problem, data=data)

    def bind(self, design: Design, observed: Observed, ability: str = "uniform", *, has_regular: bool = True,
             has_income: bool = True) -> Problem:
        raise NotImplementedError

    def signature(self, design: Design, ability: str, *variant) -> tuple:
        """What a problem's compiled program depends on besides its arrays' shapes: the
        analysis, the design, the ability and the subclass's ``variant``.  A
        :class:`~classsize.model.Config` counts by its design alone: the analyses' models
        take their parameters from the priors, never from a configuration's values, so
        studies at different truths of one design share their programs."""
        return (self.name, design.design, ability, *variant)

    def bind_many(self, design: Design, observed: Observed, ability: str = "uniform") -> Problem:
        """A problem for a stack of datasets of one shape (leading axis), as studies fit them."""
        n = int(np.shape(observed.test_score)[0])
        ones = [self.bind(design, jax.tree.map(lambda a: np.asarray(a)[i], observed), ability)
                for i in range(n)]
        return self.stack(ones)

    def stack(self, problems: list[Problem]) -> Problem:
        first = problems[0]
        inputs = _stack([p.inputs for p in problems])
        return Problem(self, first.design, first.priors, inputs, _stack([p.observed for p in problems]),
                       first.ability, first.static, first.signature)

    # ------------------------------------------------------------------- model
    def priors(self, design: Design, *, has_regular: bool = True, has_income: bool = True) -> dict | None:
        """The priors of the model's structural parameters (None: the model has its own)."""
        return None

    def model_function(self, problem: Problem) -> Callable:
        raise NotImplementedError

    def estimands(self, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def estimand_of(self, intervention: Mapping[str, int]) -> str:
        """The estimand that the contrast of an intervention targets (the effect of
        flipping its contrasted site, the other sites as the intervention sets them)."""
        raise NotImplementedError

    def forward(self, problem: Problem, draws: Mapping[str, np.ndarray], key,
                intervention: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """The model run forward for each posterior (or prior) draw: ``test_score`` and
        ``small_class`` of the problem's students, ``(draws, students)`` each.

        ``intervention`` (site -> 0/1, such as ``{"small_class": 1}``) applies the
        do-operator to those sites; None replicates the data as the model makes them.
        The same ``key`` gives the same random numbers under every intervention."""
        raise NotImplementedError

    def replicate(self, problem: Problem, draws: Mapping[str, np.ndarray], key) -> dict[str, np.ndarray]:
        """Replicated ``test_score`` (float32) and ``small_class`` (int8) for each draw,
        ``(draws, students)``: :meth:`forward` without an intervention."""
        out = self.forward(problem, draws, key)
        return {"test_score": np.asarray(out["test_score"], dtype=np.float32),
                "small_class": np.asarray(out["small_class"], dtype=np.int8)}

    def prior_draws(self, problem: Problem, key, n: int) -> dict[str, np.ndarray]:
        """``n`` draws of the model's parameters from its prior, each ``(n, ...)``, under
        the names of the posterior's sites (so :meth:`replicate` turns them into the
        prior predictive)."""
        raise NotImplementedError

    def prior_sampler(self, problem: Problem, key, n: int):
        """:meth:`prior_draws` of ``key`` and ``n`` as a function of nothing that another
        thread may run while this one traces (its program prepared now), or None: this
        analysis draws its prior in the calling thread."""
        return None

    # ----------------------------------------------------------------- studies
    def study_quantities(self, design: Design, sbc: bool) -> tuple[str, ...]:
        """What a recovery study checks: the estimands (and, for SBC, what the subclass adds)."""
        return self.estimand_names

    def prior_variances(self, design: Design, names) -> dict[str, float]:
        raise NotImplementedError
