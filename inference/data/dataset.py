"""The checked dataset: the checks of its two tables, and what it holds.

:func:`load_students` and :func:`load_classes` check one table each and type it;
:func:`cross_check` checks how they agree (the rules are those of
:mod:`classsize.inference.data.read`'s docstring).  Scores and incomes must lie in a
range, :data:`SCORE_RANGE` and :data:`INCOME_RANGE` unless dataset.json declares
``score_range`` or ``income_range``.

:class:`LoadedData` holds the two tables of a dataset folder once
:func:`classsize.inference.data.read.load_dataset` has checked them, with the folder's
metadata and truth, and turns them into what the model takes:
:meth:`LoadedData.observed` (the arrays of :class:`classsize.model.Observed`), with
:meth:`LoadedData.race_coding` and :meth:`LoadedData.school_ids_in` saying what its
race and school indices stand for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd

from classsize.model import Observed
from classsize.model.design import Design
from classsize.model.format import (
    CLASS_COLUMNS,
    CLASS_SIZES,
    CLASSES_FILE,
    COHORTS,
    METADATA_FILE,
    STUDENT_CORE_COLUMNS,
    STUDENTS_FILE,
)
from classsize.model.pieces import scaled_log_income

from classsize.inference.data.checks import (
    BOOL_RULES,
    COUNT_RULES,
    COVARIATE_RULES,
    FLOAT_RULES,
    ID_RULES,
    INCOME_RULES,
    Rule,
    Table,
    check_unique,
    code_rules,
    first_failure,
    range_rule,
    reasons,
    require_columns,
    schema,
    to_bool,
    to_covariate,
    whole,
)

#: The range of ``test_score`` when dataset.json declares no ``score_range``: ``|score| <= 10**6``.
SCORE_RANGE = (-10**6, 10**6)
#: The range of ``family_income`` when dataset.json declares no ``income_range``
#: (incomes must also be > 0: they enter through their logarithm).
INCOME_RANGE = (0, 10**9)


@dataclass(frozen=True)
class LoadedData:
    """A checked dataset.

    ``students`` and ``classes`` are the tables in file order with a fresh 0-based
    index: ids and counts ``int64``, ``test_score`` and ``family_income`` ``float64``,
    ``teacher_has_ma`` ``bool``, covariates listed in the metadata (student ones other
    than family_income, and class ones) ``float64``, codes and any other columns text.
    ``truth`` is truth.json (``None`` without one); ``metadata`` is dataset.json with
    defaults filled in (``name``, ``score_units``, ``student_covariates``,
    ``class_covariates``, ``race_codes``);
    ``race_codes`` are the codes the race column was checked against; ``source`` is
    the folder; ``replicate`` the replicate read from stacked Parquet files (None for
    a CSV folder).
    """

    students: pd.DataFrame
    classes: pd.DataFrame
    truth: dict | None
    metadata: dict
    race_codes: tuple[str, ...]
    source: Path
    replicate: int | None = None

    def __repr__(self) -> str:
        return (f"LoadedData({len(self.students)} students, {len(self.classes)} classes, "
                f"{self.n_schools} schools from {self.metadata.get('_source', self.source)})")

    # ---------------------------------------------------------------- ids
    @property
    def school_ids(self) -> np.ndarray:
        """School ids in ascending order: position ``k`` is school ``k`` of :meth:`observed`."""
        return self.school_ids_in(None)

    @property
    def n_schools(self) -> int:
        """The number of schools, the ``n_schools`` a model of the whole dataset needs."""
        return int(self.school_ids.shape[0])

    def school_ids_in(self, cohort: str | None = None) -> np.ndarray:
        """Ascending ids of the schools holding a class of ``cohort``'s students (all
        schools for None): position ``k`` is school ``k`` of ``observed(cohort=cohort)``."""
        st = self._cohort_students(cohort)
        return np.unique(st["school_id"].to_numpy(np.int64))

    @property
    def student_covariates(self) -> tuple[str, ...]:
        return tuple(self.metadata["student_covariates"])

    @property
    def class_covariate_names(self) -> tuple[str, ...]:
        """The classes.csv columns dataset.json lists in ``class_covariates``, in its order."""
        return tuple(self.metadata.get("class_covariates", ()))

    @property
    def has_income(self) -> bool:
        return "family_income" in self.students.columns

    # ---------------------------------------------------------------- encodings
    def race_coding(self, design: Design = Design()) -> tuple[str, ...]:
        """The race codes that :meth:`observed` indexes into.

        ``design.race_codes`` when every race in the data is one of them (so simulated
        data are coded as the model that made them); otherwise the sorted codes that
        occur in the data (the whole dataset, whichever cohort is asked for), and a
        model of such data needs a configuration with these codes.
        """
        present = sorted(set(self.students["race"]))
        if set(present) <= set(design.race_codes):
            return tuple(design.race_codes)
        return tuple(present)

    def _cohort_students(self, cohort: str | None) -> pd.DataFrame:
        if cohort is None:
            return self.students
        if cohort not in COHORTS:
            raise ValueError(f"cohort must be one of {', '.join(COHORTS)} or None (got {cohort!r})")
        st = self.students[self.students["cohort"] == cohort]
        if st.empty:
            raise ValueError(f"the dataset in {self.source} has no students in cohort {cohort}")
        return st

    def students_of(self, cohort: str | None = None) -> pd.DataFrame:
        """The students of :meth:`observed` (``cohort``'s, or all), in its order."""
        return self._cohort_students(cohort)

    def classes_of(self, cohort: str | None = None) -> pd.DataFrame:
        """The classes of :meth:`observed`: those of ``cohort``'s students, by class_id."""
        st = self._cohort_students(cohort)
        cl = self.classes if cohort is None else self.classes[self.classes["class_id"].isin(st["class_id"])]
        return cl.sort_values("class_id", kind="stable")

    def observed(self, design: Design = Design(), cohort: str | None = None) -> Observed:
        """The data as arrays for :func:`classsize.model.class_size_experiment`.

        Students are in the order of :attr:`students`; classes are sorted by class_id
        (``class_of_student`` indexes them); schools are indexed into
        :meth:`school_ids_in` of the cohort, so every school index has students (a
        model of these arrays needs ``n_schools = len(school_ids_in(cohort))``, which is
        :attr:`n_schools` for the whole dataset); races into :meth:`race_coding`
        (whole dataset, whichever cohort).  ``income_scaled`` is
        :func:`~classsize.model.pieces.scaled_log_income` of ``family_income`` under
        ``design`` (zeros without that column).  With ``cohort`` ("REGULAR" or
        "EXPERIMENTAL") only that cohort's students and the classes they sit in are
        kept, classes re-indexed.  Every class is real, so ``class_used`` is all True.
        The listed student covariates other than family_income (e.g. free lunch) are
        ``extra_covariates`` (n x q, columns in the order listed; None when there are
        none).  The listed class covariates are ``class_covariates`` (one row per class,
        in the order of ``class_is_small`` and ``school_of_class``; columns in the order
        listed; None when there are none).  Index arrays are int32, floats float64.
        """
        st = self._cohort_students(cohort)
        cl = self.classes_of(cohort)
        class_pos = pd.Index(cl["class_id"]).get_indexer(st["class_id"])
        school_pos = pd.Index(self.school_ids_in(cohort)).get_indexer(cl["school_id"])
        race_pos = pd.Index(self.race_coding(design)).get_indexer(st["race"])
        class_is_small = (cl["class_size"] == "SMALL").to_numpy(np.int32)
        extra: dict[str, Any] = {}
        others = [c for c in self.student_covariates if c != "family_income"]
        if others:
            extra["extra_covariates"] = jnp.asarray(st[others].to_numpy(np.float64), dtype=jnp.float64)
        if self.class_covariate_names:
            by_class = cl[list(self.class_covariate_names)].to_numpy(np.float64)
            extra["class_covariates"] = jnp.asarray(by_class, dtype=jnp.float64)
        if self.has_income:
            income = scaled_log_income(jnp.asarray(st["family_income"].to_numpy(np.float64)), design)
        else:
            income = np.zeros(len(st), dtype=np.float64)
        return Observed(
            race=jnp.asarray(race_pos, dtype=jnp.int32),
            income_scaled=jnp.asarray(income, dtype=jnp.float64),
            is_experimental=jnp.asarray((st["cohort"] == "EXPERIMENTAL").to_numpy(bool)),
            small_class=jnp.asarray(class_is_small[class_pos], dtype=jnp.int32),
            class_of_student=jnp.asarray(class_pos, dtype=jnp.int32),
            test_score=jnp.asarray(st["test_score"].to_numpy(np.float64), dtype=jnp.float64),
            class_is_small=jnp.asarray(class_is_small, dtype=jnp.int32),
            teacher_has_ma=jnp.asarray(cl["teacher_has_ma"].to_numpy(np.int32), dtype=jnp.int32),
            school_of_class=jnp.asarray(school_pos, dtype=jnp.int32),
            class_used=np.ones(len(cl), dtype=bool),
            **extra,
        )


# ------------------------------------------------------------------ the tables' checks
def _range(meta: Mapping[str, Any], key: str, column: str, default: tuple[float, float]) -> Rule:
    """The range rule of ``column``: dataset.json's ``key`` (checked by
    :func:`~classsize.inference.data.folder.read_metadata`), or ``default``."""
    if key in meta:
        lo, hi = meta[key]
        return range_rule(lo, hi, f"the range {METADATA_FILE} declares for {column} ({key})")
    lo, hi = default
    return range_rule(lo, hi, f"the default range of {column} (a {METADATA_FILE} may declare another in {key})")


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
    """The students ``table`` of ``folder`` checked, and typed (see :class:`LoadedData`);
    ``test_score`` and ``family_income`` within the ranges ``meta`` declares, or
    :data:`SCORE_RANGE` and :data:`INCOME_RANGE`."""
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
        "test_score": FLOAT_RULES + (_range(meta, "score_range", "test_score", SCORE_RANGE),),
        "race": code_rules("race code", race_codes),
        "cohort": code_rules("cohort", COHORTS),
    }
    if has_income:
        rules["family_income"] = INCOME_RULES + (_range(meta, "income_range", "family_income", INCOME_RANGE),)
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
