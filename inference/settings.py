"""Default chain lengths of every fit (the API, the command line, studies).

The conditioned model samples coordinates its pilot has already centred and scaled,
so 500 warm-up iterations adapt the step size and diagonal mass matrix as well as
1000 do (bench/README.md, "The sampler settings").  This module imports nothing, so
the command line can show the defaults without loading JAX.
"""

DEFAULT_CHAINS = 4
DEFAULT_WARMUP = 500
DEFAULT_SAMPLES = 1000
