"""Reading one dataset folder of the class-size experiment.

A folder holds the two tables of :mod:`classsize.model.format`, ``students.csv`` and
``classes.csv``, as written by ``classsize simulate`` or by the notebook, and,
optionally:

``dataset.json``
    metadata: ``{"name": str, "score_units": str, "student_covariates": [column, ...],
    "race_codes": [code, ...]}`` and the other fields of
    :mod:`classsize.inference.data.folder` (every field is checked when the folder is
    read, whichever analysis fits it).  Without it, ``student_covariates`` is
    ``["family_income"]`` and the race codes are
    :data:`classsize.model.format.KNOWN_RACE_CODES`, so simulated folders need none.
    When ``student_covariates`` does not list ``family_income`` that column is not
    required (real data may have none); every listed covariate must be a column of
    ``students.csv`` holding finite numbers or booleans (True/False read as 1/0).
``truth.json``
    the simulation's truth (a JSON object), kept as it is; its fields are checked
    (:func:`~classsize.inference.data.folder.check_truth`): its ``estimands``, when
    present, must map each estimand to a finite number (or null), its ``config`` must
    be a valid configuration (:meth:`classsize.model.Config.from_dict`).  When its
    ``config`` simulated the scores with measurement noise (``score_noise_sd > 0``)
    and ``dataset.json`` declares no ``score_noise_sd``, that sd is the folder's
    declared noise (``metadata["score_noise_sd"]``): the scores are fitted with the
    noisy likelihood.  ``dataset.json``'s ``score_noise_sd`` (a number, or ``"free"``
    to sample it) declares the noise of any folder.

:func:`load_dataset` reads a folder and checks it completely before returning a
:class:`LoadedData`; reading never writes anything.  Every problem raises
:class:`DataError`, whose message is one line naming the file and, where one
applies, the line and the column, e.g.::

    data/students.csv, line 17 (data row 16), column 'race': unknown race code 'PURPLE' (known: WHITE, BLACK, HISPANIC, ASIAN, NATIVE_AMERICAN, OTHER)

Line numbers are those of the file, counted from 1 with the header on line 1, so
the first data row is on line 2; the data row number counts data rows only.

A folder of stacked replicates (``students.parquet`` and ``classes.parquet``) is
read one replicate at a time, through the same checks:
``load_dataset(folder, replicate=K)`` or ``load_dataset("FOLDER#K")`` (see
:mod:`classsize.inference.data.stacked`).

Cells are read as text and stripped of surrounding spaces.  Identifiers and counts
must be whole numbers; ``7001.0`` (the notebook writes class ids as floats) is read
as ``7001`` and ``7001.5`` is an error.  Booleans may be written True/False,
true/false (any letter case) or 1/0.  Columns not named above are allowed and kept as text.

The checks: each file exists and is a well-formed CSV with a header and at least
one data row; every required column is present; every cell parses (numbers are
finite, ``family_income > 0``, codes are known); ``test_score`` and
``family_income`` are within their ranges (below); ``student_id`` and ``class_id``
are unique; every student's class is in ``classes.csv`` and in the same school;
every class has students and its ``n_students`` is their number.

Bounds, checked while a file is read, before anything is built from it: every file
is UTF-8 text (a byte-order mark allowed); a CSV row (one record, its line breaks
included) is at most :data:`MAX_ROW_CHARS` characters (2**20, 1 Mi; a row of the
simulation's tables is under 100), refused before more of it is read, and a field at
most 131072 characters (:func:`csv.field_size_limit`'s default); a table has at
most :data:`~classsize.model.config.MAX_STUDENTS` data rows (10**7, the most students
a configuration may have).  Scores and incomes must lie in a range:
``-10**6 <= test_score <= 10**6`` and ``0 < family_income <= 10**9`` unless
``dataset.json`` declares ``score_range: [lo, hi]`` or ``income_range: [lo, hi]``
(see :mod:`classsize.inference.data.folder`).

A CSV file is read here (:func:`read_csv`); the cell rules and the pandera checks are
in :mod:`classsize.inference.data.checks` (with :class:`DataError`); the checks of the
tables and :class:`LoadedData` in :mod:`classsize.inference.data.dataset`; the JSON
files and the order of the checks, shared with the stacked reader, in
:mod:`classsize.inference.data.folder`.  This module names both, so
``from classsize.inference.data.read import DataError, LoadedData, load_dataset`` works.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from classsize.model.config import MAX_STUDENTS, not_utf8
from classsize.model.format import CLASSES_FILE, STUDENTS_FILE

from classsize.inference.data.checks import DataError, Table
from classsize.inference.data.dataset import LoadedData
from classsize.inference.data.folder import check_folder, checked_dataset, folder_truth
from classsize.inference.data.stacked import is_stacked, load_stacked, split_replicate

__all__ = ["DataError", "LoadedData", "load_dataset"]


def load_dataset(folder: str | Path, replicate: int | None = None) -> LoadedData:
    """Read and check ``students.csv``, ``classes.csv`` and the optional
    ``dataset.json`` and ``truth.json`` of ``folder``; raise :class:`DataError` on the
    first problem.  Nothing is written.

    With ``replicate``, or for a folder of stacked Parquet files (see
    :func:`~classsize.inference.data.stacked.load_stacked`), one replicate of
    ``students.parquet`` and ``classes.parquet`` is read instead; ``FOLDER#K`` names
    replicate ``K`` of ``FOLDER`` (so ``classsize fit FOLDER#K`` fits it).
    """
    folder, replicate = split_replicate(folder, replicate)
    if replicate is not None or is_stacked(folder):
        return load_stacked(folder, replicate)
    check_folder(folder)
    return checked_dataset(
        folder,
        students_table=lambda: read_csv(folder / STUDENTS_FILE),
        classes_table=lambda: read_csv(folder / CLASSES_FILE),
        truth=lambda: folder_truth(folder),
    )


#: The longest row of a CSV table, in characters (one record, its line breaks included).
MAX_ROW_CHARS = 2**20


class _RowTooLong(Exception):
    """A record of a CSV file grew past :data:`MAX_ROW_CHARS`."""


class _NotUtf8(Exception):
    """A line of a CSV file is not UTF-8: ``raw`` its bytes, ``error`` their decoding's."""

    def __init__(self, raw: bytes, error: UnicodeDecodeError) -> None:
        super().__init__(str(error))
        self.raw, self.error = raw, error


class _BoundedLines:
    """The lines of ``fh`` for :func:`csv.reader`, read with a bound: a record (the
    lines handed out since :meth:`next_record`) longer than :data:`MAX_ROW_CHARS`
    raises :class:`_RowTooLong` having read at most one character more.  ``fh`` is
    opened with ``errors="surrogateescape"``, so a byte that is not UTF-8 reaches its
    line (and :class:`_NotUtf8` names that line) rather than failing the whole
    block the file is decoded in."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.read = 0  # lines handed out
        self.start = 1  # the line the current record starts on
        self.chars = 0  # the current record's characters so far

    def next_record(self) -> None:
        self.start, self.chars = self.read + 1, 0

    def __iter__(self) -> "_BoundedLines":
        return self

    def __next__(self) -> str:
        text = self.fh.readline(MAX_ROW_CHARS + 1 - self.chars)
        if not text:
            raise StopIteration
        self.chars += len(text)
        if self.chars > MAX_ROW_CHARS:
            raise _RowTooLong
        self.read += 1
        if not text.isascii():
            raw = text.encode("utf-8", "surrogateescape")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _NotUtf8(raw, e) from None
        return text


def read_csv(path: Path) -> Table:
    """The CSV file ``path`` as a :class:`Table` of text, every bound and the rules of
    the module docstring's CSV paragraphs checked (rows no longer than
    :data:`MAX_ROW_CHARS`, at most :data:`~classsize.model.config.MAX_STUDENTS` of
    them, as many fields as the header, no column named twice)."""
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            source = _BoundedLines(fh)
            reader = csv.reader(source, strict=True)
            end_of_previous = 0
            while True:
                source.next_record()
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    raise DataError(path, _record_problem(path, end_of_previous + 1, str(e)),
                                    line=end_of_previous + 1) from None
                except _NotUtf8 as e:
                    raise DataError(path, not_utf8(e.error, e.raw), line=source.read,
                                    row=None if header is None else len(rows) + 1) from None
                except _RowTooLong:
                    raise DataError(path, f"the row is longer than {MAX_ROW_CHARS} characters (MAX_ROW_CHARS; "
                                          "is it a table of this format?); nothing past that was read",
                                    line=source.start, row=None if header is None else len(rows) + 1) from None
                start, end_of_previous = end_of_previous + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # a blank line
                cells = [c.strip() for c in record]
                if header is None:
                    header, header_line = cells, start
                    _check_delimiter(path, header, start)
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        path,
                        f"the row has {len(cells)} fields but the header has {len(header)}",
                        line=start,
                        row=len(rows) + 1,
                    )
                if len(rows) == MAX_STUDENTS:
                    raise DataError(path, f"the table has more than {MAX_STUDENTS} data rows (MAX_STUDENTS, "
                                          "the most students a configuration may have)",
                                    line=start, row=len(rows) + 1)
                rows.append(cells)
                lines.append(start)
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
    return Table(path, frame)


#: Separators a CSV file may have been written with instead of commas, and their names.
OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "vertical bar"}


def _check_delimiter(path: Path, header: list[str], line: int) -> None:
    """A header read as one field that another separator splits: the file is not comma-separated."""
    if len(header) != 1:
        return
    for sep, name in OTHER_DELIMITERS.items():
        if len(header[0].split(sep)) > 1:
            raise DataError(path, f"the header is separated by {name}s ({sep!r}), not commas: "
                                  "write the file comma-separated", line=line)


def _record_problem(path: Path, line: int, reason: str) -> str:
    """Why the record starting on ``line`` is not valid CSV, named as a quoting problem
    where the line shows one."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        text = next((t for k, t in enumerate(fh, 1) if k == line), "")
    if text.count('"') % 2 == 1:
        return ("unterminated quote: a field opened with a double quote on this line is never closed, "
                f"so the rest of the file reads as one field (csv: {reason})")
    if "expected after" in reason:
        return ("misplaced quote: a double quote inside a field must be doubled (\"\") and a quoted "
                f"field must end at a comma (csv: {reason})")
    return f"not a valid CSV record ({reason}; the record starts on this line)"
