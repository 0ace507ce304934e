r"""One lane of NUTS as three small pure functions over a flat vector of coordinates.

A lane (one chain of one dataset, :mod:`~.sampling`) runs NumPyro's NUTS
(``numpyro.infer.hmc.hmc(algo="NUTS")``, its functional form) on the analysis's model,
in three programs that :class:`~.sampling.ChainRunner` compiles apart:

* :func:`start`: the initial state.  Every coordinate is drawn uniform on
  :math:`(-2, 2)` (NumPyro's ``init_to_uniform``), drawn again (at most
  :data:`MAX_TRIES` times) while the potential or its gradient is not finite, and the
  kernel's state is built from that point, its potential and its gradient;
* :func:`chain`: :data:`~.sampling.CHUNK` iterations from a state: a NUTS transition
  each, the warm-up's adaptation (:mod:`~.adaptation`) after it, and each iteration's
  position, sampler statistics and leapfrog steps;
* :func:`postprocess`: the model's sites (constrained, deterministic ones included) of
  kept positions, run after sampling over all of a dataset's draws at once.

The model's unconstrained sites are one vector :math:`z \in \mathbb{R}^d` (the sites
in name order, each raveled: :class:`Layout`), and the kernel sees the potential
:math:`U(z) = -\log p(\mathrm{data}, \mathrm{unravel}(z))` of that vector.  NUTS's own
arithmetic (leapfrog steps, momenta, the U-turn test, the choice of a proposal) then
runs on one array instead of one array per site, which is what a flat mass matrix
means anyway; and the gradient of :math:`U` appears once in the chain program and
once in the start program.  Splitting the start and the site values out of the chain
program keeps it to a transition and its adaptation: XLA compiles a program in time
roughly proportional to its fused kernels, and the start (a model trace, a gradient)
and the sites (a model trace) held more than half of them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from numpyro.infer.hmc import hmc
from numpyro.infer.util import ParamInfo

from classsize.inference.engine import adaptation

#: Half-width of the box the initial coordinates are drawn from (NumPyro's ``init_to_uniform``).
RADIUS = 2.0
#: Most draws of an initial point before the last is kept, finite or not (NumPyro's).
MAX_TRIES = 100


class Layout(NamedTuple):
    """Where each unconstrained site lies in the flat vector: the sites in name order,
    with their shapes."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def unravel(self, z) -> dict:
        """The sites of flat vector ``z``, by name."""
        out, at = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = jnp.reshape(z[at:at + size], shape)
            at += size
        return out


class Functions(NamedTuple):
    """A model's pieces for a lane: ``potential_gen(**inputs)`` and
    ``postprocess_gen(**inputs)`` (NumPyro's generators: functions of the sites by
    name), the flat :class:`Layout` and the NUTS ``settings``."""

    potential_gen: Callable
    postprocess_gen: Callable
    layout: Layout
    settings: Mapping[str, Any]


def model_functions(kernel, settings: Mapping[str, Any], inputs_spec) -> Functions:
    """The :class:`Functions` of NumPyro kernel ``kernel`` (a ``NUTS`` of the model),
    found by tracing its initialisation at ``inputs_spec`` (shapes only: nothing is
    compiled or run)."""
    shape = jax.eval_shape(lambda x: kernel.init(random.PRNGKey(0), 0, None, (), x), inputs_spec)
    names = tuple(sorted(shape.z))
    layout = Layout(names, tuple(tuple(shape.z[n].shape) for n in names))
    return Functions(kernel._potential_fn_gen, kernel._postprocess_fn, layout, dict(settings))


def potential(functions: Functions, inputs) -> Callable:
    """:math:`U(z)` of the flat vector ``z`` on one dataset's ``inputs``."""
    by_site = functions.potential_gen(**inputs)
    return lambda z: by_site(functions.layout.unravel(z))


def _kernel(functions: Functions):
    """NumPyro's functional NUTS on the flat potential: ``(init_kernel, sample_kernel)``."""
    return hmc(potential_fn_gen=lambda **inputs: potential(functions, inputs), algo="NUTS")


