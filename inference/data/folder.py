"""What a dataset holds, read and checked, whichever files hold its tables.

The readers of :mod:`classsize.inference.data.read` (a CSV folder) and
:mod:`classsize.inference.data.stacked` (one replicate of stacked Parquet files)
both hand :func:`checked_dataset` the folder and a way to read each table and the
truth; it reads ``dataset.json`` (:func:`read_metadata`), checks the students
(:func:`load_students`), the classes (:func:`load_classes`) and how the two agree
(:func:`cross_check`), in that order, and returns the :class:`LoadedData`.  The rules
are those of :mod:`classsize.inference.data.read`'s docstring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from classsize.model.format import (
    CLASS_COLUMNS,
    CLASS_SIZES,
    CLASSES_FILE,
    COHORTS,
    KNOWN_RACE_CODES,
    METADATA_FILE,
    STUDENT_CORE_COLUMNS,
    STUDENTS_FILE,
    TRUTH_FILE,
)

from classsize.inference.data.checks import (
    BOOL_RULES,
    COUNT_RULES,
    COVARIATE_RULES,
    FLOAT_RULES,
    ID_RULES,
    INCOME_RULES,
    DataError,
    Rule,
    Table,
    check_unique,
    code_rules,
    first_failure,
    reasons,
    require_columns,
    schema,
    to_bool,
    to_covariate,
    whole,
)
from classsize.inference.data.dataset import LoadedData

#: Student covariates of a folder without dataset.json.
DEFAULT_COVARIATES = ("family_income",)


# ------------------------------------------------------------------ metadata
_RESERVED = frozenset(STUDENT_CORE_COLUMNS)
_RESERVED_CLASS = frozenset(CLASS_COLUMNS)


def read_json(path: Path) -> Any:
    """The JSON value of the file ``path`` (UTF-8, a byte-order mark allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg}, character {e.colno})", line=e.lineno) from None


def check_truth(path: Path, truth: Any) -> None:
    """A truth.json is a JSON object; its ``estimands``, when present, an object whose
    values are finite numbers (or null), since fits compare them with their intervals."""
    if not isinstance(truth, dict):
        raise DataError(path, f"must be a JSON object (got {type(truth).__name__})")
    if "estimands" not in truth:
        return
    estimands = truth["estimands"]
    if not isinstance(estimands, dict):
        raise DataError(path, f"must be an object of estimand = number (got {estimands!r})", key="estimands")
    for name, value in estimands.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            raise DataError(path, f"must be a finite number or null (got {value!r})", key=f"estimands.{name}")


def _string_list(path: Path, key: str, value: Any, nonempty: bool) -> list[str]:
    ok = (
        isinstance(value, list)
        and all(isinstance(x, str) and x.strip() != "" for x in value)
        and len(set(value)) == len(value)
        and (len(value) > 0 or not nonempty)
    )
    if not ok:
        need = "a non-empty list" if nonempty else "a list"
        raise DataError(path, f"must be {need} of distinct non-empty strings (got {value!r})", key=key)
    return [x.strip() for x in value]


def read_metadata(folder: Path) -> dict[str, Any]:
    """The folder's dataset.json, checked, with the defaults of a folder without one.

    ``student_covariates`` (default ``["family_income"]``) and ``class_covariates``
    (default ``[]``) are lists of distinct column names of students.csv and classes.csv
    other than those tables' core columns; keys this function does not check (e.g.
    ``class_effect_sd``, ``score_noise_sd``) are kept as they are.
    """
    path = folder / METADATA_FILE
    meta: dict[str, Any] = {}
    if path.exists():
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataError(path, f"must be a JSON object (got {type(raw).__name__})")
        meta = dict(raw)
        for key in ("name", "score_units"):
            if key in meta and not isinstance(meta[key], str):
                raise DataError(path, f"must be a string (got {meta[key]!r})", key=key)
        if "student_covariates" in meta:
            covs = _string_list(path, "student_covariates", meta["student_covariates"], nonempty=False)
            for c in covs:
                if c in _RESERVED:
                    raise DataError(
                        path, f"{c!r} is a core column of students.csv, not a covariate",
                        key="student_covariates",
                    )
            meta["student_covariates"] = covs
        if "class_covariates" in meta:
            covs = _string_list(path, "class_covariates", meta["class_covariates"], nonempty=False)
            for c in covs:
                if c in _RESERVED_CLASS:
                    raise DataError(
                        path, f"{c!r} is a core column of {CLASSES_FILE}, not a covariate",
                        key="class_covariates",
                    )
            meta["class_covariates"] = covs
        if "race_codes" in meta:
            meta["race_codes"] = _string_list(path, "race_codes", meta["race_codes"], nonempty=True)
        if "ability" in meta and meta["ability"] not in ("uniform", "normal"):
            raise DataError(path, f"must be 'uniform' or 'normal' (got {meta['ability']!r})", key="ability")
    meta.setdefault("name", folder.resolve().name)
    meta.setdefault("score_units", "points")
    meta.setdefault("student_covariates", list(DEFAULT_COVARIATES))
    meta.setdefault("class_covariates", [])
    meta.setdefault("race_codes", list(KNOWN_RACE_CODES))
    return meta


