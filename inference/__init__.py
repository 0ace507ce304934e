"""classsize.inference: reading data, the analyses, NUTS fits into ArviZ InferenceData,
summaries and plots, recovery studies, and the ``classsize`` command line.

Importing it exposes every core as a JAX device and turns on the persistent
compilation cache (:mod:`classsize.inference.runtime`).
"""

from .runtime import configure as _configure

_configure()
