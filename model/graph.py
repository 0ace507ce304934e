"""The causal graph, drawn from the model itself with ``numpyro.render_model``.

:func:`observed_model` conditions the forward model on one simulated dataset's
observed columns (race, income, class size, MA, school, score), so that the picture
shades what an analyst sees and leaves ability's uniform part and the school effects
unobserved.
"""

from __future__ import annotations

from numpyro import handlers

from .config import Config
from .experiment import PARAMETERS, class_size_experiment
from .simulate import draw_many

OBSERVED_SITES = ("race", "family_income", "small_class", "teacher_has_ma", "school", "test_score")


def observed_model(config: Config = Config(), seed: int = 0):
    """The model with the observed columns of one forward draw conditioned on."""
    draw = {k: v[0] for k, v in draw_many(config, [seed]).items()}
    return handlers.condition(class_size_experiment, {k: draw[k] for k in OBSERVED_SITES})


def causal_graph(config: Config = Config(), filename: str | None = None, parameters: bool = False):
    """``numpyro.render_model`` of the model (needs the graphviz program ``dot``)."""
    import numpyro

    model = observed_model(config)
    if not parameters:
        model = handlers.block(model, hide=list(PARAMETERS))
    return numpyro.render_model(model, model_args=(config,), filename=filename, render_distributions=False)
