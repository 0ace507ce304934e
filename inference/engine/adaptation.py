r"""Stan's windowed warm-up adaptation, with the warm-up length as data.

During the warm-up, NUTS adapts its step size :math:`\epsilon` and its diagonal
inverse mass matrix :math:`M^{-1}`, as Stan and NumPyro do:

* **dual averaging** of :math:`\log\epsilon` after every transition, towards the
  target acceptance :math:`\delta` (0.8): with :math:`H_t = \delta - \alpha_t` (the
  transition's acceptance :math:`\alpha_t`) and its running mean :math:`\bar H_t =
  (1 - \frac{1}{t + t_0}) \bar H_{t-1} + \frac{H_t}{t + t_0}`, :math:`\log\epsilon_t
  = \mu - \frac{\sqrt t}{\gamma} \bar H_t` (:math:`t_0 = 10`, :math:`\gamma =
  0.05`), and at the last warm-up iteration the :math:`t^{-0.75}`-weighted average
  of the :math:`\log\epsilon_t`;
* **windows** (:func:`numpyro.infer.hmc_util.build_adaptation_schedule`): a first
  buffer (75 iterations), slow windows doubling from 25, and a last buffer (50),
  shrunk for short warm-ups.  Within each slow window the positions' variances are
  accumulated (Welford); at its end :math:`M^{-1}` becomes their regularised
  estimate :math:`\frac{n}{n + 5} \hat\sigma^2 + 10^{-3} \frac{5}{n + 5}`, and the dual
  averaging restarts at :math:`\mu = \log(10\,\epsilon)`.

NumPyro's kernel reads the schedule from the warm-up length when it is initialised,
so a compiled program would hold one warm-up length.  Here the kernel is initialised
for no warm-up, with its own adaptation off (:data:`KERNEL_OFF`; its initial state is
the same), and :func:`adapt` applies NumPyro's update after each warm-up transition,
with the schedule as arrays (:func:`plan`): the same arithmetic and the same draws,
from one program for every warm-up length.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import random
from numpyro.infer.hmc_util import HMCAdaptState, build_adaptation_schedule, dual_averaging, welford_covariance
from numpyro.util import cond, identity

#: The most adaptation windows a plan holds (a warm-up of a million iterations has 17).
MAX_WINDOWS = 32
#: NUTS settings that turn the kernel's own adaptation off (it would never run with no
#: warm-up, but its code would still be compiled into the program).
KERNEL_OFF = {"adapt_step_size": False, "adapt_mass_matrix": False}


class Plan(NamedTuple):
    """A warm-up's schedule as arrays: ``warmup`` iterations, ``windows`` windows, the
    last iteration of window ``w`` at ``ends[w]`` (``-1`` past the last window)."""

    warmup: Any
    windows: Any
    ends: Any


def plan(warmup: int) -> Plan:
    """The schedule of a warm-up of ``warmup`` iterations (NumPy int32 arrays)."""
    windows = build_adaptation_schedule(int(warmup))
    if len(windows) > MAX_WINDOWS:
        raise ValueError(f"a warm-up of {warmup} iterations has more than {MAX_WINDOWS} adaptation windows")
    ends = np.full(MAX_WINDOWS, -1, np.int32)
    ends[:len(windows)] = [w.end for w in windows]
    return Plan(np.int32(warmup), np.int32(len(windows)), ends)


def adapt(settings: Mapping[str, Any], schedule: Plan, t, accept_prob, z, state: HMCAdaptState) -> HMCAdaptState:
    """The adaptation state after warm-up transition ``t`` (from 0), which accepted with
    probability ``accept_prob`` and moved to ``z``: NumPyro's ``warmup_adapter`` update
    for the kernel ``settings`` (``target_accept_prob``, ``dense_mass``,
    ``regularize_mass_matrix``, ``adapt_step_size``, ``adapt_mass_matrix``), its schedule
    read from ``schedule``."""
    target = settings.get("target_accept_prob", 0.8)
    adapt_step_size = settings.get("adapt_step_size", True)
    adapt_mass_matrix = settings.get("adapt_mass_matrix", True)
    regularize = settings.get("regularize_mass_matrix", True)
    ss_init, ss_update = dual_averaging()
    mm_init, mm_update, mm_final = welford_covariance(diagonal=not settings.get("dense_mass", False))
    step_size, inverse_mm, mm_sqrt, mm_sqrt_inv, ss_state, mm_state, window, rng_key = state
    rng_key, _ = random.split(rng_key)  # (NumPyro's key for a step-size search, unused)

    if adapt_step_size:
        ss_state = ss_update(target - accept_prob, ss_state)
        log_step_size, log_step_size_avg, *_ = ss_state
        step_size = jnp.where(t == (schedule.warmup - 1), jnp.exp(log_step_size_avg), jnp.exp(log_step_size))
        finfo = jnp.finfo(jnp.result_type(step_size))
        step_size = jnp.clip(step_size, finfo.tiny, finfo.max)

    middle = (0 < window) & (window < (schedule.windows - 1))
    if adapt_mass_matrix:
        mm_state = cond(middle, (z, mm_state), lambda args: mm_update(*args), mm_state, identity)

    at_end = t == jnp.asarray(schedule.ends)[window]
    window = jnp.where(at_end, window + 1, window)
    state = HMCAdaptState(step_size, inverse_mm, mm_sqrt, mm_sqrt_inv, ss_state, mm_state, window, rng_key)

    def window_end(state):
        step_size, inverse_mm, mm_sqrt, mm_sqrt_inv, ss_state, mm_state, window, rng_key = state
        if adapt_mass_matrix:
            inverse_mm, mm_sqrt, mm_sqrt_inv = mm_final(mm_state, regularize=regularize)
            size = ({k: v.shape for k, v in inverse_mm.items()} if isinstance(inverse_mm, dict)
                    else inverse_mm.shape[-1])
            mm_state = mm_init(size)
        if adapt_step_size:
            ss_state = ss_init(jnp.log(10) + jnp.log(step_size))
        return HMCAdaptState(step_size, inverse_mm, mm_sqrt, mm_sqrt_inv, ss_state, mm_state, window, rng_key)

    return cond(at_end & middle, state, window_end, state, identity)
