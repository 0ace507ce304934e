"""Reading dataset folders: round trips, the notebook's float ids, one test per kind of
bad input, and property-based checks that any mangled folder gives a DataError."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classsize.inference.data.read import DataError, LoadedData, load_dataset
from classsize.model import Config, simulate
from classsize.model.pieces import scaled_log_income

CONFIG = Config(n_regular=300, n_experimental=200, n_schools=5)
SEED = 11


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dataset():
    return simulate(CONFIG, SEED)


@pytest.fixture(scope="module")
def folder(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    dataset.write(out)
    return out


@pytest.fixture(scope="module")
def loaded(folder) -> LoadedData:
    return load_dataset(folder)


@pytest.fixture(scope="module")
def text_tables(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables as text, exactly as written."""
    read = lambda name: pd.read_csv(folder / name, dtype=str, keep_default_na=False)  # noqa: E731
    return read("students.csv"), read("classes.csv")


def write(folder: Path, students: pd.DataFrame, classes: pd.DataFrame, **json_files) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    students.to_csv(folder / "students.csv", index=False)
    classes.to_csv(folder / "classes.csv", index=False)
    for name, obj in json_files.items():
        (folder / f"{name}.json").write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return folder


def class_ids_of(loaded: LoadedData) -> np.ndarray:
    """Class ids in ascending order: position ``j`` is class ``j`` of ``loaded.observed()``."""
    return np.sort(loaded.classes["class_id"].to_numpy(np.int64))


def covariate_matrix(loaded: LoadedData, cohort: str | None = None,
                     config: Config = Config()) -> tuple[np.ndarray, list[str]]:
    """The listed student covariates as a float64 ``n x p`` matrix and their names.

    Rows are the students of ``loaded.observed(config, cohort)`` (same cohort, same
    order); columns follow ``metadata["student_covariates"]``, with ``family_income``
    entering as its scaled log (named ``"log_income_scaled"``, scaled under ``config``).
    """
    st = loaded.students_of(cohort)
    cols: list[np.ndarray] = []
    names: list[str] = []
    for name in loaded.student_covariates:
        if name == "family_income":
            x = np.asarray(scaled_log_income(st["family_income"].to_numpy(np.float64), config))
            names.append("log_income_scaled")
        else:
            x = st[name].to_numpy(np.float64)
            names.append(name)
        cols.append(x.astype(np.float64))
    if not cols:
        return np.zeros((len(st), 0), dtype=np.float64), names
    return np.column_stack(cols), names


def load_error(folder: Path) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg
    return info.value


def assert_names(err: DataError, file: str, line: int | None = None, column: str | None = None):
    msg = str(err)
    assert msg.split(",")[0].split(":")[0].endswith(file), msg
    assert err.file.endswith(file)
    if line is not None:
        assert f"line {line} (data row {line - 1})" in msg, msg
        assert err.line == line
    if column is not None:
        assert f"column '{column}'" in msg, msg
        assert err.column == column


# ---------------------------------------------------------------------- round trip
def test_round_trip_frames(dataset, loaded):
    expected_students = dataset.students.astype({"family_income": np.float64})
    pd.testing.assert_frame_equal(loaded.students, expected_students)
    pd.testing.assert_frame_equal(loaded.classes, dataset.classes)
    assert loaded.truth == json.loads(json.dumps(dataset.truth))
    assert loaded.metadata["student_covariates"] == ["family_income"]
    assert loaded.race_codes == ("WHITE", "BLACK", "HISPANIC", "ASIAN", "NATIVE_AMERICAN", "OTHER")


