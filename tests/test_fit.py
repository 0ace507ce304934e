"""Fitting: recovery against the truth, summary.json, warnings, the naive analysis's bias.

Recovery tests check each true estimand against the posterior's central 99%
interval: for a calibrated posterior a check fails by chance with probability
0.01, so a test of three estimands has a false-alarm rate of at most 3%.  Every
test uses a fixed seed (data and sampler are deterministic).  Calibration at the
90% level over many datasets is the job of the recovery study
(``tests/test_recover.py``), not of single fits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from classsize.inference.commands.cli import main
from classsize.inference.fit.result import fit
from classsize.inference.fit.ppc import ppc_table
from classsize.model import Config, simulate

SMALL = Config(n_regular=800, n_experimental=700, n_schools=6)
SUMMARY_KEYS = {"mean", "sd", "q05", "q95", "r_hat", "ess_bulk"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    simulate(SMALL, 2).write(d)
    return d


def _check_recovery(result, truth, level=0.99):
    s = result.summary_dict()
    assert s["diagnostics"]["divergences"] == 0, result.table()
    for name, t in truth.items():
        lo, hi = np.quantile(result.estimand_draws[name], [(1 - level) / 2, (1 + level) / 2])
        assert lo <= t <= hi, (name, lo, hi, t, result.table())
        e = s["estimands"][name]
        assert e["r_hat"] <= 1.01 and e["ess_bulk"] >= 400, (name, e)


def test_randomized_recovers_the_truth_on_a_small_dataset(small_data):
    r = fit(small_data, "randomized", chains=2, warmup=500, samples=500, seed=1, progress=False)
    _check_recovery(r, SMALL.estimands())


@pytest.fixture(scope="module")
def structural_small(small_data):
    return fit(small_data, "structural", chains=2, warmup=500, samples=1000, seed=1, progress=False)


def test_structural_samples_cleanly_on_a_small_dataset(structural_small):
    """No divergences, R-hat <= 1.01 and bulk ESS >= 400 for every estimand."""
    d = structural_small.summary_dict()
    assert d["diagnostics"]["divergences"] == 0, structural_small.table()
    assert d["diagnostics"]["max_r_hat"] <= 1.01, structural_small.table()
    for name, e in d["estimands"].items():
        assert e["r_hat"] <= 1.01 and e["ess_bulk"] >= 400, (name, e)


@pytest.mark.slow
@pytest.mark.parametrize("study", [(100, 82)])
def test_structural_covers_the_truth_over_many_datasets(study):
    """One dataset says little (at seed 2 the direct effect's 99% interval, about
    [4.75, 5.00], only just reaches the truth 5; the randomized fit of the same data is
    low too), so structural recovery is checked over many datasets of the same design:
    each estimand's central 90% interval must cover the truth in at least
    ``min_covered`` of ``n_datasets`` fits.  For calibrated intervals the chance of
    fewer is 0.5% (100 datasets, at least 82) per estimand: a false-alarm rate of at
    most 2% for the three.  The default suite's form, 30 smaller datasets with at least
    23 covering, is ``tests/test_calibration.py``."""
    from scipy import stats

    from classsize.inference.studies.run import run_study

    n_datasets, min_covered = study
    assert stats.binom.cdf(min_covered - 1, n_datasets, 0.9) < 0.0051
    result = run_study("structural", n_datasets, config=SMALL, seed=0, chains=2, warmup=300, samples=300,
                       progress=False)
    t = result.table
    assert (t.status == "fitted").all(), t.problems.unique()
    for name, rows in t.groupby("quantity"):
        assert rows.covered_90.sum() >= min_covered, (name, rows[["truth", "mean", "lower_90", "upper_90"]])


def test_cli_fit_writes_summary_json_of_the_documented_shape(small_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["fit", str(small_data), "--model", "randomized", "--out", str(run), "--chains", "2",
                 "--warmup", "300", "--samples", "300"])
    out = capsys.readouterr().out
    assert code == 0
    s = json.loads((run / "summary.json").read_text())
    assert set(s) == {"format_version", "analysis", "estimands", "diagnostics", "checks", "warnings", "provenance"}
    # the randomized analysis has noise-free uniform ability and no class effects here
    assert set(s["checks"]) == {"score_edges", "class_effects"}
    for check in s["checks"].values():
        assert set(check) == {"statistic", "expected", "p_value", "threshold", "fired", "meaning", "fix"}
        assert not check["fired"], check
    assert s["analysis"] == "randomized" and s["format_version"] == 2
    assert set(s["estimands"]) == {"small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect"}
    for v in s["estimands"].values():
        assert set(v) == SUMMARY_KEYS
    assert set(s["diagnostics"]) == {"divergences", "max_r_hat", "min_ess_bulk", "seconds"}
    assert isinstance(s["diagnostics"]["divergences"], int)
    assert "90% interval" in out and "truth" in out
    import arviz as az

    idata = az.from_netcdf(run / "posterior.nc")
    for group in ("posterior", "sample_stats", "observed_data", "log_likelihood", "posterior_predictive"):
        assert group in idata.children, group


def test_strict_turns_sampler_trouble_into_exit_1(small_data, tmp_path, capsys):
    """Ten warm-up steps and twenty draws cannot give an R-hat <= 1.01 and ESS >= 400."""
    code = main(["fit", str(small_data), "--model", "randomized", "--out", str(tmp_path / "r"), "--chains", "2",
                 "--warmup", "10", "--samples", "20", "--strict"])
    err = capsys.readouterr().err
    assert code == 1
    assert "bulk ESS" in err


def test_bad_data_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = main(["fit", str(tmp_path / "d"), "--model", "naive", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "students.csv" in err
    assert not (tmp_path / "r").exists()


def test_naive_misses_the_default_truth_and_says_so(tmp_path, capsys):
    """Ability drives both the score and the REGULAR cohort's class size, so the naive
    regression's direct effect is about 10.7 rather than 5 (bias over 10 posterior sd)."""
    d = tmp_path / "d"
    simulate(Config(n_regular=2000, n_experimental=100, n_schools=8), 4).write(d)
    code = main(["fit", str(d), "--model", "naive", "--out", str(tmp_path / "r"), "--chains", "2",
                 "--warmup", "300", "--samples", "300"])
    out = capsys.readouterr().out
    assert code == 0
    s = json.loads((tmp_path / "r" / "summary.json").read_text())["estimands"]["small_class_direct_effect"]
    assert s["q05"] > 5.0 + 2.0
    assert "naive misses" in out and "small_class_direct_effect" in out


