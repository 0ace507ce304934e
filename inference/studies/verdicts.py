"""The verdicts of the recovery studies: the summary table and the printed verdict of
a study's tidy table (one row per dataset and quantity; see :mod:`.result`), which
:class:`~.result.SBCStudy` and :class:`~.result.CoverageStudy` judge with.

**SBC** (:func:`sbc_verdict`): each quantity's ranks are tested for uniformity (a
chi-square test and the ECDF band test, :mod:`.calibration`); a quantity's p-value is
twice the smaller of the two, and Holm's method over the quantities keeps the chance
that *any* quantity of a calibrated fit is flagged at most :data:`FAMILY_ALPHA` = 5%.
The printed band is simultaneous at ``1 - alpha / (2m)`` for ``m`` quantities.

**Coverage** (:func:`coverage_verdict`): for each estimand and level the count of
datasets whose central interval contains the truth gets a Clopper-Pearson band at
confidence ``1 - 0.05 / (levels x estimands)`` (Bonferroni: family false-alarm rate
5%); an estimand fails when a band excludes its nominal level.  Bias, RMSE of the
posterior mean, mean posterior sd, mean z-score and mean contraction are reported.

Both count flagged fits (divergences, R-hat above 1.01, bulk ESS below 400) and keep
them in the statistics (dropping them would select on the fits' outcome).  A fit with
non-finite draws counts against the verdict: each of its quantities has the top rank
and intervals that miss the truth (:mod:`.fitting`), and the verdict lists it.
Unfittable datasets (a school without students) are left out and counted: that is
decided by the data alone, before any fit, and conditioning on the data leaves the
posterior, hence the calibration, unchanged.
"""

from __future__ import annotations

import numpy as np

from classsize.inference.studies.calibration import (
    FAMILY_ALPHA,
    LEVELS,
    chi_square_uniformity,
    clopper_pearson,
    combined_p,
    ecdf_test,
    holm,
    verdict_band,
)
from classsize.inference.engine.diagnostics import ESS_MIN, R_HAT_MAX


def _fit_lines(table, settings) -> list[str]:
    """The verdict's lines about the fits: how many, how long, how many flagged."""
    per = table.drop_duplicates("dataset")
    n = len(per)
    fitted = per[per["status"] == "fitted"]
    unfittable = per[per["status"] == "unfittable"]
    failed = per[per["status"] == "failed"]
    flagged = fitted[~fitted["fit_ok"].astype(bool)]
    lines = [
        f"fits: {settings['chains']} chain(s) x ({settings['warmup']} warm-up + {settings['samples']} draws); "
        f"{len(fitted)} of {n} datasets fitted in {settings['fit_seconds_total']:.0f} s",
        f"  (+ {settings['compile_seconds']:.0f} s compiling; lanes run by {settings['vectorize']} on "
        f"{len(settings['devices'])} device(s))",
    ]
    if len(unfittable):
        lines.append(f"  {len(unfittable)} dataset(s) unfittable (a school without students): "
                     f"datasets {_list(unfittable['dataset'])}; not in the statistics")
    if len(failed):
        lines.append(f"  {len(failed)} fit(s) gave non-finite draws: datasets {_list(failed['dataset'], most=50)}; "
                     "counted against the verdict (intervals that miss the truth, the top rank)")
    if len(fitted):
        div = int((fitted["divergences"] > 0).sum())
        rh = int((fitted["max_r_hat"] > R_HAT_MAX).sum())
        ess = int((fitted["min_ess_bulk"] < ESS_MIN).sum())
        depth = float(fitted["tree_depth_hits"].mean())
        lines.append(f"  {len(flagged)} of {len(fitted)} fits fail diagnostics ({div} divergent, {rh} R-hat > "
                     f"{R_HAT_MAX}, {ess} bulk ESS < {ESS_MIN:.0f}): kept in the statistics")
        lines.append(f"  mean leapfrog steps per draw {fitted['mean_steps'].mean():.0f}; "
                     f"tree depth saturated in {100 * depth:.0f}% of draws")
    return lines


def _list(values, most: int = 8) -> str:
    v = [str(int(x)) for x in values]
    return ", ".join(v[:most]) + (f" and {len(v) - most} more" if len(v) > most else "")


