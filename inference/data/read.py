"""Reading one dataset folder of the class-size experiment.

A folder holds the two tables of :mod:`classsize.model.format`, ``students.csv`` and
``classes.csv``, as written by ``classsize simulate`` or by the notebook, and,
optionally:

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
finite, ``family_income > 0``, codes are known); ``student_id`` and ``class_id``
are unique; every student's class is in ``classes.csv`` and in the same school;
every class has students and its ``n_students`` is their number.

The cell rules, the reading of a CSV file and the pandera checks are in
:mod:`classsize.inference.data.checks` (with :class:`DataError`); the checks of the
tables and JSON files, shared with the stacked reader, in
:mod:`classsize.inference.data.folder`; :class:`LoadedData` is in
:mod:`classsize.inference.data.dataset`.  This module names both, so
``from classsize.inference.data.read import DataError, LoadedData, load_dataset`` works.
"""

from __future__ import annotations

from pathlib import Path

from classsize.model.format import CLASSES_FILE, STUDENTS_FILE

from classsize.inference.data.checks import DataError, read_csv
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
