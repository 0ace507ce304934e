"""What a learner sees: plots that leave the backend alone, the posterior predictive
check by cohort and class size, the teaching causal graph checked against the model,
and counterfactuals (``FitResult.do``) from a fitted model.

The statistical checks use one fixed dataset and sampler seed, so they are
deterministic; for a calibrated posterior each 90% interval would miss its truth at
a random seed with probability 0.10, and each posterior predictive p-value would
fall outside [0.01, 0.99] with probability 0.02.
"""

from __future__ import annotations

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from numpyro import handlers

from classsize.inference.fit.result import fit
from classsize.inference.fit.figures import ppc_plot
from classsize.inference.fit.ppc import ppc_table, small_rate_table
from classsize.model import Config, simulate
from classsize.model.graph import (
    BOOKKEEPING_EDGES,
    TEACHING_EDGES,
    model_edges,
    observed_model,
    teaching_edges,
    teaching_figure,
)
from classsize.model.pieces import small_probability


def ancestors(edges, node: str) -> set[str]:
    """Every variable with a directed path to ``node``."""
    out, todo = set(), [node]
    while todo:
        child = todo.pop()
        for a, b in edges:
            if b == child and a not in out:
                out.add(a)
                todo.append(a)
    return out


#: A small design whose MA probabilities differ enough to tell the direct effect (5)
#: from the total effect (5 + 10 x (0.8 - 0.2) = 11).
DESIGN = Config(n_regular=300, n_experimental=200, n_schools=4, p_ma_small=0.8, p_ma_large=0.2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    simulate(DESIGN, 3).write(d)
    return d


@pytest.fixture(scope="module")
def structural(data_dir):
    return fit(data_dir, "structural", chains=2, warmup=300, samples=300, seed=1, progress=False)


@pytest.fixture
def svg_backend():
    """A backend that is not Agg, restored afterwards."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    import matplotlib.pyplot as plt

    plt.close("all")
    matplotlib.use(before)


# -------------------------------------------------------------------------- plots
def test_plots_leave_the_users_backend_alone(structural, svg_backend):
    structural.plot()
    ppc_plot(structural.idata)
    structural.do(small_class=1, teacher_has_ma=1, draws=50).plot()
    assert matplotlib.get_backend() == svg_backend


def test_ppc_figure_shows_scores_by_cohort_and_class_size_and_small_rates(structural, svg_backend, tmp_path):
    from classsize.inference.fit.figures import save

    fig = ppc_plot(structural.idata)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["REGULAR: scores by class size", "EXPERIMENTAL: scores by class size",
                      "Students in a SMALL class"]
    for ax in fig.axes[:2]:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sum(t.startswith("observed") for t in labels) == 2, labels
        assert sum(t.startswith("replicated") for t in labels) == 2, labels
    save(fig, tmp_path / "ppc.png")
    assert (tmp_path / "ppc.png").read_bytes()[:4] == b"\x89PNG"


def test_ppc_reproduces_scores_and_small_rates(structural):
    rates = small_rate_table(structural.idata).set_index("cohort")
    students = structural.problem.observed
    experimental = np.asarray(students.is_experimental)
    small = np.asarray(students.small_class)
    assert rates.loc["REGULAR", "observed_rate"] == pytest.approx(small[~experimental].mean())
    assert rates.loc["EXPERIMENTAL", "observed_rate"] == pytest.approx(small[experimental].mean())
    assert rates.replicated.all()  # the structural analysis replicates the class sizes
    assert rates.p_value.between(0.01, 0.99).all(), rates
    table = ppc_table(structural.idata)
    assert len(table) == 4 and table.p_value.between(0.01, 0.99).all(), table


def test_ppc_reads_covariates_from_observed_or_constant_data(structural):
    """The same tables whichever group holds small_class and is_experimental."""
    import xarray as xr

    idata = structural.idata
    pooled = xr.merge([idata[g].to_dataset() for g in ("observed_data", "constant_data") if g in idata.children],
                      compat="override")
    names = ["small_class", "is_experimental"]
    moved = idata.copy()
    for g in ("observed_data", "constant_data"):
        if g in moved.children:
            del moved[g]
    moved["observed_data"], moved["constant_data"] = pooled.drop_vars(names), pooled[names]
    other = moved.copy()
    del other["observed_data"], other["constant_data"]
    other["observed_data"] = pooled[["test_score"] + names]
    for a in (moved, other):
        assert ppc_table(a).equals(ppc_table(idata))
        assert small_rate_table(a).equals(small_rate_table(idata))


# ------------------------------------------------------------------- causal graph
def test_teaching_graph_is_the_models_graph_without_bookkeeping():
    """Every arrow of the teaching graph is a dependence of the model, and every
    dependence of the model between its variables is an arrow, except the school
    drawn per class slot (bookkeeping) and the cohort (design, checked below)."""
    config = Config(n_regular=60, n_experimental=40, n_schools=3)
    from_model = model_edges(observed_model(config), config)
    drawn = {e for e in TEACHING_EDGES if e[0] != "cohort"}
    assert from_model - set(BOOKKEEPING_EDGES) == drawn


def test_the_cohort_decides_which_rule_sets_the_class_size():
    """REGULAR: P(SMALL) moves with income, race and ability; EXPERIMENTAL: it does not."""
    p = {name: jnp.asarray(getattr(Config(), name)) for name in
         ("regular_small_intercept", "regular_small_income", "regular_small_ability", "experimental_p_small")}
    p["regular_small_race_shift"] = jnp.asarray(Config().race_shift_vector)
    income, race, ability = jnp.array([0.1, 0.9, 0.5, 0.5]), jnp.array([0, 0, 1, 2]), jnp.array([2.0, 20.0, 10.0, 5.0])
    regular = small_probability(p, income, race, ability, jnp.zeros(4, bool))
    experimental = small_probability(p, income, race, ability, jnp.ones(4, bool))
    assert np.ptp(np.asarray(regular)) > 0.1
    assert np.ptp(np.asarray(experimental)) == 0.0


def test_do_panel_cuts_exactly_the_arrows_into_class_size():
    """Under do(class size) the model's score depends on the same variables as the
    teaching graph's second panel: race, which reached the score only through the
    class size, no longer does."""
    from numpyro.infer.inspect import get_model_relations

    from classsize.model.graph import TEACHING_NODES

    config = Config(n_regular=60, n_experimental=40, n_schools=3)
    intervened = handlers.do(observed_model(config), {"small_class": jnp.ones(config.n_students, int)})
    deps = get_model_relations(intervened, model_args=(config,))["sample_sample"]
    site_edges = {(parent, child) for child, parents in deps.items() for parent in parents}
    node_of = {site: node for node, (*_, sites) in TEACHING_NODES.items() for site in sites}
    model_side = {node_of[s] for s in ancestors(site_edges, "test_score") if s in node_of}
    graph_side = ancestors(teaching_edges(intervened=True), "score")
    assert model_side == graph_side == {"class size", "MA", "school", "ability", "income"}
    assert "race" in ancestors(TEACHING_EDGES, "score") and "race" not in graph_side
    assert set(TEACHING_EDGES) - set(teaching_edges(intervened=True)) == {e for e in TEACHING_EDGES
                                                                          if e[1] == "class size"}


def test_teaching_figure_draws_both_panels_and_marks_the_cut_arrows(svg_backend):
    fig = teaching_figure()
    left, right = fig.axes
    crosses = [line for line in right.lines if line.get_marker() == "x"]
    assert len(crosses) == sum(e[1] == "class size" for e in TEACHING_EDGES) == 4
    assert not [line for line in left.lines if line.get_marker() == "x"]
    assert "do(class size)" in right.get_title()


# ---------------------------------------------------------------- counterfactuals
def test_do_with_the_ma_held_gives_the_direct_effect_draw_for_draw(structural):
    """Holding the teacher's MA, each draw's average effect of a SMALL class is that
    draw's direct effect (common random numbers, each student in her own school), and
    its 90% interval covers the true direct effect."""
    from classsize.inference.fit.counterfactual import posterior_draws

    cf = structural.do(small_class=1, teacher_has_ma=1)
    direct = posterior_draws(structural.idata, 500, ["small_class_direct_effect"])["small_class_direct_effect"]
    np.testing.assert_allclose(cf.effect, direct, atol=1e-6)
    lo, hi = cf.interval()
    assert lo <= DESIGN.small_class_direct_effect <= hi, cf.statement()
    assert cf.truth == DESIGN.small_class_direct_effect and "truth 5 " in cf.statement()


def test_do_small_class_lets_the_ma_follow_and_gives_the_total_effect(structural):
    cf = structural.do(small_class=1, cohort="REGULAR")
    total = DESIGN.estimands()["small_class_total_effect"]
    assert total == 11.0
    lo, hi = cf.interval()
    assert lo <= total <= hi, cf.statement()
    assert lo > DESIGN.small_class_direct_effect  # the MA's part is in it
    estimand = structural.estimand_draws["small_class_total_effect"]
    assert abs(cf.effect.mean() - estimand.mean()) < 0.25 * estimand.std(), (cf.effect.mean(), estimand.mean())
    assert cf.scores.shape[1] == DESIGN.n_regular and cf.truth == total
    opposite = structural.do(small_class=0, cohort="REGULAR")
    np.testing.assert_allclose(opposite.effect, -cf.effect, atol=1e-9)
    assert opposite.truth == -total
    summary = cf.summary()
    assert list(summary.index) == ["do(small_class=1)", "do(small_class=0)", "average effect"]


def test_do_on_the_naive_regression_is_its_coefficient_and_misses_the_truth(data_dir):
    """The regression sets the class size in its equation, the MA held as observed: each
    draw's effect is its small-class coefficient, a direct effect, biased upwards by
    the unobserved ability (the REGULAR cohort's assignment uses it)."""
    from classsize.inference.fit.counterfactual import posterior_draws

    naive = fit(data_dir, "naive", chains=2, warmup=300, samples=300, seed=1, progress=False,
                posterior_predictive=False)
    cf = naive.do(small_class=1)
    coefficient = posterior_draws(naive.idata, 500, ["small_class_direct_effect"])["small_class_direct_effect"]
    np.testing.assert_allclose(cf.effect, coefficient, atol=1e-6)
    assert cf.cohort == "REGULAR" and cf.truth == DESIGN.small_class_direct_effect
    assert cf.interval()[0] > cf.truth and "OUTSIDE" in cf.statement()
    with pytest.raises(ValueError, match="no EXPERIMENTAL students"):
        naive.do(small_class=1, cohort="EXPERIMENTAL")


@pytest.mark.parametrize("bad", [{"class_size": 1}, {"small_class": 2}, {}])
def test_do_refuses_what_it_cannot_set(structural, bad):
    with pytest.raises(ValueError, match="small_class"):
        structural.do(**bad)
