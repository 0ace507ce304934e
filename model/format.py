"""The format of a dataset: its files, the columns of its two tables, their codes and ids.

A dataset folder holds two tables, one row per student and one per class:

``students.csv``
    student_id, class_id, school_id, test_score, family_income, race, cohort
``classes.csv``
    class_id, school_id, n_students, class_size, teacher_has_ma

and, beside them, two optional JSON files: ``dataset.json`` (what the data are: name,
score units, which student columns are covariates, the race codes; real data have
one) and ``truth.json`` (what a simulation drew: seed, estimands, school effects and
configuration).  ``family_income`` is the one student column a dataset may lack, when
its ``dataset.json`` leaves it out of the covariates (real data may have no income):
:data:`STUDENT_CORE_COLUMNS` are the columns every dataset has, :data:`STUDENT_COLUMNS`
those the simulation writes.

A folder of many simulated datasets (``classsize simulate --format parquet``) holds
instead ``students.parquet`` and ``classes.parquet``, the same columns after a first
one, ``replicate``, that numbers the datasets, and one ``truth.json`` listing each
replicate's seed and school effects.

Codes: ``race`` is one of :data:`KNOWN_RACE_CODES` (or of the codes ``dataset.json``
lists), ``cohort`` one of :data:`COHORTS`, ``class_size`` one of :data:`CLASS_SIZES`.

Ids: students are numbered 0..n-1 in the order of the table, which is sorted by
class; SMALL classes are numbered from :data:`FIRST_SMALL_CLASS_ID` (7001), LARGE
classes from :data:`FIRST_LARGE_CLASS_ID` (8001; from a higher thousand when a design
can have more than 1000 SMALL classes, see
:func:`classsize.model.tables.first_large_class_id`), schools from
:data:`FIRST_SCHOOL_ID` (9001): the notebook's schemes.
"""

from __future__ import annotations

STUDENTS_FILE = "students.csv"
CLASSES_FILE = "classes.csv"
METADATA_FILE = "dataset.json"
TRUTH_FILE = "truth.json"
STUDENTS_PARQUET = "students.parquet"
CLASSES_PARQUET = "classes.parquet"
#: The list of a folder of CSV replicates (``replicate_0000`` ...), written last: the
#: replicates it names are complete.
REPLICATE_LIST = "replicates.json"

#: The columns of students.csv as the simulation writes them, in their order.
STUDENT_COLUMNS = ["student_id", "class_id", "school_id", "test_score", "family_income", "race", "cohort"]
#: The columns of students.csv every dataset must have (family_income: see the module docstring).
STUDENT_CORE_COLUMNS = ["student_id", "class_id", "school_id", "test_score", "race", "cohort"]
#: The columns of classes.csv, in their order.
CLASS_COLUMNS = ["class_id", "school_id", "n_students", "class_size", "teacher_has_ma"]

#: Race codes a dataset may use (the notebook's four, plus two that real data has).
KNOWN_RACE_CODES = ("WHITE", "BLACK", "HISPANIC", "ASIAN", "NATIVE_AMERICAN", "OTHER")
COHORTS = ("REGULAR", "EXPERIMENTAL")
CLASS_SIZES = ("SMALL", "LARGE")

FIRST_SMALL_CLASS_ID = 7001
FIRST_LARGE_CLASS_ID = 8001
FIRST_SCHOOL_ID = 9001
