"""Parameter recovery studies (``classsize recover``): the statistics, the encoding of
draws, the batched fits, and small studies end to end.

The statistics are checked against hand-computed cases and against their own
promises: perfectly uniform ranks pass and piled-up ranks fail; the ECDF band's
false-alarm rate, measured on fresh uniform rank sets, is the 5% it is built for.
The batched fits are checked against the path of ``classsize fit``: the same
dataset encoded from the draw and loaded from its CSV files has the same log
density at the same parameters (fast), and the same posterior (slow).

The end-to-end studies use a small design (300 + 300 students, 5 schools), a few
datasets and short chains: they check the files, the columns, that nothing is
dropped, and the verdict each analysis should get at the default truth: PASS for
randomized (a false alarm has probability at most 5%, the verdict's family rate) and
FAIL for naive.  Calibration with power to see a miscalibration is checked in
``tests/test_calibration.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from classsize.inference.studies import calibration as cal
from classsize.inference.studies import fitting
from classsize.inference.studies import run as st
from classsize.inference.studies import verdicts
from classsize.inference.analyses.conditioned import ASSIGNMENT_PARAMETERS, ESTIMANDS
from classsize.inference.analyses.quantities import quantity_label
from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.sampling import ChainRunner
from classsize.inference.commands.cli import main
from classsize.model import Config

SMALL = Config(n_regular=300, n_experimental=300, n_schools=5)


# ================================================================== statistics by hand
def test_chi_square_hand_example():
    # 10 ranks over 0..9 in 2 bins of 5 values: 8 below 5, 2 above; expected 5 and 5
    ranks = [0, 1, 1, 2, 3, 4, 4, 4, 7, 9]
    chi = cal.chi_square_uniformity(ranks, n_values=10, n_bins=2)
    assert chi.observed.tolist() == [8, 2]
    assert chi.expected.tolist() == [5, 5]
    assert chi.statistic == pytest.approx((3**2 + 3**2) / 5)  # 3.6
    assert chi.df == 1
    assert chi.p_value == pytest.approx(0.05777957, rel=1e-6)  # P(chi2_1 > 3.6) = 2 (1 - Phi(1.8974))
    # 4 bins of unequal width over 0..9: edges 0, 2, 5, 8, 10 (widths 2, 3, 3, 2)
    chi4 = cal.chi_square_uniformity(ranks, n_values=10, n_bins=4)
    assert chi4.observed.tolist() == [3, 5, 1, 1]
    assert chi4.expected.tolist() == [2.0, 3.0, 3.0, 2.0]
    by_hand = 1 / 2 + 4 / 3 + 4 / 3 + 1 / 2
    assert chi4.statistic == pytest.approx(by_hand)
    assert chi4.p_value == pytest.approx(stats.chi2.sf(by_hand, 3))


def test_chi_square_uniform_passes_and_piled_fails():
    uniform = np.repeat(np.arange(100), 2)  # every rank value twice
    piled = np.repeat(np.arange(10), 20)  # every rank in the lowest tenth
    assert cal.chi_square_uniformity(uniform, 100).p_value == pytest.approx(1.0)
    assert cal.chi_square_uniformity(piled, 100).p_value < 1e-10
    # the truth sits in the middle of every posterior: ranks pile up in the centre
    centre = np.full(200, 50)
    assert cal.chi_square_uniformity(centre, 100).p_value < 1e-10
    with pytest.raises(ValueError):
        cal.chi_square_uniformity([0, 100], 100)


def test_ecdf_band_contains_uniform_and_excludes_skewed():
    band = cal.ecdf_band(200, 100, 0.05)
    assert band.z.shape == band.lower.shape == band.upper.shape == (99,)
    assert np.all(band.lower <= band.z + 1e-12) and np.all(band.z <= band.upper + 1e-12)
    assert 0 < band.gamma < 0.05  # the pointwise level is below the simultaneous one
    uniform = np.repeat(np.arange(100), 2)
    ecdf = cal.ecdf_counts(uniform, 100) / 200
    assert np.all((band.lower <= ecdf) & (ecdf <= band.upper))
    p, inside = cal.ecdf_test(uniform, band)
    assert inside and p > 0.5
    # skewed: ranks drawn with density 2x on 0..99 (the truth tends to sit high)
    skewed = np.floor(100 * np.sqrt(np.random.default_rng(1).uniform(size=200))).astype(int)
    p_skew, inside_skew = cal.ecdf_test(skewed, band)
    assert not inside_skew and p_skew < 0.01
    ecdf_skew = cal.ecdf_counts(skewed, 100) / 200
    assert np.any((ecdf_skew < band.lower) | (ecdf_skew > band.upper))


def test_ecdf_band_false_alarm_rate_is_five_percent():
    n, n_values = 50, 100
    band = cal.ecdf_band(n, n_values, 0.05)
    rng = np.random.default_rng(12345)  # not the band's seed
    trials = 2000
    outside = sum(not cal.ecdf_test(rng.integers(0, n_values, n), band)[1] for _ in range(trials))
    # binomial sd of the rate is 0.0049: 0.05 +- 4 sd
    assert 0.03 <= outside / trials <= 0.07, outside / trials


def test_clopper_pearson_hand_examples():
    # k = 0 and k = n have closed forms: 1 - (a/2)^(1/n) and (a/2)^(1/n)
    lo, hi = cal.clopper_pearson(0, 10, 0.95)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))  # 0.3085
    lo, hi = cal.clopper_pearson(10, 10, 0.95)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))  # 0.6915
    lo, hi = cal.clopper_pearson(5, 10, 0.95)
    assert (lo, hi) == pytest.approx((0.18709, 0.81291), abs=1e-5)
    lo, hi = cal.clopper_pearson(45, 50, 0.95)
    assert (lo, hi) == pytest.approx((0.78186, 0.96672), abs=1e-5)  # R: binom.test(45, 50)


def test_holm_hand_example():
    adjusted, rejected = cal.holm([0.01, 0.04, 0.03, 0.5], 0.05)
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(0.09, 0.5)
    assert adjusted == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert rejected.tolist() == [True, False, False, False]
    assert cal.combined_p(0.2, 0.01) == pytest.approx(0.02)


def test_sbc_rank_thinning_and_ties():
    assert cal.thin_indices(4000, 99).tolist()[:3] == [0, 41, 82]  # 3999 / 98 = 40.8
    assert cal.thin_indices(4000, 99)[-1] == 3999 and len(cal.thin_indices(4000, 99)) == 99
    assert cal.thin_indices(50, 99).tolist() == list(range(50))
    draws = np.arange(1000.0).reshape(2, 500)  # chain-major pooling: 0..999
    rank, used = cal.sbc_rank(500.5, draws, 99)
    assert used == 99 and rank == int(np.sum(np.round(np.linspace(0, 999, 99)) < 500.5))
    assert cal.sbc_rank(-1.0, draws)[0] == 0 and cal.sbc_rank(1e9, draws)[0] == 99
    # ties are broken uniformly: all 99 draws equal the truth -> ranks spread over 0..99
    rng = np.random.default_rng(0)
    ranks = [cal.sbc_rank(1.0, np.ones(500), 99, rng)[0] for _ in range(2000)]
    assert min(ranks) < 10 and max(ranks) > 89 and abs(np.mean(ranks) - 49.5) < 3


def _fake_sbc_table(ranks_by_quantity, rank_draws=99):
    rows = []
    for q, ranks in ranks_by_quantity.items():
        for k, r in enumerate(ranks):
            rows.append({"dataset": k, "quantity": q, "status": "fitted", "fit_ok": True, "rank": r,
                         "rank_draws": rank_draws, "divergences": 0, "max_r_hat": 1.0, "min_ess_bulk": 1000.0,
                         "mean_steps": 7.0, "tree_depth_hits": 0.0, "seconds": 1.0})
    return pd.DataFrame(rows)


SETTINGS = {"model": "structural", "datasets": 200, "sim_seeds": "0..199", "chains": 4, "warmup": 1000,
            "samples": 1000, "fit_seconds_total": 1.0, "compile_seconds": 1.0, "vectorize": "map",
            "devices": ["cpu:0"], "rank_draws": 99}


def test_sbc_verdict_passes_uniform_and_fails_piled():
    uniform = np.repeat(np.arange(100), 2)
    good = {"a": uniform, "b": uniform[::-1]}
    summary, verdict, passed, band, ranks = verdicts.sbc_verdict(_fake_sbc_table(good), ("a", "b"), SETTINGS)
    assert passed and summary["pass"].all(), verdict
    assert "verdict: PASS" in verdict
    bad = {"a": uniform, "b": np.repeat(np.arange(10), 20)}
    summary, verdict, passed, _, _ = verdicts.sbc_verdict(_fake_sbc_table(bad), ("a", "b"), SETTINGS)
    assert not passed
    assert summary.set_index("quantity").loc["b", "pass"] == False  # noqa: E712
    assert summary.set_index("quantity").loc["a", "pass"] == True  # noqa: E712
    assert "verdict: FAIL: b" in verdict


def test_coverage_counts_and_bands_by_hand():
    rows = []
    truth = 5.0
    # 10 datasets; interval at level L covers in the first c_L datasets
    covering = {50: 5, 80: 8, 90: 9, 95: 10}
    for k in range(10):
        row = {"dataset": k, "quantity": "small_class_direct_effect", "status": "fitted", "fit_ok": True,
               "truth": truth, "mean": truth + (0.5 if k % 2 else -0.5), "sd": 1.0, "z_score": 0.0,
               "contraction": 0.9, "divergences": 0, "max_r_hat": 1.0, "min_ess_bulk": 1000.0, "mean_steps": 7.0,
               "tree_depth_hits": 0.0, "seconds": 1.0}
        for lv, c in covering.items():
            row[f"covered_{lv}"] = k < c
        rows.append(row)
    table = pd.DataFrame(rows)
    settings = {**SETTINGS, "model": "randomized", "datasets": 10, "sim_seeds": "0..9"}
    randomized = get_analysis("randomized")
    summary, verdict, passed = verdicts.coverage_verdict(table, ("small_class_direct_effect",), settings, randomized)
    s = summary.set_index("level")
    assert s["covered"].tolist() == [5, 8, 9, 10] and (s["n"] == 10).all()
    assert s.loc[0.5, "cp95_lower"] == pytest.approx(0.18709, abs=1e-5)
    assert s.loc[0.95, "cp95_lower"] == pytest.approx(0.025 ** 0.1)
    # family band: Bonferroni over the 4 levels of one estimand, 98.75% intervals
    assert s.loc[0.5, "band_lower"] == pytest.approx(cal.clopper_pearson(5, 10, 1 - 0.05 / 4)[0])
    assert passed and s["bias"].iloc[0] == pytest.approx(0.0) and s["rmse"].iloc[0] == pytest.approx(0.5)
    assert "naive" not in verdict
    # 0 of 10 covered at 95% is far outside the band: the estimand fails, and for naive
    # the verdict says that this is the expected confounding
    table["covered_95"] = False
    summary, verdict, passed = verdicts.coverage_verdict(table, ("small_class_direct_effect",), settings, randomized)
    assert not passed and "verdict: FAIL: small_class_direct_effect (under-covers)" in verdict
    summary, verdict, passed = verdicts.coverage_verdict(table, ("small_class_direct_effect",),
                                                          {**settings, "model": "naive"}, get_analysis("naive"))
    assert not passed and "naive: fails, as expected" in verdict


# ============================================================ encoding of forward draws
def _compare_observed(a, b):
    """Same students (as a multiset of rows) and the same class of each student."""

    def rows(o):
        cls = np.asarray(o.class_of_student)
        cols = [np.asarray(o.race), np.round(np.asarray(o.income_scaled), 12), np.asarray(o.is_experimental),
                np.asarray(o.small_class), np.asarray(o.test_score), np.asarray(o.teacher_has_ma)[cls],
                np.asarray(o.class_is_small)[cls], np.asarray(o.school_of_class)[cls]]
        return np.array(sorted(zip(*[c.tolist() for c in cols])))

    np.testing.assert_array_equal(rows(a), rows(b))
    assert int(np.sum(a.class_used)) == int(np.sum(b.class_used))
    # the students of a class in one encoding are the students of one class in the other
    key = lambda o: np.round(np.asarray(o.test_score), 9)  # noqa: E731  (scores are distinct)
    for o, other in ((a, b), (b, a)):
        by_score = dict(zip(key(other).tolist(), np.asarray(other.class_of_student).tolist()))
        pairs = {(int(c), by_score[s]) for c, s in zip(np.asarray(o.class_of_student), key(o).tolist())}
        assert len(pairs) == len({c for c, _ in pairs})


@pytest.mark.parametrize("cohort", [None, "EXPERIMENTAL", "REGULAR"])
def test_observed_from_draw_matches_loaded_tables(tmp_path, cohort):
    from classsize.inference.data.read import load_dataset
    from classsize.model.simulate import _dataset_from_draw, draw_many
    from classsize.model.tables import observed_from_draw

    seeds = [0, 1, 2, 3]  # four datasets, as every study of SMALL here: one compilation of draw_many
    draws = draw_many(SMALL, seeds)
    batched = observed_from_draw(draws, SMALL, cohort)
    for i, seed in enumerate(seeds[:2]):
        one = {k: v[i] for k, v in draws.items()}
        _dataset_from_draw(SMALL, one, seed).write(tmp_path / str(seed))
        loaded = load_dataset(tmp_path / str(seed)).observed(SMALL, cohort=cohort)
        direct = observed_from_draw(one, SMALL, cohort)
        for field in direct._fields:
            x, y = getattr(direct, field), getattr(batched, field)
            if x is None:
                assert y is None
                continue
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y)[i])
            assert np.asarray(x).dtype == np.asarray(getattr(loaded, field)).dtype, field
        n_slots = SMALL.max_small_classes + SMALL.max_large_classes
        assert direct.class_used.shape == (n_slots,)
        _compare_observed(direct, loaded)


def test_empty_schools_are_detected():
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    o = observed_from_draw(draw_many(SMALL, [0, 1, 2, 3]), SMALL, None)
    structural, naive = get_analysis("structural"), get_analysis("naive")
    assert (structural.unfittable_schools(o, 5) == 0).all()
    # by hand: every class of dataset 0 in school 0, of dataset 1 in schools 0 and 3
    school = np.asarray(o.school_of_class).copy()
    school[0] = 0
    school[1] = np.where(np.arange(school.shape[1]) % 2 == 0, 0, 3)
    assert structural.unfittable_schools(o._replace(school_of_class=school), 5).tolist()[:2] == [4, 3]
    # the regression needs no student in every school
    assert (naive.unfittable_schools(o._replace(school_of_class=school), 5) == 0).all()


def _energy_functions(my_priors, their_config, their_priors, observed):
    """``energy(key, mine, theirs)``: a random point (uniform on [-2, 2] in every
    unconstrained coordinate, as NUTS starts) and the potential energy and gradient there
    on the two encodings of a dataset, in one compiled program."""
    import jax
    from numpyro.infer.util import initialize_model, potential_energy

    from classsize.model import class_size_experiment

    from classsize.model.pilot import pilot_estimates

    kwargs = {"ability": "uniform"}
    pilot = pilot_estimates(SMALL, my_priors, observed)
    shapes = jax.eval_shape(lambda o: initialize_model(
        jax.random.PRNGKey(0), class_size_experiment, model_args=(SMALL, my_priors, o),
        model_kwargs={**kwargs, "pilot": pilot}, dynamic_args=True).param_info.z, observed)

    @jax.jit
    def energy_at(key, mine, theirs, my_pilot, their_pilot):
        keys = jax.random.split(key, len(shapes))
        z = {k: jax.random.uniform(kk, s.shape, s.dtype, -2.0, 2.0) for kk, (k, s) in zip(keys, shapes.items())}
        one = jax.value_and_grad(lambda zz: potential_energy(class_size_experiment, (SMALL, my_priors, mine),
                                                              {**kwargs, "pilot": my_pilot}, zz))(z)
        two = jax.value_and_grad(lambda zz: potential_energy(class_size_experiment,
                                                              (their_config, their_priors, theirs),
                                                              {**kwargs, "pilot": their_pilot}, zz))(z)
        return one, two

    def energy(key, mine, theirs):
        return energy_at(key, mine, theirs, pilot_estimates(SMALL, my_priors, mine),
                         pilot_estimates(their_config, their_priors, theirs))

    return energy


@pytest.mark.parametrize("model", ["structural", pytest.param("randomized", marks=pytest.mark.slow)])
def test_log_density_of_draw_encoding_equals_loaded_data(tmp_path, model):
    """The batched path conditions on the same data as ``fit``: equal log densities and
    gradients at the same (random) parameters.  (The randomized form is slow only for its
    compilation; its encoding is also checked by ``test_observed_from_draw_matches_loaded_tables``.)"""
    import jax

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset
    from classsize.model.simulate import _dataset_from_draw, draw_many
    from classsize.model.tables import observed_from_draw

    draws = draw_many(SMALL, [0, 1, 2, 3])
    one = {k: v[0] for k, v in draws.items()}
    _dataset_from_draw(SMALL, one, 0).write(tmp_path)
    analysis = get_analysis(model).problem(load_dataset(tmp_path))
    config, priors = analysis.design, analysis.priors
    assert config.n_schools == SMALL.n_schools
    mine = observed_from_draw(one, SMALL, get_analysis(model).cohort)
    energy = _energy_functions(get_analysis(model).priors(SMALL), config, priors, mine)
    for k in range(3):
        (pe, grad), (pe2, grad2) = energy(jax.random.PRNGKey(k), mine, analysis.observed)
        assert np.isfinite(float(pe))
        assert float(pe) == pytest.approx(float(pe2), rel=1e-9, abs=1e-6)
        for name in grad:
            np.testing.assert_allclose(np.asarray(grad[name]), np.asarray(grad2[name]), rtol=1e-7, atol=1e-6)
    # another dataset has another density at the same point: the check can fail
    other = observed_from_draw({k: v[1] for k, v in draws.items()}, SMALL, get_analysis(model).cohort)
    (pe_other, _), (pe_same, _) = energy(jax.random.PRNGKey(0), other, analysis.observed)
    assert abs(float(pe_other) - float(pe_same)) > 1


# ================================================================= studies end to end
def _write_small(tmp_path, config=SMALL):
    path = tmp_path / "small.toml"
    path.write_text(config.to_toml())
    return path


COLUMNS = {"study", "model", "dataset", "sim_seed", "fit_seed", "status", "fit_ok", "problems", "quantity", "truth",
           "mean", "sd", "z_score", "contraction", "rank", "rank_draws", "r_hat", "ess_bulk", "divergences",
           "max_r_hat", "min_ess_bulk", "seconds", "tree_depth_hits",
           *[f"{w}_{lv}" for w in ("lower", "upper", "covered") for lv in (50, 80, 90, 95)]}


def test_cli_coverage_study_randomized(tmp_path, capsys):
    import xarray as xr

    out = tmp_path / "out"
    code = main(["recover", "--model", "randomized", "--datasets", "4", "--config", str(_write_small(tmp_path)),
                 "--out", str(out), "--chains", "2", "--warmup", "60", "--samples", "60", "--seed", "10"])
    printed = capsys.readouterr().out
    assert code == 0 and "verdict: PASS: every interval covers the truth at its nominal rate" in printed
    assert "recover randomized: coverage at a fixed truth, 4 datasets (seeds 10..13)" in printed
    assert "verdict: " in printed
    for name in ("recovery.csv", "summary.csv", "recovery.nc", "verdict.txt", "study.json", "config.toml",
                 "coverage.png", "z_contraction.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))
    table = pd.read_csv(out / "recovery.csv")
    assert COLUMNS <= set(table.columns)
    assert len(table) == 4 * 3 and sorted(table["dataset"].unique()) == [0, 1, 2, 3]
    assert set(table["quantity"]) == set(ESTIMANDS)
    assert (table["status"] == "fitted").all()
    assert (table["fit_seed"] == table["sim_seed"] + 2**32).all()
    assert (table.loc[table["quantity"] == "small_class_direct_effect", "truth"] == 5.0).all()
    # short chains: every fit is flagged (bulk ESS < 400), counted and kept
    assert (~table["fit_ok"]).all() and table["problems"].str.contains("bulk ESS").all()
    assert "4 of 4 fits fail diagnostics" in printed
    assert np.all(np.abs(table["mean"] - table["truth"]) < 6 * table["sd"])
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 3 * 4 and {"coverage", "cp95_lower", "band_upper", "pass"} <= set(summary.columns)
    ds = xr.open_dataset(out / "recovery.nc")
    assert dict(ds.sizes) == {"dataset": 4, "quantity": 3, "level": 4}
    np.testing.assert_allclose(ds["mean"].sel(quantity="teacher_ma_effect").values,
                               table.loc[table["quantity"] == "teacher_ma_effect", "mean"].to_numpy())
    ds.close()
    settings = json.loads((out / "study.json").read_text())
    assert settings["mode"] == "fixed" and settings["chains"] == 2
    # a second run into the same folder is refused without --force
    assert main(["recover", "--model", "randomized", "--datasets", "1", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def _check_sbc_outputs(out, printed, model, n, rank_draws):
    assert f"simulation-based calibration, {n} datasets" in printed
    for name in ("recovery.csv", "summary.csv", "recovery.nc", "verdict.txt", "sbc_ecdf_diff.png", "sbc_ranks.png",
                 "sbc_ecdf_diff_other.png", "sbc_ranks_other.png"):
        assert (out / name).stat().st_size > 0, name
    table = pd.read_csv(out / "recovery.csv")
    quantities = [quantity_label(q, SMALL) for q in get_analysis(model).study_quantities(SMALL, sbc=True)]
    assert set(table["quantity"]) == set(quantities) and len(table) == n * len(quantities)
    assert "score_ability_weight" not in quantities  # pinned by the priors: not sampled
    fitted = table[table["status"] == "fitted"]
    assert fitted["rank"].between(0, rank_draws).all() and (fitted["rank_draws"] == rank_draws).all()
    # the truths differ between datasets (drawn from the prior)
    assert table.loc[table["quantity"] == "teacher_ma_effect", "truth"].nunique() == n
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["quantity"]) == set(quantities)
    assert {"chi2_p", "ecdf_p", "p_holm", "pass"} <= set(summary.columns)
    verdict_rows = [line.split()[0] for line in printed.splitlines() if line.split()]
    assert all(q in verdict_rows for q in quantities)
    return table


def test_cli_sbc_randomized(tmp_path, capsys):
    # same design and chains as the coverage study above: the compiled fit is reused
    out = tmp_path / "sbc"
    code = main(["recover", "--model", "randomized", "--from-prior", "--datasets", "4", "--config",
                 str(_write_small(tmp_path)), "--out", str(out), "--chains", "2", "--warmup", "60",
                 "--samples", "60", "--batch-size", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and "verdict: PASS: no quantity's ranks depart from uniformity (4 datasets)" in printed
    table = _check_sbc_outputs(out, printed, "randomized", 4, 99)
    # two batches (3 + a padded 1): each fit lands on its own dataset, whose truth differs
    # from the others' (a permutation of fits would put truths tens of sd from the means)
    ma = table[table["quantity"] == "teacher_ma_effect"]
    assert ma["truth"].nunique() == 4
    assert np.all(np.abs(ma["mean"] - ma["truth"]) < 6 * ma["sd"]), ma[["dataset", "truth", "mean", "sd"]]
    quantities = set(table["quantity"])
    assert {"small_class_total_effect", "experimental_p_small", "school_effect_range"} <= quantities
    assert not quantities & set(ASSIGNMENT_PARAMETERS)  # pinned in the randomized analysis
    # with the assignment pinned, the REGULAR cohort of every SBC dataset is all LARGE
    draws = fitting.simulate_study(get_analysis("randomized"), SMALL, [0, 1, 2, 3], from_prior=True)
    assert not draws["small_class"][:, :SMALL.n_regular].any()
    assert (draws["regular_small_intercept"] == 0).all()


@pytest.mark.slow
def test_cli_sbc_structural_sharded(tmp_path):
    """Structural SBC through the CLI in a fresh process, which exposes the cores as JAX
    devices (3 datasets x 1 chain = 3 lanes, padded and sharded over them); the same
    study in this process gives the same numbers (each lane runs the same program)."""
    import os
    import subprocess
    import sys

    args = ["recover", "--model", "structural", "--from-prior", "--datasets", "3", "--config",
            str(_write_small(tmp_path)), "--chains", "1", "--warmup", "15", "--samples", "15", "--rank-draws", "15"]
    code = ("import sys; from classsize.inference.commands.cli import main; import jax; "
            "rc = main(sys.argv[1:]); print('devices', jax.device_count()); sys.exit(rc)")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", code, *args, "--out", str(tmp_path / "many")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0 and "verdict: PASS" in done.stdout, (done.stdout, done.stderr)
    assert int(done.stdout.split("devices")[-1]) == (os.cpu_count() or 1)
    table = _check_sbc_outputs(tmp_path / "many", done.stdout, "structural", 3, 15)
    assert {"small_class_total_effect", "regular_small_ability", "school_effect_range"} <= set(table["quantity"])
    assert main([*args, "--out", str(tmp_path / "here")]) == 0
    here = pd.read_csv(tmp_path / "here" / "recovery.csv")
    np.testing.assert_allclose(here["mean"].to_numpy(), table["mean"].to_numpy(), rtol=1e-8)
    np.testing.assert_array_equal(here["rank"].to_numpy(), table["rank"].to_numpy())


def test_cli_refuses_bad_input(tmp_path, capsys):
    cases = [
        (["--model", "naive", "--from-prior", "--datasets", "2"], "no generative prior"),
        (["--datasets", "0"], "--datasets must be >= 1"),
        (["--datasets", "2", "--chains", "0"], "--chains must be >= 1"),
        (["--datasets", "2", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--datasets", "2", "--chains", "2", "--samples", "40"], "--rank-draws (99) must not exceed"),
    ]  # an out-of-range --seed is refused by the parser (tests/test_cli_messages.py)
    for args, message in cases:
        code = main(["recover", "--out", str(tmp_path / "never"), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "never").exists()


def test_cli_refuses_an_unwritable_output_before_fitting(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main(["recover", "--model", "randomized", "--datasets", "2", "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1


def test_unfittable_datasets_are_counted_not_dropped(tmp_path, capsys, monkeypatch):
    # datasets 1 and 3 have a school without students (as if: the detection itself is
    # tested above); the study fits 0 and 2 and reports 1 and 3
    from classsize.inference.analyses.conditioned import ConditionedAnalysis

    real = ConditionedAnalysis.unfittable_schools
    monkeypatch.setattr(ConditionedAnalysis, "unfittable_schools",
                        lambda self, o, n: real(self, o, n) + np.array([0, 1, 0, 2]))
    out = tmp_path / "out"
    code = main(["recover", "--model", "randomized", "--datasets", "4", "--config", str(_write_small(tmp_path)),
                 "--out", str(out), "--chains", "2", "--warmup", "60", "--samples", "60"])
    printed = capsys.readouterr().out
    assert code == 0 and "verdict: PASS" in printed
    assert "2 dataset(s) unfittable (a school without students): datasets 1, 3" in printed
    assert "2 of 4 datasets fitted" in printed
    table = pd.read_csv(out / "recovery.csv")
    assert len(table) == 4 * 3
    status = table.drop_duplicates("dataset").set_index("dataset")["status"]
    assert status.tolist() == ["fitted", "unfittable", "fitted", "unfittable"]
    assert table.loc[table["status"] == "unfittable", "mean"].isna().all()
    assert table.loc[table["status"] == "unfittable", "truth"].notna().all()
    assert (pd.read_csv(out / "summary.csv")["n"] == 2).all()


def test_cli_naive_fails_at_the_default_truth(tmp_path, capsys):
    """The naive regression is confounded at the default truth (the design is small,
    the parameters are the defaults): its direct effect is about 4.6 points too high,
    4.4 posterior sd, so its 95% interval covers the truth in about 0.7% of datasets.
    The verdict fails unless 2 or more of the 4 intervals cover (98.75% Clopper-Pearson
    band): a probability below 0.001."""
    out = tmp_path / "naive"
    code = main(["recover", "--model", "naive", "--datasets", "4", "--config", str(_write_small(tmp_path)),
                 "--out", str(out), "--chains", "2", "--warmup", "100", "--samples", "100"])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "verdict: FAIL: small_class_direct_effect (under-covers)" in printed
    assert "naive: fails, as expected" in printed
    bias = pd.read_csv(out / "summary.csv").drop_duplicates("quantity").set_index("quantity")["bias"]
    assert bias["small_class_direct_effect"] > 2


def test_a_non_finite_fit_counts_against_the_verdict(tmp_path, capsys, monkeypatch):
    """Dataset 1's fit made non-finite (as if: a NaN in one draw): its intervals miss
    the truth, it stays in the statistics (n = 4) and the verdict lists it."""
    real = ChainRunner.run

    def run(self, problem, seeds, batch_size=None):
        out = real(self, problem, seeds, batch_size)
        direct = np.array(out.sites["small_class_direct_effect"])
        direct[1, 0, 0] = np.nan
        out.sites["small_class_direct_effect"] = direct
        return out

    monkeypatch.setattr(ChainRunner, "run", run)
    out = tmp_path / "out"
    main(["recover", "--model", "randomized", "--datasets", "4", "--config", str(_write_small(tmp_path)),
          "--out", str(out), "--chains", "2", "--warmup", "60", "--samples", "60", "--seed", "10"])
    printed = capsys.readouterr().out
    assert "1 fit(s) gave non-finite draws: datasets 1; counted against the verdict" in printed
    table = pd.read_csv(out / "recovery.csv")
    failed = table[table["dataset"] == 1]
    assert (failed["status"] == "failed").all() and not failed["covered_90"].astype(bool).any()
    assert (table.loc[table["dataset"] != 1, "status"] == "fitted").all()
    assert (pd.read_csv(out / "summary.csv")["n"] == 4).all()


# ======================================================================= slow checks
def _posterior_agrees(a: np.ndarray, b: np.ndarray, ess_a: float, ess_b: float) -> bool:
    se = np.sqrt(a.var() / ess_a + b.var() / ess_b)
    return abs(a.mean() - b.mean()) < 5 * se


@pytest.mark.slow
@pytest.mark.parametrize("model", ["randomized", "structural"])
def test_batched_posterior_equals_fit(tmp_path, model):
    import arviz as az

    from classsize.inference.fit.result import fit
    from classsize.model import simulate
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    seed, chains, warmup, samples = 8, 2, 300, 300
    simulate(SMALL, seed).write(tmp_path)
    theirs = fit(tmp_path, model, chains=chains, warmup=warmup, samples=samples, seed=seed + fitting.FIT_SEED_OFFSET,
                 progress=False, posterior_predictive=False)
    fitter = ChainRunner(chains, warmup, samples)
    observed = observed_from_draw(draw_many(SMALL, [seed]), SMALL, get_analysis(model).cohort)
    out = fitter.run(get_analysis(model).bind_many(SMALL, observed), [seed + fitting.FIT_SEED_OFFSET])
    mine = fitting.quantities_of(get_analysis(model), {k: v[0] for k, v in out.sites.items()}, ESTIMANDS)
    for name in ESTIMANDS:
        a, b = theirs.estimand_draws[name], mine[name]
        assert _posterior_agrees(a.ravel(), b.ravel(), az.ess(a), az.ess(b)), (name, a.mean(), b.mean())
        assert 0.7 < b.std() / a.std() < 1.4, name


@pytest.mark.slow
def test_sbc_randomized_is_calibrated(tmp_path):
    result = st.run_study("randomized", 100, config=SMALL, from_prior=True, seed=1000, chains=2, warmup=300,
                          samples=300, rank_draws=99)
    assert result.passed, result.verdict


@pytest.mark.slow
def test_naive_fails_coverage_at_the_default_truth():
    result = st.run_study("naive", 20, config=Config(), seed=0, chains=2, warmup=300, samples=300)
    assert not result.passed, result.verdict
    assert "naive: fails, as expected" in result.verdict
    bias = result.summary.drop_duplicates("quantity").set_index("quantity")["bias"]
    assert abs(bias["small_class_direct_effect"]) > 0.5


@pytest.mark.slow
def test_vmap_and_map_agree():
    """Lanes vectorised on a device (vmap) give the posterior of lanes run in turn (map)."""
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    obs = observed_from_draw(draw_many(SMALL, [0, 1, 2]), SMALL, "EXPERIMENTAL")
    seeds = [s + fitting.FIT_SEED_OFFSET for s in range(3)]
    problem = get_analysis("randomized").bind_many(SMALL, obs)
    runs = {v: ChainRunner(2, 200, 300, vectorize=v).run(problem, seeds) for v in ("map", "vmap")}
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        a, b = runs["map"].sites[name], runs["vmap"].sites[name]
        for k in range(3):
            assert _posterior_agrees(a[k].ravel(), b[k].ravel(), 150, 150), (name, k)