def with_declared_noise(meta: dict[str, Any], truth: Any) -> dict[str, Any]:
    """``meta`` with the scores' measurement-noise sd of a simulated folder: when
    dataset.json declares none and truth.json's configuration simulated the scores
    with noise (``score_noise_sd > 0``), that sd, so that such data are fitted with
    the noisy likelihood rather than silently with the noise-free one."""
    config = truth.get("config") if isinstance(truth, dict) else None
    noise = config.get("score_noise_sd") if isinstance(config, dict) else None
    if "score_noise_sd" in meta or isinstance(noise, bool) or not isinstance(noise, (int, float)):
        return meta
    if math.isfinite(noise) and noise > 0:
        meta = {**meta, "score_noise_sd": float(noise), "score_noise_source": TRUTH_FILE}
    return meta


def _parse_int(col: pd.Series) -> pd.Series:
    return pd.Series([whole(s) for s in col], index=col.index, dtype=np.int64)


def _typed(frame: pd.DataFrame, ints: Iterable[str], floats: Iterable[str],
           bools: Iterable[str] = (), covariates: Iterable[str] = ()) -> pd.DataFrame:
    out = frame.copy()
    for c in ints:
        out[c] = _parse_int(frame[c])
    for c in floats:
        out[c] = frame[c].map(float).astype(np.float64)
    for c in bools:
        out[c] = frame[c].map(to_bool).astype(bool)
    for c in covariates:
        out[c] = frame[c].map(to_covariate).astype(np.float64)
    return out


def load_students(folder: Path, meta: Mapping[str, Any], race_codes: Sequence[str],
                  table: Table) -> tuple[Table, pd.DataFrame]:
    """The students ``table`` of ``folder`` checked, and typed (see :class:`LoadedData`)."""
    covariates = list(meta["student_covariates"])
    require_columns(table, STUDENT_CORE_COLUMNS)
    if (folder / METADATA_FILE).exists():
        why = f" ({METADATA_FILE} lists it in student_covariates)"
    else:
        why = f" (it is optional only when a {METADATA_FILE} leaves it out of student_covariates)"
    require_columns(table, covariates, why)
    has_income = "family_income" in table.frame.columns
    rules: dict[str, Sequence[Rule]] = {
        "student_id": ID_RULES,
        "class_id": ID_RULES,
        "school_id": ID_RULES,
        "test_score": FLOAT_RULES,
        "race": code_rules("race code", race_codes),
        "cohort": code_rules("cohort", COHORTS),
    }
    if has_income:
        rules["family_income"] = INCOME_RULES
    other_covariates = [c for c in covariates if c != "family_income"]
    for c in other_covariates:
        rules[c] = COVARIATE_RULES
    first_failure(table, schema(rules), reasons(rules))
    typed = _typed(
        table.frame,
        ints=("student_id", "class_id", "school_id"),
        floats=("test_score",) + (("family_income",) if has_income else ()),
        covariates=other_covariates,
    )
    check_unique(table, typed, "student_id", "student_id")
    return table, typed


