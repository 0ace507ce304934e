"""Conversion between a model trace and the two tables of the notebook
(:mod:`classsize.model.format`: the columns, codes and id schemes).

Students are sorted by class_id (in random order within a class, as the notebook
shuffles before sorting) and numbered 0..n-1 in that order.  Class slots become class
ids by :func:`slot_to_class_id` (SMALL slots from ``FIRST_SMALL_CLASS_ID``, LARGE slots
from :func:`first_large_class_id`); school ``k`` is school ``FIRST_SCHOOL_ID + k``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .design import Design
from .format import FIRST_LARGE_CLASS_ID, FIRST_SCHOOL_ID, FIRST_SMALL_CLASS_ID

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
#: Sites a draw holds only with class effects.
CLASS_SITES = ("class_effect_sd", "class_effect")


def first_large_class_id(design: Design) -> int:
    """8001, the notebook's first LARGE class id, unless a design can have more than 1000
    SMALL classes (over 15,000 SMALL students): the notebook's ids would then collide,
    so LARGE classes start at the next thousand above every possible SMALL id."""
    room = FIRST_LARGE_CLASS_ID - FIRST_SMALL_CLASS_ID
    return FIRST_SMALL_CLASS_ID + room * max(1, -(-design.max_small_classes // room))


def slot_to_class_id(slot: np.ndarray, design: Design) -> np.ndarray:
    slot = np.asarray(slot)
    return np.where(
        slot < design.max_small_classes,
        FIRST_SMALL_CLASS_ID + slot,
        first_large_class_id(design) + slot - design.max_small_classes,
    ).astype(np.int64)


def used_slots(n_small_classes, n_large_classes, design: Design) -> np.ndarray:
    """The class slots a draw with that many SMALL and LARGE classes uses, in class-id order."""
    return np.concatenate([np.arange(int(n_small_classes)), design.max_small_classes + np.arange(int(n_large_classes))])


def tables_from_draw(
    draw: Mapping[str, np.ndarray], design: Design, shuffle_seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables of one forward draw of the model (one dataset, not batched)."""
    d = {k: np.asarray(draw[k]) for k in DRAW_SITES}
    n = design.n_students
    slots = used_slots(d["n_small_classes"], d["n_large_classes"], design)
    class_id = slot_to_class_id(slots, design)
    school_id = FIRST_SCHOOL_ID + d["school"][slots].astype(np.int64)
    n_students = np.bincount(d["class_of_student"], minlength=slots.max() + 1)[slots]
    classes = pd.DataFrame(
        {
            "class_id": class_id,
            "school_id": school_id,
            "n_students": n_students.astype(np.int64),
            "class_size": np.where(slots < design.max_small_classes, "SMALL", "LARGE"),
            "teacher_has_ma": d["teacher_has_ma"][slots].astype(bool),
        }
    )
    student_slot = d["class_of_student"]
    race_codes = np.asarray(design.race_codes)
    cohort = np.where(np.arange(n) < design.n_regular, "REGULAR", "EXPERIMENTAL")
    order = np.random.default_rng(shuffle_seed).permutation(n)
    order = order[np.argsort(student_slot[order], kind="stable")]
    students = pd.DataFrame(
        {
            "student_id": np.arange(n, dtype=np.int64),
            "class_id": slot_to_class_id(student_slot[order], design),
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


def class_effects_from_draw(draw: Mapping[str, np.ndarray], design: Design) -> dict[str, float] | None:
    """The realised class effects of one draw by class id (truth.json's
    ``class_effects``); None when the draw has none (``class_effect_sd`` pinned to 0)."""
    if "class_effect" not in draw:
        return None
    slots = used_slots(draw["n_small_classes"], draw["n_large_classes"], design)
    effect = np.asarray(draw["class_effect"])
    return {str(c): float(effect[s]) for c, s in zip(slot_to_class_id(slots, design), slots)}


def observed_from_draw(draw: Mapping, design: Design, cohort: str | None = None):
    """Encode a forward draw of the model directly as an :class:`~classsize.model.pieces.Observed`.

    No tables and no CSV round trip: the arrays keep the model's padded ``classes``
    plate (``design.max_small_classes + design.max_large_classes`` slots, SMALL slots
    first), so every draw of one ``design`` gives arrays of the same shapes and draws
    can be stacked and fitted in one vectorised call.  ``class_used`` marks the slots
    the draw uses; with ``cohort`` ("REGULAR" or "EXPERIMENTAL") only that cohort's
    students are kept (the first ``n_regular`` students are REGULAR, the rest
    EXPERIMENTAL) and a slot is used only when it holds at least one of them.  Schools
    keep their indices ``0..n_schools-1`` (a school may then hold no students of the
    cohort: see the model's conditioning for what that requires).

    ``draw`` holds the sites of :data:`DRAW_SITES` for one dataset, or for a stack of
    datasets along a leading axis (the output of ``draw_many``); the result then has
    the same leading axis.  The arrays are JAX arrays with the dtypes of
    :meth:`classsize.inference.data.dataset.LoadedData.observed` (indices int32, floats float64).
    This function is traceable, so it can also be called inside ``jax.jit``/``jax.vmap``.
    """
    import jax
    import jax.numpy as jnp

    from .pieces import Observed, scaled_log_income

    if cohort not in (None, "REGULAR", "EXPERIMENTAL"):
        raise ValueError(f"cohort must be None, 'REGULAR' or 'EXPERIMENTAL', got {cohort!r}")
    d = {k: jnp.asarray(draw[k]) for k in DRAW_SITES}
    if d["test_score"].ndim == 2:
        return jax.vmap(lambda one: observed_from_draw(one, design, cohort))(d)
    if d["test_score"].ndim != 1 or d["test_score"].shape[0] != design.n_students:
        raise ValueError(
            f"draw['test_score'] has shape {d['test_score'].shape}; expected ({design.n_students},) "
            f"or (datasets, {design.n_students}) for this design"
        )
    n_slots = design.max_small_classes + design.max_large_classes
    if cohort is None:
        students = slice(0, design.n_students)
    elif cohort == "REGULAR":
        students = slice(0, design.n_regular)
    else:
        students = slice(design.n_regular, design.n_students)
    index = jnp.arange(design.n_students)[students]
    slot = d["class_of_student"][students].astype(jnp.int32)
    slot_is_small = jnp.arange(n_slots) < design.max_small_classes
    slot_used = jnp.where(
        slot_is_small,
        jnp.arange(n_slots) < d["n_small_classes"],
        jnp.arange(n_slots) - design.max_small_classes < d["n_large_classes"],
    )
    if cohort is not None:
        slot_used = slot_used & (jnp.zeros(n_slots, jnp.int32).at[slot].add(1) > 0)
    return Observed(
        race=d["race"][students].astype(jnp.int32),
        income_scaled=jnp.asarray(scaled_log_income(d["family_income"][students], design), dtype=jnp.float64),
        is_experimental=index >= design.n_regular,
        small_class=d["small_class"][students].astype(jnp.int32),
        class_of_student=slot,
        test_score=d["test_score"][students].astype(jnp.float64),
        class_is_small=slot_is_small.astype(jnp.int32),
        teacher_has_ma=d["teacher_has_ma"].astype(jnp.int32),
        school_of_class=d["school"].astype(jnp.int32),
        class_used=slot_used,
    )
