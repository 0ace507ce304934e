"""Running NUTS chains: one compiled program for one fit or a batch of fits.

Every fit, a single one (``classsize fit``) or many at once (``classsize recover``),
runs here.  Each (dataset, chain) pair is a **lane**: the whole NUTS run (warm-up
and sampling) of the analysis's kernel, with the dataset's arrays as arguments.  The
lanes are sharded over the JAX devices (``numpyro.set_host_device_count`` makes one
per core; :mod:`classsize.inference.runtime` does so when the package is imported) and, within a device, vectorised with ``jax.vmap``,
so four chains on two cores run as two vectorised pairs side by side.

Chain ``c`` of a fit with seed ``s`` starts from ``jax.random.split(PRNGKey(s),
chains)[c]`` (``PRNGKey(s)`` for one chain), the keys ``numpyro.infer.MCMC`` gives
its chains, whatever the number of devices; a lane's computation does not depend on
which device runs it, so the draws do not either.

The program is compiled once per shape (and loaded from JAX's persistent
compilation cache when an earlier process compiled it: see
:mod:`classsize.model.jaxcache`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .analysis import Problem
from .settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

#: Sampler statistics recorded for every draw (ArviZ's names), from the NUTS state.
STATS = ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "diverging")


@dataclass
class Draws:
    """The output of a run: ``sites[name]`` and ``stats[name]`` are ``(datasets,
    chains, samples, ...)``; ``warmup_steps`` is ``(datasets, chains, warmup)``."""

    sites: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    warmup_steps: np.ndarray
    seconds: float
    compile_seconds: float

    def dataset(self, k: int) -> "Draws":
        """The draws of dataset ``k`` alone (leading axis kept, of length 1)."""
        pick = lambda a: a[k:k + 1]  # noqa: E731
        return Draws({n: pick(v) for n, v in self.sites.items()}, {n: pick(v) for n, v in self.stats.items()},
                     pick(self.warmup_steps), self.seconds, self.compile_seconds)


def chain_keys(seed: int, chains: int) -> np.ndarray:
    """The chains' keys of ``MCMC.run(PRNGKey(seed))`` with ``chains`` chains."""
    key = jax.random.PRNGKey(int(seed))
    return np.asarray(jax.random.split(key, chains) if chains > 1 else key[None])


