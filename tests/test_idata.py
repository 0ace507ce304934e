"""The saved posterior opens in the ArviZ 1 calls its users know, laid out as PyMC writes it.

``classsize fit`` writes ``posterior.nc``; these tests open it as a user would and run
``az.summary``, ``az.bfmi``, ``az.plot_energy``, ``az.plot_ppc_dist``,
``az.plot_loo_pit``, ``az.loo(var_name="test_score")`` and ``az.compare`` on it, and
check the layout of :mod:`classsize.inference.fit.idata`: dims named after the tables'
columns and labelled with the data's ids, the model's parameters (not the sampler's
coordinates, not pinned constants) in ``posterior``, pointwise log likelihoods named
after the observed variables, every group on the posterior's chains and draw labels
(so arithmetic across groups aligns), the data split into ``observed_data`` and
``constant_data``, prior groups, provenance and compression.  Nothing here is
statistical: each check is exact.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from classsize.inference.commands.cli import main
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
        code = main(["fit", str(root / "data"), "--analysis", analysis, "--out", str(root / analysis), *SAMPLER])
        assert code == 0
        out[analysis] = root / analysis / "posterior.nc"
    code = main(["fit", str(root / "data"), "--model", "structural", "--ability", "normal",
                 "--out", str(root / "structural_normal"), *SAMPLER])
    assert code == 0
    out["structural_normal"] = root / "structural_normal" / "posterior.nc"
    return root / "data", out


def _open(path):
    """The file's DataTree, read whole (the file is closed again)."""
    import arviz as az

    with az.from_netcdf(path) as tree:
        return tree.load()


ANALYSES = ("structural", "randomized", "naive")


@pytest.mark.parametrize("analysis", ["structural", "randomized", "naive"])
def test_arviz_calls_run_on_the_saved_posterior(runs, analysis):
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")  # this test draws, headless
    import matplotlib.pyplot as plt

    idata = _open(runs[1][analysis])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NaN R-hat of a constant warns
        summary = az.summary(idata, round_to="none")
    assert summary["r_hat"].notna().all(), summary
    assert not any(name.endswith(("_std", "_position", "_excess")) for name in summary.index)
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        assert name in summary.index
    bfmi = np.asarray(az.bfmi(idata)["energy"])
    assert bfmi.shape == (2,) and np.all(np.isfinite(bfmi))
    az.plot_energy(idata)
    az.plot_ppc_dist(idata, var_names=["test_score"], num_samples=10)
    az.plot_ppc_dist(idata, var_names=["test_score"], group="prior_predictive", num_samples=10)
    az.plot_loo_pit(idata, var_names=["test_score"])
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # high Pareto k: see the next test
        loo = az.loo(idata, var_name="test_score", pointwise=True)
    assert np.isfinite(loo.elpd) and loo.pareto_k.shape == (idata.observed_data.sizes["student_id"],)


def test_groups_align_with_the_posterior_by_chain_and_draw(runs):
    """Every sampled group has the posterior's chains, and its draws carry the
    posterior's own draw labels: arithmetic across groups aligns, never by position."""
    idata = _open(runs[1]["structural"])
    post = idata.posterior
    for group in ("log_likelihood", "posterior_predictive", "prior", "prior_predictive", "sample_stats"):
        ds = idata[group]
        assert ds.sizes["chain"] == post.sizes["chain"], group
        assert set(ds["draw"].values.tolist()) <= set(post["draw"].values.tolist()), group
    assert idata.prior["draw"].values.tolist() == idata.log_likelihood["draw"].values[::2].tolist()
    product = post["teacher_ma_effect"] * idata.posterior_predictive["test_score"]
    assert product.sizes["chain"] == 2 and product.sizes["draw"] == idata.posterior_predictive.sizes["draw"]
    first = int(idata.posterior_predictive["draw"][1])
    expected = (float(post["teacher_ma_effect"].sel(chain=1, draw=first))
                * float(idata.posterior_predictive["test_score"].sel(chain=1, draw=first).isel(student_id=0)))
    assert float(product.sel(chain=1, draw=first).isel(student_id=0)) == pytest.approx(expected)


def test_a_thinned_group_keeps_every_kth_draw_of_each_chain():
    from classsize.inference.fit.idata import STORED_DRAWS, thinning_step

    assert thinning_step(2, 150, 500) == 1
    step = thinning_step(4, 1000, 5748)
    assert step == 10 and 4 * len(range(0, 1000, step)) <= STORED_DRAWS
    assert 4 * len(range(0, 1000, step - 1)) > STORED_DRAWS  # the smallest such step
    assert thinning_step(4, 1000, 10_000_000) == 1000  # at most STORED_VALUES values: one draw a chain


