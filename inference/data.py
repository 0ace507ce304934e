"""Reading one dataset folder of the class-size experiment.

A folder holds two tables, as written by ``classsize simulate`` or by the notebook:

``students.csv``
    student_id, class_id, school_id, test_score, family_income, race, cohort
``classes.csv``
    class_id, school_id, n_students, class_size, teacher_has_ma

and, optionally,

``dataset.json``
    metadata: ``{"name": str, "score_units": str, "student_covariates": [column, ...],
    "race_codes": [code, ...]}``.  Without it, ``student_covariates`` is
    ``["family_income"]`` and the race codes are
    :data:`classsize.model.config.KNOWN_RACE_CODES`, so simulated folders need none.
    When ``student_covariates`` does not list ``family_income`` that column is not
    required (real data may have none); every listed covariate must be a column of
    ``students.csv`` holding finite numbers or booleans (True/False read as 1/0).
``truth.json``
    the simulation's truth (any JSON object), kept as it is.

:func:`load_dataset` reads a folder and checks it completely before returning a
:class:`LoadedData`; reading never writes anything.  Every problem raises
:class:`DataError`, whose message is one line naming the file and, where one
applies, the line and the column, e.g.::

    data/students.csv, line 17 (data row 16), column 'race': unknown race code 'PURPLE' (known: WHITE, BLACK, HISPANIC, ASIAN, NATIVE_AMERICAN, OTHER)

Line numbers are those of the file, counted from 1 with the header on line 1, so
the first data row is on line 2; the data row number counts data rows only.

A folder written by ``classsize simulate --format parquet`` holds many datasets
instead: ``students.parquet`` and ``classes.parquet`` (the same columns plus
``replicate``) and a ``truth.json`` listing each replicate's seed and school effects.
``load_dataset(folder, replicate=K)`` (or ``load_dataset("FOLDER#K")``) reads
replicate ``K`` through the same checks, each cell turned into the text its CSV file
would hold; messages name the file and the replicate, and count rows as the lines of
that CSV.

Cells are read as text and stripped of surrounding spaces.  Identifiers and counts
must be whole numbers; ``7001.0`` (the notebook writes class ids as floats) is read
as ``7001`` and ``7001.5`` is an error.  Booleans may be written True/False,
true/false (any letter case) or 1/0.  Columns not named above are allowed and kept as text.

The checks: each file exists and is a well-formed CSV with a header and at least
one data row; every required column is present; every cell parses (numbers are
finite, ``family_income > 0``, codes are known); ``student_id`` and ``class_id``
are unique; every student's class is in ``classes.csv`` and in the same school;
every class has students and its ``n_students`` is their number.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pandera.pandas as pa

from classsize.model import Config, Observed  # importing classsize.model enables JAX x64
from classsize.model.config import CLASS_SIZES, COHORTS, KNOWN_RACE_CODES
from classsize.model.experiment import scaled_log_income

STUDENTS_FILE = "students.csv"
CLASSES_FILE = "classes.csv"
METADATA_FILE = "dataset.json"
TRUTH_FILE = "truth.json"

#: Columns of students.csv that are always required (family_income: see DEFAULT_COVARIATES).
STUDENT_CORE_COLUMNS = ("student_id", "class_id", "school_id", "test_score", "race", "cohort")
CLASS_COLUMNS = ("class_id", "school_id", "n_students", "class_size", "teacher_has_ma")
#: Student covariates of a folder without dataset.json.
DEFAULT_COVARIATES = ("family_income",)
#: The name of family_income in :meth:`LoadedData.covariate_matrix` (it enters scaled).
INCOME_COVARIATE_NAME = "log_income_scaled"

_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_INT64_MAX = 2**63 - 1


class DataError(ValueError):
    """A dataset folder breaks a rule.

    ``str(error)`` is one line: ``FILE[, line L (data row R)][, column 'C'|, key 'K']: REASON``.
    The parts are also attributes (``file``, ``line``, ``row``, ``column``, ``key``,
    ``reason``; absent parts are ``None``).
    """

    def __init__(
        self,
        file: str | Path,
        reason: str,
        *,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        key: str | None = None,
    ) -> None:
        self.file = str(file)
        self.reason = reason
        self.line = line
        self.row = row
        self.column = column
        self.key = key
        parts = [self.file]
        if line is not None:
            parts.append(f"line {line}" + (f" (data row {row})" if row is not None else ""))
        if column is not None:
            parts.append(f"column {column!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        message = ", ".join(parts) + ": " + reason
        super().__init__(" ".join(message.splitlines()))


# ------------------------------------------------------------------ cell rules
def _nonempty(s: str) -> bool:
    return s != ""


_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NONFINITE_RE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _is_number(s: str) -> bool:
    return bool(_FLOAT_RE.fullmatch(s) or _NONFINITE_RE.fullmatch(s))


def _is_finite(s: str) -> bool:
    if not _FLOAT_RE.fullmatch(s):
        return False
    return math.isfinite(float(s))


def _whole(s: str) -> int | None:
    """The integer a finite numeral stands for, or None if it is not a whole int64."""
    if not _FLOAT_RE.fullmatch(s):
        return None
    try:
        d = Decimal(s)
        if d == 0:
            return 0
        # |d| < 1 is not whole; |d| >= 1e19 is beyond int64 (and kept from expanding)
        if not 0 <= d.adjusted() <= 19 or d != d.to_integral_value():
            return None
    except (InvalidOperation, ValueError, OverflowError):
        return None
    v = int(d)
    return v if -_INT64_MAX - 1 <= v <= _INT64_MAX else None


def _is_whole(s: str) -> bool:
    return _whole(s) is not None


def _is_nonnegative(s: str) -> bool:
    v = _whole(s)
    return v is not None and v >= 0


def _is_positive(s: str) -> bool:
    return _is_finite(s) and float(s) > 0


def _is_bool(s: str) -> bool:
    return s.lower() in _TRUE or s.lower() in _FALSE


def _is_number_or_bool(s: str) -> bool:
    return _is_number(s) or _is_bool(s)


def _is_finite_or_bool(s: str) -> bool:
    return _is_finite(s) or _is_bool(s)


def _to_bool(s: str) -> bool:
    return s.lower() in _TRUE


def _to_covariate(s: str) -> float:
    return float(_to_bool(s)) if _is_bool(s) else float(s)


@dataclass(frozen=True)
class _Rule:
    """One element-wise rule for a cell: a predicate and the reason it gives on failure."""

    key: str
    test: Callable[[str], bool]
    reason: str  # formatted with v = the cell's text


_EMPTY = _Rule("empty", _nonempty, "empty cell")
_NUMBER = _Rule("number", _is_number, "{v!r} is not a number")
_FINITE = _Rule("finite", _is_finite, "{v!r} is not a finite number (NaN and infinity are not allowed)")
_WHOLE = _Rule("whole", _is_whole, "{v!r} is not a whole number in the 64-bit integer range")
_NONNEG = _Rule("nonnegative", _is_nonnegative, "{v!r} is negative")
_POSITIVE = _Rule("positive", _is_positive, "{v!r} is not > 0 (income enters through its logarithm)")
_BOOL = _Rule("boolean", _is_bool, "{v!r} is not a boolean (write True/False, true/false or 1/0)")
_COVARIATE = _Rule("covariate", _is_number_or_bool, "{v!r} is neither a number nor a boolean (True/False)")
_COVARIATE_FINITE = _Rule(
    "covariate_finite", _is_finite_or_bool, "{v!r} is not finite (NaN and infinity are not allowed)"
)

_ID_RULES = (_EMPTY, _NUMBER, _FINITE, _WHOLE)
_COUNT_RULES = _ID_RULES + (_NONNEG,)
_FLOAT_RULES = (_EMPTY, _NUMBER, _FINITE)
_INCOME_RULES = _FLOAT_RULES + (_POSITIVE,)
_BOOL_RULES = (_EMPTY, _BOOL)
_COVARIATE_RULES = (_EMPTY, _COVARIATE, _COVARIATE_FINITE)


def _code_rules(what: str, codes: Sequence[str]) -> tuple[_Rule, ...]:
    allowed = frozenset(codes)
    return (
        _EMPTY,
        _Rule(f"code:{what}", allowed.__contains__, f"unknown {what} {{v!r}} (known: {', '.join(codes)})"),
    )


# ------------------------------------------------------------------ reading CSV
@dataclass
class _Table:
    """A CSV file read as text: ``frame`` has one str column per header name, its index
    is the file line each data row starts on."""

    path: Path
    frame: pd.DataFrame

    def row_of(self, line: int) -> int:
        return int(self.frame.index.get_loc(line)) + 1

    def error(self, reason: str, *, line: int | None = None, column: str | None = None) -> DataError:
        row = self.row_of(line) if line is not None else None
        return DataError(self.path, reason, line=line, row=row, column=column)


def _read_csv(path: Path) -> _Table:
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            end_of_previous = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    raise DataError(
                        path, f"not a valid CSV record ({e}; the record starts on this line)",
                        line=end_of_previous + 1,
                    ) from None
                start, end_of_previous = end_of_previous + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # a blank line
                cells = [c.strip() for c in record]
                if header is None:
                    header, header_line = cells, start
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        path,
                        f"the row has {len(cells)} fields but the header has {len(header)}",
                        line=start,
                        row=len(rows) + 1,
                    )
                rows.append(cells)
                lines.append(start)
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror or e})") from None
    if header is None:
        raise DataError(path, "the file is empty (no header line)")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(path, "the header names this column twice", line=header_line, column=name)
        seen.add(name)
    if not rows:
        raise DataError(path, "the table is empty (a header but no data rows)")
    frame = pd.DataFrame(rows, columns=header, index=pd.Index(lines, dtype=np.int64), dtype=str)
    return _Table(path, frame)


def _require_columns(table: _Table, names: Iterable[str], why: str = "") -> None:
    present = list(table.frame.columns)
    for name in names:
        if name not in present:
            raise table.error(
                f"required column is missing{why}; the header has: {', '.join(present)}",
                column=name,
            )


# ------------------------------------------------------------------ pandera checks
def _schema(rules: Mapping[str, Sequence[_Rule]]) -> pa.DataFrameSchema:
    """Element-wise pandera checks on the text of each cell (the first failing rule of
    a cell is the most basic one: empty, then not a number, then not finite, ...)."""
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                None,
                checks=[pa.Check(r.test, element_wise=True, name=r.key, error=r.key) for r in col_rules],
                nullable=False,
                required=True,
            )
            for name, col_rules in rules.items()
        },
        strict=False,
    )


def _first_failure(table: _Table, schema: pa.DataFrameSchema, reasons: Mapping[str, str]) -> None:
    """Validate lazily; raise the failure on the earliest line (then leftmost column,
    then most basic rule) as a :class:`DataError`."""
    try:
        schema.validate(table.frame, lazy=True)
    except pa.errors.SchemaErrors as e:
        fc = e.failure_cases
        columns = list(table.frame.columns)
        best = None
        for rec in fc.to_dict("records"):
            line = rec.get("index")
            column = rec.get("column")
            line = None if line is None or pd.isna(line) else int(line)
            col_pos = columns.index(column) if column in columns else len(columns)
            number = rec.get("check_number")
            number = 10**6 if number is None or pd.isna(number) else int(number)
            sort_key = (line if line is not None else -1, col_pos, number)
            if best is None or sort_key < best[0]:
                best = (sort_key, line, column, rec.get("check"), rec.get("failure_case"))
        assert best is not None
        _, line, column, check, value = best
        template = reasons.get(str(check))
        if template is not None:
            reason = template.format(v=str(value))
        else:  # a schema-level failure pandera words itself
            reason = f"{check} (got {value!r})"
        raise table.error(reason, line=line, column=column if column in columns else None) from None


def _unique_schema(column: str) -> pa.DataFrameSchema:
    return pa.DataFrameSchema(
        {column: pa.Column("int64", unique=True, report_duplicates="exclude_first")}
    )


def _check_unique(table: _Table, typed: pd.DataFrame, column: str, what: str) -> None:
    """student_id / class_id unique, on the parsed integers (7001 and 7001.0 collide)."""
    try:
        _unique_schema(column).validate(typed[[column]], lazy=True)
    except pa.errors.SchemaErrors as e:
        fc = e.failure_cases
        lines = sorted(int(i) for i in fc["index"] if i is not None and not pd.isna(i))
        if not lines:  # pragma: no cover - pandera always reports rows for uniqueness
            raise table.error(f"{what} values are not unique", column=column) from None
        line = lines[0]
        value = int(typed.at[line, column])
        first = int(typed.index[typed[column].to_numpy() == value][0])
        raise table.error(
            f"duplicate {what} {value} (first on line {first})", line=line, column=column
        ) from None


# ------------------------------------------------------------------ metadata
_RESERVED = frozenset(STUDENT_CORE_COLUMNS)


def _read_json(path: Path) -> Any:
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


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    meta: dict[str, Any] = {}
    if path.exists():
        raw = _read_json(path)
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
        if "race_codes" in meta:
            meta["race_codes"] = _string_list(path, "race_codes", meta["race_codes"], nonempty=True)
        if "ability" in meta and meta["ability"] not in ("uniform", "normal"):
            raise DataError(path, f"must be 'uniform' or 'normal' (got {meta['ability']!r})", key="ability")
    meta.setdefault("name", folder.resolve().name)
    meta.setdefault("score_units", "points")
    meta.setdefault("student_covariates", list(DEFAULT_COVARIATES))
    meta.setdefault("race_codes", list(KNOWN_RACE_CODES))
    return meta


# ------------------------------------------------------------------ the tables
def _parse_int(col: pd.Series) -> pd.Series:
    return pd.Series([_whole(s) for s in col], index=col.index, dtype=np.int64)


def _typed(frame: pd.DataFrame, ints: Iterable[str], floats: Iterable[str],
           bools: Iterable[str] = (), covariates: Iterable[str] = ()) -> pd.DataFrame:
    out = frame.copy()
    for c in ints:
        out[c] = _parse_int(frame[c])
    for c in floats:
        out[c] = frame[c].map(float).astype(np.float64)
    for c in bools:
        out[c] = frame[c].map(_to_bool).astype(bool)
    for c in covariates:
        out[c] = frame[c].map(_to_covariate).astype(np.float64)
    return out


def _load_students(folder: Path, meta: Mapping[str, Any], race_codes: Sequence[str],
                   table: _Table | None = None) -> tuple[_Table, pd.DataFrame]:
    table = _read_csv(folder / STUDENTS_FILE) if table is None else table
    covariates = list(meta["student_covariates"])
    _require_columns(table, STUDENT_CORE_COLUMNS)
    if (folder / METADATA_FILE).exists():
        why = f" ({METADATA_FILE} lists it in student_covariates)"
    else:
        why = f" (it is optional only when a {METADATA_FILE} leaves it out of student_covariates)"
    _require_columns(table, covariates, why)
    has_income = "family_income" in table.frame.columns
    rules: dict[str, Sequence[_Rule]] = {
        "student_id": _ID_RULES,
        "class_id": _ID_RULES,
        "school_id": _ID_RULES,
        "test_score": _FLOAT_RULES,
        "race": _code_rules("race code", race_codes),
        "cohort": _code_rules("cohort", COHORTS),
    }
    if has_income:
        rules["family_income"] = _INCOME_RULES
    other_covariates = [c for c in covariates if c != "family_income"]
    for c in other_covariates:
        rules[c] = _COVARIATE_RULES
    _first_failure(table, _schema(rules), _reasons(rules))
    typed = _typed(
        table.frame,
        ints=("student_id", "class_id", "school_id"),
        floats=("test_score",) + (("family_income",) if has_income else ()),
        covariates=other_covariates,
    )
    _check_unique(table, typed, "student_id", "student_id")
    return table, typed


def _load_classes(folder: Path, table: _Table | None = None) -> tuple[_Table, pd.DataFrame]:
    table = _read_csv(folder / CLASSES_FILE) if table is None else table
    _require_columns(table, CLASS_COLUMNS)
    rules: dict[str, Sequence[_Rule]] = {
        "class_id": _ID_RULES,
        "school_id": _ID_RULES,
        "n_students": _COUNT_RULES,
        "class_size": _code_rules("class size", CLASS_SIZES),
        "teacher_has_ma": _BOOL_RULES,
    }
    _first_failure(table, _schema(rules), _reasons(rules))
    typed = _typed(
        table.frame, ints=("class_id", "school_id", "n_students"), floats=(), bools=("teacher_has_ma",)
    )
    _check_unique(table, typed, "class_id", "class_id")
    return table, typed


def _reasons(rules: Mapping[str, Sequence[_Rule]]) -> dict[str, str]:
    return {r.key: r.reason for col_rules in rules.values() for r in col_rules}


def _cross_check(st: _Table, students: pd.DataFrame, cl: _Table, classes: pd.DataFrame) -> None:
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


# ------------------------------------------------------------------ the result
@dataclass(frozen=True)
class LoadedData:
    """A checked dataset.

    ``students`` and ``classes`` are the tables in file order with a fresh 0-based
    index: ids and counts ``int64``, ``test_score`` and ``family_income`` ``float64``,
    ``teacher_has_ma`` ``bool``, covariates listed in the metadata (other than
    family_income) ``float64``, codes and any other columns text.  ``truth`` is
    truth.json (``None`` without one); ``metadata`` is dataset.json with defaults
    filled in (``name``, ``score_units``, ``student_covariates``, ``race_codes``);
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

    # ---------------------------------------------------------------- ids
    @property
    def class_ids(self) -> np.ndarray:
        """Class ids in ascending order: position ``j`` is class ``j`` of :meth:`observed`."""
        return np.sort(self.classes["class_id"].to_numpy(np.int64))

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
    def has_income(self) -> bool:
        return "family_income" in self.students.columns

    # ---------------------------------------------------------------- encodings
    def race_coding(self, config: Config = Config()) -> tuple[str, ...]:
        """The race codes that :meth:`observed` indexes into.

        ``config.race_codes`` when every race in the data is one of them (so simulated
        data are coded as the model that made them); otherwise the sorted codes that
        occur in the data (the whole dataset, whichever cohort is asked for), and a
        model of such data needs a configuration with these codes.
        """
        present = sorted(set(self.students["race"]))
        if set(present) <= set(config.race_codes):
            return tuple(config.race_codes)
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

    def observed(self, config: Config = Config(), cohort: str | None = None) -> Observed:
        """The data as arrays for :func:`classsize.model.class_size_experiment`.

        Students are in the order of :attr:`students`; classes are sorted by class_id
        (``class_of_student`` indexes them); schools are indexed into
        :meth:`school_ids_in` of the cohort, so every school index has students (a
        model of these arrays needs ``n_schools = len(school_ids_in(cohort))``, which is
        :attr:`n_schools` for the whole dataset); races into :meth:`race_coding`
        (whole dataset, whichever cohort).  ``income_scaled`` is
        :func:`~classsize.model.experiment.scaled_log_income` of ``family_income`` under
        ``config`` (zeros without that column).  With ``cohort`` ("REGULAR" or
        "EXPERIMENTAL") only that cohort's students and the classes they sit in are
        kept, classes re-indexed.  Every class is real, so ``class_used`` is all True.
        The listed student covariates other than family_income (e.g. free lunch) are
        ``extra_covariates`` (n x q, columns in the order listed; None when there are
        none).  Index arrays are int32, floats float64.
        """
        st = self._cohort_students(cohort)
        cl = self.classes
        if cohort is not None:
            cl = cl[cl["class_id"].isin(st["class_id"])]
        cl = cl.sort_values("class_id", kind="stable")
        class_pos = pd.Index(cl["class_id"]).get_indexer(st["class_id"])
        school_pos = pd.Index(self.school_ids_in(cohort)).get_indexer(cl["school_id"])
        race_pos = pd.Index(self.race_coding(config)).get_indexer(st["race"])
        class_is_small = (cl["class_size"] == "SMALL").to_numpy(np.int32)
        extra: dict[str, Any] = {}
        others = [c for c in self.student_covariates if c != "family_income"]
        if others and "extra_covariates" in Observed._fields:
            extra["extra_covariates"] = jnp.asarray(st[others].to_numpy(np.float64), dtype=jnp.float64)
        if self.has_income:
            income = scaled_log_income(jnp.asarray(st["family_income"].to_numpy(np.float64)), config)
        else:
            income = jnp.zeros(len(st), dtype=jnp.float64)
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
            class_used=jnp.ones(len(cl), dtype=bool),
            **extra,
        )

    def covariate_matrix(
        self, cohort: str | None = None, config: Config = Config()
    ) -> tuple[np.ndarray, list[str]]:
        """The listed student covariates as a float64 ``n x p`` matrix and their names.

        Rows are the students of :meth:`observed` (same cohort, same order); columns
        follow ``metadata["student_covariates"]``, with ``family_income`` entering as
        its scaled log (named ``"log_income_scaled"``, scaled under ``config``).
        """
        st = self._cohort_students(cohort)
        cols: list[np.ndarray] = []
        names: list[str] = []
        for name in self.student_covariates:
            if name == "family_income":
                x = np.asarray(scaled_log_income(st["family_income"].to_numpy(np.float64), config))
                names.append(INCOME_COVARIATE_NAME)
            else:
                x = st[name].to_numpy(np.float64)
                names.append(name)
            cols.append(x.astype(np.float64))
        if not cols:
            return np.zeros((len(st), 0), dtype=np.float64), names
        return np.column_stack(cols), names


