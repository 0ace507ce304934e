"""The checked dataset and its encodings.

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
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

from classsize.model import Observed
from classsize.model.design import Design
from classsize.model.format import COHORTS
from classsize.model.pieces import scaled_log_income


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