def _in_statistics(table):
    """The rows the statistics use: every fit, those with non-finite draws included."""
    return table[table["status"].isin(["fitted", "failed"])]


def sbc_verdict(table, names, settings):
    """``(summary, verdict text, passed, band, ranks)`` of an SBC study's table."""
    import pandas as pd

    used = _in_statistics(table)
    n_values = int(used["rank_draws"].max()) + 1 if len(used) else settings["rank_draws"] + 1
    ranks = {q: used.loc[used["quantity"] == q, "rank"].to_numpy(np.int64) for q in names}
    n = len(ranks[names[0]])
    rows = []
    # the printed and plotted band is simultaneous at 1 - alpha / (2m): an ECDF that leaves
    # it has p < alpha / (2m), hence a combined p < alpha / m and a Holm-adjusted p < alpha
    band = verdict_band(n, n_values, len(names)) if n > 0 else None
    for q in names:
        r = ranks[q]
        if n == 0:
            rows.append({"quantity": q, "n": 0, "bins": 0, "chi2": np.nan, "chi2_p": np.nan, "ecdf_p": np.nan,
                         "inside_band": False, "p": np.nan})
            continue
        chi = chi_square_uniformity(r, n_values)
        p_ecdf, inside = ecdf_test(r, band)
        rows.append({"quantity": q, "n": n, "bins": chi.df + 1, "chi2": chi.statistic, "chi2_p": chi.p_value,
                     "ecdf_p": p_ecdf, "inside_band": inside, "p": combined_p(chi.p_value, p_ecdf)})
    summary = pd.DataFrame(rows)
    adjusted, rejected = holm(summary["p"].to_numpy(float), FAMILY_ALPHA)
    summary["p_holm"] = adjusted
    summary["pass"] = ~rejected & (summary["n"] > 0)
    passed = bool(summary["pass"].all())

    lines = [
        f"recover {settings['model']}: simulation-based calibration, {settings['datasets']} datasets with "
        f"parameters from the prior (seeds {settings['sim_seeds']})",
        *_fit_lines(table, settings),
        f"ranks of the truth among {n_values - 1} evenly thinned draws (0..{n_values - 1}); tests: chi-square "
        f"on {int(summary['bins'].max()) if n else 0} bins, ECDF simultaneous band",
        f"  a quantity's p = 2 x the smaller p; Holm over {len(names)} quantities: family false-alarm rate "
        f"{FAMILY_ALPHA:.0%}; band: simultaneous at {1 - FAMILY_ALPHA / (2 * len(names)):.2%} (OUT implies FAIL)",
        f"{'quantity':<27} {'chi2 p':>7} {'ECDF p':>7} {'band':>6} {'Holm p':>7}  verdict",
    ]
    for _, r in summary.iterrows():
        lines.append(f"{r['quantity']:<27} {_fmt_p(r['chi2_p'])} {_fmt_p(r['ecdf_p'])} "
                     f"{('in' if r['inside_band'] else 'OUT'):>6} {_fmt_p(r['p_holm'])}  "
                     f"{'pass' if r['pass'] else 'FAIL'}")
    if n < 10:
        lines.append(f"note: only {n} datasets: the tests have little power (use 100 or more)")
    low_ess = used[used["ess_bulk"] < n_values - 1] if "ess_bulk" in used else used.iloc[:0]
    if len(low_ess):
        lines.append(f"note: {len(low_ess)} (dataset, quantity) pairs have a bulk ESS below the {n_values - 1} rank "
                     f"draws; autocorrelated draws make the ranks U-shaped (longer chains, or fewer --rank-draws)")
    failing = summary.loc[~summary["pass"], "quantity"].tolist()
    lines.append(
        f"verdict: PASS: no quantity's ranks depart from uniformity ({n} datasets)" if passed else
        f"verdict: FAIL: {', '.join(failing)} miscalibrated (ranks not uniform)"
    )
    return summary, "\n".join(lines), passed, band, ranks


def _fmt_p(p) -> str:
    return f"{'nan':>7}" if p is None or not np.isfinite(p) else f"{p:7.3f}" if p >= 0.001 else f"{p:7.0e}"


