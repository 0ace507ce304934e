r"""Posterior predictive checks: observed scores and class sizes against replicated ones.

The replicates come from the analysis itself (:meth:`~.analysis.Analysis.replicate`:
the model run forward with posterior draws substituted, class sizes included where
the analysis models them).  :func:`ppc_table` compares the replicated score means by
cohort and class size with the observed ones, :func:`small_rate_table` the share of
students in a SMALL class by cohort; :func:`~.plots.ppc_plot` draws both.

The student covariates the checks group by (``small_class``, ``is_experimental``) are
read from the InferenceData's ``observed_data`` group or, where the fit stores them as
covariates, its ``constant_data`` group.
"""

from __future__ import annotations

import numpy as np


def _student_array(idata, name: str) -> np.ndarray:
    for group in ("observed_data", "constant_data"):
        if group in idata.children and name in idata[group].data_vars:
            return np.asarray(idata[group][name]).ravel()
    raise ValueError(f"the InferenceData has no {name!r} in observed_data or constant_data")


def ppc_arrays(idata) -> dict[str, np.ndarray]:
    """The observed ``test_score``, ``small_class`` and ``cohort`` (one entry per student)
    and the replicated ``replicated_score`` and ``replicated_small`` (draws x students)."""
    y = _student_array(idata, "test_score")
    n = y.shape[0]
    if "posterior_predictive" not in idata.children:
        raise ValueError("the InferenceData has no posterior_predictive group (fit with posterior_predictive=True)")
    pp = idata.posterior_predictive
    rep_y = np.asarray(pp["test_score"]).reshape(-1, n)
    rep_s = (np.asarray(pp["small_class"]).reshape(-1, n) if "small_class" in pp.data_vars
             else np.broadcast_to(_student_array(idata, "small_class"), rep_y.shape))
    experimental = _student_array(idata, "is_experimental").astype(bool)
    return {"test_score": y, "small_class": _student_array(idata, "small_class").astype(int),
            "cohort": np.where(experimental, "EXPERIMENTAL", "REGULAR"),
            "replicated_score": rep_y, "replicated_small": rep_s.astype(int)}


def ppc_table(idata):
    """Observed vs replicated mean and sd of scores by cohort and class size.

    Returns a DataFrame with, per group, the observed mean/sd, the replicated
    means' 5-95% range, the replicated sds' 5-95% range, and the posterior predictive
    p-value of the mean (the share of replicated means at or above the observed one).
    """
    import pandas as pd

    a = ppc_arrays(idata)
    y, s, rep_y, rep_s = a["test_score"], a["small_class"], a["replicated_score"], a["replicated_small"]
    rows = []
    for cohort in ("REGULAR", "EXPERIMENTAL"):
        in_cohort = a["cohort"] == cohort
        for size, flag in (("SMALL", 1), ("LARGE", 0)):
            g = in_cohort & (s == flag)
            if not g.any():
                continue
            rg = in_cohort[None] & (rep_s == flag)
            count = rg.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rep_mean = np.where(rg, rep_y, 0.0).sum(1) / count
                rep_sd = np.sqrt(np.where(rg, (rep_y - rep_mean[:, None]) ** 2, 0.0).sum(1) / count)
            ok = np.isfinite(rep_mean)
            rep_mean, rep_sd = rep_mean[ok], rep_sd[ok]
            rows.append({
                "cohort": cohort, "class_size": size, "n": int(g.sum()),
                "observed_mean": float(y[g].mean()), "observed_sd": float(y[g].std()),
                "replicated_mean_q05": float(np.quantile(rep_mean, 0.05)),
                "replicated_mean_q95": float(np.quantile(rep_mean, 0.95)),
                "replicated_sd_q05": float(np.quantile(rep_sd, 0.05)),
                "replicated_sd_q95": float(np.quantile(rep_sd, 0.95)),
                "p_value": float(np.mean(rep_mean >= y[g].mean())),
            })
    return pd.DataFrame(rows)


def small_rate_table(idata):
    """The share of each cohort's students in a SMALL class, observed against replicated.

    One row per cohort: ``n``, ``observed_rate``, the replicated shares' 5, 25, 75 and
    95% quantiles, the posterior predictive p-value (share of replicated rates at or
    above the observed one), and ``replicated``: False where the analysis takes the
    class sizes as given (its replicates repeat the observed ones).
    """
    import pandas as pd

    a = ppc_arrays(idata)
    rows = []
    for cohort in ("REGULAR", "EXPERIMENTAL"):
        in_cohort = a["cohort"] == cohort
        if not in_cohort.any():
            continue
        observed = float(a["small_class"][in_cohort].mean())
        rep = a["replicated_small"][:, in_cohort]
        rate = rep.mean(axis=1)
        q05, q25, q75, q95 = np.quantile(rate, [0.05, 0.25, 0.75, 0.95])
        rows.append({"cohort": cohort, "n": int(in_cohort.sum()), "observed_rate": observed,
                     "replicated_q05": float(q05), "replicated_q25": float(q25), "replicated_q75": float(q75),
                     "replicated_q95": float(q95), "p_value": float(np.mean(rate >= observed)),
                     "replicated": not bool(np.all(rep == a["small_class"][in_cohort][None]))})
    return pd.DataFrame(rows)