def _init(init_kernel, functions: Functions, point: ParamInfo, key, inputs):
    """The kernel's state at ``point`` (position, potential, gradient): no warm-up and
    its own adaptation off (:data:`~.adaptation.KERNEL_OFF`; :func:`chain` adapts)."""
    s = functions.settings
    return init_kernel(point, 0, dense_mass=bool(s.get("dense_mass", False)),
                       target_accept_prob=s.get("target_accept_prob", 0.8), trajectory_length=None,
                       max_tree_depth=s.get("max_tree_depth", 10), regularize_mass_matrix=s.get(
                           "regularize_mass_matrix", True), model_kwargs=inputs, rng_key=key,
                       **adaptation.KERNEL_OFF)


def start(functions: Functions, key, inputs):
    """The initial NUTS state of a lane with key ``key`` on ``inputs``: a point uniform
    on :math:`(-2, 2)^d` whose potential and gradient are finite (drawn again while they
    are not, at most :data:`MAX_TRIES` times), the momentum drawn from the key's other half."""
    value_and_grad = jax.value_and_grad(potential(functions, inputs))
    dim = functions.layout.dim
    point_key, kernel_key = random.split(key)

    def attempt(carry):
        tries, k, *_ = carry
        k, sub = random.split(k)
        z = random.uniform(sub, (dim,), minval=-RADIUS, maxval=RADIUS)
        pe, grad = value_and_grad(z)
        return tries + 1, k, z, pe, grad, jnp.isfinite(pe) & jnp.all(jnp.isfinite(grad))

    zero = jnp.zeros(dim)
    first = (jnp.int32(0), point_key, zero, jnp.asarray(0.0, zero.dtype), zero, jnp.bool_(False))
    *_, z, pe, grad, _ = lax.while_loop(lambda c: ~c[5] & (c[0] < MAX_TRIES), attempt, first)
    init_kernel, _ = _kernel(functions)
    return _init(init_kernel, functions, ParamInfo(z, pe, grad), kernel_key, inputs)


def chain(functions: Functions, chunk: int, state, inputs, active, first, total, schedule: adaptation.Plan):
    """Iterations ``first .. first + chunk - 1`` of a lane from ``state``, and each
    iteration's record ``(z, stats, steps)``: the position after it, the sampler
    statistics (ArviZ's names) and the leapfrog steps.  Warm-up iterations adapt the
    step size and mass matrix by ``schedule`` (:func:`~.adaptation.adapt`); iterations
    from ``total`` on, and every iteration of an inactive (padding) lane, leave the
    state as it is."""
    init_kernel, sample_kernel = _kernel(functions)
    # the kernel's settings are fixed by initialising it (its state is not used)
    _init(init_kernel, functions, ParamInfo(state.z, state.potential_energy, state.z_grad), state.rng_key, inputs)
    settings = functions.settings

    def transition(s):
        new = sample_kernel(s, (), inputs)
        warm = lambda n: adaptation.adapt(settings, schedule, s.i, n.accept_prob, n.z, n.adapt_state)  # noqa: E731
        return new._replace(adapt_state=lax.cond(s.i < schedule.warmup, warm, lambda n: n.adapt_state, new))

    def body(s, i):
        s = lax.cond(active & (i < total), transition, lambda t: t, s)
        stats = {"lp": -s.potential_energy, "energy": s.energy, "acceptance_rate": s.accept_prob,
                 "step_size": s.adapt_state.step_size, "n_steps": s.num_steps, "diverging": s.diverging}
        stats = {k: jnp.asarray(v, bool if k == "diverging" else jnp.result_type(float)) for k, v in stats.items()}
        return s, (s.z, stats, jnp.asarray(s.num_steps, jnp.int32))

    return lax.scan(body, state, first + jnp.arange(chunk))


def postprocess(functions: Functions, inputs, zs) -> dict:
    """The model's sites (constrained; deterministic ones included) at each row of
    ``zs`` (``(draws, d)``), on one dataset's ``inputs``: ``(draws, ...)`` each."""
    sites = functions.postprocess_gen(**inputs)
    return jax.vmap(lambda z: sites(functions.layout.unravel(z)))(zs)
