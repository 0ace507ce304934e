"""One fit and what is read from it: the :class:`~classsize.inference.fit.result.FitResult`,
its ArviZ ``DataTree``, posterior predictive checks, counterfactuals (``do()``) and its
figures.
"""