def load_classes(table: Table, class_covariates: Sequence[str] = ()) -> tuple[Table, pd.DataFrame]:
    """The classes ``table`` checked, and typed (see :class:`LoadedData`); each of
    ``class_covariates`` (dataset.json's) must be a column of finite numbers or booleans."""
    require_columns(table, CLASS_COLUMNS)
    require_columns(table, class_covariates, f" ({METADATA_FILE} lists it in class_covariates)")
    rules: dict[str, Sequence[Rule]] = {
        "class_id": ID_RULES,
        "school_id": ID_RULES,
        "n_students": COUNT_RULES,
        "class_size": code_rules("class size", CLASS_SIZES),
        "teacher_has_ma": BOOL_RULES,
    }
    for c in class_covariates:
        rules[c] = COVARIATE_RULES
    first_failure(table, schema(rules), reasons(rules))
    typed = _typed(
        table.frame, ints=("class_id", "school_id", "n_students"), floats=(), bools=("teacher_has_ma",),
        covariates=class_covariates,
    )
    check_unique(table, typed, "class_id", "class_id")
    return table, typed


def cross_check(st: Table, students: pd.DataFrame, cl: Table, classes: pd.DataFrame) -> None:
    """Every student's class is in the classes table and in the same school; every class
    has students, as many as its ``n_students``."""
    class_line = pd.Series(classes.index.to_numpy(), index=classes["class_id"].to_numpy())
    class_school = pd.Series(classes["school_id"].to_numpy(), index=classes["class_id"].to_numpy())
    sid = students["class_id"]

    unknown = ~sid.isin(class_school.index)
    if unknown.any():
        line = int(students.index[unknown.to_numpy()][0])
        raise st.error(f"class {int(sid.at[line])} is not in {CLASSES_FILE}", line=line, column="class_id")

    their_school = class_school.reindex(sid.to_numpy()).to_numpy()
    differs = students["school_id"].to_numpy() != their_school
    if differs.any():
        line = int(students.index[differs][0])
        c = int(sid.at[line])
        raise st.error(
            f"school {int(students.at[line, 'school_id'])} disagrees with school "
            f"{int(class_school[c])} of class {c} in {CLASSES_FILE} (line {int(class_line[c])})",
            line=line,
            column="school_id",
        )

    counts = sid.value_counts()
    counted = counts.reindex(classes["class_id"].to_numpy(), fill_value=0).to_numpy()
    empty = counted == 0
    if empty.any():
        line = int(classes.index[empty][0])
        raise cl.error(
            f"class {int(classes.at[line, 'class_id'])} has no students in {STUDENTS_FILE}",
            line=line,
            column="class_id",
        )
    wrong = classes["n_students"].to_numpy() != counted
    if wrong.any():
        line = int(classes.index[wrong][0])
        raise cl.error(
            f"n_students is {int(classes.at[line, 'n_students'])} but {STUDENTS_FILE} has "
            f"{int(counted[np.flatnonzero(wrong)[0]])} students in class "
            f"{int(classes.at[line, 'class_id'])}",
            line=line,
            column="n_students",
        )


# ------------------------------------------------------------------ the dataset
def check_folder(folder: Path) -> None:
    """Refuse a ``folder`` that does not exist or is not a folder."""
    if not folder.exists():
        raise DataError(folder, "dataset folder not found")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")


def checked_dataset(
    folder: Path,
    students_table: Callable[[], Table],
    classes_table: Callable[[], Table],
    truth: Callable[[], Any],
    replicate: int | None = None,
) -> LoadedData:
    """The dataset of ``folder``, every check passed: its metadata, the students table
    (``students_table()``), the classes table (``classes_table()``), how they agree,
    then its truth (``truth()``), each read when its turn comes, so the first problem
    in that order is the one reported."""
    meta = read_metadata(folder)
    race_codes = tuple(meta["race_codes"])
    st_table, students = load_students(folder, meta, race_codes, students_table())
    cl_table, classes = load_classes(classes_table(), meta["class_covariates"])
    cross_check(st_table, students, cl_table, classes)
    known = truth()
    return LoadedData(
        students=students.reset_index(drop=True),
        classes=classes.reset_index(drop=True),
        truth=known,
        metadata=with_declared_noise(meta, known),
        race_codes=race_codes,
        source=folder,
        replicate=replicate,
    )


def folder_truth(folder: Path) -> Any:
    """The folder's truth.json, checked (None without one)."""
    path = folder / TRUTH_FILE
    if not path.exists():
        return None
    truth = read_json(path)
    check_truth(path, truth)
    return truth
