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
    :data:`classsize.model.format.KNOWN_RACE_CODES`, so simulated folders need none.
    When ``student_covariates`` does not list ``family_income`` that column is not
    required (real data may have none); every listed covariate must be a column of
    ``students.csv`` holding finite numbers or booleans (True/False read as 1/0).
``truth.json``
    the simulation's truth (any JSON object), kept as it is; its ``estimands``, when
    present, must map each estimand to a finite number (or null).  When its
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

The cell rules, the reading of a CSV file and the pandera checks are in
:mod:`classsize.inference.data.checks` (with :class:`DataError`); :class:`LoadedData` is in
:mod:`classsize.inference.data.dataset`.  This module names both, so
``from classsize.inference.data.read import DataError, LoadedData, load_dataset`` works.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from classsize.model.format import (
    CLASS_COLUMNS,
    CLASS_SIZES,
    CLASSES_FILE,
    CLASSES_PARQUET,
    COHORTS,
    KNOWN_RACE_CODES,
    METADATA_FILE,
    STUDENT_CORE_COLUMNS,
    STUDENTS_FILE,
    STUDENTS_PARQUET,
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
    read_csv,
    reasons,
    require_columns,
    schema,
    to_bool,
    to_covariate,
    whole,
)
from classsize.inference.data.dataset import INCOME_COVARIATE_NAME, LoadedData

__all__ = [
    "DEFAULT_COVARIATES",
    "INCOME_COVARIATE_NAME",
    "DataError",
    "LoadedData",
    "load_dataset",
    "load_stacked",
]

#: Student covariates of a folder without dataset.json.
DEFAULT_COVARIATES = ("family_income",)


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


def _check_truth(path: Path, truth: Any) -> None:
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


def _with_declared_noise(meta: dict[str, Any], truth: Any) -> dict[str, Any]:
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


# ------------------------------------------------------------------ the tables
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


def _load_students(folder: Path, meta: Mapping[str, Any], race_codes: Sequence[str],
                   table: Table | None = None) -> tuple[Table, pd.DataFrame]:
    table = read_csv(folder / STUDENTS_FILE) if table is None else table
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


def _load_classes(folder: Path, table: Table | None = None) -> tuple[Table, pd.DataFrame]:
    table = read_csv(folder / CLASSES_FILE) if table is None else table
    require_columns(table, CLASS_COLUMNS)
    rules: dict[str, Sequence[Rule]] = {
        "class_id": ID_RULES,
        "school_id": ID_RULES,
        "n_students": COUNT_RULES,
        "class_size": code_rules("class size", CLASS_SIZES),
        "teacher_has_ma": BOOL_RULES,
    }
    first_failure(table, schema(rules), reasons(rules))
    typed = _typed(
        table.frame, ints=("class_id", "school_id", "n_students"), floats=(), bools=("teacher_has_ma",)
    )
    check_unique(table, typed, "class_id", "class_id")
    return table, typed


def _cross_check(st: Table, students: pd.DataFrame, cl: Table, classes: pd.DataFrame) -> None:
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


# ------------------------------------------------------------------ loading
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
        _check_truth(truth_path, truth)

    return LoadedData(
        students=students.reset_index(drop=True),
        classes=classes.reset_index(drop=True),
        truth=truth,
        metadata=_with_declared_noise(meta, truth),
        race_codes=race_codes,
        source=folder,
    )


# ------------------------------------------------------------------ stacked replicates

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
        number = whole(replicate.strip())
        if number is None or replicate.strip() == "":
            raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
        return number
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)):
        raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
    return int(replicate)


def _parquet_table(path: Path, replicate: int) -> Table:
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
    return Table(Path(f"{path} (replicate {replicate})"), frame)


def _replicate_truth(folder: Path, replicate: int) -> dict | None:
    path = folder / TRUTH_FILE
    if not path.exists():
        return None
    truth = _read_json(path)
    _check_truth(path, truth)
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
    truth = _replicate_truth(folder, k)
    return LoadedData(
        students=students.reset_index(drop=True),
        classes=classes.reset_index(drop=True),
        truth=truth,
        metadata=_with_declared_noise(meta, truth),
        race_codes=race_codes,
        source=folder,
        replicate=k,
    )
