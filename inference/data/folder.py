"""A dataset folder: what its JSON files declare, checked, and the order of every check.

The readers of :mod:`classsize.inference.data.read` (a CSV folder) and
:mod:`classsize.inference.data.stacked` (one replicate of stacked Parquet files)
both hand :func:`checked_dataset` the folder and a way to read each table and the
truth; it reads ``dataset.json`` (:func:`read_metadata`), checks the students, the
classes and how the two agree (:mod:`classsize.inference.data.dataset`), then reads
``truth.json`` (:func:`folder_truth`), in that order, and returns the
:class:`LoadedData`.  Every field either file declares is checked here, when the
folder is read, whichever analysis then fits it.

``dataset.json``, a JSON object (defaults for a field it leaves out, or a folder
without one, in brackets):

========================  ==========================================================
``name``                  a string [the folder's name]
``score_units``           a string [``"points"``]
``student_covariates``    distinct columns of students.csv, none of its core columns
                          [``["family_income"]``]
``class_covariates``      distinct columns of classes.csv, none of its core columns
                          [``[]``]
``race_codes``            a non-empty list of distinct codes [``KNOWN_RACE_CODES``]
``optional_covariates``   a list of distinct strings (columns a fit may add; a note)
``ability``               ``"uniform"`` or ``"normal"``
``score_noise_sd``        a number >= 0, or ``"free"``
``class_effect_sd``       a number >= 0, or ``"free"``
``score_scale``           a number > 0
``score_range``           ``[lo, hi]``: ``lo <= test_score <= hi``
                          [:data:`~classsize.inference.data.dataset.SCORE_RANGE`]
``income_range``          ``[lo, hi]`` with ``lo >= 0``: ``lo <= family_income <= hi``
                          (and > 0) [:data:`~classsize.inference.data.dataset.INCOME_RANGE`]
========================  ==========================================================

A range's bounds are finite numbers, ``lo < hi``, with ``|lo|, |hi| <=``
:data:`RANGE_BOUND_MAX` (10**12: a float64 there still resolves 2e-4, and sums of
squares over :data:`~classsize.model.config.MAX_STUDENTS` students stay far from
overflow).

``truth.json``, a JSON object: ``estimands`` maps each estimand to a finite number
or null; ``config`` is a configuration, checked by
:meth:`classsize.model.Config.from_dict` as a TOML configuration is; ``seed`` and
``replicate`` are whole numbers >= 0 (``seed`` may be null); ``engine`` and
``format`` strings; ``n_replicates`` a whole number >= 0; ``school_effects`` and
``class_effects`` map ids to finite numbers; ``replicates`` (stacked files) is a list
of objects whose ``replicate``, ``seed``, ``school_effects`` and ``class_effects`` are
checked so.

Other keys of either file are notes, kept as they are (e.g. STAR's ``description``
and ``score_scale_reason``), except a key so like a field's name that it is likely
its misspelling (``difflib`` ratio >= :data:`MISSPELLING_RATIO`, e.g. ``score_noise``
for ``score_noise_sd``; keys starting with a field's name and ``_`` are notes on it):
it is refused, naming the field.  Strings must be text (a JSON ``\\ud800`` escape
of a lone surrogate is not).
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

from classsize.model.config import Config, ConfigError
from classsize.model.format import (
    CLASS_COLUMNS,
    CLASSES_FILE,
    KNOWN_RACE_CODES,
    METADATA_FILE,
    STUDENT_CORE_COLUMNS,
    TRUTH_FILE,
)

from classsize.inference.analyses.base import FREE, check_class_effects, check_score_scale
from classsize.inference.data.checks import DataError, Table, read_text
from classsize.inference.data.dataset import LoadedData, cross_check, load_classes, load_students

#: Student covariates of a folder without dataset.json.
DEFAULT_COVARIATES = ("family_income",)
#: The largest magnitude of a declared range's bound (``score_range``, ``income_range``).
RANGE_BOUND_MAX = 10**12
#: How like a field's name (:func:`difflib.get_close_matches` ratio) an unknown key
#: is refused as its misspelling.
MISSPELLING_RATIO = 0.75


# ------------------------------------------------------------------ JSON files
_RESERVED = frozenset(STUDENT_CORE_COLUMNS)
_RESERVED_CLASS = frozenset(CLASS_COLUMNS)


def read_json(path: Path) -> Any:
    """The JSON value of the file ``path`` (UTF-8, a byte-order mark allowed)."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg}, character {e.colno})", line=e.lineno) from None
    except RecursionError:
        raise DataError(path, "not valid JSON (nested too deeply)") from None
    if "\\u" in text:
        _check_text(path, value)
    return value


