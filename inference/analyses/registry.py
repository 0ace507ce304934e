"""The registry: every analysis by name (:data:`ANALYSES`), and :func:`get_analysis`.

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

Adding an analysis means adding one entry here.
"""

from __future__ import annotations

from classsize.model.conditioned import NUTS_SETTINGS

from classsize.inference.analyses.base import Analysis
from classsize.inference.analyses.conditioned import ESTIMANDS, ConditionedAnalysis
from classsize.inference.analyses.regression import RegressionAnalysis

ANALYSES: dict[str, Analysis] = {
    "structural": ConditionedAnalysis(
        "structural", None, "the full process, both cohorts, ability latent (marginalised)",
        ESTIMANDS, NUTS_SETTINGS),
    "randomized": ConditionedAnalysis(
        "randomized", "EXPERIMENTAL", "the outcome model on the EXPERIMENTAL cohort (assignment ignorable)",
        ESTIMANDS, NUTS_SETTINGS, pin_assignment=True),
    "naive": RegressionAnalysis(
        "naive", "REGULAR", "normal regression on the REGULAR cohort adjusting for log income, race, school, MA",
        ("small_class_direct_effect", "teacher_ma_effect"), {}),
}


def get_analysis(name: str | Analysis) -> Analysis:
    """The analysis called ``name`` (an :class:`Analysis` is returned as it is)."""
    if isinstance(name, Analysis):
        return name
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; choose one of {', '.join(ANALYSES)}")
    return ANALYSES[name]
