"""Validation primitives for the tables of a dataset folder.

:class:`DataError`, the one-line error every check raises; the rules a cell's text
must satisfy (:class:`Rule` and the rule tuples such as :data:`ID_RULES`, with
:func:`code_rules` for a column of known codes and :func:`range_rule` for a column of
numbers within a range) and the parsers of checked text (:func:`whole`,
:func:`to_bool`, :func:`to_covariate`); a table read as text (:class:`Table`,
:func:`require_columns`; CSV files are read by
:func:`classsize.inference.data.read.read_csv`); the reading of a UTF-8 file
(:func:`read_text`); and the pandera checks that apply the rules and report the
first failure (:func:`schema`, :func:`reasons`, :func:`first_failure`,
:func:`check_unique`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import pandera.pandas as pa

from classsize.model.config import first_bad_line, not_utf8

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


def whole(s: str) -> int | None:
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
    return whole(s) is not None


def _is_nonnegative(s: str) -> bool:
    v = whole(s)
    return v is not None and v >= 0


def _is_positive(s: str) -> bool:
    return _is_finite(s) and float(s) > 0


def _is_bool(s: str) -> bool:
    return s.lower() in _TRUE or s.lower() in _FALSE


def _is_number_or_bool(s: str) -> bool:
    return _is_number(s) or _is_bool(s)


def _is_finite_or_bool(s: str) -> bool:
    return _is_finite(s) or _is_bool(s)


def to_bool(s: str) -> bool:
    return s.lower() in _TRUE


def to_covariate(s: str) -> float:
    return float(to_bool(s)) if _is_bool(s) else float(s)


@dataclass(frozen=True)
class Rule:
    """One element-wise rule for a cell: a predicate and the reason it gives on failure."""

    key: str
    test: Callable[[str], bool]
    reason: str  # formatted with v = the cell's text


_EMPTY = Rule("empty", _nonempty, "empty cell")
_NUMBER = Rule("number", _is_number, "{v!r} is not a number")
_FINITE = Rule("finite", _is_finite, "{v!r} is not a finite number (NaN and infinity are not allowed)")
_WHOLE = Rule("whole", _is_whole, "{v!r} is not a whole number in the 64-bit integer range")
_NONNEG = Rule("nonnegative", _is_nonnegative, "{v!r} is negative")
_POSITIVE = Rule("positive", _is_positive, "{v!r} is not > 0 (income enters through its logarithm)")
_BOOL = Rule("boolean", _is_bool, "{v!r} is not a boolean (write True/False, true/false or 1/0)")
_COVARIATE = Rule("covariate", _is_number_or_bool, "{v!r} is neither a number nor a boolean (True/False)")
_COVARIATE_FINITE = Rule(
    "covariate_finite", _is_finite_or_bool, "{v!r} is not finite (NaN and infinity are not allowed)"
)

ID_RULES = (_EMPTY, _NUMBER, _FINITE, _WHOLE)
COUNT_RULES = ID_RULES + (_NONNEG,)
FLOAT_RULES = (_EMPTY, _NUMBER, _FINITE)
INCOME_RULES = FLOAT_RULES + (_POSITIVE,)
BOOL_RULES = (_EMPTY, _BOOL)
COVARIATE_RULES = (_EMPTY, _COVARIATE, _COVARIATE_FINITE)


def range_rule(lo: float, hi: float, why: str) -> Rule:
    """The rule of a column of finite numbers ``lo <= x <= hi``; ``why`` says whose
    range it is (it follows the range in the reason)."""

    def within(s: str) -> bool:
        return _is_finite(s) and lo <= float(s) <= hi

    return Rule(f"range:{lo}:{hi}", within, f"{{v!r}} is outside [{number_text(lo)}, {number_text(hi)}], {why}")


def number_text(x: float) -> str:
    """``x`` as a reason shows it: whole numbers without a decimal point."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else repr(float(x))


def code_rules(what: str, codes: Sequence[str]) -> tuple[Rule, ...]:
    allowed = frozenset(codes)
    return (
        _EMPTY,
        Rule(f"code:{what}", allowed.__contains__, f"unknown {what} {{v!r}} (known: {', '.join(codes)})"),
    )


# ------------------------------------------------------------------ reading files
def read_text(path: Path) -> str:
    """The text of the file ``path``: UTF-8, a byte-order mark allowed; a
    :class:`DataError` naming the file otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"cannot read the file ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, not_utf8(e, raw), line=first_bad_line(raw, e)) from None


@dataclass
class Table:
    """A CSV file read as text: ``frame`` has one str column per header name, its index
    is the file line each data row starts on."""

    path: Path
    frame: pd.DataFrame

    def row_of(self, line: int) -> int:
        return int(self.frame.index.get_loc(line)) + 1

    def error(self, reason: str, *, line: int | None = None, column: str | None = None) -> DataError:
        row = self.row_of(line) if line is not None else None
        return DataError(self.path, reason, line=line, row=row, column=column)


def require_columns(table: Table, names: Iterable[str], why: str = "") -> None:
    present = list(table.frame.columns)
    for name in names:
        if name not in present:
            raise table.error(
                f"required column is missing{why}; the header has: {', '.join(present)}",
                column=name,
            )


# ------------------------------------------------------------------ pandera checks
def schema(rules: Mapping[str, Sequence[Rule]]) -> pa.DataFrameSchema:
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


def first_failure(table: Table, schema: pa.DataFrameSchema, reasons: Mapping[str, str]) -> None:
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


def check_unique(table: Table, typed: pd.DataFrame, column: str, what: str) -> None:
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


def reasons(rules: Mapping[str, Sequence[Rule]]) -> dict[str, str]:
    """The reason template of each rule key in ``rules``, for :func:`first_failure`."""
    return {r.key: r.reason for col_rules in rules.values() for r in col_rules}