def _check_text(path: Path, value: Any, key: str | None = None) -> None:
    """Every string in ``value`` is text: no lone surrogate (from a ``\\udXXX`` escape)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(path, f"holds a string with a lone surrogate escape, not text ({value!r})",
                            key=key) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(path, k, key)
            _check_text(path, v, k if key is None else f"{key}.{k}")
    elif isinstance(value, list):
        for v in value:
            _check_text(path, v, key)


def _no_misspellings(path: Path, data: Mapping[str, Any], fields: Any) -> None:
    """Refuse a key of ``data`` that is not one of ``fields`` but so like one that it is
    likely its misspelling (see the module docstring)."""
    for key in data:
        if key in fields or any(key.startswith(f + "_") for f in fields):
            continue
        near = difflib.get_close_matches(key, list(fields), n=1, cutoff=MISSPELLING_RATIO)
        if near:
            raise DataError(path, f"unknown key, too like the field {near[0]!r} to be a note "
                                  f"(did you mean {near[0]!r}?)", key=key)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(path: Path, key: str, value: Any, null: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if not (ok or (null and value is None)):
        raise DataError(path, f"must be a whole number >= 0{' or null' if null else ''} (got {value!r})", key=key)


def _string(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, str):
        raise DataError(path, f"must be a string (got {value!r})", key=key)


def _numbers_by_id(path: Path, key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise DataError(path, f"must be an object of id = number (got {value!r})", key=key)
    for name, v in value.items():
        if not _number(v):
            raise DataError(path, f"must be a finite number (got {v!r})", key=f"{key}.{name}")


def _one_truth(path: Path, truth: Mapping[str, Any], prefix: str = "") -> None:
    """The fields one dataset's truth shares with a replicate's entry."""
    if "seed" in truth:
        _whole(path, prefix + "seed", truth["seed"], null=True)
    if "replicate" in truth:
        _whole(path, prefix + "replicate", truth["replicate"])
    for key in ("school_effects", "class_effects"):
        if key in truth and truth[key] is not None:
            _numbers_by_id(path, prefix + key, truth[key])


#: The fields of truth.json (see the module docstring).
TRUTH_FIELDS = ("seed", "engine", "estimands", "school_effects", "class_effects", "config", "replicate",
                "replicates", "n_replicates", "format")


def check_truth(path: Path, truth: Any) -> None:
    """Refuse a truth.json that breaks a rule of the module docstring: fits compare
    its estimands with their intervals, and take measurement noise and class effects
    from its configuration."""
    if not isinstance(truth, dict):
        raise DataError(path, f"must be a JSON object (got {type(truth).__name__})")
    _no_misspellings(path, truth, TRUTH_FIELDS)
    if "estimands" in truth:
        estimands = truth["estimands"]
        if not isinstance(estimands, dict):
            raise DataError(path, f"must be an object of estimand = number (got {estimands!r})", key="estimands")
        for name, value in estimands.items():
            if value is not None and not _number(value):
                raise DataError(path, f"must be a finite number or null (got {value!r})", key=f"estimands.{name}")
    if "config" in truth:
        config = truth["config"]
        if not isinstance(config, dict):
            raise DataError(path, f"must be an object, a configuration (got {config!r})", key="config")
        try:
            Config.from_dict(config, source="config")
        except ConfigError as e:
            raise DataError(path, str(e).removeprefix("config: "), key="config") from None
    for key in ("engine", "format"):
        if key in truth:
            _string(path, key, truth[key])
    if "n_replicates" in truth:
        _whole(path, "n_replicates", truth["n_replicates"])
    _one_truth(path, truth)
    if "replicates" in truth:
        reps = truth["replicates"]
        if not isinstance(reps, list) or not all(isinstance(r, dict) for r in reps):
            raise DataError(path, "must be a list of objects, one per replicate", key="replicates")
        for k, entry in enumerate(reps):
            _one_truth(path, entry, prefix=f"replicates[{k}].")


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


def _covariates(path: Path, key: str, value: Any, reserved: frozenset, table: str) -> list[str]:
    covs = _string_list(path, key, value, nonempty=False)
    for c in covs:
        if c in reserved:
            raise DataError(path, f"{c!r} is a core column of {table}, not a covariate", key=key)
    return covs


def _sd_or_free(path: Path, key: str, value: Any) -> float | str:
    try:
        checked = check_class_effects(value)
    except ValueError:
        checked = None
    if checked is None:
        raise DataError(path, f"must be a number >= 0 or {FREE!r} (got {value!r})", key=key)
    return checked


def _range(path: Path, key: str, value: Any, low: float) -> list[float]:
    ok = (isinstance(value, list) and len(value) == 2 and all(_number(x) for x in value)
          and low <= value[0] < value[1] and max(abs(value[0]), abs(value[1])) <= RANGE_BOUND_MAX)
    if not ok:
        floor = "" if low == -math.inf else f", lo >= {low:g}"
        raise DataError(path, f"must be [lo, hi], finite numbers with lo < hi{floor} and |lo|, |hi| <= "
                              f"{RANGE_BOUND_MAX:.0e} (got {value!r})", key=key)
    return [value[0], value[1]]


#: The fields of dataset.json and the check of each: (path, key, value) -> the value kept.
METADATA_FIELDS: dict[str, Callable[[Path, str, Any], Any]] = {
    "name": lambda p, k, v: _string(p, k, v) or v,
    "score_units": lambda p, k, v: _string(p, k, v) or v,
    "student_covariates": lambda p, k, v: _covariates(p, k, v, _RESERVED, "students.csv"),
    "class_covariates": lambda p, k, v: _covariates(p, k, v, _RESERVED_CLASS, CLASSES_FILE),
    "race_codes": lambda p, k, v: _string_list(p, k, v, nonempty=True),
    "optional_covariates": lambda p, k, v: _string_list(p, k, v, nonempty=False),
    "ability": lambda p, k, v: v if v in ("uniform", "normal") else _refuse(
        p, k, f"must be 'uniform' or 'normal' (got {v!r})"),
    "score_noise_sd": _sd_or_free,
    "class_effect_sd": _sd_or_free,
    "score_scale": lambda p, k, v: _checked(p, k, check_score_scale, v),
    "score_range": lambda p, k, v: _range(p, k, v, -math.inf),
    "income_range": lambda p, k, v: _range(p, k, v, 0.0),
}


def _refuse(path: Path, key: str, reason: str):
    raise DataError(path, reason, key=key)


def _checked(path: Path, key: str, check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError as e:
        raise DataError(path, str(e), key=key) from None


def read_metadata(folder: Path) -> dict[str, Any]:
    """The folder's dataset.json, every field checked (the module docstring), with the
    defaults of a folder without one; a field's value is kept as written (numbers,
    ``"free"``), lists of names stripped of surrounding spaces."""
    path = folder / METADATA_FILE
    meta: dict[str, Any] = {}
    if path.exists():
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataError(path, f"must be a JSON object (got {type(raw).__name__})")
        _no_misspellings(path, raw, METADATA_FIELDS)
        meta = dict(raw)
        for key, check in METADATA_FIELDS.items():
            if key in meta:
                kept = check(path, key, meta[key])
                if isinstance(kept, list):
                    meta[key] = kept
    meta.setdefault("name", folder.resolve().name)
    meta.setdefault("score_units", "points")
    meta.setdefault("student_covariates", list(DEFAULT_COVARIATES))
    meta.setdefault("class_covariates", [])
    meta.setdefault("race_codes", list(KNOWN_RACE_CODES))
    return meta


def with_declared_noise(meta: dict[str, Any], truth: Any) -> dict[str, Any]:
    """``meta`` with the scores' measurement-noise sd of a simulated folder: when
    dataset.json declares none and truth.json's configuration (checked) simulated the
    scores with noise (``score_noise_sd > 0``), that sd, so that such data are fitted
    with the noisy likelihood rather than silently with the noise-free one."""
    config = truth.get("config") if isinstance(truth, dict) else None
    noise = config.get("score_noise_sd", 0) if isinstance(config, dict) else 0
    if "score_noise_sd" in meta or not noise > 0:
        return meta
    return {**meta, "score_noise_sd": float(noise), "score_noise_source": TRUTH_FILE}


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
