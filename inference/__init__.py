"""classsize.inference: reading data, the analyses, NUTS fits into ArviZ InferenceData,
summaries and plots, recovery studies, and the ``classsize`` command line.

Importing it changes no JAX setting (:mod:`classsize.inference.engine.runtime` says which calls do).
"""
