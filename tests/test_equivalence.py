"""The NumPyro model and the notebook draw datasets from the same distribution.

Each engine draws many datasets with fixed seeds (the model through
``simulate_many``, the notebook engine one dataset at a time).  From each dataset
come the :data:`STATISTICS`:

* the number of SMALL students in each cohort (2),
* the number of SMALL and of LARGE classes (2),
* the mean score in each class size x cohort cell (4),
* the share of teachers with an MA among SMALL and among LARGE classes (2),
* the OLS coefficients of score on ``[1, SMALL, MA, scaled log income]`` in the
  EXPERIMENTAL cohort (4).

For each statistic the two samples (one value per dataset) are compared by two
two-sample tests: Welch's t test (the means) and the Kolmogorov-Smirnov test (the
whole distribution).  The family false-alarm rate is **alpha = 0.01 overall**,
split by Bonferroni over the 14 x 2 = 28 tests (each at 0.01 / 28 = 3.6e-4): with
the model and the notebook equal, the chance that any test rejects is at most 1%.
Seeds are fixed, so the outcome is reproducible.

The fast form uses 60 datasets per engine; the slow form (``CLASSSIZE_SLOW=1``)
500.  The negative controls show that the fast form has power: the same machinery
rejects a model whose SMALL-class effect is 5.5 instead of 5, and a notebook whose
LARGE classes' MA probability is 0.3 instead of 0.4.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from conftest import fast_or_slow
from scipy import stats

from classsize.model import Config, simulate_many
from classsize.model.notebook import simulate_notebook

FAMILY_ALPHA = 0.01
FAST, SLOW = 60, 500
#: The model's and the notebook's seeds are disjoint (the engines' generators differ anyway).
MODEL_SEED0, NOTEBOOK_SEED0 = 0, 100_000

STATISTICS = (
    "n_small_students_REGULAR",
    "n_small_students_EXPERIMENTAL",
    "n_small_classes",
    "n_large_classes",
    "mean_score_SMALL_REGULAR",
    "mean_score_SMALL_EXPERIMENTAL",
    "mean_score_LARGE_REGULAR",
    "mean_score_LARGE_EXPERIMENTAL",
    "share_ma_SMALL",
    "share_ma_LARGE",
    "ols_EXPERIMENTAL_intercept",
    "ols_EXPERIMENTAL_small",
    "ols_EXPERIMENTAL_ma",
    "ols_EXPERIMENTAL_log_income",
)
TESTS = ("welch", "ks")
PER_TEST_ALPHA = FAMILY_ALPHA / (len(STATISTICS) * len(TESTS))


def dataset_statistics(students: pd.DataFrame, classes: pd.DataFrame, config: Config) -> np.ndarray:
    """The :data:`STATISTICS` of one dataset, from its two tables."""
    cls = classes.set_index("class_id")
    small = (cls["class_size"] == "SMALL").reindex(students["class_id"]).to_numpy()
    ma = cls["teacher_has_ma"].astype(bool).reindex(students["class_id"]).to_numpy()
    score = students["test_score"].to_numpy(dtype=float)
    regular = (students["cohort"] == "REGULAR").to_numpy()
    income = students["family_income"].to_numpy(dtype=float)
    s = (np.log(income) - np.log(config.income_min)) / (
        np.log(config.income_max) - np.log(config.income_min)
    )
    out = [
        np.sum(small & regular),
        np.sum(small & ~regular),
        np.sum(cls["class_size"] == "SMALL"),
        np.sum(cls["class_size"] == "LARGE"),
        score[small & regular].mean(),
        score[small & ~regular].mean(),
        score[~small & regular].mean(),
        score[~small & ~regular].mean(),
        cls.loc[cls["class_size"] == "SMALL", "teacher_has_ma"].mean(),
        cls.loc[cls["class_size"] == "LARGE", "teacher_has_ma"].mean(),
    ]
    e = ~regular
    X = np.column_stack([np.ones(e.sum()), small[e], ma[e], s[e]]).astype(float)
    beta, *_ = np.linalg.lstsq(X, score[e], rcond=None)
    out.extend(beta)
    return np.asarray(out, dtype=float)


@lru_cache(maxsize=None)
def model_statistics(config: Config, n: int) -> np.ndarray:
    seeds = range(MODEL_SEED0, MODEL_SEED0 + n)
    return np.stack(
        [dataset_statistics(d.students, d.classes, config) for d in simulate_many(config, seeds)]
    )


@lru_cache(maxsize=None)
def notebook_statistics(config: Config, n: int) -> np.ndarray:
    rows = []
    for seed in range(NOTEBOOK_SEED0, NOTEBOOK_SEED0 + n):
        d = simulate_notebook(config, seed)
        rows.append(dataset_statistics(d.students, d.classes, config))
    return np.stack(rows)


def compare(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """Welch and KS p-values for each statistic; ``reject`` at the Bonferroni level."""
    rows = []
    for k, name in enumerate(STATISTICS):
        x, y = a[:, k], b[:, k]
        welch = stats.ttest_ind(x, y, equal_var=False).pvalue
        ks = stats.ks_2samp(x, y).pvalue
        rows.append(
            {
                "statistic": name,
                "mean_a": x.mean(),
                "mean_b": y.mean(),
                "sd_a": x.std(ddof=1),
                "sd_b": y.std(ddof=1),
                "p_welch": welch,
                "p_ks": ks,
                "reject": bool(min(welch, ks) < PER_TEST_ALPHA),
            }
        )
    return pd.DataFrame(rows).set_index("statistic")


def _report(table: pd.DataFrame) -> str:
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return f"per-test alpha {PER_TEST_ALPHA:.2e}\n{table}"


def test_statistics_of_the_notebooks_dataset():
    ds = simulate_notebook(Config(), 100)
    st = dict(zip(STATISTICS, dataset_statistics(ds.students, ds.classes, Config())))
    assert st["n_small_students_REGULAR"] == 1300 and st["n_small_students_EXPERIMENTAL"] == 994
    assert st["n_small_classes"] == 152 and st["n_large_classes"] == 123
    assert abs(st["mean_score_SMALL_REGULAR"] - 79.14) < 0.01
    assert abs(st["mean_score_LARGE_EXPERIMENTAL"] - 68.15) < 0.01
    # no noise beyond ability: the OLS recovers the effects roughly
    assert 3.5 < st["ols_EXPERIMENTAL_small"] < 6.5
    assert 8.5 < st["ols_EXPERIMENTAL_ma"] < 11.5


@pytest.mark.parametrize("n", fast_or_slow(FAST, SLOW))
def test_model_and_notebook_draw_the_same_distribution(n):
    table = compare(model_statistics(Config(), n), notebook_statistics(Config(), n))
    rejected = table[table["reject"]]
    assert rejected.empty, "model and notebook disagree on " + ", ".join(rejected.index) + "\n" + _report(table)


def test_negative_control_model_with_a_larger_small_class_effect_is_rejected():
    """Power: a model whose SMALL-class effect is 5.5 (not 5) is told apart from the notebook."""
    table = compare(
        model_statistics(Config(small_class_direct_effect=5.5), FAST),
        notebook_statistics(Config(), FAST),
    )
    assert table.loc["ols_EXPERIMENTAL_small", "reject"], _report(table)
    # and nothing that the effect does not touch is flagged
    untouched = [s for s in STATISTICS if not s.startswith(("mean_score_SMALL", "ols_"))]
    assert not table.loc[untouched, "reject"].any(), _report(table)


def test_negative_control_notebook_with_fewer_ma_teachers_is_rejected():
    """Power: a notebook whose LARGE classes get an MA teacher with probability 0.3 is
    told apart from the model (0.4)."""
    table = compare(
        model_statistics(Config(), FAST),
        notebook_statistics(Config(p_ma_large=0.3), FAST),
    )
    assert table.loc["share_ma_LARGE", "reject"], _report(table)
    assert not table.loc["share_ma_SMALL", "reject"], _report(table)
