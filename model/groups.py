r"""Groups of students as padded index matrices, and their extremes.

The conditioned density (:mod:`classsize.model.conditioned`) takes extremes over groups
of students (a school's or a class's highest and lowest residual, a race's lowest and
highest assignment term).  :func:`group_layout` lays each group out as a row of a
padded index matrix (:class:`Groups`), once per dataset, and :func:`group_extremes`
reduces over the rows densely, which is much cheaper to differentiate than
scatter-based segment reductions.  Row widths are rounded up to a bucket
(:func:`classsize.model.buckets.bucket`) so that datasets share few shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Groups(NamedTuple):
    """Members of each group as a padded index matrix: row ``g`` lists the students of
    group ``g`` in ``members[g, :]`` where ``valid[g, :]`` (padding repeats index 0)."""

    members: jax.Array  # int32 (groups, width)
    valid: jax.Array  # bool (groups, width)


def group_layout(group, n_groups: int, include=None) -> Groups:
    """The :class:`Groups` of concrete group labels ``group`` (numpy), keeping only the
    students where ``include`` (rows as wide as the largest group; :func:`~classsize.model.pilot.padded_alike`
    widens the layouts of several datasets to stack them)."""
    group = np.asarray(group)
    keep = np.ones(group.shape, bool) if include is None else np.asarray(include, bool)
    idx = np.flatnonzero(keep)
    counts = np.bincount(group[idx], minlength=n_groups)[:n_groups]
    width = max(1, int(counts.max(initial=0)))
    order = idx[np.argsort(group[idx], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    members = np.zeros((n_groups, width), np.int32)
    valid = np.zeros((n_groups, width), bool)
    for g in range(n_groups):
        rows = order[starts[g]:starts[g] + counts[g]]
        members[g, : rows.size] = rows
        valid[g, : rows.size] = True
    return Groups(jnp.asarray(members), jnp.asarray(valid))


def group_extreme(values, groups: Groups, largest: bool, evaluate=None):
    """The largest (or smallest) of ``values`` over each group; ``-inf`` (``+inf``) for
    an empty group.

    The member attaining the extreme is found without gradient (by two plain
    reductions: the extreme, then the largest member index attaining it), and the
    extreme is ``evaluate(members)`` (``values[members]`` by default) at those members
    only: its derivative is that of the attaining member's value (the derivative of
    the extreme wherever one member attains it), and a caller that can compute the
    value of a few members directly keeps the derivative away from the whole array.
    """
    return group_extremes(values, groups, evaluate, which=(largest,))[0]


def group_extremes(values, groups: Groups, evaluate=None, which=(False, True)):
    """:func:`group_extreme` for each of ``which`` (False: smallest, True: largest),
    sharing one gather of ``values``."""
    v = jax.lax.stop_gradient(values)[groups.members]
    nonempty = jnp.any(groups.valid, axis=-1)
    out = []
    for largest in which:
        fill = -jnp.inf if largest else jnp.inf
        masked = jnp.where(groups.valid, v, fill)
        extreme = jnp.max(masked, axis=-1) if largest else jnp.min(masked, axis=-1)
        who = jnp.max(jnp.where(masked == extreme[..., None], groups.members, -1), axis=-1)
        who = jnp.maximum(who, 0)
        value = values[who] if evaluate is None else evaluate(who)
        out.append(jnp.where(nonempty, value, fill))
    return out