def test_posterior_predictive_reproduces_scores_by_class_size_and_cohort(structural_small):
    t = ppc_table(structural_small.idata)
    assert len(t) == 4
    # a model that failed to reproduce a group's mean would put it in a tail
    assert t.p_value.between(0.01, 0.99).all(), t
    assert (np.abs(t.observed_mean - (t.replicated_mean_q05 + t.replicated_mean_q95) / 2) < 2.0).all(), t


# ------------------------------------------------------------- other truths and designs
#: Truths and designs away from the notebook's: a null and a negative small-class effect,
#: no MA effect, and other cohort sizes and school counts.  Each case is fitted by
#: ``structural`` and ``randomized`` and every true estimand is checked against the
#: 99% interval (false-alarm rate at most 3% per fit, as above); one case, fitted by
#: ``randomized``, runs in the default suite (where the structural SBC of
#: ``tests/test_calibration.py`` checks ``structural`` at truths drawn from its prior),
#: all of them with ``CLASSSIZE_SLOW=1``.
OTHER_TRUTHS = {
    "null_effect": Config(n_regular=800, n_experimental=700, n_schools=6, small_class_direct_effect=0.0),
    "negative_effect_no_ma_effect": Config(n_regular=800, n_experimental=700, n_schools=6,
                                           small_class_direct_effect=-3.0, teacher_ma_effect=0.0),
    "few_regular_many_schools": Config(n_regular=400, n_experimental=1600, n_schools=12),
    "many_regular_few_schools": Config(n_regular=3000, n_experimental=600, n_schools=4, p_ma_small=0.3),
}


def _other_truth_params(fast):
    return [pytest.param(name, id=name, marks=() if name == fast else pytest.mark.slow) for name in OTHER_TRUTHS]


@pytest.mark.parametrize("model", [pytest.param("structural", marks=pytest.mark.slow), "randomized"])
@pytest.mark.parametrize("case", _other_truth_params("negative_effect_no_ma_effect"))
def test_recovery_under_other_truths_and_designs(tmp_path, case, model):
    """The truth inside the 99% interval, and no divergence.  The divergence check has a
    false-alarm rate of its own: on the randomized fit of ``negative_effect_no_ma_effect``
    (dataset 11, 2 x (500 + 1000)), seeds 0..11 gave one divergence in 2,000 draws at
    seed 5 and none at the others, about 1 fit in 12."""
    config = OTHER_TRUTHS[case]
    simulate(config, 11).write(tmp_path)
    r = fit(tmp_path, model, chains=2, warmup=500, samples=1000, seed=6, progress=False)
    _check_recovery(r, config.estimands())
