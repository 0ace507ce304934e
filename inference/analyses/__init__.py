"""The analyses: one object each (structural, randomized, naive), bound to a dataset as
a :class:`~classsize.inference.analyses.base.Problem` that the engine samples.

An analysis answers for itself: its cohort, priors, estimands, forward model,
replicates and prior draws.  Nothing outside this package branches on which analysis
it holds.
"""
