r"""Posterior predictive replicates: the process run forward again for the observed students.

For each posterior draw and each observed student (her race, income, cohort and
school kept as observed), a new unobserved ability part :math:`U \sim
\mathrm{Uniform}(0, W)` (or the normal alternative), a new class size from the
cohort's assignment rule at that :math:`U`, a teacher's MA (the observed class's when
the class size is unchanged, else a new draw from the MA probability of the new
size), and the score from the score equation.  The replicated score distribution by
cohort and class size is then compared with the observed one
(:func:`ppc_table`).  The naive regression replicates from its normal likelihood
with the observed class sizes.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from classsize.model.experiment import score_without_ability

from .analysis import Analysis


def replicate_scores(analysis: Analysis, draws: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Replicated ``test_score`` and ``small_class`` for each draw (draws x students)."""
    rng = np.random.default_rng(seed)
    obs = analysis.observed
    n = int(obs.test_score.shape[0])
    m = next(iter(draws.values())).shape[0]
    col = lambda name: np.asarray(draws[name])[:, None]  # noqa: E731
    if analysis.name == "naive":
        kw = analysis.kwargs
        race_eff = np.concatenate([np.zeros((m, 1)), np.asarray(draws["race_effect"])], axis=1)
        mean = (np.asarray(draws["school_intercept"])[:, np.asarray(kw["school"])]
                + col("log_income_weight") * np.asarray(kw["income_scaled"])[None]
                + np.take_along_axis(race_eff, np.broadcast_to(np.asarray(kw["race"])[None], (m, n)), axis=1)
                + col("small_class_direct_effect") * np.asarray(kw["small_class"])[None]
                + col("teacher_ma_effect") * np.asarray(kw["teacher_has_ma"])[None])
        if kw.get("covariates") is not None and "covariate_weights" in draws:
            mean = mean + np.asarray(draws["covariate_weights"]) @ np.asarray(kw["covariates"]).T
        score = mean + col("score_sd") * rng.standard_normal((m, n))
        return {"test_score": score.astype(np.float32),
                "small_class": np.broadcast_to(np.asarray(kw["small_class"]), (m, n)).astype(np.int8)}

    p = {k: np.asarray(v) for k, v in draws.items()}
    width = col("ability_uniform_width")
    if analysis.kwargs.get("ability", "uniform") == "uniform":
        u = rng.uniform(size=(m, n)) * width
    else:
        u = width / 2 + width / np.sqrt(12.0) * rng.standard_normal((m, n))
    pv = {k: (v[:, None] if v.ndim == 1 else v[:, None, :]) for k, v in p.items()}
    race = np.asarray(obs.race)
    shift = np.take_along_axis(p["regular_small_race_shift"], np.broadcast_to(race[None], (m, n)), axis=1)
    rule = (pv["regular_small_intercept"] + pv["regular_small_income"] * np.asarray(obs.income_scaled)[None]
            + shift + pv["regular_small_ability"] * u)
    prob = np.clip(np.where(np.asarray(obs.is_experimental)[None], pv["experimental_p_small"], rule), 0.0, 1.0)
    small = (rng.uniform(size=(m, n)) < prob).astype(np.int8)
    obs_small = np.asarray(obs.small_class)[None]
    class_ma = np.asarray(obs.teacher_has_ma)[np.asarray(obs.class_of_student)][None]
    p_ma = np.where(small == 1, pv["p_ma_small"], pv["p_ma_large"])
    ma = np.where(small == obs_small, class_ma, rng.uniform(size=(m, n)) < p_ma).astype(float)
    school = np.asarray(obs.school_of_class)[np.asarray(obs.class_of_student)]
    school_effect = p["school_effect"][:, school]
    covariate_term = 0.0
    if obs.extra_covariates is not None and "extra_covariate_weights" in p:
        covariate_term = p["extra_covariate_weights"] @ np.asarray(obs.extra_covariates).T
    score = (score_without_ability(pv, small, ma, school_effect)
             + pv["score_ability_weight"] * (pv["ability_income_weight"] * np.asarray(obs.income_scaled)[None]
                                             + covariate_term + u))
    return {"test_score": np.asarray(score, dtype=np.float32), "small_class": small}


def ppc_table(idata):
    """Observed vs replicated mean and sd of scores by cohort and class size.

    Returns a DataFrame with, per group, the observed mean/sd, the replicated
    means' 5-95% range, and the posterior predictive p-value of the mean.
    """
    import pandas as pd

    obs = idata.observed_data
    y = np.asarray(obs["test_score"])
    s = np.asarray(obs["small_class"])
    exp = np.asarray(obs["is_experimental"]).astype(bool)
    rep_y = np.asarray(idata.posterior_predictive["test_score"]).reshape(-1, y.shape[0])
    rep_s = np.asarray(idata.posterior_predictive["small_class"]).reshape(-1, y.shape[0])
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
