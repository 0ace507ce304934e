r"""Shape buckets: the sizes a compiled program is built for.

JAX compiles one program per shape of its arguments, for 10-40 s on two cores, and
its persistent cache (:mod:`classsize.model.jaxcache`) returns a program only for the
exact shapes it was built for.  Two datasets of one design differ in their number of
classes and in the sizes of their largest school, class and race group, so each would
compile its own sampler.  Every such size is therefore rounded up to a **bucket**
(:func:`bucket`) and the arrays padded to it, masked exactly:

* class slots past the dataset's classes have ``class_used`` False: the model masks
  their MA and school sites (:func:`pad_class_slots`);
* a group layout (:mod:`classsize.model.groups`) cuts each group into blocks of
  :data:`BLOCK` students and pads the blocks to :func:`layout_blocks`: padded blocks
  and members are not valid, so no extreme changes.  The number of blocks depends on
  the design alone, so every dataset of a design has the same layouts.

The bucket of a class count is the power of two at or above it (at most twice the
count: a padded slot costs a masked term, far less than a student), so datasets of one
design share one program.  A bucket depends on the dataset and its design alone, never
on the batch a dataset is fitted in.
"""

from __future__ import annotations

import numpy as np

#: Members per block of a group layout: a group is padded by fewer than this many.
BLOCK = 8


def bucket(size: int) -> int:
    """The power of two at or above ``size`` (at least 1)."""
    return 1 << (max(1, int(size)) - 1).bit_length()


def layout_blocks(capacity: int, groups: int) -> int:
    """The blocks of a group layout (:class:`~classsize.model.groups.Groups`) that holds
    at most ``capacity`` students in ``groups`` groups: each group fills whole blocks
    of :data:`BLOCK` members, so ``ceil(capacity / BLOCK) + groups`` blocks hold any
    such layout.  The capacity is what the design fixes (all students for schools and
    classes, the REGULAR cohort for its SMALL or LARGE students of each race), so every
    dataset of a design gets one shape, padded by at most one block per group."""
    return -(-max(0, int(capacity)) // BLOCK) + max(1, int(groups))


def pad_class_slots(observed, slots: int):
    """``observed`` (:class:`~classsize.model.pieces.Observed`, one dataset) with its
    class arrays padded to ``slots`` class slots, the new slots unused (``class_used``
    False, a LARGE class of school 0 without MA and zero class covariates)."""
    extra = int(slots) - int(np.shape(observed.class_used)[-1])
    if extra < 0:
        raise ValueError(f"cannot pad {np.shape(observed.class_used)[-1]} class slots to {slots}")
    if extra == 0:
        return observed

    def pad(a, value=0):  # (NumPy: concrete arrays, no small programs to compile)
        a = np.asarray(a)
        return np.pad(a, [(0, extra)] + [(0, 0)] * (a.ndim - 1), constant_values=value)

    covariates = observed.class_covariates
    return observed._replace(
        class_is_small=pad(observed.class_is_small), teacher_has_ma=pad(observed.teacher_has_ma),
        school_of_class=pad(observed.school_of_class), class_used=pad(observed.class_used, False),
        class_covariates=None if covariates is None else pad(covariates))
