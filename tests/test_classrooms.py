"""Class (teacher) effects: simulated, written, fitted, calibrated.

* ``class_effect_sd = 0`` is the notebook's process byte for byte: the digests of three
  datasets are those of the code before class effects existed.
* With an sd above 0 the forward model adds exactly the realised class effect to each
  student's score (every other draw is the same), and ``truth.json`` records them.
* Fits with the sd free recover it and report it with the intraclass correlation;
  pinned at 0 on such data their intervals are too narrow.
* SBC with free class effects (randomized analysis; the structural one in the slow
  suite) and coverage at a fixed truth with class effects, fitted and ignored, each
  with its false-alarm rate stated.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from scipy import stats

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.studies import calibration as cal
from classsize.inference.studies import run as st
from classsize.model import Config, simulate

#: sha256 (first 16 hex digits) of the files of simulate(config, seed).write(), as the
#: code wrote them before class effects existed
DIGESTS = {
    (0, "default"): "b2981e317a90b294",
    (7, "default"): "2d883093b491d817",
    (3, "noisy"): "f174ebea9ca2e8bb",
}
CONFIGS = {"default": Config(),
           "noisy": Config(n_regular=300, n_experimental=200, n_schools=4, score_noise_sd=2.0)}
#: a small design with class effects of sd 2.5 (intraclass correlation about 0.1)
SMALL = Config(n_regular=300, n_experimental=300, n_schools=5, class_effect_sd=2.5)
FAST = dict(chains=1, warmup=150, samples=300)


def _digest(folder) -> str:
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        h.update(name.encode())
        with open(os.path.join(folder, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("seed,config", list(DIGESTS))
def test_no_class_effects_is_the_same_bytes(tmp_path, seed, config):
    simulate(CONFIGS[config], seed).write(tmp_path)
    assert _digest(tmp_path) == DIGESTS[(seed, config)]
    assert "class_effects" not in json.loads((tmp_path / "truth.json").read_text())
    assert "class_effect_sd" not in json.loads((tmp_path / "truth.json").read_text())["config"]


def test_class_effects_add_exactly_to_the_scores():
    """Same seed with and without class effects: every draw but the class effects is
    the same, so the scores differ by exactly the student's class effect.  The realised
    sd of about 40 effects lies within the central 99.9% of sd * sqrt(chi2(n - 1)/(n - 1))
    (false alarm 0.1%)."""
    without = simulate(SMALL.replace(class_effect_sd=0.0), 11)
    with_ = simulate(SMALL, 11)
    effects = with_.truth["class_effects"]
    assert set(map(int, effects)) == set(with_.classes["class_id"])
    a, b = without.students, with_.students
    assert (a.drop(columns="test_score") == b.drop(columns="test_score")).all().all()
    u = b["class_id"].astype(str).map(effects).to_numpy()
    np.testing.assert_allclose(b["test_score"] - a["test_score"], u, atol=1e-9)
    n = len(effects)
    lo, hi = (2.5 * np.sqrt(stats.chi2.ppf(q, n - 1) / (n - 1)) for q in (0.0005, 0.9995))
    assert lo < np.std(list(effects.values()), ddof=1) < hi
    assert with_.truth["config"]["class_effect_sd"] == 2.5


def test_replicates_record_their_class_effects(tmp_path):
    from classsize.model.simulate import write_replicates

    write_replicates(tmp_path / "csv", SMALL, 5, 2, "csv")
    write_replicates(tmp_path / "pq", SMALL, 5, 2, "parquet")
    one = json.loads((tmp_path / "csv" / "replicate_0001" / "truth.json").read_text())
    assert one["class_effects"] == simulate(SMALL, 6).truth["class_effects"]
    stacked = json.loads((tmp_path / "pq" / "truth.json").read_text())
    assert stacked["replicates"][1]["class_effects"] == one["class_effects"]


def test_the_notebook_engine_refuses_class_effects():
    from classsize.model.notebook import simulate_notebook

    with pytest.raises(ValueError, match="class_effect_sd must be 0"):
        simulate_notebook(SMALL, 1)


def test_class_effect_settings_are_checked():
    a = get_analysis("structural")
    assert a.with_class_effects("free").class_effects == "free"
    assert a.with_class_effects(2).class_effects == 2.0
    assert a.knowing(SMALL).class_effects == "free" and a.knowing(Config()).class_effects is None
    for bad in (-1.0, "lots", True, float("nan")):
        with pytest.raises(ValueError, match="number >= 0 or 'free'"):
            a.with_class_effects(bad)


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """One dataset with class effects fitted by randomized with the sd free and pinned
    at 0, and by naive with the sd free."""
    from classsize.inference.fit.result import fit

    folder = tmp_path_factory.mktemp("classes")
    data = simulate(SMALL.replace(n_regular=600, n_experimental=600), 4)
    data.write(folder)
    return data, {name: fit(folder, model, chains=2, warmup=300, samples=300, seed=1, progress=False,
                            class_effects=effects)
                  for name, model, effects in (("free", "randomized", None), ("zero", "randomized", 0.0),
                                               ("naive", "naive", None))}


def test_fits_recover_the_class_effects(fits):
    """The free sd's 90% interval holds the realised sd of the class effects (it
    misses with probability about 10% if calibrated; seed fixed: it holds), its
    intraclass correlation is reported, and the direct effect's interval holds the
    truth; pinned at 0 the interval is narrower (0.70 against 0.83 here).  The naive
    regression sees class effects too (its sd's interval, 0.39 to 2.21 here, stays
    away from 0), though its confounded residual need not give their sd."""
    data, r = fits
    realised = np.std(list(data.truth["class_effects"].values()), ddof=1)
    free = r["free"]
    assert free.provenance["settings"]["class_effects"] == "free"
    sd = free.classrooms["class_effect_sd"]
    assert sd["q05"] < realised < sd["q95"], (sd, realised)
    icc = free.classrooms["intraclass_correlation"]
    assert 0.02 < icc["mean"] < 0.3
    assert "intraclass_correlation" in free.table() and "classrooms" in free.summary_dict()
    direct = free.estimand_summaries["small_class_direct_effect"]
    assert direct["q05"] < 5.0 < direct["q95"]
    zero = r["zero"]
    assert not zero.classrooms
    assert zero.estimand_summaries["small_class_direct_effect"]["sd"] < 0.95 * direct["sd"]
    naive = r["naive"].classrooms["class_effect_sd"]  # (confounded: its sd need not cover)
    assert naive["q05"] > 0.2 and naive["q95"] < 3 * realised, (naive, realised)


def test_do_with_fresh_or_observed_classes(fits):
    """The average effect of a SMALL class under do() is the same whichever effects the
    new classes get (they do not depend on size); the two differ only by Monte Carlo
    error (here: means within 0.5 of each other, each draw's sd about 1.5)."""
    free = fits[1]["free"]
    fresh = free.do(small_class=1, draws=200, classes="fresh")
    observed = free.do(small_class=1, draws=200, classes="observed")
    assert fresh.classes == "fresh" and observed.classes == "observed"
    assert abs(fresh.effect.mean() - observed.effect.mean()) < 0.5
    with pytest.raises(ValueError, match="classes must be one of"):
        free.do(small_class=1, classes="new")


def test_recover_takes_class_effects_and_resume_refuses_another(tmp_path, capsys):
    """``recover --class-effects`` sets the fits' class effects, the manifest records
    the setting (absent without one, so other studies keep their hash), and resuming
    with another setting is refused in one line before any work."""
    from classsize.inference.commands.cli import main
    from classsize.inference.studies.plan import StudyPlan, start_batches

    config = tmp_path / "ce.toml"
    config.write_text(SMALL.to_toml())
    analysis = get_analysis("structural").with_class_effects(0.0).knowing(SMALL)
    plan = StudyPlan(analysis, 4, SMALL, False, 0, 1, 20, 20, 4, 19)
    assert plan.manifest["class_effects"] == 0.0
    free = StudyPlan(get_analysis("structural").knowing(SMALL), 4, SMALL, False, 0, 1, 20, 20, 4, 19)
    assert free.manifest["class_effects"] == "free" and free.plan_hash != plan.plan_hash
    plain = StudyPlan(get_analysis("structural"), 4, Config(), False, 0, 1, 20, 20, 4, 19)
    assert "class_effects" not in plain.manifest
    start_batches(tmp_path / "study", plan, resume=False)
    argv = ["recover", "--config", str(config), "--datasets", "4", "--chains", "1", "--warmup", "20",
            "--samples", "20", "--rank-draws", "19", "--out", str(tmp_path / "study"), "--resume", "-q"]
    assert main(argv + ["--class-effects", "free"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--class-effects 0.0 there, free here" in err[0], err
    assert main(argv) == 2  # the default for a configuration with class effects: free
    assert "--class-effects 0.0 there, free here" in capsys.readouterr().err


# ================================================================== calibration
def test_randomized_sbc_with_free_class_effects_fast():
    """SBC of the randomized analysis with free class effects (prior HalfNormal(3.7):
    median sd 2.5, an intraclass correlation of about 0.1), 24 datasets.  False-alarm
    rate at most 5% (Holm over the quantities); it flags a shift of 1 posterior sd in
    one quantity with probability at least 0.7."""
    analysis = get_analysis("randomized").with_class_effects("free")
    design = Config(n_regular=0, n_experimental=600, n_schools=5)
    n, L = 24, 19
    names = analysis.study_quantities(design, sbc=True)
    assert "class_effect_sd" in names
    m = len(names)
    assert cal.rank_test_power(n, m, L) <= cal.FAMILY_ALPHA / m + 0.0015
    assert cal.rank_test_power(n, m, L, shift=1.0) >= 0.7
    result = st.run_study(analysis, n, config=design, from_prior=True, seed=0, batch_size=n, progress=False,
                          rank_draws=L, **FAST)
    t = result.table
    assert (t["status"] == "fitted").all()
    assert result.passed, result.verdict


@pytest.mark.slow
def test_structural_sbc_with_free_class_effects_slow():
    """The structural analysis, 100 datasets; false-alarm rate at most 5% (Holm)."""
    analysis = get_analysis("structural").with_class_effects("free")
    design = Config(n_regular=300, n_experimental=300, n_schools=5)
    result = st.run_study(analysis, 100, config=design, from_prior=True, seed=3000, batch_size=50,
                          progress=False, chains=1, warmup=300, samples=1500, rank_draws=49)
    assert result.passed, result.verdict


def _coverage(analysis, n, seed=0, **settings):
    result = st.run_study(analysis, n, config=SMALL, seed=seed, batch_size=n, progress=False, **settings)
    t = result.table
    assert (t["status"] == "fitted").all()
    return {q: int(rows["covered_90"].sum()) for q, rows in t.groupby("quantity")}


def test_coverage_with_class_effects_fitted_and_ignored():
    """20 datasets with class effects (sd 2.5, intraclass correlation about 0.1).
    Fitted with the sd free, each estimand's 90% interval must cover in at least 15:
    calibrated intervals fail that with probability 1.1% each.  Pinned at 0, the
    direct effect's must cover in at most 12: intervals that covered 80% would pass
    that with probability 3.2%; those of the pinned fit cover far less (their width is
    the noise-free edges', a few tenths of a point, the error's sd about 1)."""
    n = 20
    assert stats.binom.cdf(14, n, 0.9) == pytest.approx(0.0113, abs=1e-4)
    assert stats.binom.cdf(12, n, 0.8) == pytest.approx(0.0321, abs=1e-4)
    fitted = _coverage(get_analysis("structural"), n, **FAST)  # knowing(SMALL): the sd free
    assert all(k >= 15 for k in fitted.values()), fitted
    ignored = _coverage(get_analysis("structural").with_class_effects(0.0), n, **FAST)
    assert ignored["small_class_direct_effect"] <= 12, ignored


@pytest.mark.slow
def test_coverage_with_class_effects_100_slow():
    """The issue's targets on 100 datasets with class effects (sd 2.5, intraclass
    correlation about 0.1), 2 chains x (300 + 500) draws a fit.  A dataset whose 27 or
    so classes leave one of the 5 schools empty cannot be fitted (about 1 in 100;
    at most 4 allowed); none may fail.  Fitted with the sd free, each of the direct,
    total and MA effects' 90% intervals covers in 80% to 98% of the fitted datasets:
    calibrated intervals (coverage 0.9) fall outside with probability about 0.11% each,
    0.34% for the three.  Pinned at 0, the direct effect's covers in fewer than 80%:
    intervals that covered 65% would reach 80 of 100 with probability 0.08%."""
    n = 100
    assert stats.binom.cdf(79, n, 0.9) + stats.binom.sf(98, n, 0.9) == pytest.approx(0.00113, abs=1e-5)
    assert stats.binom.sf(79, n, 0.65) == pytest.approx(0.00078, abs=1e-5)
    settings = dict(chains=2, warmup=300, samples=500)
    shares = {}
    for label, analysis in (("fitted", get_analysis("structural")),
                            ("ignored", get_analysis("structural").with_class_effects(0.0))):
        t = st.run_study(analysis, n, config=SMALL, seed=100, batch_size=20, progress=False, **settings).table
        per = t.drop_duplicates("dataset")
        assert not (per["status"] == "failed").any() and (per["status"] == "unfittable").sum() <= 4, per["status"]
        fitted = t[t["status"] == "fitted"]
        shares[label] = {q: float(rows["covered_90"].mean()) for q, rows in fitted.groupby("quantity")}
        print(f"\n{label}: {fitted['dataset'].nunique()} of {n} datasets fitted; coverage of 90% intervals "
              f"{shares[label]}")
    for q in ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect"):
        assert 0.80 <= shares["fitted"][q] <= 0.98, (q, shares)
    assert shares["ignored"]["small_class_direct_effect"] < 0.80, shares