def load_dataset(folder: str | Path, replicate: int | None = None) -> LoadedData:
    """Read and check ``students.csv``, ``classes.csv`` and the optional
    ``dataset.json`` and ``truth.json`` of ``folder``; raise :class:`DataError` on the
    first problem.  Nothing is written.

    With ``replicate``, or for a folder of stacked Parquet files (see
    :func:`load_stacked`), one replicate of ``students.parquet`` and
    ``classes.parquet`` is read instead; ``FOLDER#K`` names replicate ``K`` of
    ``FOLDER`` (so ``classsize fit FOLDER#K`` fits it).
    """
    folder, replicate = _split_replicate(folder, replicate)
    if replicate is not None or _is_stacked(folder):
        return load_stacked(folder, replicate)
    if not folder.exists():
        raise DataError(folder, "dataset folder not found")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    meta = _read_metadata(folder)
    race_codes = tuple(meta["race_codes"])
    st_table, students = _load_students(folder, meta, race_codes)
    cl_table, classes = _load_classes(folder)
    _cross_check(st_table, students, cl_table, classes)

    truth = None
    truth_path = folder / TRUTH_FILE
    if truth_path.exists():
        truth = _read_json(truth_path)
        if not isinstance(truth, dict):
            raise DataError(truth_path, f"must be a JSON object (got {type(truth).__name__})")

    return LoadedData(
        students=students.reset_index(drop=True),
        classes=classes.reset_index(drop=True),
        truth=truth,
        metadata=meta,
        race_codes=race_codes,
        source=folder,
    )


