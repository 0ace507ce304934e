"""The warm-up adaptation with its schedule as data (:mod:`classsize.inference.engine.adaptation`)
is NumPyro's, bit for bit, for every warm-up length; and one sampler program serves
every warm-up length."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.hmc_util import warmup_adapter

from classsize.inference.engine import adaptation

SETTINGS = {"dense_mass": False, "target_accept_prob": 0.8}


@pytest.mark.parametrize("warmup", [0, 1, 7, 19, 20, 45, 150, 151, 500, 1000])
def test_adapt_is_numpyros_update_for_every_warmup_length(warmup):
    """Both updates see the same acceptances and positions (random, seeded) for every
    warm-up iteration; every leaf of every state must be equal (exactly: an ulp would
    change the draws).  NumPyro's kernel gives its adapter ``dense_mass=[]`` (diagonal,
    the mass matrix a dict by site group), as here."""
    z0 = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    init, update = warmup_adapter(warmup, dense_mass=[], target_accept_prob=0.8)
    state = init((z0, None, None, None), jax.random.PRNGKey(0), 0.5)
    plan = adaptation.plan(warmup)
    ours = jax.jit(lambda t, p, z, s: adaptation.adapt(SETTINGS, plan, t, p, z, s))
    theirs = jax.jit(lambda t, p, z, s: update(t, p, (z, None, None, None), s))
    mine = state
    rng = np.random.default_rng(warmup)
    windows_ended = 0
    for t in range(warmup):
        p = jnp.asarray(rng.uniform(0.3, 1.0))
        z = {"a": jnp.asarray(rng.normal(size=3) * [1.0, 3.0, 0.2]), "b": jnp.asarray(rng.normal())}
        before = int(state.window_idx)
        state, mine = theirs(t, p, z, state), ours(t, p, z, mine)
        windows_ended += int(state.window_idx) > before
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(mine)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"iteration {t}")
    assert windows_ended == int(plan.windows) or warmup == 0  # the whole schedule was walked
    if warmup >= 150:  # the mass matrix was adapted: the variances differ by coordinate
        (inverse_mass,) = mine.inverse_mass_matrix.values()
        assert np.ptp(np.asarray(inverse_mass)) > 0.1


def test_a_plan_holds_every_window():
    plan = adaptation.plan(1000)
    ends = [int(e) for e in plan.ends[:int(plan.windows)]]
    assert ends[0] == 74 and ends[-1] == 999 and ends == sorted(ends)
    assert (np.asarray(plan.ends[int(plan.windows):]) == -1).all()
    with pytest.raises(ValueError, match="adaptation windows"):
        adaptation.plan(10**12)
