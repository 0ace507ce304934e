"""The saved posterior opens in the ArviZ calls its users know.

``classsize fit`` writes ``posterior.nc``; these tests open it as a user would and run
``az.summary``, ``az.bfmi``, ``az.plot_energy``, ``az.plot_ppc`` and ``az.loo`` on it,
and check the layout of :mod:`classsize.inference.idata`: named dims labelled with the
data's ids, the model's parameters (not the sampler's coordinates, not pinned
constants) in ``posterior``, one pointwise log likelihood per student, the data split
into ``observed_data`` and ``constant_data``, and prior groups.  Nothing here is
statistical: each check is exact.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from classsize.inference.cli import main
from classsize.model import Config, simulate

TINY = Config(n_regular=300, n_experimental=200, n_schools=4)
SAMPLER = ["--chains", "2", "--warmup", "150", "--samples", "150"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Posterior files written by ``classsize fit`` for each analysis, and the data folder."""
    root = tmp_path_factory.mktemp("idata")
    simulate(TINY, 3).write(root / "data")
    out = {}
    for analysis in ("structural", "randomized", "naive"):
        code = main(["fit", str(root / "data"), "--model", analysis, "--out", str(root / analysis), *SAMPLER])
        assert code == 0
        out[analysis] = root / analysis / "posterior.nc"
    return root / "data", out


def _open(path):
    import arviz as az

    return az.from_netcdf(path)


@pytest.mark.parametrize("analysis", ["structural", "randomized", "naive"])
def test_arviz_calls_run_on_the_saved_posterior(runs, analysis):
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")  # this test draws, headless
    import matplotlib.pyplot as plt

    idata = _open(runs[1][analysis])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NaN R-hat of a constant warns
        summary = az.summary(idata)
    assert summary["r_hat"].notna().all(), summary
    assert not any(name.endswith(("_std", "_position", "_excess")) for name in summary.index)
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        assert name in summary.index
    bfmi = az.bfmi(idata)
    assert bfmi.shape == (2,) and np.all(np.isfinite(bfmi))
    az.plot_energy(idata)
    az.plot_ppc(idata, num_pp_samples=10)
    az.plot_ppc(idata, group="prior", num_pp_samples=10)
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # high Pareto k: see the next test
        loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo) and loo.pareto_k.shape == (idata.observed_data.sizes["student"],)


def test_sample_stats_are_complete(runs):
    stats = _open(runs[1]["structural"]).sample_stats
    for name in ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth", "diverging"):
        assert name in stats and stats[name].dims == ("chain", "draw"), name
    assert (stats["tree_depth"] >= 1).all() and (2 ** stats["tree_depth"] > stats["n_steps"]).all()


def test_dims_are_named_and_labelled_with_the_data_ids(runs):
    data, paths = runs
    students = pd.read_csv(data / "students.csv")
    classes = pd.read_csv(data / "classes.csv")
    for analysis, path in paths.items():
        idata = _open(path)
        for group in idata.groups():
            for dim in idata[group].dims:
                assert "_dim_" not in dim, (analysis, group, dim)
        cohort = {"structural": None, "randomized": "EXPERIMENTAL", "naive": "REGULAR"}[analysis]
        st = students if cohort is None else students[students.cohort == cohort]
        assert idata.observed_data["student"].values.tolist() == st.student_id.tolist()
        cl = classes[classes.class_id.isin(st.class_id)].sort_values("class_id")
        assert idata.constant_data["class"].values.tolist() == cl.class_id.tolist()
        assert idata.posterior["school"].values.tolist() == sorted(cl.school_id.unique().tolist())
        assert idata.constant_data["class_of_student"].values.tolist() == st.class_id.tolist()
        assert idata.constant_data["school_of_class"].values.tolist() == cl.school_id.tolist()
        assert idata.constant_data["race_of_student"].values.tolist() == st.race.tolist()
    structural = _open(paths["structural"])
    assert structural.posterior["race"].values.tolist() == list(TINY.race_codes)
    assert structural.posterior["school_effect"].dims == ("chain", "draw", "school")
    assert structural.posterior["race_probs"].dims == ("chain", "draw", "race")
    naive = _open(paths["naive"])
    assert naive.posterior["race_vs_reference"].values.tolist() == list(TINY.race_codes[1:])


def test_groups_hold_what_their_names_say(runs):
    structural = _open(runs[1]["structural"])
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "prior",
                  "prior_predictive", "observed_data", "constant_data", "unconstrained_posterior"):
        assert group in structural.groups(), group
    assert list(structural.log_likelihood.data_vars) == ["class_size_and_score"]
    assert set(structural.observed_data.data_vars) == {"test_score", "small_class"}
    assert {"is_experimental", "family_income", "race_of_student"} <= set(structural.constant_data.data_vars)
    assert set(structural.posterior_predictive.data_vars) == set(structural.observed_data.data_vars)
    assert set(structural.prior_predictive.data_vars) == set(structural.observed_data.data_vars)
    assert all(k.endswith(("_std", "_position", "_excess")) for k in structural.unconstrained_posterior.data_vars)
    # pinned parameters are constants, not draws
    assert not set(json.loads(structural.attrs["pinned_parameters"])) & set(structural.posterior.data_vars)
    assert set(structural.prior.data_vars) == set(structural.posterior.data_vars)

    randomized = _open(runs[1]["randomized"])
    pinned = json.loads(randomized.attrs["pinned_parameters"])
    for name in ("regular_small_intercept", "regular_small_income", "regular_small_ability"):
        assert name in pinned and name not in randomized.posterior

    naive = _open(runs[1]["naive"])
    assert list(naive.log_likelihood.data_vars) == ["test_score"]
    assert set(naive.observed_data.data_vars) == {"test_score"}
    assert "small_class" in naive.constant_data
    # one value per student, a real joint density: it varies from student to student
    ll = structural.log_likelihood["class_size_and_score"]
    assert ll.dims == ("chain", "draw", "student") and float(ll.std("student").mean()) > 0


def test_prior_predictive_comes_from_the_prior(runs):
    """Prior draws are wider than posterior draws for every estimand, and the prior
    predictive scores spread wider than the posterior predictive ones."""
    idata = _open(runs[1]["structural"])
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        assert float(idata.prior[name].std()) > 3 * float(idata.posterior[name].std()), name
    prior_sd = float(idata.prior_predictive["test_score"].mean("student").std())
    post_sd = float(idata.posterior_predictive["test_score"].mean("student").std())
    assert prior_sd > 3 * post_sd