class ChainRunner:
    """NUTS for a problem's datasets: ``chains x (warmup + samples)`` each.

    One runner compiles one program per batch shape and reuses it; studies of one
    design keep one runner for all their batches.
    """

    def __init__(self, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP, samples: int = DEFAULT_SAMPLES,
                 *, devices=None,
                 vectorize: str = "map"):
        if vectorize not in ("map", "vmap"):
            raise ValueError(f"vectorize must be 'map' or 'vmap', got {vectorize!r}")
        self.chains, self.warmup, self.samples = int(chains), int(warmup), int(samples)
        self.devices = list(jax.devices() if devices is None else devices)
        self.vectorize = vectorize
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    # ----------------------------------------------------------------- one lane
    def _lane(self, problem: Problem, key, inputs, active):
        kernel = problem.kernel()
        warmup, samples = self.warmup, self.samples
        state = kernel.init(key, warmup, None, (), inputs)
        post = kernel.postprocess_fn((), inputs)
        proto = jax.eval_shape(post, state.z)
        values = {k: jnp.zeros((samples,) + v.shape, v.dtype) for k, v in proto.items()}
        stats = {k: jnp.zeros((samples,), bool if k == "diverging" else jnp.result_type(float)) for k in STATS}
        steps = jnp.zeros((warmup + samples,), jnp.int32)

        def record(s, bufs, j):
            vals, st = bufs
            z = post(s.z)
            now = {"lp": -s.potential_energy, "energy": s.energy, "acceptance_rate": s.accept_prob,
                   "step_size": s.adapt_state.step_size, "n_steps": s.num_steps, "diverging": s.diverging}
            vals = {k: lax.dynamic_update_index_in_dim(vals[k], z[k], j, 0) for k in vals}
            st = {k: lax.dynamic_update_index_in_dim(st[k], jnp.asarray(now[k], st[k].dtype), j, 0) for k in st}
            return vals, st

        def body(carry, i):
            s, bufs, steps = carry
            # a padding lane (inactive) skips its iterations
            s = lax.cond(active, lambda t: kernel.sample(t, (), inputs), lambda t: t, s)
            steps = lax.dynamic_update_index_in_dim(steps, jnp.asarray(s.num_steps, jnp.int32), i, 0)
            bufs = lax.cond(i >= warmup, lambda b: record(s, b, jnp.maximum(i - warmup, 0)), lambda b: b, bufs)
            return (s, bufs, steps), None

        (_, (values, stats), steps), _ = lax.scan(body, (state, (values, stats), steps),
                                                 jnp.arange(warmup + samples))
        return values, stats, steps

    def _program(self, problem: Problem):
        mesh = Mesh(np.array(self.devices), ("lanes",))

        def local(keys, inputs, active):
            one = lambda k, x, a: self._lane(problem, k, x, a)  # noqa: E731
            if self.vectorize == "vmap":
                return jax.vmap(one)(keys, inputs, active)
            return lax.map(lambda kxa: one(*kxa), (keys, inputs, active))

        specs = dict(mesh=mesh, in_specs=(P("lanes"), P("lanes"), P("lanes")), out_specs=P("lanes"))
        return jax.jit(jax.shard_map(local, check_vma=False, **specs)), mesh

    # ------------------------------------------------------------------ a batch
    def run(self, problem: Problem, seeds: Sequence[int], batch_size: int | None = None) -> Draws:
        """Fit the datasets of ``problem`` (its inputs stacked along a leading axis, one
        per seed in ``seeds``).

        With ``batch_size`` larger than the number of datasets the batch is padded with
        inactive lanes (which skip their iterations), so every batch of a study runs the
        same compiled program.
        """
        b, c = len(seeds), self.chains
        full = max(b, int(batch_size or b))
        keys = np.stack([chain_keys(s, c) for s in seeds], axis=1)  # (c, b, 2)
        keys = np.concatenate([keys, np.repeat(keys[:, :1], full - b, axis=1)], axis=1)
        # lanes chain-major (lane = chain * full + dataset): each device gets a share of
        # every dataset's chains
        keys = keys.reshape(c * full, -1)
        lane_dataset = np.tile(np.concatenate([np.arange(b), np.zeros(full - b, np.int64)]), c)
        active = np.tile(np.arange(full) < b, c)
        n_lanes = c * full
        padded = -(-n_lanes // self.n_devices) * self.n_devices
        if padded > n_lanes:
            keys = np.concatenate([keys, np.repeat(keys[:1], padded - n_lanes, axis=0)])
            lane_dataset = np.concatenate([lane_dataset, np.zeros(padded - n_lanes, np.int64)])
            active = np.concatenate([active, np.zeros(padded - n_lanes, bool)])
        lane_inputs = jax.tree.map(lambda a: np.asarray(a)[lane_dataset], problem.inputs)
        program, mesh = self._program(problem)
        sharding = NamedSharding(mesh, P("lanes"))
        args = (jax.device_put(jnp.asarray(keys, dtype=jnp.uint32), sharding),
                jax.tree.map(lambda a: jax.device_put(a, sharding), lane_inputs),
                jax.device_put(jnp.asarray(active), sharding))
        signature = (problem.signature, jax.tree.structure(args), tuple(np.shape(a) for a in jax.tree.leaves(args)))
        compile_seconds = 0.0
        if signature not in self._compiled:
            start = time.perf_counter()
            self._compiled[signature] = program.lower(*args).compile()
            compile_seconds = time.perf_counter() - start
            self.compile_seconds += compile_seconds
        start = time.perf_counter()
        out = jax.block_until_ready(self._compiled[signature](*args))
        seconds = time.perf_counter() - start
        values, stats, steps = jax.tree.map(lambda a: np.asarray(a)[:n_lanes], out)

        def per_dataset(a):  # (c * full, samples, ...) -> (b, c, samples, ...)
            return np.swapaxes(a.reshape((c, full) + a.shape[1:])[:, :b], 0, 1)

        steps = per_dataset(steps)
        return Draws({k: per_dataset(v) for k, v in values.items()},
                     {k: per_dataset(v) for k, v in stats.items()},
                     steps[:, :, :self.warmup], seconds, compile_seconds)
