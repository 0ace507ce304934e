"""Default chain lengths of every fit (the API, the command line, studies), and the
posterior draws an SBC rank is taken among.

The conditioned model samples coordinates its pilot has already centred and scaled,
so 500 warm-up iterations adapt the step size and diagonal mass matrix as well as
1000 do (bench/README.md, "The sampler settings").  This module imports nothing, so
the command line can show the defaults without loading JAX (or NumPy).
"""

DEFAULT_CHAINS = 4
DEFAULT_WARMUP = 500
DEFAULT_SAMPLES = 1000
#: The probability of every interval the package reports (equal-tailed: the 5% and 95%
#: quantiles), in the CLI, ``summary()``, ``parameter_summary()`` and the study tables.
CI_PROB = 0.9
#: Posterior draws kept (evenly thinned) for the rank of the truth: ranks run over 0..RANK_DRAWS.
RANK_DRAWS = 99
