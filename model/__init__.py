"""classsize.model: the configuration, the NumPyro model of the class-size experiment,
the conversion between model traces and the two tables, and the notebook engine.

Importing this package turns on JAX's 64-bit mode: scores are float64, as in the
notebook, and the same seed gives the same bytes on every machine.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .config import Config, ConfigError  # noqa: E402
from .experiment import (  # noqa: E402
    PARAMETERS,
    Observed,
    class_size_experiment,
    default_priors,
    fixed_parameters,
)
from .simulate import Dataset, simulate, simulate_many  # noqa: E402

__all__ = [
    "Config",
    "ConfigError",
    "PARAMETERS",
    "Observed",
    "class_size_experiment",
    "default_priors",
    "fixed_parameters",
    "Dataset",
    "simulate",
    "simulate_many",
]
