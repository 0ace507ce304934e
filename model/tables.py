"""Conversion between a model trace and the two tables of the notebook.

``students.csv``: student_id, class_id, school_id, test_score, family_income, race, cohort
``classes.csv``:  class_id, school_id, n_students, class_size, teacher_has_ma

Students are sorted by class_id (in random order within a class, as the notebook
shuffles before sorting) and numbered 0..n-1 in that order.  SMALL classes are
numbered from 7001, LARGE classes from 8001, schools from 9001.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .config import (
    FIRST_LARGE_CLASS_ID,
    FIRST_SCHOOL_ID,
    FIRST_SMALL_CLASS_ID,
    Config,
)

STUDENT_COLUMNS = ["student_id", "class_id", "school_id", "test_score", "family_income", "race", "cohort"]
CLASS_COLUMNS = ["class_id", "school_id", "n_students", "class_size", "teacher_has_ma"]

#: Model sites a draw must hold to become tables.
DRAW_SITES = (
    "race",
    "family_income",
    "small_class",
    "class_of_student",
    "n_small_classes",
    "n_large_classes",
    "teacher_has_ma",
    "school",
    "school_effect",
    "test_score",
)


def slot_to_class_id(slot: np.ndarray, config: Config) -> np.ndarray:
    slot = np.asarray(slot)
    return np.where(
        slot < config.max_small_classes,
        FIRST_SMALL_CLASS_ID + slot,
        FIRST_LARGE_CLASS_ID + slot - config.max_small_classes,
    ).astype(np.int64)


def tables_from_draw(
    draw: Mapping[str, np.ndarray], config: Config, shuffle_seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables of one forward draw of the model (one dataset, not batched)."""
    d = {k: np.asarray(draw[k]) for k in DRAW_SITES}
    n = config.n_students
    n_small, n_large = int(d["n_small_classes"]), int(d["n_large_classes"])
    slots = np.concatenate(
        [np.arange(n_small), config.max_small_classes + np.arange(n_large)]
    )
    class_id = slot_to_class_id(slots, config)
    school_id = FIRST_SCHOOL_ID + d["school"][slots].astype(np.int64)
    n_students = np.bincount(d["class_of_student"], minlength=slots.max() + 1)[slots]
    classes = pd.DataFrame(
        {
            "class_id": class_id,
            "school_id": school_id,
            "n_students": n_students.astype(np.int64),
            "class_size": np.where(slots < config.max_small_classes, "SMALL", "LARGE"),
            "teacher_has_ma": d["teacher_has_ma"][slots].astype(bool),
        }
    )
    student_slot = d["class_of_student"]
    race_codes = np.asarray(config.race_codes)
    cohort = np.where(np.arange(n) < config.n_regular, "REGULAR", "EXPERIMENTAL")
    order = np.random.default_rng(shuffle_seed).permutation(n)
    order = order[np.argsort(student_slot[order], kind="stable")]
    students = pd.DataFrame(
        {
            "student_id": np.arange(n, dtype=np.int64),
            "class_id": slot_to_class_id(student_slot[order], config),
            "school_id": FIRST_SCHOOL_ID + d["school"][student_slot[order]].astype(np.int64),
            "test_score": d["test_score"][order].astype(np.float64),
            "family_income": d["family_income"][order].astype(np.int64),
            "race": race_codes[d["race"][order]],
            "cohort": cohort[order],
        }
    )
    return students, classes


def school_effects_from_draw(draw: Mapping[str, np.ndarray]) -> dict[str, float]:
    eff = np.asarray(draw["school_effect"])
    return {str(FIRST_SCHOOL_ID + k): float(v) for k, v in enumerate(eff)}
