"""Recovery studies: many simulated datasets fitted to check that the posteriors are
honest, by simulation-based calibration (truths from the prior) or by coverage at a
fixed truth; their plan and resumable batches, ranks and bands, verdicts, figures, and
the Dask runner that spreads batches over workers.  Design diagnosis runs such studies
over a grid of designs (power, width, the REGULAR cohort's worth).
"""
