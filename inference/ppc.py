r"""Posterior predictive checks: observed scores against replicated ones.

The replicates come from the analysis itself (:meth:`~.analysis.Analysis.replicate`:
the model run forward with posterior draws substituted); :func:`ppc_table`
compares the replicated score distribution by cohort and class size with the
observed one.
"""

from __future__ import annotations

import numpy as np


def ppc_table(idata):
    """Observed vs replicated mean and sd of scores by cohort and class size.

    Returns a DataFrame with, per group, the observed mean/sd, the replicated
    means' 5-95% range, and the posterior predictive p-value of the mean.
    """
    import pandas as pd

    data = idata.observed_data.merge(idata.constant_data) if "constant_data" in idata.groups() else idata.observed_data
    y = np.asarray(data["test_score"])
    s = np.asarray(data["small_class"])
    exp = np.asarray(data["is_experimental"]).astype(bool)
    rep_y = np.asarray(idata.posterior_predictive["test_score"]).reshape(-1, y.shape[0])
    if "small_class" in idata.posterior_predictive:
        rep_s = np.asarray(idata.posterior_predictive["small_class"]).reshape(-1, y.shape[0])
    else:  # class sizes are the analysis's covariates: the replicates keep them
        rep_s = np.broadcast_to(s, rep_y.shape)
    rows = []
    for cohort, in_cohort in (("REGULAR", ~exp), ("EXPERIMENTAL", exp)):
        for size, flag in (("SMALL", 1), ("LARGE", 0)):
            g = in_cohort & (s == flag)
            if not g.any():
                continue
            rg = in_cohort[None] & (rep_s == flag)
            with np.errstate(invalid="ignore"):
                rep_mean = np.where(rg, rep_y, 0.0).sum(1) / rg.sum(1)
            rep_mean = rep_mean[np.isfinite(rep_mean)]
            rows.append({
                "cohort": cohort, "class_size": size, "n": int(g.sum()),
                "observed_mean": float(y[g].mean()), "observed_sd": float(y[g].std()),
                "replicated_mean_q05": float(np.quantile(rep_mean, 0.05)),
                "replicated_mean_q95": float(np.quantile(rep_mean, 0.95)),
                "p_value": float(np.mean(rep_mean >= y[g].mean())),
            })
    return pd.DataFrame(rows)
