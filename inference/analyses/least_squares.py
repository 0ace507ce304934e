"""Least squares of the score on the class type, with school fixed effects.

The estimator of Krueger (1999), Table V: for student :math:`i` of class :math:`c(i)`
in school :math:`s(i)`,

.. math::

    y_i = \\alpha_{s(i)} + \\beta\\,\\mathrm{small}_{c(i)} + \\gamma\\,\\mathrm{aide}_{c(i)}
          + \\delta\\,\\mathrm{ma}_{c(i)} + x_i^\\top \\theta + z_{c(i)}^\\top \\phi + \\varepsilon_i,

with ``small`` = (class_size == SMALL), ``aide`` the classes.csv column of that name
(when the table has one), ``ma`` = teacher_has_ma (when asked for), :math:`x_i` the
student covariates and :math:`z_c` the class covariates.  The school levels
:math:`\\alpha_s` are fixed effects (an intercept and a dummy for every school but the
first).  With the :math:`N \\times K` design matrix :math:`X`, the estimate is
:math:`\\hat b = (X^\\top X)^{-1} X^\\top y` and its residuals :math:`e = y - X \\hat b`.

Two standard errors are reported for each coefficient, the square roots of the
diagonal of

* the ordinary covariance :math:`s^2 (X^\\top X)^{-1}`, :math:`s^2 = e^\\top e / (N - K)`,
  right when the residuals are independent;
* the class-clustered (CR1) covariance

  .. math::

      \\frac{G}{G-1} \\frac{N-1}{N-K} (X^\\top X)^{-1}
      \\Big( \\sum_{g=1}^{G} X_g^\\top e_g e_g^\\top X_g \\Big) (X^\\top X)^{-1}

  over the :math:`G` classes (statsmodels ``cov_type="cluster"``), which allows the
  residuals of one class's students to be correlated, as they are when a class (its
  teacher) shifts every score in it.  Class size is assigned by class, so this is the
  standard error of the class-type effects; Krueger's standard errors allow for
  residuals correlated within a class.

:func:`krueger_rows` fits the kindergarten columns 2 and 4 of Table V on the STAR
tables (:mod:`classsize.inference.data.star`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from classsize.model.format import CLASSES_FILE, STUDENTS_FILE

from classsize.inference.data.checks import DataError, _is_finite_or_bool, to_covariate
from classsize.inference.data.dataset import LoadedData

#: Krueger (1999), Table V, kindergarten: (specification, term) -> (estimate, standard
#: error), in percentile points.  Only the cells checked against the paper are here.
KRUEGER_1999_TABLE_V = {
    ("krueger_column_2", "small"): (5.37, 1.26),
}

#: Krueger's kindergarten columns: student covariates, class covariates and whether the
#: teacher's master's degree is a regressor (the covariates are the STAR tables').
KRUEGER_COLUMNS = {
    2: ((), (), False),
    4: (("free_lunch", "white_or_asian", "girl"), ("teacher_white", "teacher_experience"), True),
}


@dataclass(frozen=True)
class LeastSquaresFit:
    """One least-squares fit: per named term (school effects left out), its
    ``estimate``, ``ordinary_se`` and class-clustered ``clustered_se``; the numbers of
    students, classes (the clusters) and schools fitted."""

    terms: tuple[str, ...]
    estimate: dict[str, float]
    ordinary_se: dict[str, float]
    clustered_se: dict[str, float]
    n_students: int
    n_classes: int
    n_schools: int

    def interval(self, term: str, z: float = 1.959964, clustered: bool = True) -> tuple[float, float]:
        """``estimate -/+ z`` standard errors of ``term`` (clustered or ordinary)."""
        se = (self.clustered_se if clustered else self.ordinary_se)[term]
        return self.estimate[term] - z * se, self.estimate[term] + z * se

    def table(self) -> pd.DataFrame:
        """One row per term: term, estimate, ordinary_se, clustered_se."""
        return pd.DataFrame({
            "term": list(self.terms),
            "estimate": [self.estimate[t] for t in self.terms],
            "ordinary_se": [self.ordinary_se[t] for t in self.terms],
            "clustered_se": [self.clustered_se[t] for t in self.terms],
        })


def _numeric(frame: pd.DataFrame, column: str, file: str | Path) -> np.ndarray:
    """``frame[column]`` as float64: booleans as 1/0, numbers as they are, text as
    :func:`~classsize.inference.data.checks.to_covariate` reads it.  A cell that is not
    a finite number or boolean is a :class:`DataError` naming ``file``, the column and
    the line of a file that has the table's rows in order under one header line."""
    if column not in frame.columns:
        raise DataError(file, f"required column is missing; the table has: {', '.join(frame.columns)}",
                        column=column)
    col = frame[column]
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        values = col.to_numpy(np.float64)
        bad = ~np.isfinite(values)
    else:
        text = col.astype(str).str.strip()
        bad = ~text.map(_is_finite_or_bool).to_numpy(bool)
        values = np.array([to_covariate(t) if not b else np.nan for t, b in zip(text, bad)])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(file, f"{col.iloc[k]!r} is not a finite number or a boolean", line=k + 2, row=k + 1,
                        column=column)
    return values


def _loaded(data: Any) -> LoadedData | tuple[pd.DataFrame, pd.DataFrame]:
    """``data`` read when it is a folder; a LoadedData or a pair of tables as it is."""
    if isinstance(data, (str, Path)):
        from classsize.inference.data.read import load_dataset

        return load_dataset(data)
    if isinstance(data, LoadedData):
        return data
    students, classes = data
    return students, classes


