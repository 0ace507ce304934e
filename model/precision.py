"""64-bit arithmetic for the package's own calls, without switching it on for other code.

Scores are float64, as in the notebook, and a seed gives the same bytes on every
machine: the model needs JAX's 64-bit mode.  :func:`float64` runs a function inside
``jax.enable_x64(True)``, a thread-local context, so the user's other JAX code keeps
its own setting.  The package's entry points (``simulate``, ``simulate_many``,
``fit``, ``compare``, ``recover``, ``load_run``, ``FitResult.do``) are wrapped; code
that runs the model function under its own NumPyro inference should do the same
(``with jax.enable_x64(True): ...``).
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def float64(fn: F) -> F:
    """``fn`` run with JAX's 64-bit mode on (and the caller's mode restored after)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        import jax

        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