def test_round_trip_observed(dataset, loaded):
    s, c = dataset.students, dataset.classes
    obs = loaded.observed(CONFIG)
    n, m = len(s), len(c)
    for name in ("race", "income_scaled", "is_experimental", "small_class", "class_of_student", "test_score"):
        assert getattr(obs, name).shape == (n,), name
    for name in ("class_is_small", "teacher_has_ma", "school_of_class", "class_used"):
        assert getattr(obs, name).shape == (m,), name
    for name in ("race", "small_class", "class_of_student", "class_is_small", "teacher_has_ma", "school_of_class"):
        assert getattr(obs, name).dtype == np.int32, name
    assert obs.income_scaled.dtype == np.float64 and obs.test_score.dtype == np.float64

    cos = np.asarray(obs.class_of_student)
    class_ids = class_ids_of(loaded)
    assert np.all(np.diff(class_ids) > 0)
    np.testing.assert_array_equal(class_ids[cos], s["class_id"])
    np.testing.assert_array_equal(np.asarray(obs.class_is_small)[cos], np.asarray(obs.small_class))
    by_id = c.set_index("class_id").loc[class_ids]
    np.testing.assert_array_equal(np.asarray(obs.class_is_small), by_id["class_size"] == "SMALL")
    np.testing.assert_array_equal(np.asarray(obs.teacher_has_ma), by_id["teacher_has_ma"].astype(int))
    np.testing.assert_array_equal(loaded.school_ids[np.asarray(obs.school_of_class)], by_id["school_id"])
    assert loaded.n_schools == c["school_id"].nunique()
    np.testing.assert_array_equal(np.asarray(CONFIG.race_codes)[np.asarray(obs.race)], s["race"])
    assert loaded.race_coding(CONFIG) == CONFIG.race_codes
    np.testing.assert_array_equal(np.asarray(obs.is_experimental), s["cohort"] == "EXPERIMENTAL")
    np.testing.assert_array_equal(np.asarray(obs.test_score), s["test_score"])
    np.testing.assert_allclose(
        np.asarray(obs.income_scaled), np.asarray(scaled_log_income(s["family_income"].to_numpy(float), CONFIG))
    )
    assert bool(np.all(np.asarray(obs.class_used)))
    assert obs.extra_covariates is None

    x, names = covariate_matrix(loaded, config=CONFIG)
    assert names == ["log_income_scaled"] and x.shape == (n, 1)
    np.testing.assert_allclose(x[:, 0], np.asarray(obs.income_scaled))


@pytest.mark.parametrize("cohort", ["REGULAR", "EXPERIMENTAL"])
def test_observed_one_cohort(loaded, cohort):
    s = loaded.students
    keep = s["cohort"] == cohort
    obs = loaded.observed(CONFIG, cohort=cohort)
    assert obs.test_score.shape == (int(keep.sum()),)
    used_ids = np.sort(s.loc[keep, "class_id"].unique())
    assert obs.class_is_small.shape == (len(used_ids),)
    cos = np.asarray(obs.class_of_student)
    np.testing.assert_array_equal(used_ids[cos], s.loc[keep, "class_id"])
    assert set(cos.tolist()) == set(range(len(used_ids)))  # every kept class has a student
    np.testing.assert_array_equal(np.asarray(obs.class_is_small)[cos], np.asarray(obs.small_class))
    school_ids = loaded.school_ids_in(cohort)
    np.testing.assert_array_equal(school_ids, np.unique(s.loc[keep, "school_id"]))
    np.testing.assert_array_equal(
        school_ids[np.asarray(obs.school_of_class)[cos]], s.loc[keep, "school_id"]
    )
    assert bool(np.all(np.asarray(obs.is_experimental) == (cohort == "EXPERIMENTAL")))
    x, _ = covariate_matrix(loaded, cohort=cohort, config=CONFIG)
    np.testing.assert_allclose(x[:, 0], np.asarray(obs.income_scaled))
    with pytest.raises(ValueError, match="cohort"):
        loaded.observed(CONFIG, cohort="regular")


def test_observed_cohort_drops_a_school(text_tables, tmp_path):
    """Schools are re-indexed within a cohort: none is left without students."""
    students, classes = (t.copy() for t in text_tables)
    gone = students["school_id"].iloc[0]
    students.loc[students["school_id"] == gone, "cohort"] = "REGULAR"
    data = load_dataset(write(tmp_path / "d", students, classes))
    ids = data.school_ids_in("EXPERIMENTAL")
    assert gone not in set(ids.astype(str)) and len(ids) == data.n_schools - 1
    obs = data.observed(CONFIG, cohort="EXPERIMENTAL")
    assert set(np.asarray(obs.school_of_class).tolist()) == set(range(len(ids)))