def least_squares(
    data: Any,
    student_covariates: Sequence[str] | None = None,
    class_covariates: Sequence[str] | None = None,
    with_ma: bool = False,
) -> LeastSquaresFit:
    """Least squares of ``test_score`` with school fixed effects (module docstring).

    Parameters
    ----------
    data
        A :class:`LoadedData`, a dataset folder, or a ``(students, classes)`` pair of
        tables with the columns of :mod:`classsize.model.format`.
    student_covariates, class_covariates
        Columns of the students and classes tables entering as regressors (booleans
        as 1/0; ``family_income`` as its logarithm).  None: a LoadedData's (or
        folder's) declared covariates, none for a pair of tables.  ``aide`` is a
        regressor whenever the classes table has that column, listed or not.
    with_ma
        Whether ``teacher_has_ma`` is a regressor.

    Returns
    -------
    LeastSquaresFit
        Terms ``small``, ``aide``, ``teacher_has_ma``, the other class covariates, then
        the student covariates, each present as asked.
    """
    import statsmodels.api as sm

    data = _loaded(data)
    if isinstance(data, LoadedData):
        students, classes = data.students, data.classes
        st_file, cl_file = data.source / STUDENTS_FILE, data.source / CLASSES_FILE
        declared = (data.student_covariates, data.class_covariate_names)
    else:
        students, classes = data
        st_file, cl_file = STUDENTS_FILE, CLASSES_FILE
        declared = ((), ())
    student_covariates = declared[0] if student_covariates is None else student_covariates
    class_covariates = declared[1] if class_covariates is None else class_covariates

    by_class = pd.Index(classes["class_id"]).get_indexer(students["class_id"])
    if (by_class < 0).any():
        k = int(np.flatnonzero(by_class < 0)[0])
        raise DataError(st_file, f"class {students['class_id'].iloc[k]} is not in {CLASSES_FILE}",
                        line=k + 2, row=k + 1, column="class_id")
    columns: dict[str, np.ndarray] = {"small": (classes["class_size"] == "SMALL").to_numpy(np.float64)[by_class]}
    class_terms = (["aide"] if "aide" in classes.columns else []) + (["teacher_has_ma"] if with_ma else [])
    class_terms += [c for c in class_covariates if c not in class_terms]
    student_terms = list(student_covariates)
    for name in student_terms:
        values = _numeric(students, name, st_file)
        if name == "family_income":
            name, values = "log_family_income", np.log(values)
        columns[name] = values
    for name in class_terms:
        columns[name] = _numeric(classes, name, cl_file)[by_class]
    terms = ("small",) + tuple(class_terms) + tuple(t for t in columns if t not in class_terms and t != "small")

    school = students["school_id"].to_numpy()
    fixed = pd.get_dummies(pd.Categorical(school), prefix="school", drop_first=True, dtype=np.float64)
    X = pd.concat([pd.DataFrame({t: columns[t] for t in terms}), fixed.reset_index(drop=True)], axis=1)
    X.insert(0, "const", 1.0)
    if int(np.linalg.matrix_rank(X.to_numpy())) < X.shape[1]:
        raise ValueError(f"the regressors {', '.join(terms)} and the school effects are collinear in these data")
    model = sm.OLS(_numeric(students, "test_score", st_file), X)
    ordinary = model.fit()
    clustered = model.fit(cov_type="cluster", cov_kwds={"groups": by_class})
    return LeastSquaresFit(
        terms=terms,
        estimate={t: float(ordinary.params[t]) for t in terms},
        ordinary_se={t: float(ordinary.bse[t]) for t in terms},
        clustered_se={t: float(clustered.bse[t]) for t in terms},
        n_students=len(students),
        n_classes=int(np.unique(by_class).size),
        n_schools=int(np.unique(school).size),
    )


def krueger_rows(source: Any = None, columns: Sequence[int] = (2, 4)) -> pd.DataFrame:
    """The least-squares rows of Krueger (1999) Table V's kindergarten ``columns`` on
    the STAR tables.

    Parameters
    ----------
    source
        A folder written by ``classsize star``, its :class:`LoadedData`, the
        ``(students, classes)`` of :func:`~classsize.inference.data.star.convert_star`,
        or None to convert the sources (needs the ``star`` extra).
    columns
        Table V's columns to fit (2: small and aide; 4: also free lunch, white or
        Asian, girl, a white teacher, the teacher's experience and master's degree).

    Returns
    -------
    pandas.DataFrame
        Columns specification (``krueger_column_2``, ...), term, estimate, ordinary_se,
        clustered_se; with the students, classes and schools fitted in ``attrs``.
    """
    if source is None:
        from classsize.inference.data.star import convert_star

        source = convert_star()[:2]
    tables = _loaded(source)
    frames, sizes = [], {}
    for column in columns:
        if column not in KRUEGER_COLUMNS:
            raise ValueError(f"columns must be among {', '.join(map(str, KRUEGER_COLUMNS))} (got {column!r})")
        student_covs, class_covs, with_ma = KRUEGER_COLUMNS[column]
        fit = least_squares(tables, student_covs, class_covs, with_ma=with_ma)
        frame = fit.table()
        frame.insert(0, "specification", f"krueger_column_{column}")
        frames.append(frame)
        sizes[f"krueger_column_{column}"] = (fit.n_students, fit.n_classes, fit.n_schools)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["students_classes_schools"] = sizes
    return out
