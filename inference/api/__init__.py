"""classsize: the class-size experiment as one NumPyro model: simulate it, fit it, teach with it.

The package's Python API, in one place (``import classsize as cs``):

* ``cs.simulate(config=None, seed=0)``: one dataset from the model
  (:class:`~classsize.model.Dataset`; ``.write(folder)``, ``.students``, ``.classes``,
  ``.truth``); ``config`` is a :class:`~classsize.model.Config`, a TOML file or None
  (the notebook's numbers).
* ``cs.fit(data, analysis="structural", ...)``: NUTS fit of one analysis
  (:class:`~classsize.inference.fit.result.FitResult`); ``data`` is a data folder, a
  ``Dataset``, or a students DataFrame with ``classes=`` the classes DataFrame.
* ``cs.compare(data, analyses=(...))``: several analyses on the same data
  (:class:`~classsize.inference.commands.compare.Comparison`).
* ``cs.recover(analysis, datasets, ...)``: a recovery study, SBC from the prior or
  coverage at a fixed truth (:class:`~classsize.inference.studies.result.StudyResult`: an
  ``SBCStudy`` or a ``CoverageStudy``; ``.verdict``, ``.table``, ``.summary``, ``.plot()``,
  ``.write(folder)``).
* ``cs.design(config=None, vary={"n_experimental": [250, 500]}, analyses=(...), datasets=50)``:
  design diagnosis over a grid of designs
  (:class:`~classsize.inference.studies.diagnose.DesignResult`: ``.table``,
  ``.summary()``, ``.plot()``, ``.worth`` with ``worth=True``).
* ``cs.load_run(run_dir)``: the ``FitResult`` of a finished ``classsize fit`` run.
* ``cs.use_all_cores()``: expose every CPU core as a JAX device so that chains run
  side by side; call it before any JAX computation.
* ``cs.Config`` (a design and the parameters: what a simulation takes), ``cs.Design``
  (what a fit needs), ``cs.ANALYSES``, ``cs.__version__``.

Importing the package loads none of NumPy, JAX or the model (each name is imported
when first used) and changes no JAX setting.  Its calls run in JAX's 64-bit mode
inside a context of their own (:mod:`classsize.model.precision`), so the user's other
JAX code keeps its precision.  The first fit turns on JAX's persistent compilation
cache in ``~/.cache/classsize/jax`` (``$CLASSSIZE_CACHE_DIR``; ``CLASSSIZE_NO_CACHE=1``
turns it off) unless a cache folder has already been chosen.
"""

from __future__ import annotations

from importlib import import_module

#: where each name of the API lives: (module, attribute)
_NAMES = {
    "fit": ("classsize.inference.fit.result", "fit"),
    "load_run": ("classsize.inference.fit.runs", "load_run"),
    "FitResult": ("classsize.inference.fit.result", "FitResult"),
    "compare": ("classsize.inference.commands.compare", "compare"),
    "Comparison": ("classsize.inference.commands.compare", "Comparison"),
    "use_all_cores": ("classsize.inference.engine.runtime", "use_all_cores"),
    "Config": ("classsize.model.config", "Config"),
    "Design": ("classsize.model.design", "Design"),
    "Dataset": ("classsize.model.simulate", "Dataset"),
    "ANALYSES": ("classsize.inference.analyses.registry", "ANALYSES"),
}

__all__ = sorted([*_NAMES, "simulate", "recover", "design", "__version__"])


def simulate(config=None, seed: int = 0):
    """One dataset from the model (the notebook's process at the default ``config``):
    a :class:`classsize.model.Dataset`.  ``config``: a ``Config``, a TOML file, or None."""
    from classsize.inference.outputs import load_config
    from classsize.model import Config, simulate as simulate_one

    return simulate_one(config if isinstance(config, Config) else load_config(config), seed)


def recover(analysis: str = "structural", datasets: int = 100, *, config=None, from_prior: bool = False,
            seed: int = 0, out=None, **settings):
    """A recovery study (:func:`classsize.inference.studies.run.run_study`): simulate
    ``datasets`` datasets, fit each with ``analysis`` and check calibration, by SBC
    when ``from_prior``, else coverage at the fixed truth ``config`` (a ``Config``, a
    TOML file, or None for the notebook's numbers).  ``settings``: ``chains``,
    ``warmup``, ``samples``, ``batch_size``, ``rank_draws``, ``resume``, ``progress``."""
    from classsize.inference.outputs import load_config
    from classsize.inference.studies.run import run_study
    from classsize.model import Config

    config = config if isinstance(config, Config) else load_config(config)
    return run_study(analysis, datasets, config=config, from_prior=from_prior, seed=seed, out=out, **settings)


def design(config=None, vary=None, analyses=("structural", "randomized"), datasets: int = 50, *, seed: int = 0,
           out=None, **settings):
    """Design diagnosis (:func:`classsize.inference.studies.diagnose.diagnose`): every
    analysis fitted to ``datasets`` simulated datasets of each cell of the grid that
    crosses ``vary`` (a mapping of configuration field to its values) over the base
    ``config`` (a ``Config``, a TOML file, or None).  ``settings``: ``chains``,
    ``warmup``, ``samples``, ``batch_size``, ``resume``, ``progress``, ``estimand``,
    ``worth``, ``misspecified`` (with ``worth``: the worth on normal-ability data too),
    ``boots``."""
    from classsize.inference.outputs import load_config
    from classsize.inference.studies.design import DesignGrid
    from classsize.inference.studies.diagnose import diagnose
    from classsize.model import Config

    config = config if isinstance(config, Config) else load_config(config)
    axes = [f"{name}={','.join(str(v) for v in values)}" for name, values in (vary or {}).items()]
    return diagnose(DesignGrid.parse(config, axes), analyses, datasets, seed=seed, out=out, **settings)


def __getattr__(name: str):
    if name == "__version__":
        from classsize.inference.outputs import package_version

        return package_version()
    if name in _NAMES:
        module, attribute = _NAMES[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'classsize' has no attribute {name!r}")


def __dir__():
    return __all__