def coverage_verdict(table, names, settings, analysis):
    """``(summary, verdict text, passed)`` of a coverage study's table; the verdict ends
    with what ``analysis`` says of its coverage (:meth:`~classsize.inference.analyses.base.Analysis.coverage_note`)."""
    import pandas as pd

    used = _in_statistics(table)
    n_checks = len(LEVELS) * len(names)
    confidence = 1.0 - FAMILY_ALPHA / n_checks
    rows = []
    for q in names:
        u = used[used["quantity"] == q]
        n = len(u)
        for lv in LEVELS:
            k = int(u[f"covered_{int(100 * lv)}"].astype(bool).sum()) if n else 0
            lo95, hi95 = clopper_pearson(k, n, 0.95)
            lo, hi = clopper_pearson(k, n, confidence)
            rows.append({"quantity": q, "level": lv, "n": n, "covered": k, "coverage": k / n if n else np.nan,
                         "cp95_lower": lo95, "cp95_upper": hi95, "band_lower": lo, "band_upper": hi,
                         "pass": bool(n > 0 and lo <= lv <= hi)})
    summary = pd.DataFrame(rows)
    stats_rows = {}
    for q in names:
        u = used[(used["quantity"] == q) & (used["status"] == "fitted")]  # moments: fits with finite draws
        err = u["mean"] - u["truth"]
        stats_rows[q] = {"bias": float(err.mean()) if len(u) else np.nan,
                         "rmse": float(np.sqrt(np.mean(err**2))) if len(u) else np.nan,
                         "mean_sd": float(u["sd"].mean()) if len(u) else np.nan,
                         "mean_z": float(u["z_score"].mean()) if len(u) else np.nan,
                         "mean_contraction": float(u["contraction"].mean()) if len(u) else np.nan}
    for col in ("bias", "rmse", "mean_sd", "mean_z", "mean_contraction"):
        summary[col] = summary["quantity"].map(lambda q, c=col: stats_rows[q][c])
    passed_q = {q: bool(summary.loc[summary["quantity"] == q, "pass"].all()) for q in names}
    summary["estimand_pass"] = summary["quantity"].map(passed_q)
    passed = all(passed_q.values())
    truth = table.drop_duplicates("quantity").set_index("quantity")["truth"]
    lines = [
        f"recover {settings['model']}: coverage at a fixed truth, {settings['datasets']} datasets "
        f"(seeds {settings['sim_seeds']})",
        "truth: " + ", ".join(f"{q} = {truth[q]:g}" for q in names),
        *_fit_lines(table, settings),
        f"central intervals; band: Clopper-Pearson at {100 * confidence:.2f}% (Bonferroni over {n_checks} checks:",
        f"  family false-alarm rate {FAMILY_ALPHA:.0%}); the 95% bands are in summary.csv",
        f"{'estimand':<27} {'level':>5} {'covered':>9} {'coverage':>8}  {'band':<15} verdict",
    ]
    for _, r in summary.iterrows():
        lines.append(f"{r['quantity']:<27} {r['level']:5.0%} {r['covered']:>4}/{r['n']:<4} {r['coverage']:8.2f}  "
                     f"[{r['band_lower']:.2f}, {r['band_upper']:.2f}]    {'pass' if r['pass'] else 'FAIL'}")
    for q in names:
        s = stats_rows[q]
        lines.append(f"{q:<27} bias {s['bias']:+.3f}, RMSE {s['rmse']:.3f}, mean sd {s['mean_sd']:.3f}, "
                     f"mean z {s['mean_z']:+.2f} (coverage {'pass' if passed_q[q] else 'FAIL'})")
    failing = []
    for q in names:
        s = summary[(summary["quantity"] == q) & ~summary["pass"]]
        if len(s):
            under = bool((s["band_upper"] < s["level"]).any())
            over = bool((s["band_lower"] > s["level"]).any())
            how = "under- and over-covers" if under and over else "under-covers" if under else "over-covers"
            failing.append(f"{q} ({how})" if len(used) else q)
    if passed:
        lines.append("verdict: PASS: every interval covers the truth at its nominal rate")
    else:
        lines.append(f"verdict: FAIL: {', '.join(failing)}: coverage departs from nominal at this truth")
    note = analysis.coverage_note(passed)
    if note:
        lines.append(note)
    return summary, "\n".join(lines), passed
