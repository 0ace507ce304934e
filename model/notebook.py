"""The original notebook's simulation, step for step: the fidelity oracle.

:func:`simulate_notebook` runs the notebook's numpy/pandas procedure with numpy's
legacy global random number generator: ``np.random.seed(seed)`` and then the same
``np.random`` calls, with the same arguments, in the same order as the notebook's
cells -- including the shuffle ``stu_df.sample(frac=1)`` and the (non-stable)
``sort_values(by=['class_id'])`` that fix the order of the students.  With
``Config()`` and ``seed=100`` it gives the notebook's tables value for value and
prints (into ``Dataset.extra["printed"]``) the notebook's three lines::

    SMALL: 2294 students, 152 classes, class_id range: 7001.0-7152.0
    LARGE: 3706 students, 123 classes, class_id range: 8001.0-8123.0
    Test score range: 41.197146772054566-97.66281600969505

It is kept as an oracle, not as the simulator: the NumPyro model
(:func:`classsize.model.class_size_experiment`) is the simulator, and the tests check
that the two draw from the same distribution (``tests/test_equivalence.py``) and that
this engine is the notebook (``tests/test_notebook_engine.py``).  Use it with
``classsize simulate --engine notebook``.

The notebook's numbers are read from the :class:`~classsize.model.Config`; the
defaults are the notebook's.  Where the notebook is specific, it is generalised as
follows, each rule reducing to the notebook's own arithmetic on the defaults:

* the race shift of the REGULAR cohort's assignment rule (the notebook's
  ``- 0.25*(race=='WHITE') - 0.3*(race=='ASIAN')``) is
  ``+ shift*(race==code)`` for each ``code`` of ``config.race_codes`` that
  ``config.regular_small_race_shift`` names, in ``race_codes`` order;
* a class size holding some students but fewer than one class's target size gets
  one class, as in the model (the notebook divides by zero there); a class size
  holding no student gets no class, as in the notebook;
* every school ``9001 + k`` gets the ``k``-th school effect drawn (the notebook
  assigns them to the schools that hold classes, in order, and fails when a school
  holds none; when all hold classes, which is the notebook's case, the two agree);
* when ``config.score_noise_sd > 0`` (the notebook has no noise) a normal noise is
  drawn right after the scores, so a noise-free configuration draws exactly the
  notebook's numbers.

At the end ``class_id`` (a float in the notebook, an artefact of pandas filling a new
column through ``.loc``) and ``school_id`` become int64 and the students are
renumbered on a fresh index; nothing else is changed.  The state of numpy's global
generator is saved before and restored after, so callers are not disturbed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import Config
from .format import CLASS_COLUMNS, FIRST_LARGE_CLASS_ID, FIRST_SCHOOL_ID, FIRST_SMALL_CLASS_ID, STUDENT_COLUMNS
from .simulate import Dataset


def simulate_notebook(config: Config = Config(), seed: int = 100) -> Dataset:
    """One dataset drawn by the notebook's own procedure (see the module docstring).

    Returns a :class:`Dataset` with the students and classes tables, the truth (the
    school effects drawn and the estimands) and ``extra["printed"]``, the three
    lines the notebook prints.  The notebook's process has no class effects: a
    configuration with ``class_effect_sd > 0`` or a normal ability is refused (ValueError).
    """
    if config.class_effect_sd > 0:
        raise ValueError("the notebook engine has no class effects (class_effect_sd must be 0; "
                         "the model engine draws them)")
    if config.ability_shape != "uniform":
        raise ValueError("the notebook engine draws a uniform ability (ability_shape must be \"uniform\"; "
                         "the model engine draws a normal one)")
    state = np.random.get_state()
    try:
        return _notebook(config, int(seed))
    finally:
        np.random.set_state(state)


def _notebook(config: Config, seed: int) -> Dataset:
    # In [1]
    np.random.seed(seed)

    # In [2]: simulation parameters and exogenous factors
    n_reg = config.n_regular
    n_exp = config.n_experimental
    n_stu = n_reg + n_exp

    race_codes = list(config.race_codes)
    race_probs = list(config.race_probs)
    race = np.random.choice(race_codes, size=n_stu, replace=True, p=race_probs)

    fam_inc_min = config.income_min
    fam_inc_max = config.income_max
    incdenom = np.log(fam_inc_max) - np.log(fam_inc_min)
    fam_inc = np.random.randint(low=fam_inc_min, high=fam_inc_max, size=n_stu)

    ability_u = np.random.uniform(low=0, high=config.ability_uniform_width, size=n_stu)
    ability = (
        config.ability_income_weight * (np.log(fam_inc) - np.log(fam_inc_min)) / incdenom
        + ability_u
    )

    prob_small_reg = (
        config.regular_small_intercept
        + config.regular_small_income * (np.log(fam_inc) - np.log(fam_inc_min)) / incdenom
    )
    for code in config.race_codes:
        if code in config.regular_small_race_shift:
            prob_small_reg = prob_small_reg + config.regular_small_race_shift[code] * (race == code)
    prob_small_reg = prob_small_reg + config.regular_small_ability * ability_u

    prob_small_exp = config.experimental_p_small
    class_sz_small = config.small_class_size
    class_sz_large = config.large_class_size
    ma_small = config.p_ma_small
    ma_large = config.p_ma_large
    n_schools = config.n_schools
    school_effect_range = config.school_effect_range
    test_coefs = [
        config.score_intercept,
        config.score_ability_weight,
        config.small_class_direct_effect,
        config.teacher_ma_effect,
        config.score_school_weight,
    ]

    # In [3]: the student table
    stu_df = pd.DataFrame.from_dict(
        {"family_income": fam_inc, "race": race, "ability": ability}
    )
    stu_df["cohort"] = "EXPERIMENTAL"
    stu_df.loc[0 : n_reg - 1, "cohort"] = "REGULAR"

    # In [4]: REGULAR cohort, assignment depends on income, race and ability
    assign = np.random.uniform(size=n_stu) < prob_small_reg
    stu_df["class_size"] = "LARGE"
    stu_df.loc[assign & (stu_df["cohort"] == "REGULAR"), "class_size"] = "SMALL"

    # In [5]: EXPERIMENTAL cohort, assignment is random
    assign = np.random.uniform(size=n_stu) < prob_small_exp
    stu_df.loc[assign & (stu_df["cohort"] == "EXPERIMENTAL"), "class_size"] = "SMALL"

    # In [6]: allocate students to classes, round robin
    n_stu_small = np.sum(stu_df["class_size"] == "SMALL")
    n_stu_large = np.sum(stu_df["class_size"] == "LARGE")

    n_classes_small = int(n_stu_small / class_sz_small)
    n_classes_large = int(n_stu_large / class_sz_large)
    if n_stu_small > 0:
        n_classes_small = max(n_classes_small, 1)
    if n_stu_large > 0:
        n_classes_large = max(n_classes_large, 1)

    small = stu_df["class_size"] == "SMALL"

    stu_df["ord"] = 0
    stu_df.loc[small, "ord"] = np.arange(n_stu_small)
    stu_df.loc[~small, "ord"] = np.arange(n_stu_large)

    stu_df.loc[small, "class_id"] = FIRST_SMALL_CLASS_ID + (
        stu_df.loc[small, "ord"] % max(n_classes_small, 1)
    )
    stu_df.loc[~small, "class_id"] = FIRST_LARGE_CLASS_ID + (
        stu_df.loc[~small, "ord"] % max(n_classes_large, 1)
    )

    printed = [
        f"SMALL: {n_stu_small} students, {n_classes_small} classes, class_id range: "
        f"{stu_df.loc[small, 'class_id'].min()}-{stu_df.loc[small, 'class_id'].max()}",
        f"LARGE: {n_stu_large} students, {n_classes_large} classes, class_id range: "
        f"{stu_df.loc[~small, 'class_id'].min()}-{stu_df.loc[~small, 'class_id'].max()}",
    ]

    # In [7]: the class table, teachers' MA, schools
    cls_df = (
        stu_df.groupby(["class_id", "class_size"]).agg(n_students=("ord", "count")).reset_index()
    )
    stu_df = stu_df.drop(labels="class_size", axis=1)

    n_cls = len(cls_df)
    small = cls_df["class_size"] == "SMALL"
    u = np.random.uniform(size=n_cls)

    cls_df["teacher_has_ma"] = False
    cls_df.loc[small, "teacher_has_ma"] = u[small] < ma_small
    cls_df.loc[~small, "teacher_has_ma"] = u[~small] < ma_large

    cls_df["school_id"] = FIRST_SCHOOL_ID + np.random.randint(low=0, high=n_schools, size=n_cls)

    # In [8]: school effects (one per school, school 9001 + k gets the k-th draw)
    effects = np.random.uniform(low=-school_effect_range, high=school_effect_range, size=n_schools)
    counts = cls_df.groupby("school_id").agg(n_classes=("class_id", "count")).reset_index()
    sch_df = pd.DataFrame(
        {"school_id": FIRST_SCHOOL_ID + np.arange(n_schools, dtype=np.int64), "school_effect": effects}
    )
    sch_df = counts.merge(sch_df, on="school_id", how="left")[["school_id", "n_classes", "school_effect"]]

    # In [9]: test scores
    stu_df = stu_df.merge(cls_df, on="class_id", how="left")
    stu_df = stu_df.merge(sch_df, on="school_id", how="left")

    stu_df["test_score"] = (
        test_coefs[0]
        + test_coefs[1] * stu_df["ability"]
        + test_coefs[2] * (stu_df["class_size"] == "SMALL")
        + test_coefs[3] * (stu_df["teacher_has_ma"])
        + test_coefs[4] * (stu_df["school_effect"])
    )
    if config.score_noise_sd > 0:
        stu_df["test_score"] = stu_df["test_score"] + np.random.normal(
            0.0, config.score_noise_sd, size=n_stu
        )

    printed.append(f"Test score range: {stu_df['test_score'].min()}-{stu_df['test_score'].max()}")

    # In [10]: prepare output
    stu_df = stu_df.sample(frac=1).reset_index(drop=True)
    stu_df = stu_df.sort_values(by=["class_id"], ascending=True)
    stu_df["student_id"] = np.arange(n_stu)

    students = stu_df[STUDENT_COLUMNS].reset_index(drop=True)
    classes = cls_df[CLASS_COLUMNS].reset_index(drop=True)
    students = students.astype({"student_id": np.int64, "class_id": np.int64, "school_id": np.int64})
    classes = classes.astype(
        {"class_id": np.int64, "school_id": np.int64, "n_students": np.int64, "teacher_has_ma": bool}
    )

    truth = {
        "seed": seed,
        "engine": "notebook",
        "estimands": config.estimands(),
        "school_effects": {
            str(FIRST_SCHOOL_ID + k): float(v) for k, v in enumerate(effects)
        },
        "config": config.to_dict(),
    }
    return Dataset(students, classes, truth, config, seed, extra={"printed": printed})
