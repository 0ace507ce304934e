"""classsize.model: the design and the configuration, the NumPyro model of the class-size experiment,
the conversion between model traces and the two tables, and the notebook engine.

Importing it changes no JAX setting: the simulators run in 64-bit mode inside a
context of their own (:mod:`.precision`).
"""

from .config import Config, ConfigError
from .design import Design
from .experiment import class_size_experiment
from .pieces import PARAMETERS, Observed, default_priors, fixed_parameters
from .simulate import Dataset, simulate, simulate_many

__all__ = [
    "Config",
    "ConfigError",
    "Design",
    "PARAMETERS",
    "Observed",
    "class_size_experiment",
    "default_priors",
    "fixed_parameters",
    "Dataset",
    "simulate",
    "simulate_many",
]
