"""Calibration of the structural analysis, with tests that can fail and say how often.

* **SBC** (:func:`~classsize.inference.studies.run.run_study` with ``from_prior``): every
  sampled parameter is checked, the vector ones element by element (race
  probabilities, race shifts of the assignment rule, school effects).  The verdict
  fails when Holm's method over the ``m`` quantities rejects one: a family
  false-alarm rate of at most 5% whatever the dependence between quantities.  Its
  power against a miscalibrated quantity is computed by simulating the rank
  statistic (:func:`~classsize.inference.studies.calibration.rank_test_power`) and asserted
  next to each study.  The default suite runs 30 datasets, the slow suite 100.
* **Coverage at a fixed truth**: the number of datasets, ``n``, and the threshold of
  covering 90% intervals, ``k``, are chosen from the binomial so that calibrated
  intervals fail rarely and intervals that cover 60% of the time fail with
  probability at least 0.95; the test computes and asserts both rates.
* **Fits with non-finite draws** count against the verdict: as intervals that miss
  the truth and as the top rank, and the verdict lists them.

Every study has fixed seeds, so each test is deterministic; the rates stated are
over seeds.  The small design (300 + 300 students, 5 schools) and one chain of 150
warm-up and 300 kept draws keep the default suite's two studies to about 25 and
50 s of sampling on a loaded 2-core machine (bench/README.md, "Calibration").
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from classsize.inference.studies import calibration as cal
from classsize.inference.studies import fitting
from classsize.inference.studies import run as st
from classsize.inference.studies import verdicts
from classsize.inference.analyses.conditioned import ESTIMANDS
from classsize.inference.analyses.quantities import quantity_draws, quantity_label
from classsize.inference.analyses.registry import get_analysis
from classsize.model import Config

#: The design of every study here; its parameter values are the default truth.
DESIGN = Config(n_regular=300, n_experimental=300, n_schools=5)
#: One chain of 150 warm-up and 300 kept draws; ranks among 19 draws thinned evenly
#: (one in 16: the slowest quantity, the assignment intercept, has a bulk ESS of about
#: 20 to 60 per 300 draws, so the thinned draws are close to independent).
FAST = dict(chains=1, warmup=150, samples=300, rank_draws=19)
#: The slow SBC: one chain of 300 warm-up and 1500 kept draws, ranks among 49 draws.
SLOW = dict(chains=1, warmup=300, samples=1500, rank_draws=49)


def _vector_elements(names):
    return [q for q in names if q.endswith("]")]


# ===================================================================== vector quantities
def test_study_quantities_include_every_element_of_the_vector_parameters():
    structural = get_analysis("structural").study_quantities(DESIGN, sbc=True)
    k, schools = len(DESIGN.race_codes), DESIGN.n_schools
    assert structural[:3] == ESTIMANDS
    assert set(_vector_elements(structural)) == (
        {f"race_probs[{i}]" for i in range(k)} | {f"regular_small_race_shift[{i}]" for i in range(k)}
        | {f"school_effect[{j}]" for j in range(schools)})
    assert len(structural) == len(set(structural)) == 3 + 10 + 2 * k + schools
    # the randomized analysis pins the assignment rule: no race shifts
    randomized = get_analysis("randomized").study_quantities(DESIGN, sbc=True)
    assert not any(q.startswith("regular_small") for q in randomized)
    assert {f"school_effect[{j}]" for j in range(schools)} <= set(randomized)
    # a coverage study checks the estimands only
    assert get_analysis("structural").study_quantities(DESIGN, sbc=False) == ESTIMANDS


def test_vector_elements_truths_and_prior_variances():
    draws = {"race_probs": np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]),
             "school_effect": np.arange(10.0).reshape(2, 5)}
    np.testing.assert_array_equal(quantity_draws(draws, "race_probs[2]"), [0.3, 0.2])
    np.testing.assert_array_equal(quantity_draws(draws, "school_effect[4]"), [4.0, 9.0])
    analysis = get_analysis("structural")
    var = analysis.prior_variances(DESIGN, ("race_probs[1]", "regular_small_race_shift[0]", "school_effect[3]"))
    # Dirichlet(2, 2, 2, 2): each element is Beta(2, 6), variance 2 * 6 / (8^2 * 9)
    assert var["race_probs[1]"] == pytest.approx(12 / (64 * 9))
    assert var["regular_small_race_shift[0]"] == pytest.approx(0.3**2)
    # e ~ Uniform(-R, R), R ~ LogNormal(log 5, 0.5): Var e = E[R^2] / 3 = 25 e^{0.5} / 3
    assert var["school_effect[3]"] == pytest.approx(25 * np.exp(0.5) / 3, rel=1e-6)
    # the prior draws of a study carry the truths: the school effects of each dataset
    sim = fitting.simulate_study(analysis, DESIGN, [0, 1], from_prior=True)
    truths = fitting.quantities_of(analysis, sim, analysis.study_quantities(DESIGN, sbc=True))
    np.testing.assert_array_equal(truths["school_effect[2]"], sim["school_effect"][:, 2])
    np.testing.assert_array_equal(truths["regular_small_race_shift[1]"], sim["regular_small_race_shift"][:, 1])


# ============================================================= the power of the rank tests
def test_vectorised_p_values_are_the_verdicts():
    """:func:`rank_set_p_values` (used for power) computes what the verdict computes."""
    rng = np.random.default_rng(5)
    n, L, m = 30, 19, 4
    sets = np.stack([rng.integers(0, L + 1, n), np.repeat(np.arange(10), 3),
                     cal.miscalibrated_ranks(rng, 1, n, L, sd_scale=0.6)[0],
                     cal.miscalibrated_ranks(rng, 1, n, L, shift=1.0)[0]])
    table = pd.DataFrame([{"dataset": d, "quantity": f"q{j}", "status": "fitted", "fit_ok": True, "rank": r,
                           "rank_draws": L, **_FIT_COLUMNS} for j, s in enumerate(sets) for d, r in enumerate(s)])
    summary = verdicts.sbc_verdict(table, tuple(f"q{j}" for j in range(m)), {**_SETTINGS, "datasets": n})[0]
    band = cal.verdict_band(n, L + 1, m)
    np.testing.assert_allclose(cal.rank_set_p_values(sets, L + 1, band), summary["p"].to_numpy(), rtol=1e-12)


def test_rank_test_power_is_what_the_rank_model_implies():
    # calibrated: ranks uniform on 0..L; shifted by a whole sd the truth sits high
    rng = np.random.default_rng(0)
    r = cal.miscalibrated_ranks(rng, 200, 100, 19).ravel()
    assert stats.chisquare(np.bincount(r, minlength=20)).pvalue > 0.001
    high = cal.miscalibrated_ranks(rng, 1, 10_000, 19, shift=-1.0).ravel()
    assert np.mean(high) / 19 == pytest.approx(stats.norm.cdf(1 / np.sqrt(2)), abs=0.01)  # E Phi(Z + 1)
    assert cal.rank_test_power(30, 26, 19, shift=3.0, sets=500) == 1.0


# ====================================================================== SBC, default suite
def _check_sbc(result, n, rank_draws):
    """Every quantity of every dataset in the table; no fit with non-finite draws; PASS."""
    names = [quantity_label(q, DESIGN) for q in get_analysis("structural").study_quantities(DESIGN, sbc=True)]
    t = result.table
    assert set(t["quantity"]) == set(names) and len(t) == n * len(names)
    assert t["status"].isin(["fitted", "unfittable"]).all(), t.loc[t["status"] == "failed", "problems"].unique()
    fitted = t[t["status"] == "fitted"]
    assert (fitted["rank_draws"] == rank_draws).all() and fitted["rank"].between(0, rank_draws).all()
    assert result.passed, result.verdict
    n_fitted = fitted["dataset"].nunique()
    assert n_fitted >= 0.95 * n
    assert f"verdict: PASS: no quantity's ranks depart from uniformity ({n_fitted} datasets)" in result.verdict
    return names


def _check_race_probabilities_are_exact(result, seed, n):
    """The race probabilities' posterior is conjugate, ``Dirichlet(2 + counts)``: each
    fit's mean must be within 4.5 Monte Carlo standard errors (posterior sd over the
    square root of the bulk ESS) of the exact mean, and its sd within a factor 0.7 to
    1.4 of the exact sd (about 5 Monte Carlo standard errors at an ESS of 60).  False
    alarm: about 1e-3 over the fits.  A direct check that ranks cannot replace: a rank
    test fails by chance when the datasets' truths themselves sit unevenly in their
    exact posteriors."""
    sim = fitting.simulate_study(get_analysis("structural"), DESIGN, list(range(seed, seed + n)), from_prior=True)
    rows_of = result.table.set_index(["quantity", "dataset"]).sort_index()
    k, n_students = len(DESIGN.race_codes), DESIGN.n_regular + DESIGN.n_experimental
    for i in range(k):
        a = 2.0 + (sim["race"] == i).sum(axis=1)
        a0 = 2.0 * k + n_students
        exact_mean, exact_sd = a / a0, np.sqrt(a * (a0 - a) / (a0**2 * (a0 + 1)))
        rows = rows_of.loc[f"race_probs[{DESIGN.race_codes[i]}]"]
        fitted = rows["status"].to_numpy() == "fitted"
        z = (rows["mean"].to_numpy() - exact_mean) / (exact_sd / np.sqrt(rows["ess_bulk"].to_numpy()))
        assert np.abs(z[fitted]).max() < 4.5, (i, z)
        ratio = rows["sd"].to_numpy() / exact_sd
        assert ((ratio[fitted] > 0.7) & (ratio[fitted] < 1.4)).all(), (i, ratio)


def test_structural_sbc_fast():
    """Structural SBC of 30 datasets, the vector parameters element by element (26
    quantities).  False-alarm rate: at most 5% (Holm over the quantities; measured per
    quantity below).  Power, by simulation of the rank statistic, against one
    quantity whose posterior is 10% too narrow (sd x 0.9) or shifted by 0.1 sd:
    below 1%.  No test on 30 datasets can see that: the best one-sided test of the
    scale, knowing the alternative, has 23% (a chi-square test of 30 normal scores,
    variance ratio 1 / 0.81).  What this one sees with probability 0.8 or more is a
    shift of 1 posterior sd (0.86); a posterior half as wide as it should be is
    flagged with probability 0.36 (bench/README.md, "Calibration", has the table)."""
    n, L = 30, FAST["rank_draws"]
    m = len(get_analysis("structural").study_quantities(DESIGN, sbc=True))
    false_alarm = cal.rank_test_power(n, m, L)
    assert false_alarm <= cal.FAMILY_ALPHA / m + 0.0015  # 4000 rank sets: binomial sd 0.0007
    assert cal.rank_test_power(n, m, L, sd_scale=0.9) < 0.01
    assert cal.rank_test_power(n, m, L, shift=0.1) < 0.01
    assert cal.rank_test_power(n, m, L, shift=1.0) >= 0.8
    assert 0.25 <= cal.rank_test_power(n, m, L, sd_scale=0.5) <= 0.45

    result = st.run_study("structural", n, config=DESIGN, from_prior=True, seed=0, batch_size=n, progress=False,
                          **FAST)
    names = _check_sbc(result, n, L)
    assert len(_vector_elements(names)) == 13
    _check_race_probabilities_are_exact(result, 0, n)


# ========================================================== coverage at a fixed truth
def test_structural_covers_the_truth_at_a_fixed_truth():
    """The central 90% interval of each estimand must cover the default truth in at
    least ``k = 23`` of ``n = 30`` datasets.  Calibrated intervals fail that with
    probability 0.78% per estimand (at most 2.4% for the three); intervals that cover
    60% of the time pass it with probability 4.4%, so they fail with probability
    0.956.  (Coverage at a fixed truth is the posterior's frequentist coverage, close
    to nominal here: the data dominate the priors.)"""
    n, k = 30, 23
    false_alarm = stats.binom.cdf(k - 1, n, 0.9)  # P(Binom(30, 0.9) < 23)
    passes_at_60 = stats.binom.sf(k - 1, n, 0.6)  # P(Binom(30, 0.6) >= 23)
    assert false_alarm == pytest.approx(0.0078, abs=5e-5) and 3 * false_alarm < 0.025
    assert passes_at_60 == pytest.approx(0.0435, abs=5e-5) and passes_at_60 <= 0.05

    result = st.run_study("structural", n, config=DESIGN, seed=0, batch_size=n, progress=False,
                          **{key: v for key, v in FAST.items() if key != "rank_draws"})
    t = result.table
    assert (t["status"] == "fitted").all()
    for name, rows in t.groupby("quantity"):
        assert rows["covered_90"].sum() >= k, (name, rows[["truth", "mean", "lower_90", "upper_90"]])
    assert result.passed, result.verdict


# ================================================================ non-finite fits count
_FIT_COLUMNS = {"divergences": 0, "max_r_hat": np.nan, "min_ess_bulk": 100.0, "mean_steps": 7.0,
                "tree_depth_hits": 0.0, "seconds": 1.0}
_SETTINGS = {"model": "structural", "datasets": 30, "sim_seeds": "0..29", "chains": 1, "warmup": 150,
             "samples": 300, "fit_seconds_total": 1.0, "compile_seconds": 1.0, "vectorize": "map",
             "devices": ["cpu:0"], "rank_draws": 19, "config": DESIGN.to_dict()}


def _summarised(values, finite=True, truth=0.5, rank_draws=19):
    q = {"a": np.asarray(values, dtype=float).reshape(1, -1)}
    diag = {"finite": finite}
    return fitting._summarise_fit(q, {"a": truth}, {"a": 1.0}, diag, rank_draws, np.random.default_rng(0),
                                  {"a": (np.nan, 100.0)})["quantities"]["a"]


def test_a_fit_with_non_finite_draws_misses_and_ranks_at_the_top():
    ok = _summarised(np.linspace(0, 1, 100))
    assert ok["covered_90"] and 0 < ok["rank"] < 19
    # a NaN in this quantity, or anywhere else in the fit: the worst case, not a gap
    for row in (_summarised(np.r_[np.linspace(0, 1, 99), np.nan]), _summarised(np.linspace(0, 1, 100), False)):
        assert all(row[f"covered_{lv}"] is False for lv in (50, 80, 90, 95))
        assert row["rank"] == 19 and row["rank_draws"] == 19
        assert np.isnan(row["mean"]) and np.isnan(row["lower_90"])


def _table(ranks, failed=()):
    rows = []
    for k, r in enumerate(ranks):
        bad = k in failed
        rows.append({"dataset": k, "quantity": "small_class_direct_effect", "status": "failed" if bad else "fitted",
                     "fit_ok": not bad, "truth": 5.0, "mean": np.nan if bad else 5.0, "sd": np.nan if bad else 1.0,
                     "z_score": np.nan if bad else 0.0, "contraction": 0.9, "rank": 19 if bad else r,
                     "rank_draws": 19, **_FIT_COLUMNS,
                     **{f"covered_{lv}": (not bad) and c for lv, c in
                        ((50, k % 2 == 0), (80, k % 5 != 0), (90, k % 10 != 0), (95, k % 20 != 0))}})
    return pd.DataFrame(rows)


def test_non_finite_fits_count_against_the_verdicts():
    names = ("small_class_direct_effect",)
    uniform = np.tile(np.arange(20), 2)[:40]  # 40 ranks, as uniform as 40 can be
    summary, verdict, passed, _, ranks = verdicts.sbc_verdict(_table(uniform), names, _SETTINGS)
    assert passed and summary["n"].iloc[0] == 40
    # 8 failed fits: in the statistics (n stays 40, their ranks at the top), listed, and they fail it
    failed = (1, 3, 5, 7, 9, 11, 13, 15)
    summary, verdict, passed, _, ranks = verdicts.sbc_verdict(_table(uniform, failed), names, _SETTINGS)
    assert summary["n"].iloc[0] == 40 and (ranks[names[0]][list(failed)] == 19).all()
    assert "8 fit(s) gave non-finite draws: datasets 1, 3, 5, 7, 9, 11, 13, 15; counted against" in verdict
    assert not passed and "verdict: FAIL" in verdict
    # coverage: the same 40 datasets; 8 more misses fail the 80% and 90% checks
    settings = {**_SETTINGS, "datasets": 40, "sim_seeds": "0..39"}
    summary, verdict, passed = verdicts.coverage_verdict(_table(uniform), names, settings, get_analysis("structural"))
    assert passed, verdict
    summary, verdict, passed = verdicts.coverage_verdict(_table(uniform, failed), names, settings,
                                                       get_analysis("structural"))
    s = summary.set_index("level")
    assert (s["n"] == 40).all() and s.loc[0.5, "covered"] == 20 - 0 and s.loc[0.9, "covered"] == 36 - 8
    assert "8 fit(s) gave non-finite draws: datasets 1, 3, 5, 7, 9, 11, 13, 15" in verdict
    assert not passed
    assert s.loc[0.5, "bias"] == 0.0  # moments come from the fits with finite draws


# ========================================================================= slow suite
@pytest.mark.slow
def test_structural_sbc_slow():
    """Structural SBC of 100 datasets, 26 quantities (the vector parameters element by
    element), ranks among 49 draws.  False-alarm rate at most 5% (Holm).  Power
    against one quantity 10% too narrow or shifted by 0.1 sd: about 1%; against a
    shift of 0.5 sd, 0.79; against a posterior 30% too narrow, 0.51."""
    n, L = 100, SLOW["rank_draws"]
    m = len(get_analysis("structural").study_quantities(DESIGN, sbc=True))
    assert cal.rank_test_power(n, m, L, sd_scale=0.9) < 0.02
    assert cal.rank_test_power(n, m, L, shift=0.5) >= 0.75
    result = st.run_study("structural", n, config=DESIGN, from_prior=True, seed=2000, batch_size=50,
                          progress=False, **SLOW)
    _check_sbc(result, n, L)
    _check_race_probabilities_are_exact(result, 2000, n)


def test_study_tables_name_the_races_and_schools():
    assert quantity_label("race_probs[1]", DESIGN) == f"race_probs[{DESIGN.race_codes[1]}]"
    assert quantity_label("school_effect[0]", DESIGN) == "school_effect[9001]"
    assert quantity_label("teacher_ma_effect", DESIGN) == "teacher_ma_effect"
