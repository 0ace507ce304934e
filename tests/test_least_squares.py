"""Least squares with school fixed effects and class-clustered standard errors, on
synthetic tables with planted effects (the STAR numbers are in tests/test_star.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("statsmodels")

from classsize.inference.analyses.least_squares import least_squares  # noqa: E402
from classsize.inference.data.checks import DataError  # noqa: E402

#: Planted coefficients of the synthetic tables.
TRUE = {"small": 5.0, "aide": 1.0, "teacher_experience": 0.2, "girl": 3.0}
#: 99.9% two-sided normal quantile: each interval misses its truth with probability
#: about 0.001, so the four checked below give a false alarm about 0.4% of seeds (of
#: seeds 100-299, 3 missed one of the four).
Z999 = 3.2905


def synthetic(seed: int, class_sd: float, noise_sd: float = 10.0, n_schools: int = 30,
              per_class: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables of ``n_schools`` schools with two small, two regular and two aide classes
    of ``per_class`` students each; scores = school level + the planted effects of
    :data:`TRUE` + a class effect N(0, class_sd) shared by a class's students + noise."""
    rng = np.random.default_rng(seed)
    kinds = ["SMALL", "SMALL", "LARGE", "LARGE", "AIDE", "AIDE"]
    classes = pd.DataFrame([
        {"class_id": 100 * s + k, "school_id": s, "n_students": per_class,
         "class_size": "SMALL" if kind == "SMALL" else "LARGE", "teacher_has_ma": bool(rng.random() < 0.4),
         "aide": kind == "AIDE", "teacher_experience": int(rng.integers(0, 25))}
        for s in range(1, n_schools + 1) for k, kind in enumerate(kinds)
    ])
    level = rng.normal(50, 8, n_schools + 1)
    class_effect = rng.normal(0, class_sd, len(classes)) if class_sd > 0 else np.zeros(len(classes))
    rows = np.repeat(np.arange(len(classes)), per_class)
    c = classes.iloc[rows].reset_index(drop=True)
    girl = rng.random(len(c)) < 0.5
    score = (level[c["school_id"]] + TRUE["small"] * (c["class_size"] == "SMALL") + TRUE["aide"] * c["aide"]
             + TRUE["teacher_experience"] * c["teacher_experience"] + TRUE["girl"] * girl
             + class_effect[rows] + rng.normal(0, noise_sd, len(c)) * (noise_sd > 0))
    students = pd.DataFrame({"student_id": np.arange(len(c)), "class_id": c["class_id"],
                             "school_id": c["school_id"], "test_score": score, "girl": girl})
    return students, classes


def fit(tables, **kw):
    return least_squares(tables, student_covariates=["girl"], class_covariates=["teacher_experience"], **kw)


def test_noise_free_scores_give_the_planted_effects_exactly():
    """With no class effect and no noise the scores are the model exactly: least squares
    returns the planted coefficients (a term on the wrong column could not)."""
    f = fit(synthetic(0, class_sd=0.0, noise_sd=0.0), with_ma=True)
    assert f.terms == ("small", "aide", "teacher_has_ma", "teacher_experience", "girl")
    for name, value in TRUE.items():
        assert f.estimate[name] == pytest.approx(value, abs=1e-8), name
    assert f.estimate["teacher_has_ma"] == pytest.approx(0.0, abs=1e-8)
    assert (f.n_students, f.n_classes, f.n_schools) == (3600, 180, 30)


def test_planted_effects_inside_their_intervals_and_clustering_widens_them():
    f = fit(synthetic(1, class_sd=4.0))
    for name, value in TRUE.items():
        lo, hi = f.interval(name, z=Z999)
        assert lo < value < hi, (name, f.estimate[name], f.clustered_se[name])
    # A class effect of sd 4 beside a student sd of 10 in classes of 20: within-class
    # correlation 16/116 = 0.14, design effect 1 + 19 * 0.14 = 3.6, so the clustered s.e.
    # of a class-level term is up to about 1.9 times the ordinary one (and the
    # student-level girl's barely changes).  Over seeds 100-299 the smallest ratio of
    # the three class-level terms was 1.41 (median 1.67) and girl's largest 1.12;
    # without a class effect (next test) the largest was 1.14: no seed tried crosses 1.25.
    for name in ("small", "aide", "teacher_experience"):
        assert f.clustered_se[name] > 1.25 * f.ordinary_se[name], name
    assert f.clustered_se["girl"] < 1.3 * f.ordinary_se["girl"]


def test_without_a_class_effect_the_two_standard_errors_agree():
    f = fit(synthetic(2, class_sd=0.0))
    # over seeds 100-199 the ratios of the three terms lay in 0.71-1.14
    for name in ("small", "aide", "teacher_experience"):
        assert 0.6 < f.clustered_se[name] / f.ordinary_se[name] < 1.25, name


def test_clustered_se_is_cr1():
    """statsmodels' cluster covariance is the CR1 formula of the module docstring."""
    students, classes = synthetic(3, class_sd=3.0, n_schools=5)
    f = least_squares((students, classes))
    c = classes.set_index("class_id").loc[students["class_id"]]
    school = pd.get_dummies(students["school_id"], drop_first=True, dtype=float).to_numpy()
    X = np.column_stack([np.ones(len(students)), (c["class_size"] == "SMALL").to_numpy(float),
                         c["aide"].to_numpy(float), school])
    y = students["test_score"].to_numpy()
    bread = np.linalg.inv(X.T @ X)
    e = y - X @ (bread @ X.T @ y)
    groups = students["class_id"].to_numpy()
    meat = sum(np.outer(X[groups == g].T @ e[groups == g], X[groups == g].T @ e[groups == g])
               for g in np.unique(groups))
    n, k, g = X.shape[0], X.shape[1], len(np.unique(groups))
    cov = g / (g - 1) * (n - 1) / (n - k) * bread @ meat @ bread
    assert f.clustered_se["small"] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-9)
    assert f.clustered_se["aide"] == pytest.approx(np.sqrt(cov[2, 2]), rel=1e-9)
    s2 = e @ e / (n - k)
    assert f.ordinary_se["small"] == pytest.approx(np.sqrt(s2 * bread[1, 1]), rel=1e-9)


def test_a_covariate_that_is_not_a_number_is_a_data_error():
    students, classes = synthetic(4, class_sd=1.0, n_schools=3)
    classes = classes.astype({"teacher_experience": str})
    classes.loc[4, "teacher_experience"] = "many"
    with pytest.raises(DataError) as info:
        fit((students, classes))
    msg = str(info.value)
    assert msg.startswith("classes.csv, line 6 (data row 5), column 'teacher_experience'") and "'many'" in msg
    students = students.astype({"girl": float})
    students.loc[2, "girl"] = np.nan
    with pytest.raises(DataError, match=r"students.csv, line 4 \(data row 3\), column 'girl'"):
        least_squares((students, classes), student_covariates=["girl"])
