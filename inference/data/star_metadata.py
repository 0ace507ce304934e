"""The ``dataset.json`` of the Tennessee STAR tables, and the summary ``classsize star`` prints.

:func:`star_metadata` records how :func:`classsize.inference.data.star.convert_star`
made each column (``derivation``), what it kept and dropped (``counts``), the naive
comparison of class sizes (``summary``), the join of the two sources and its checks
(``join``), the teacher ids it repaired and those that are probably two classes
(``teacher_id_repair``), and the data's sources and the studies behind them
(``sources``).  It declares the fit's specification: ``specification``
(``"krueger_column_2"`` or ``"krueger_column_4"``), that column's
``student_covariates`` and ``class_covariates``, and ``class_effect_sd: "free"`` (a
class effect per teacher, its sd sampled) and ``score_scale`` (:data:`STAR_SCORE_SCALE`:
the priors on the percentile scale).  :func:`summary_text` is the few lines of
it the command prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from classsize.model.format import KNOWN_RACE_CODES

NAME = "Tennessee STAR, kindergarten"
SCORE_UNITS = "percentile points"

#: The design's largest class of each type (small 13-17, regular 22-25 students); an id
#: with more than 1.5 times as many students is reported as probably two classes.
_DESIGN_MAX_SIZE = {"small": 17, "regular": 25, "regular+aide": 25}

SOURCES = [
    {
        "dataset": "STAR",
        "r_package": "AER",
        "use": "student records: class type, reading and math scaled scores, free lunch, "
        "school, student gender and ethnicity, teacher degree, ethnicity and experience",
        "citation": "Kleiber, C. and Zeileis, A. (2008). Applied Econometrics with R. "
        "Springer. R package AER.",
    },
    {
        "dataset": "star",
        "r_package": "mlmRev",
        "use": "the teacher id of each student's kindergarten class",
        "citation": "Bates, D., Maechler, M. and Pinheiro, J. R package mlmRev: "
        "Examples from Multilevel Modelling Software Review.",
    },
    {
        "study": "Word, E. et al. (1990). Student/Teacher Achievement Ratio (STAR): "
        "Tennessee's K-3 Class Size Study. Final Summary Report 1985-1990. "
        "Tennessee State Department of Education.",
    },
    {
        "score_metric": "Krueger, A. B. (1999). Experimental Estimates of Education "
        "Production Functions. Quarterly Journal of Economics 114(2), 497-532.",
    },
]


def _class_type(kept: pd.DataFrame) -> pd.Series:
    return kept["stark"].map({"small": "small", "regular": "regular", "regular+aide": "regular_aide"})


#: The STAR scores' unit against the simulation's (dataset.json ``score_scale``): the
#: within-class score sd of the tables, 21.7 percentile points, over the simulation's
#: 7.4 points (``Config()``), rounded.
STAR_SCORE_SCALE = 3.0


def within_class_sd(students) -> float:
    """The root mean square of the scores about their class means."""
    centred = students["test_score"] - students.groupby("class_id")["test_score"].transform("mean")
    return float((centred**2).mean() ** 0.5)


def star_metadata(kept, classes, teachers, fragments, dropped, join, krueger_column: int,
                  specification: dict[str, list[str]], fragment_max_students: int) -> dict[str, Any]:
    """The dataset.json of the converted tables (see the module docstring); the
    arguments are the steps of :func:`~classsize.inference.data.star.convert_star`:
    the students ``kept``, the ``classes`` table, the source ``teachers`` and their
    ``fragments`` (re-attached with at most ``fragment_max_students`` students), the
    ``dropped`` counts by reason, the ``join`` counts, and Krueger's column
    ``krueger_column`` with its ``specification`` (student and class covariates)."""
    race_codes = [c for c in KNOWN_RACE_CODES if c in set(kept["race"])]
    small = classes["class_size"] == "SMALL"
    ctype = _class_type(kept)
    class_type = np.where(small, "small", np.where(classes["aide"], "regular_aide", "regular"))
    mean_by_type = kept.groupby(ctype)["test_score"].mean()
    mean_by_size = kept.groupby("class_size")["test_score"].mean()
    design_max = teachers["stark"].map(_DESIGN_MAX_SIZE)
    merged_ids = teachers[teachers["n_source"] > 1.5 * design_max]
    repaired = {fragments.get(int(t), int(t)) for t in teachers.index}
    left_out = sorted(repaired - set(classes["class_id"].tolist()))
    counts = {
        "students_in_source": join["aer_kindergarten_students"],
        "students_kept": int(len(kept)),
        "students_dropped": int(sum(dropped.values())),
        "dropped_by_reason": dropped,
        "students_by_class_type": {k: int(v) for k, v in ctype.value_counts().sort_index().items()},
        "teacher_ids_in_source": int(len(teachers)),
        "teacher_ids_reattached": len(fragments),
        "classes_in_source": len(repaired),
        "classes": int(len(classes)),
        "classes_by_class_type": {k: int(v) for k, v in pd.Series(class_type).value_counts().sort_index().items()},
        "schools": int(classes["school_id"].nunique()),
        "small_class_share": round(float(small.mean()), 4),
        "small_student_share": round(float((kept["class_size"] == "SMALL").mean()), 4),
    }
    summary = {
        "mean_percentile_by_class_size": {k: round(float(v), 3) for k, v in mean_by_size.items()},
        "mean_percentile_by_class_type": {k: round(float(v), 3) for k, v in mean_by_type.items()},
        "naive_difference_small_minus_large": round(float(mean_by_size["SMALL"] - mean_by_size["LARGE"]), 3),
    }
    derivation = {
        "student_id": "0..n-1 in order of class_id, then of the AER STAR student id.",
        "class_id": "The mlmRev star teacher id (tch) of the student's kindergarten class; "
        f"{len(fragments)} ids with one to three students and a missing teacher race were "
        "re-attached to the only teacher of the same school, class type, degree, "
        "career-ladder step and experience (see teacher_id_repair).",
        "school_id": "The kindergarten school id (AER schoolidk, equal to mlmRev sch), 1-79.",
        "test_score": "Mean of the reading and math percentile ranks; each subject's "
        "scaled score (readk, mathk) is ranked among all kindergarten students of regular "
        "and regular-with-aide classes who took that test (ties count half), in 0-100.",
        "race": "AER ethnicity: cauc WHITE, afam BLACK, hispanic HISPANIC, asian ASIAN, "
        "amindian NATIVE_AMERICAN, other OTHER.",
        "free_lunch": "AER lunchk: True for free lunch, False for non-free.",
        "white_or_asian": "True when race is WHITE or ASIAN (AER ethnicity cauc or asian).",
        "girl": "AER gender: True for female, False for male.",
        "cohort": "EXPERIMENTAL for every student: STAR randomized students to class types "
        "within schools.",
        "n_students": "The number of kept students of the class.",
        "class_size": "AER stark: SMALL for small classes; LARGE for regular and "
        "regular-with-aide classes alike (the column aide tells them apart).",
        "teacher_has_ma": "AER degreek: True for master, master+ and specialist, False for bachelor.",
        "aide": "True for the regular-with-aide classes (AER stark regular+aide).",
        "teacher_white": "AER tethnicityk of the class's teacher: True for cauc, False for afam; "
        "the students of a class whose teacher race is missing are left out "
        "(dropped_by_reason teacher_race_missing).",
        "teacher_experience": "AER experiencek of the class's teacher: years of teaching "
        "experience.",
    }
    return {
        "name": NAME,
        "score_units": SCORE_UNITS,
        "score_range": [0, 100],
        "specification": f"krueger_column_{krueger_column}",
        "specification_reason": (
            "The covariates of Krueger (1999) Table V, kindergarten, column "
            f"({krueger_column}) beside its school fixed effects: "
            + ("none for the students, the aide for the classes."
               if krueger_column == 2 else
               "free lunch, white or Asian and girl for the students; the aide, a white "
               "teacher and the teacher's experience for the classes.")
            + " The teacher's master's degree (teacher_has_ma) is in every fit of the model."
        ),
        "student_covariates": list(specification["student_covariates"]),
        "class_covariates": list(specification["class_covariates"]),
        "class_effect_sd": "free",
        "class_effect_sd_reason": (
            "Kindergarten classes were assigned whole, and the students of a class share a "
            "teacher: each class gets an effect, its sd sampled."
        ),
        "score_scale": STAR_SCORE_SCALE,
        "score_scale_reason": (
            f"Percentile points: the within-class score sd is {within_class_sd(kept):.1f}, about "
            f"{STAR_SCORE_SCALE:g} times the simulation's (7.4), so every prior in score points is "
            f"{STAR_SCORE_SCALE:g} times wider (the school effects' range among them)."
        ),
        "optional_covariates": ["race"],
        "ability": "normal",
        "ability_reason": (
            "Averaged percentile ranks are not a uniform box around a linear predictor: the "
            "analyses use the normal alternative for the score's unexplained part."
        ),
        "race_codes": race_codes,
        "description": (
            "The kindergarten year (1985-86) of Project STAR: students and teachers of "
            "79 Tennessee schools randomly assigned, within school, to small classes, "
            "regular classes or regular classes with a full-time aide. Classes are "
            "teachers. There is no family income in these data; free-lunch status is "
            "the measure of family circumstances."
        ),
        "derivation": derivation,
        "counts": counts,
        "summary": summary,
        "join": {
            **join,
            "key": "AER STAR row name == mlmRev star id (student id)",
            "checked": "one to one in kindergarten; school, class type, reading and math "
            "scores, teacher experience and lunch status agree on every matched student",
        },
        "teacher_id_repair": {
            "rule": "An mlmRev teacher id is one per distinct school, class type, degree, "
            "career-ladder step, experience and teacher race. An id with a missing teacher "
            f"race, at most {fragment_max_students} kindergarten students and exactly one "
            "teacher in its school with the same class type, degree, career-ladder step "
            "and experience is a fragment of that teacher's class and joins it.",
            "reattached": {str(k): v for k, v in sorted(fragments.items())},
            "probably_two_classes_rule": "more kindergarten students than 1.5 times the "
            "design's largest class of its type (small 17, regular 25)",
            "probably_two_classes": {
                str(int(t)): f"{int(r.n_source)} students in a {r.stark} class: most likely two "
                "classes whose teachers share every recorded characteristic; kept as one"
                for t, r in merged_ids.iterrows()
            },
            "note": f"{len(teachers)} source ids - {len(fragments)} fragments = "
            f"{len(teachers) - len(fragments)} classes, i.e. "
            f"{len(teachers) - len(fragments) + len(merged_ids)} real classes counting the "
            "merged pairs (about 325 kindergarten classes are reported for STAR); "
            f"{len(left_out)} of them with no kept student left out "
            f"({', '.join(map(str, left_out)) or 'none'}), leaving {len(classes)}.",
        },
        "sources": SOURCES,
    }


def summary_text(metadata: dict[str, Any]) -> str:
    """The lines ``classsize star`` prints: what was kept and dropped, the classes and
    schools, the mean percentile by class size and by class type, and the
    specification declared."""
    c, s = metadata["counts"], metadata["summary"]
    dropped = ", ".join(f"{k} {v}" for k, v in c["dropped_by_reason"].items() if v)
    lines = [
        f"{metadata['name']}: {c['students_kept']} of {c['students_in_source']} students kept "
        f"({c['students_dropped']} dropped: {dropped or 'none'})",
        f"{c['classes']} classes in {c['schools']} schools; SMALL: "
        f"{c['small_class_share']:.1%} of classes, {c['small_student_share']:.1%} of students",
        "mean percentile by class size: "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["mean_percentile_by_class_size"].items())
        + f" (naive SMALL - LARGE: {s['naive_difference_small_minus_large']:+.1f})",
    ]
    lines.append(
        "mean percentile by class type: "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["mean_percentile_by_class_type"].items())
    )
    lines.append(
        f"specification {metadata['specification']}: student covariates "
        f"{', '.join(metadata['student_covariates']) or 'none'}; class covariates "
        f"{', '.join(metadata['class_covariates']) or 'none'}; class effects "
        f"{metadata['class_effect_sd']}"
    )
    return "\n".join(lines)