# ------------------------------------------------------------------ stacked replicates
STUDENTS_PARQUET = "students.parquet"
CLASSES_PARQUET = "classes.parquet"


def _split_replicate(source: str | Path, replicate: int | None) -> tuple[Path, int | str | None]:
    """``FOLDER#K`` -> (FOLDER, "K") when FOLDER exists and the whole name does not."""
    path = Path(source)
    text = str(source)
    if replicate is None and "#" in text and not path.exists():
        base, tag = text.rsplit("#", 1)
        if Path(base).exists():
            return Path(base), tag
    return path, replicate


def _is_stacked(folder: Path) -> bool:
    if folder.is_file() and folder.suffix == ".parquet":
        return True
    return folder.is_dir() and (folder / STUDENTS_PARQUET).exists() and not (folder / STUDENTS_FILE).exists()


def _replicate_number(folder: Path, replicate: int | str | None) -> int:
    if replicate is None:
        raise DataError(
            folder / STUDENTS_PARQUET,
            f"holds stacked replicates; name one (e.g. {folder}#0)",
            column="replicate",
        )
    if isinstance(replicate, str):
        whole = _whole(replicate.strip())
        if whole is None or replicate.strip() == "":
            raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
        return whole
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)):
        raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
    return int(replicate)


def _parquet_table(path: Path, replicate: int) -> _Table:
    """Replicate ``replicate`` of a stacked Parquet file as the text a CSV of it holds.

    Rows are numbered as the lines of that CSV would be (header on line 1), so the
    messages of the checks read as for a CSV folder.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from classsize.model.writers import format_floats

    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    try:
        pf = pq.ParquetFile(path)
        if "replicate" not in pf.schema_arrow.names:
            raise DataError(path, "has no 'replicate' column (not a stacked file of classsize simulate)")
        table = pq.read_table(path, filters=[("replicate", "=", replicate)])
    except DataError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataError(path, f"cannot read it as Parquet ({' '.join(str(e).split())})") from None
    if table.num_rows == 0:
        reps = pq.read_table(path, columns=["replicate"])["replicate"]
        if len(reps) == 0:
            raise DataError(path, "the table is empty (no replicates)")
        lo, hi = pc.min_max(reps).values()
        raise DataError(
            path, f"no replicate {replicate} (the file holds replicates {lo}..{hi})", column="replicate"
        )
    columns: dict[str, list[str] | np.ndarray] = {}
    for name in table.column_names:
        if name == "replicate":
            continue
        col = table[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_floating(col.type):
            text = format_floats(col.to_numpy(zero_copy_only=False)).to_numpy(zero_copy_only=False)
        elif pa.types.is_boolean(col.type):
            text = np.where(col.to_numpy(zero_copy_only=False), "True", "False")
        else:
            text = col.cast(pa.string()).to_numpy(zero_copy_only=False)
        columns[name] = np.asarray(["" if v is None else str(v).strip() for v in text], dtype=object)
    lines = pd.Index(np.arange(2, table.num_rows + 2), dtype=np.int64)
    frame = pd.DataFrame(columns, index=lines, dtype=str)
    return _Table(Path(f"{path} (replicate {replicate})"), frame)


def _replicate_truth(folder: Path, replicate: int) -> dict | None:
    path = folder / TRUTH_FILE
    if not path.exists():
        return None
    truth = _read_json(path)
    if not isinstance(truth, dict):
        raise DataError(path, f"must be a JSON object (got {type(truth).__name__})")
    reps = truth.get("replicates")
    if not isinstance(reps, list):
        return truth
    entry = next((r for r in reps if isinstance(r, dict) and r.get("replicate") == replicate), None)
    if entry is None:
        raise DataError(path, f"lists no replicate {replicate}", key="replicates")
    out = {k: v for k, v in truth.items() if k not in ("replicates", "n_replicates", "format")}
    return {"seed": entry.get("seed"), "engine": out.pop("engine", None), "estimands": out.pop("estimands", None),
            "school_effects": entry.get("school_effects"), **out, "replicate": replicate}


def load_stacked(folder: str | Path, replicate: int | str | None) -> LoadedData:
    """Read and check replicate ``replicate`` of the stacked files of ``folder``
    (``students.parquet`` and ``classes.parquet`` with a ``replicate`` column, as
    ``classsize simulate --format parquet`` writes them; ``folder`` may also name
    either file).  The checks are those of a CSV folder; ``truth`` is that
    replicate's entry of the stacked ``truth.json`` with the shared fields (a
    single-dataset truth.json's keys, plus ``replicate``).  A replicate number that
    is not a whole number or not in the file raises :class:`DataError`.
    """
    folder = Path(folder)
    if folder.suffix == ".parquet" and not folder.is_dir():
        folder = folder.parent
    if not folder.exists():
        raise DataError(folder, "dataset folder not found")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    k = _replicate_number(folder, replicate)
    meta = _read_metadata(folder)
    race_codes = tuple(meta["race_codes"])
    st_table, students = _load_students(folder, meta, race_codes, _parquet_table(folder / STUDENTS_PARQUET, k))
    cl_table, classes = _load_classes(folder, _parquet_table(folder / CLASSES_PARQUET, k))
    _cross_check(st_table, students, cl_table, classes)
    return LoadedData(
        students=students.reset_index(drop=True),
        classes=classes.reset_index(drop=True),
        truth=_replicate_truth(folder, k),
        metadata=meta,
        race_codes=race_codes,
        source=folder,
        replicate=k,
    )
