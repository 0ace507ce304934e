r"""Groups of students as blocks of a padded index matrix, and their extremes.

The conditioned density (:mod:`classsize.model.conditioned`) takes extremes over groups
of students (a school's or a class's highest and lowest residual, a race's lowest and
highest assignment term).  :func:`group_layout` lays the students out once per dataset
(:class:`Groups`): sorted by group, each group cut into **blocks** of
:data:`~classsize.model.buckets.BLOCK` members, a block holding members of one group
only.  :func:`group_extremes` reduces each block densely, then the blocks of each group
(a segment reduction over a few hundred block extremes, outside the gradient), which
is much cheaper to differentiate than scatter-based segment reductions over the
students, and pads a group by at most one block's worth of members, however unequal
the groups are.  The number of blocks is padded to
:func:`~classsize.model.buckets.layout_blocks` of the most members any dataset of the
design can have, so datasets of one design share one shape.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .buckets import BLOCK, layout_blocks


class Groups(NamedTuple):
    """Members of each group, in blocks: block ``j`` belongs to group ``group[j]``
    (ascending) and lists its members in ``members[j, :]`` where ``valid[j, :]``
    (padding repeats index 0); padding blocks belong to the last group and have no
    valid member.  ``nonempty[g]``: group ``g`` has a member."""

    members: jax.Array  # int32 (blocks, BLOCK)
    valid: jax.Array  # bool (blocks, BLOCK)
    group: jax.Array  # int32 (blocks,)
    nonempty: jax.Array  # bool (groups,)

    @property
    def n_blocks(self) -> int:
        return int(np.shape(self.members)[-2])

    def padded(self, blocks: int) -> "Groups":
        """The layout with padding blocks up to ``blocks`` blocks (the extremes unchanged)."""
        extra = int(blocks) - self.n_blocks
        if extra < 0:
            raise ValueError(f"cannot pad {self.n_blocks} blocks to {blocks}")
        last = int(np.shape(self.nonempty)[-1]) - 1
        return Groups(np.pad(np.asarray(self.members), ((0, extra), (0, 0))),
                      np.pad(np.asarray(self.valid), ((0, extra), (0, 0))),
                      np.pad(np.asarray(self.group), (0, extra), constant_values=last), self.nonempty)

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The layout as one row per group (numpy): ``(members, valid)``, each
        ``(groups, width)`` with ``width`` the largest group's size."""
        members, valid, group = (np.asarray(a) for a in (self.members, self.valid, self.group))
        n = int(np.shape(self.nonempty)[-1])
        lists = [members[group == g][valid[group == g]] for g in range(n)]
        width = max(1, max(len(x) for x in lists))
        out, ok = np.zeros((n, width), np.int32), np.zeros((n, width), bool)
        for g, x in enumerate(lists):
            out[g, :len(x)], ok[g, :len(x)] = x, True
        return out, ok


def group_layout(group, n_groups: int, include=None, capacity: int | None = None) -> Groups:
    """The :class:`Groups` of concrete group labels ``group`` (numpy), keeping only the
    students where ``include``.  ``capacity``: the most students any dataset of the
    design can keep (default: those kept here); the blocks are padded to
    :func:`~classsize.model.buckets.layout_blocks` of it."""
    group = np.asarray(group)
    keep = np.ones(group.shape, bool) if include is None else np.asarray(include, bool)
    idx = np.flatnonzero(keep)
    counts = np.bincount(group[idx], minlength=n_groups)[:n_groups]
    order = idx[np.argsort(group[idx], kind="stable")]
    per_group = -(-counts // BLOCK)
    used = int(per_group.sum())
    blocks = max(used, layout_blocks(idx.size if capacity is None else int(capacity), n_groups))
    members = np.zeros((blocks, BLOCK), np.int32)
    valid = np.zeros((blocks, BLOCK), bool)
    owner = np.full(blocks, n_groups - 1, np.int32)
    start, j = 0, 0
    for g in range(n_groups):
        rows = order[start:start + counts[g]]
        start += counts[g]
        for b in range(per_group[g]):
            chunk = rows[b * BLOCK:(b + 1) * BLOCK]
            members[j, :chunk.size], valid[j, :chunk.size], owner[j] = chunk, True, g
            j += 1
    return Groups(members, valid, owner, counts > 0)


def empty_layout() -> Groups:
    """A layout of one empty group (for a model that takes no extremes over it)."""
    return Groups(np.zeros((1, BLOCK), np.int32), np.zeros((1, BLOCK), bool), np.zeros((1,), np.int32),
                  np.zeros((1,), bool))


def group_extreme(values, groups: Groups, largest: bool, evaluate=None):
    """The largest (or smallest) of ``values`` over each group; ``-inf`` (``+inf``) for
    an empty group.

    The member attaining the extreme is found without gradient (by plain reductions:
    the extreme, then the largest member index attaining it), and the extreme is
    ``evaluate(members)`` (``values[members]`` by default) at those members only: its
    derivative is that of the attaining member's value (the derivative of the extreme
    wherever one member attains it), and a caller that can compute the value of a few
    members directly keeps the derivative away from the whole array.
    """
    return group_extremes(values, groups, evaluate, which=(largest,))[0]


def group_extremes(values, groups: Groups, evaluate=None, which=(False, True)):
    """:func:`group_extreme` for each of ``which`` (False: smallest, True: largest),
    sharing one gather of ``values``.

    Each block's extreme and the largest member attaining it come from dense
    reductions over the block; a group's extreme is the extreme of its blocks'
    (``jax.ops.segment_max`` or ``segment_min`` over the sorted block owners), and the
    member attaining it the largest of its blocks' attaining members whose block
    extreme equals it: the same member as one reduction over the whole group."""
    v = jax.lax.stop_gradient(values)[groups.members]
    n = groups.nonempty.shape[-1]
    segment = dict(segment_ids=groups.group, num_segments=n, indices_are_sorted=True)
    out = []
    for largest in which:
        fill = -jnp.inf if largest else jnp.inf
        masked = jnp.where(groups.valid, v, fill)
        block = jnp.max(masked, axis=-1) if largest else jnp.min(masked, axis=-1)
        block_who = jnp.max(jnp.where(masked == block[..., None], groups.members, -1), axis=-1)
        extreme = (jax.ops.segment_max if largest else jax.ops.segment_min)(block, **segment)
        who = jax.ops.segment_max(jnp.where(block == extreme[groups.group], block_who, -1), **segment)
        who = jnp.maximum(who, 0)
        value = values[who] if evaluate is None else evaluate(who)
        out.append(jnp.where(groups.nonempty, value, fill))
    return out
