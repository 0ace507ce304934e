r"""Shape buckets: the sizes a compiled program is built for.

JAX compiles one program per shape of its arguments, for 10-40 s on two cores, and
its persistent cache (:mod:`classsize.model.jaxcache`) returns a program only for the
exact shapes it was built for.  Two datasets of one design differ in their number of
classes and in the sizes of their largest school, class and race group, so each would
compile its own sampler.  Every such size is therefore rounded up to a **bucket**
(:func:`bucket`) and the arrays padded to it, masked exactly:

* class slots past the dataset's classes have ``class_used`` False: the model masks
  their MA and school sites (:func:`pad_class_slots`);
* a group layout's padded members are not valid: no extreme changes
  (:func:`classsize.model.pilot.padded_alike`).  A layout of schools is at least three
  mean schools wide, one of race groups a quarter of the students
  (:func:`layout_width`).

The bucket of a size is the power of two at or above it (at most twice the size: the
padded slots and members cost a masked term or a gather each, far less than a
student), so datasets of one design share one program, apart from one whose largest
group crosses a power of two.  It depends on the dataset alone, never on the batch a
dataset is fitted in.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def bucket(size: int) -> int:
    """The power of two at or above ``size`` (at least 1)."""
    return 1 << (max(1, int(size)) - 1).bit_length()


def layout_width(name: str, width: int, students: int, groups: int) -> int:
    """The bucket of the group layout ``name`` (a :data:`~classsize.model.pilot.LAYOUTS`
    entry) ``width`` members wide, over ``groups`` groups of a dataset of ``students``
    students: :func:`bucket` of the width, and at least the bucket of three mean
    schools (``schools``) or of a quarter of the students (a race's SMALL or LARGE
    REGULAR students).  The floors depend on the students and groups alone, which a
    design fixes, so that the largest group of one dataset and of the next (which
    differ by a quarter from seed to seed) fall in one bucket."""
    if name == "schools":
        floor = bucket(-(-3 * int(students) // max(1, int(groups))))
    elif name in ("small_by_race", "large_by_race"):
        floor = bucket(int(students) // 4)
    else:
        floor = 1
    return max(bucket(width), floor)


def pad_class_slots(observed, slots: int):
    """``observed`` (:class:`~classsize.model.pieces.Observed`, one dataset) with its
    class arrays padded to ``slots`` class slots, the new slots unused (``class_used``
    False, a LARGE class of school 0 without MA and zero class covariates)."""
    extra = int(slots) - int(np.shape(observed.class_used)[-1])
    if extra < 0:
        raise ValueError(f"cannot pad {np.shape(observed.class_used)[-1]} class slots to {slots}")
    if extra == 0:
        return observed

    def pad(a, value=0):
        a = jnp.asarray(a)
        return jnp.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), constant_values=value)

    covariates = observed.class_covariates
    return observed._replace(
        class_is_small=pad(observed.class_is_small), teacher_has_ma=pad(observed.teacher_has_ma),
        school_of_class=pad(observed.school_of_class), class_used=pad(observed.class_used, False),
        class_covariates=None if covariates is None else pad(covariates))