def test_notebook_float_ids(folder, text_tables, loaded, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    for t in (students, classes):
        t["class_id"] = t["class_id"].astype(int).astype(float).map(repr)  # 7001 -> '7001.0'
    assert students["class_id"].iloc[0].endswith(".0")
    again = load_dataset(write(tmp_path / "nb", students, classes))
    pd.testing.assert_frame_equal(again.students, loaded.students)
    pd.testing.assert_frame_equal(again.classes, loaded.classes)
    for a, b in zip(again.observed(CONFIG), loaded.observed(CONFIG)):
        if a is not None:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_reading_writes_nothing(folder, tmp_path, text_tables):
    def snapshot(d):
        return sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in d.iterdir())

    before = snapshot(folder)
    load_dataset(folder)
    assert snapshot(folder) == before
    students, classes = (t.copy() for t in text_tables)
    students.loc[3, "race"] = "PURPLE"
    bad = write(tmp_path / "bad", students, classes)
    before = snapshot(bad)
    load_error(bad)
    assert snapshot(bad) == before


def test_extra_columns_kept_and_booleans(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    students["note"] = "x"
    classes["aide"] = "False"
    classes["teacher_has_ma"] = classes["teacher_has_ma"].map({"True": "1", "False": "false"})
    data = load_dataset(write(tmp_path / "d", students, classes))
    assert list(data.students.columns)[-1] == "note" and (data.students["note"] == "x").all()
    assert (data.classes["aide"] == "False").all()
    assert data.classes["teacher_has_ma"].dtype == bool
    assert (data.classes["teacher_has_ma"].to_numpy() == (text_tables[1]["teacher_has_ma"] == "True")).all()


def test_real_data_without_income(text_tables, tmp_path):
    """A dataset.json whose covariates leave out family_income: the column may be absent;
    other covariates may be booleans; race codes outside the configuration's are coded
    by the data's own sorted list."""
    students, classes = (t.copy() for t in text_tables)
    students = students.drop(columns="family_income")
    students["free_lunch"] = np.where(np.arange(len(students)) % 3 == 0, "True", "False")
    students.loc[0, "race"] = "OTHER"
    meta = {"name": "real", "score_units": "percentile points", "student_covariates": ["free_lunch"],
            "race_codes": ["WHITE", "BLACK", "HISPANIC", "ASIAN", "OTHER"]}
    data = load_dataset(write(tmp_path / "real", students, classes, dataset=meta))
    assert data.metadata["name"] == "real" and data.truth is None
    assert data.race_codes == tuple(meta["race_codes"])
    obs = data.observed(CONFIG)
    assert bool(np.all(np.asarray(obs.income_scaled) == 0.0))
    coding = data.race_coding(CONFIG)
    assert coding == tuple(sorted(set(students["race"])))
    np.testing.assert_array_equal(np.asarray(coding)[np.asarray(obs.race)], students["race"])
    x, names = covariate_matrix(data)
    assert names == ["free_lunch"]
    np.testing.assert_array_equal(x[:, 0], (students["free_lunch"] == "True").astype(float))
    np.testing.assert_array_equal(np.asarray(obs.extra_covariates), x)

    students.loc[4, "free_lunch"] = "maybe"
    err = load_error(write(tmp_path / "real2", students, classes, dataset=meta))
    assert_names(err, "students.csv", 6, "free_lunch")

    students = students.drop(columns="free_lunch")
    err = load_error(write(tmp_path / "real3", students, classes, dataset=meta))
    assert_names(err, "students.csv", column="free_lunch")
    assert "missing" in str(err)


# ---------------------------------------------------------------------- class covariates
CLASS_META = {"class_covariates": ["aide", "teacher_experience"], "class_effect_sd": "free"}


def with_class_covariates(text_tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables with classes.csv given an ``aide`` (booleans) and a
    ``teacher_experience`` (numbers, one per class) column, and its rows shuffled so
    that file order is not class_id order."""
    students, classes = (t.copy() for t in text_tables)
    rng = np.random.default_rng(3)
    classes["aide"] = np.where(rng.random(len(classes)) < 0.4, "True", "false")
    classes["teacher_experience"] = [f"{v:.1f}" for v in rng.integers(0, 30, len(classes)) + 0.5]
    classes = classes.iloc[rng.permutation(len(classes))].reset_index(drop=True)
    return students, classes


def test_class_covariates_land_in_their_class_slots(text_tables, tmp_path):
    students, classes = with_class_covariates(text_tables)
    data = load_dataset(write(tmp_path / "d", students, classes, dataset=CLASS_META))
    assert data.class_covariate_names == ("aide", "teacher_experience")
    assert data.metadata["class_effect_sd"] == "free"  # kept as written, for the analysis
    expected = pd.DataFrame({
        "aide": (classes["aide"] == "True").astype(float),
        "teacher_experience": classes["teacher_experience"].astype(float),
    }).set_index(classes["class_id"].astype(int))
    for cohort in (None, "REGULAR", "EXPERIMENTAL"):
        obs = data.observed(CONFIG, cohort=cohort)
        got = np.asarray(obs.class_covariates)
        assert got.dtype == np.float64 and got.shape == (obs.class_is_small.shape[0], 2)
        slot_ids = data.classes_of(cohort)["class_id"].to_numpy()
        np.testing.assert_array_equal(got, expected.loc[slot_ids].to_numpy())
        # the same slots as the other class arrays: each student's class's values
        st = data.students_of(cohort)
        np.testing.assert_array_equal(got[np.asarray(obs.class_of_student)],
                                      expected.loc[st["class_id"].to_numpy()].to_numpy())
    assert np.asarray(data.observed(CONFIG).class_covariates)[:, 0].sum() == (classes["aide"] == "True").sum()

    plain = load_dataset(write(tmp_path / "plain", students, classes))
    assert plain.class_covariate_names == () and plain.observed(CONFIG).class_covariates is None


@pytest.mark.parametrize("token, words", [("nan", "not finite"), ("inf", "not finite"),
                                          ("many", "neither a number nor a boolean"), ("", "empty")])
def test_bad_class_covariate_value(text_tables, tmp_path, token, words):
    students, classes = with_class_covariates(text_tables)
    classes.loc[5, "teacher_experience"] = token
    err = load_error(write(tmp_path / "d", students, classes, dataset=CLASS_META))
    assert_names(err, "classes.csv", 7, "teacher_experience")
    assert words in str(err)


def test_missing_class_covariate_column(text_tables, tmp_path):
    students, classes = with_class_covariates(text_tables)
    err = load_error(write(tmp_path / "d", students, classes.drop(columns="aide"), dataset=CLASS_META))
    assert_names(err, "classes.csv", column="aide")
    assert "missing" in str(err) and "class_covariates" in str(err)


@pytest.mark.parametrize("value, words", [('"aide"', "list"), ('["aide", "aide"]', "distinct"),
                                          ('["class_size"]', "core column"), ('[3]', "strings")])
def test_bad_class_covariates_key(text_tables, tmp_path, value, words):
    students, classes = with_class_covariates(text_tables)
    err = load_error(write(tmp_path / "d", students, classes, dataset=f'{{"class_covariates": {value}}}'))
    assert_names(err, "dataset.json")
    assert err.key == "class_covariates" and words in str(err)


# ---------------------------------------------------------------------- bad input, by kind
@pytest.mark.parametrize("name", ["students.csv", "classes.csv"])
def test_missing_file(folder, tmp_path, name, text_tables):
    d = write(tmp_path / "d", *text_tables)
    (d / name).unlink()
    err = load_error(d)
    assert_names(err, name)
    assert "not found" in str(err)


def test_missing_folder(tmp_path):
    err = load_error(tmp_path / "nowhere")
    assert "nowhere" in str(err) and "not found" in str(err)


@pytest.mark.parametrize(
    "name, column",
    [("students.csv", "race"), ("students.csv", "family_income"), ("students.csv", "student_id"),
     ("classes.csv", "teacher_has_ma"), ("classes.csv", "n_students")],
)
def test_missing_column(text_tables, tmp_path, name, column):
    students, classes = (t.copy() for t in text_tables)
    if name == "students.csv":
        students = students.drop(columns=column)
    else:
        classes = classes.drop(columns=column)
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, name, column=column)
    assert "missing" in str(err)


@pytest.mark.parametrize(
    "name, column, token, words",
    [
        ("students.csv", "test_score", "high", "not a number"),
        ("students.csv", "family_income", "$40k", "not a number"),
        ("students.csv", "student_id", "S17", "not a number"),
        ("students.csv", "class_id", "7001.5", "not a whole number"),
        ("students.csv", "school_id", "", "empty cell"),
        ("classes.csv", "n_students", "fifteen", "not a number"),
        ("classes.csv", "class_id", "12.25", "not a whole number"),
    ],
)
def test_wrong_type(text_tables, tmp_path, name, column, token, words):
    students, classes = (t.copy() for t in text_tables)
    table = students if name == "students.csv" else classes
    table.loc[7, column] = token
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, name, 9, column)
    assert words in str(err)


@pytest.mark.parametrize(
    "name, column, token",
    [("students.csv", "race", "PURPLE"), ("students.csv", "cohort", "regular"),
     ("classes.csv", "class_size", "MEDIUM")],
)
def test_unknown_code(text_tables, tmp_path, name, column, token):
    students, classes = (t.copy() for t in text_tables)
    (students if name == "students.csv" else classes).loc[15, column] = token
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, name, 17, column)
    assert f"'{token}'" in str(err) and "known:" in str(err)


def test_unknown_race_code_message(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    students.loc[15, "race"] = "PURPLE"
    err = load_error(write(tmp_path / "d", students, classes))
    assert str(err).endswith(
        "students.csv, line 17 (data row 16), column 'race': unknown race code 'PURPLE' "
        "(known: WHITE, BLACK, HISPANIC, ASIAN, NATIVE_AMERICAN, OTHER)"
    )


@pytest.mark.parametrize("token", ["yes", "T", "2", ""])
def test_non_boolean_teacher_has_ma(text_tables, tmp_path, token):
    students, classes = (t.copy() for t in text_tables)
    classes.loc[2, "teacher_has_ma"] = token
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "classes.csv", 4, "teacher_has_ma")


@pytest.mark.parametrize(
    "name, column, token",
    [("students.csv", "test_score", "nan"), ("students.csv", "test_score", "inf"),
     ("students.csv", "family_income", "-inf"), ("students.csv", "family_income", "NaN"),
     ("students.csv", "class_id", "inf"), ("students.csv", "test_score", "1e999"),
     ("classes.csv", "n_students", "nan"), ("classes.csv", "school_id", "Infinity")],
)
def test_nan_or_inf(text_tables, tmp_path, name, column, token):
    students, classes = (t.copy() for t in text_tables)
    (students if name == "students.csv" else classes).loc[0, column] = token
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, name, 2, column)
    assert "not a finite number" in str(err)


@pytest.mark.parametrize("name", ["students.csv", "classes.csv"])
def test_empty_table(text_tables, tmp_path, name):
    students, classes = (t.copy() for t in text_tables)
    d = write(tmp_path / "d", students.iloc[:0] if name == "students.csv" else students,
              classes.iloc[:0] if name == "classes.csv" else classes)
    err = load_error(d)
    assert_names(err, name)
    assert "no data rows" in str(err)
    (d / name).write_text("")
    err = load_error(d)
    assert_names(err, name)
    assert "empty" in str(err)


def test_duplicate_student_id(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    students.loc[20, "student_id"] = students.loc[3, "student_id"]
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "students.csv", 22, "student_id")
    assert "duplicate student_id" in str(err) and "first on line 5" in str(err)


def test_duplicate_class_id_also_as_float(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    classes.loc[4, "class_id"] = f"{classes.loc[1, 'class_id']}.0"  # 7002.0 repeats 7002
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "classes.csv", 6, "class_id")
    assert "duplicate class_id" in str(err) and "first on line 3" in str(err)


def test_student_in_unknown_class(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    students.loc[30, "class_id"] = "6999"
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "students.csv", 32, "class_id")
    assert "6999" in str(err) and "not in classes.csv" in str(err)


def test_school_disagrees(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    students.loc[40, "school_id"] = str(int(students.loc[40, "school_id"]) + 100)
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "students.csv", 42, "school_id")
    assert "disagrees" in str(err) and "classes.csv" in str(err)


def test_n_students_disagrees(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    classes.loc[5, "n_students"] = str(int(classes.loc[5, "n_students"]) + 1)
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "classes.csv", 7, "n_students")
    assert "students.csv has" in str(err)


def test_class_without_students(text_tables, tmp_path):
    students, classes = (t.copy() for t in text_tables)
    gone = classes.loc[3, "class_id"]
    students = students[students["class_id"] != gone]
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "classes.csv", 5, "class_id")
    assert f"class {gone} has no students" in str(err)


@pytest.mark.parametrize("token", ["0", "-5", "-0.5"])
def test_income_not_positive(text_tables, tmp_path, token):
    students, classes = (t.copy() for t in text_tables)
    students.loc[10, "family_income"] = token
    err = load_error(write(tmp_path / "d", students, classes))
    assert_names(err, "students.csv", 12, "family_income")
    assert "> 0" in str(err)


def test_ragged_row(folder, tmp_path, text_tables):
    d = write(tmp_path / "d", *text_tables)
    lines = (d / "classes.csv").read_text().splitlines(keepends=True)
    lines[3] = lines[3].rstrip("\n") + ",extra\n"
    (d / "classes.csv").write_text("".join(lines))
    err = load_error(d)
    assert_names(err, "classes.csv", 4)
    assert "6 fields" in str(err)


@pytest.mark.parametrize(
    "text, words",
    [('{"student_covariates": ', "not valid JSON"), ('["a"]', "JSON object"),
     ('{"student_covariates": "family_income"}', "student_covariates"),
     ('{"race_codes": []}', "race_codes"), ('{"student_covariates": ["test_score"]}', "core column"),
     ('{"name": 3}', "name")],
)
def test_bad_metadata(text_tables, tmp_path, text, words):
    err = load_error(write(tmp_path / "d", *text_tables, dataset=text))
    assert_names(err, "dataset.json")
    assert words in str(err)


def test_bad_truth(text_tables, tmp_path):
    err = load_error(write(tmp_path / "d", *text_tables, truth="{oops"))
    assert_names(err, "truth.json")


def test_data_error_is_value_error():
    e = DataError("x/students.csv", "bad\nthing", line=3, row=2, column="race")
    assert isinstance(e, ValueError)
    assert str(e) == "x/students.csv, line 3 (data row 2), column 'race': bad thing"


# ---------------------------------------------------------------------- properties
STUDENT_NUMERIC = ["student_id", "class_id", "school_id", "test_score", "family_income"]
CLASS_NUMERIC = ["class_id", "school_id", "n_students"]
#: Tokens that are wrong in every column of both tables.
BAD_TOKENS = ["", "abc", "nan", "NaN", "inf", "-inf", "1e999", "N/A", "PURPLE", "#", "7001.5x", " - ", "tru"]
NONFINITE = ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "-Infinity", "1e400", "-1e400"]
MANGLES = ["drop_column", "bad_token", "duplicate_row", "delete_class", "change_n_students",
           "swap_school", "nonfinite"]


def _mangle(data, students: pd.DataFrame, classes: pd.DataFrame, kind: str):
    """Break one rule; returns (students, classes, name of the mangled file)."""
    s, c = students.copy(), classes.copy()
    which = data.draw(st.sampled_from(["students.csv", "classes.csv"]))
    t = s if which == "students.csv" else c
    row = data.draw(st.integers(0, len(t) - 1))
    if kind == "drop_column":
        t = t.drop(columns=data.draw(st.sampled_from(list(t.columns))))
    elif kind == "bad_token":
        t.iloc[row, data.draw(st.integers(0, t.shape[1] - 1))] = data.draw(st.sampled_from(BAD_TOKENS))
    elif kind == "duplicate_row":
        at = data.draw(st.integers(0, len(t)))
        t = pd.concat([t.iloc[:at], t.iloc[[row]], t.iloc[at:]], ignore_index=True)
    elif kind == "delete_class":
        which, t = "classes.csv", c.drop(index=data.draw(st.integers(0, len(c) - 1)))
    elif kind == "change_n_students":
        which, t = "classes.csv", c
        row = data.draw(st.integers(0, len(c) - 1))
        delta = data.draw(st.integers(1, 20)) * data.draw(st.sampled_from([-1, 1]))
        t.loc[row, "n_students"] = str(int(t.loc[row, "n_students"]) + delta)
    elif kind == "swap_school":
        t.loc[row, "school_id"] = str(int(t.loc[row, "school_id"]) + data.draw(st.integers(1, 50)))
    elif kind == "nonfinite":
        cols = STUDENT_NUMERIC if which == "students.csv" else CLASS_NUMERIC
        t.loc[row, data.draw(st.sampled_from(cols))] = data.draw(st.sampled_from(NONFINITE))
    if which == "students.csv":
        s = t
    else:
        c = t
    return s, c, which


@settings(max_examples=80, deadline=None, derandomize=True)
@given(data=st.data(), kind=st.sampled_from(MANGLES))
def test_mangled_folder_gives_data_error(text_tables, data, kind):
    students, classes, which = _mangle(data, *text_tables, kind)
    with tempfile.TemporaryDirectory() as tmp:
        d = write(Path(tmp), students, classes)
        try:
            load_dataset(d)
        except DataError as e:
            msg = str(e)
        else:
            raise AssertionError(f"{kind} of {which} loaded without an error")
    assert "\n" not in msg and "\r" not in msg
    assert which in msg, msg
    assert msg.startswith(os.path.join(tmp, "")), msg


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    float_ids=st.booleans(),
    spaces=st.booleans(),
    bool_style=st.sampled_from(["True/False", "true/false", "1/0"]),
    extra=st.text(alphabet="ab ,\"'x1", max_size=6),
)
def test_unmangled_variants_load(text_tables, loaded, seed, float_ids, spaces, bool_style, extra):
    """Reordered rows and columns, float ids, padded cells, other boolean spellings and
    an extra column all load as the same data."""
    students, classes = (t.copy() for t in text_tables)
    rng = np.random.default_rng(seed)
    students = students.iloc[rng.permutation(len(students))]
    classes = classes.iloc[rng.permutation(len(classes))]
    students = students[list(rng.permutation(students.columns))]
    classes = classes[list(rng.permutation(classes.columns))]
    if float_ids:
        for t in (students, classes):
            t["class_id"] = t["class_id"] + ".0"
    true, false = bool_style.split("/")
    classes["teacher_has_ma"] = classes["teacher_has_ma"].map({"True": true, "False": false})
    if spaces:
        students["race"] = " " + students["race"] + " "
        classes["n_students"] = classes["n_students"] + "  "
    students["comment"] = extra
    with tempfile.TemporaryDirectory() as tmp:
        again = load_dataset(write(Path(tmp), students, classes))
    assert (again.students["comment"] == extra.strip()).all()
    got_s = again.students.drop(columns="comment").sort_values("student_id")[list(loaded.students.columns)]
    got_c = again.classes.sort_values("class_id")[list(loaded.classes.columns)]
    pd.testing.assert_frame_equal(got_s.reset_index(drop=True), loaded.students)
    pd.testing.assert_frame_equal(got_c.reset_index(drop=True), loaded.classes)
    obs = again.observed(CONFIG)
    cos = np.asarray(obs.class_of_student)
    np.testing.assert_array_equal(class_ids_of(again)[cos], again.students["class_id"])
    np.testing.assert_array_equal(np.asarray(obs.class_is_small)[cos], np.asarray(obs.small_class))


def test_designs_with_more_than_1000_small_classes_get_unique_class_ids(tmp_path):
    """The notebook numbers SMALL classes from 7001 and LARGE from 8001, which collide past
    1000 SMALL classes; the model's tables then start LARGE classes higher."""
    from classsize.model import Config, simulate

    config = Config(n_regular=0, n_experimental=40000)
    data = simulate(config, 0)
    ids = data.classes["class_id"]
    assert (data.classes["class_size"] == "SMALL").sum() > 1000
    assert ids.is_unique and ids[data.classes["class_size"] == "LARGE"].min() > ids.max() - len(ids)
    data.write(tmp_path)
    assert len(load_dataset(tmp_path).students) == 40000