def test_compare_ranks_two_analyses_of_the_same_students(runs):
    import arviz as az

    fits = {name: _open(runs[1][name]) for name in ("structural", "structural_normal")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # high Pareto k
        table = az.compare(fits, var_name="class_size_and_score")
    assert set(table.index) == set(fits) and table["rank"].tolist() == [0, 1]


def test_the_files_carry_their_provenance_and_are_compressed(runs):
    import xarray as xr

    data, paths = runs
    summary = json.loads((paths["structural"].parent / "summary.json").read_text())
    idata = _open(paths["structural"])
    for key, value in {"format_version": 2, "analysis": "structural", "seed": 0, "chains": 2, "warmup": 150,
                       "draws": 150}.items():
        assert summary["provenance"][key] == value and idata.attrs[key] == value, key
    assert summary["format_version"] == 2 and summary["analysis"] == "structural"
    assert summary["provenance"]["data_fingerprint"].startswith("sha256:")
    assert idata.attrs["data_fingerprint"] == summary["provenance"]["data_fingerprint"]
    assert idata.attrs["classsize_version"] == summary["provenance"]["classsize_version"]
    assert json.loads(idata.attrs["settings"])["ability"] == "uniform"
    with xr.open_datatree(paths["structural"], engine="netcdf4") as tree:
        for group in ("posterior", "log_likelihood", "posterior_predictive"):
            assert tree[group]["test_score" if group != "posterior" else "teacher_ma_effect"].encoding["zlib"]
        assert tree["log_likelihood"]["test_score"].dtype == np.float32
        assert tree["log_likelihood"]["test_score"].encoding["least_significant_digit"] == 3
        assert tree["posterior_predictive"]["test_score"].encoding["least_significant_digit"] == 2
        assert "least_significant_digit" not in tree["posterior"]["teacher_ma_effect"].encoding
        assert tree["posterior_predictive"]["test_score"].dtype == np.float32


def test_sample_stats_are_complete(runs):
    stats = _open(runs[1]["structural"]).sample_stats
    for name in ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "tree_depth", "diverging"):
        assert name in stats and stats[name].dims == ("chain", "draw"), name
    assert (stats["tree_depth"] >= 1).all() and (2 ** stats["tree_depth"] > stats["n_steps"]).all()


def test_dims_are_named_and_labelled_with_the_data_ids(runs):
    data, paths = runs
    students = pd.read_csv(data / "students.csv")
    classes = pd.read_csv(data / "classes.csv")
    for analysis in ANALYSES:
        idata = _open(paths[analysis])
        for group in idata.groups:
            for dim in idata[group].dims:  # named after the tables' columns, never ArviZ's defaults
                assert "_dim_" not in dim, (analysis, group, dim)
        cohort = {"structural": None, "randomized": "EXPERIMENTAL", "naive": "REGULAR"}[analysis]
        st = students if cohort is None else students[students.cohort == cohort]
        assert idata.observed_data["student_id"].values.tolist() == st.student_id.tolist()
        cl = classes[classes.class_id.isin(st.class_id)].sort_values("class_id")
        assert idata.constant_data["class_id"].values.tolist() == cl.class_id.tolist()
        assert idata.posterior["school_id"].values.tolist() == sorted(cl.school_id.unique().tolist())
        assert idata.constant_data["class_of_student"].values.tolist() == st.class_id.tolist()
        assert idata.constant_data["school_of_class"].values.tolist() == cl.school_id.tolist()
        assert idata.constant_data["race_of_student"].values.tolist() == st.race.tolist()
    structural = _open(paths["structural"])
    assert structural.posterior["race"].values.tolist() == list(TINY.race_codes)
    assert structural.posterior["school_effect"].dims == ("chain", "draw", "school_id")
    assert structural.posterior["race_probs"].dims == ("chain", "draw", "race")
    naive = _open(paths["naive"])
    assert naive.posterior["race_vs_reference"].values.tolist() == list(TINY.race_codes[1:])


def test_groups_hold_what_their_names_say(runs):
    structural = _open(runs[1]["structural"])
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive", "prior",
                  "prior_predictive", "observed_data", "constant_data", "unconstrained_posterior"):
        assert group in structural.children, group
    assert set(structural.log_likelihood.data_vars) == {"test_score", "small_class", "class_size_and_score"}
    ll = structural.log_likelihood
    np.testing.assert_allclose(ll["class_size_and_score"], ll["test_score"] + ll["small_class"], atol=3e-3)  # kept to 0.001 nat
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
    assert ll.dims == ("chain", "draw", "student_id") and float(ll.std("student_id").mean()) > 0


def test_prior_predictive_comes_from_the_prior(runs):
    """Prior draws are wider than posterior draws for every estimand, and the prior
    predictive scores spread wider than the posterior predictive ones."""
    idata = _open(runs[1]["structural"])
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        assert float(idata.prior[name].std()) > 3 * float(idata.posterior[name].std()), name
    prior_sd = float(idata.prior_predictive["test_score"].mean("student_id").std())
    post_sd = float(idata.posterior_predictive["test_score"].mean("student_id").std())
    assert prior_sd > 3 * post_sd


def test_the_prior_drawn_while_the_sampler_compiles_is_the_prior(runs):
    """``classsize fit`` begins the prior draws on another thread before the sampler
    (:func:`~classsize.inference.fit.idata.start_prior`); the file's prior group holds
    exactly the draws made in this thread from the same key afterwards, and the naive
    regression, whose prior is drawn in the calling thread, begins none."""
    import jax

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.sources import as_loaded
    from classsize.inference.engine.runtime import use_compilation_cache
    from classsize.inference.fit.idata import predictive_keys, prior_draw_count, start_prior

    use_compilation_cache()
    folder, files = runs
    idata = _open(files["structural"])
    chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    with jax.enable_x64(True):
        problem = get_analysis("structural").problem(as_loaded(folder))
        n = prior_draw_count(chains, draws, problem.n_students)
        here = problem.analysis.prior_draws(problem, predictive_keys(0)[1], n)
        started = start_prior(problem, chains, draws, 0).result()
        naive = get_analysis("naive").problem(as_loaded(folder))
        assert start_prior(naive, chains, draws, 0) is None
    assert sorted(started) == sorted(here)
    for name, values in here.items():
        assert values.dtype == started[name].dtype and np.array_equal(values, started[name]), name
        if name in idata.prior:
            saved = idata.prior[name].values
            assert np.array_equal(saved.reshape((-1,) + saved.shape[2:]), values), name
    assert len(idata.prior.data_vars) > 10
