"""Running NUTS chains: one compiled program for one fit or a batch of fits.

Every fit, a single one (``classsize fit``) or many at once (``classsize recover``),
runs here.  Each (dataset, chain) pair is a **lane**: the whole NUTS run (warm-up
and sampling) of the analysis's kernel, with the dataset's arrays as arguments.  The
lanes are sharded over the JAX devices (one per core once
:func:`classsize.inference.engine.runtime.use_all_cores` has run, as the command line does)
and, within a device, run one after another with ``lax.map`` (``vectorize="map"``,
the default) or in lockstep with ``jax.vmap`` (``"vmap"``), so four chains on two
cores run as two pairs side by side.

Chain ``c`` of a fit with seed ``s`` starts from ``jax.random.split(PRNGKey(s),
chains)[c]`` (``PRNGKey(s)`` for one chain), the keys ``numpyro.infer.MCMC`` gives
its chains, whatever the number of devices.  A lane's arithmetic is the same on one
device or many, so the draws are equal bit for bit whatever the number of devices (and
of lanes per device).  This takes one step: XLA compiles a program over one device
without its partitioner, and over several devices with it, and the partitioner
merges identical operations (repeated broadcasts of one scalar) before XLA's
simplifier runs; the simplifier rewrites a division by a broadcast scalar shared by
several divisions into a multiplication by its reciprocal, so the two programs would
round differently (by an ulp, which NUTS turns into other draws within a few dozen
iterations).  :func:`merge_duplicates` merges them in every program first, so XLA
sees the same lane computation either way.

The iterations run in about :data:`CALLS_PER_RUN` calls of one compiled program,
each carrying every lane's NUTS state and draws on to the next, so that between
calls the host can report progress (``ChainRunner(progress=...)``).  A callback
inside the program would do the same, but JAX does not keep a program with host
callbacks in its persistent compilation cache.  The calls are made alike whether
progress is reported or not, so the draws are the same either way.

The program is traced once per shape over flat carries (the kept sites, the
statistics and the steps as one list, the NUTS states' leaves as another), exported
(``jax.export``) and stored beside the compilation cache
(:mod:`~classsize.inference.engine.programs`), so a later process loads it instead of
tracing the model; it is compiled through ``Exported.call`` either way (the same
draws), or loaded from JAX's persistent compilation cache when an earlier process
compiled it (:mod:`classsize.model.jaxcache`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from classsize.inference.analyses.base import Problem
from classsize.inference.engine import programs
from classsize.inference.engine.programs import StoredProgram
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

#: Sampler statistics recorded for every draw (ArviZ's names), from the NUTS state.
STATS = ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "diverging")
#: The iterations of a run are split into about this many calls of the compiled program.
CALLS_PER_RUN = 20
#: ``progress(done, total)``: iterations per chain done so far, of ``total``.
ProgressHook = Callable[[int, int], None]


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

    One runner compiles its programs once per batch shape and reuses them; studies of
    one design keep one runner for all their batches.  ``progress``, when given, is
    called as ``progress(done, total)`` (iterations per chain) once the programs are
    ready and after each call of the program; a hook with a ``say(text)`` method (a
    :class:`~classsize.inference.outputs.Progress`) is also told when the programs are
    being prepared and how long that took.
    """

    def __init__(self, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP, samples: int = DEFAULT_SAMPLES,
                 *, devices=None,
                 vectorize: str = "map", progress: ProgressHook | None = None):
        if vectorize not in ("map", "vmap"):
            raise ValueError(f"vectorize must be 'map' or 'vmap', got {vectorize!r}")
        self.chains, self.warmup, self.samples = int(chains), int(warmup), int(samples)
        self.devices = list(jax.devices() if devices is None else devices)
        self.vectorize = vectorize
        self.progress = progress
        self._compiled: dict[Any, Any] = {}
        self.compile_seconds = 0.0

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def iterations(self) -> int:
        """Iterations per chain: warm-up and kept draws."""
        return self.warmup + self.samples

    @property
    def iterations_per_call(self) -> int:
        return max(1, -(-self.iterations // CALLS_PER_RUN))

    # ----------------------------------------------------------------- one lane
    def _lane_start(self, kernel, key, inputs):
        """A lane's NUTS state before its first iteration, and empty buffers."""
        state = kernel.init(key, self.warmup, None, (), inputs)
        proto = jax.eval_shape(kernel.postprocess_fn((), inputs), state.z)
        values = {k: jnp.zeros((self.samples,) + v.shape, v.dtype) for k, v in proto.items()}
        stats = {k: jnp.zeros((self.samples,), bool if k == "diverging" else jnp.result_type(float)) for k in STATS}
        steps = jnp.zeros((self.iterations,), jnp.int32)
        return state, (values, stats), steps

    def _lane(self, problem: Problem, key, inputs, active, carry, first):
        """Iterations ``first .. first + iterations_per_call - 1`` of a lane, from its
        start when ``first`` is 0 (``carry`` is then ignored); those past the end do
        nothing."""
        kernel = problem.kernel()
        carry = lax.cond(first == 0, lambda _: self._lane_start(kernel, key, inputs), lambda c: c, carry)
        post = kernel.postprocess_fn((), inputs)
        warmup, total = self.warmup, self.iterations

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
            live = i < total
            # a padding lane (inactive) and the iterations past the end do nothing
            s = lax.cond(active & live, lambda t: kernel.sample(t, (), inputs), lambda t: t, s)
            steps = lax.cond(live, lambda b: lax.dynamic_update_index_in_dim(
                b, jnp.asarray(s.num_steps, jnp.int32), i, 0), lambda b: b, steps)
            bufs = lax.cond(live & (i >= warmup), lambda b: record(s, b, jnp.maximum(i - warmup, 0)),
                            lambda b: b, bufs)
            return (s, bufs, steps), None

        carry, _ = lax.scan(body, carry, first + jnp.arange(self.iterations_per_call))
        return carry

    def _carry_shape(self, problem: Problem, keys, inputs):
        """The shapes of the lanes' carry (state, buffers, steps)."""
        one = lambda k, x: self._lane_start(problem.kernel(), k, x)  # noqa: E731
        return jax.eval_shape(jax.vmap(one), keys, inputs)

    def _program(self, problem: Problem):
        """The program over the lanes, sharded over the devices."""
        mesh = Mesh(np.array(self.devices), ("lanes",))

        def local(keys, inputs, active, carry, first):
            one = lambda k, x, a, c: self._lane(problem, k, x, a, c, first)  # noqa: E731
            if self.vectorize == "vmap":
                carry = jax.vmap(one)(keys, inputs, active, carry)
            else:
                carry = lax.map(lambda a: one(*a), (keys, inputs, active, carry))
            # a small output to wait on (each lane's iteration count); the carry is
            # handed on to the next call
            return carry, carry[0].i

        lanes = P("lanes")
        program = jax.shard_map(local, mesh=mesh, in_specs=(lanes, lanes, lanes, lanes, P()),
                                out_specs=(lanes, lanes), check_vma=False)
        return jax.jit(program, donate_argnums=3), mesh

    def _export(self, problem: Problem, keys, inputs, active, first_spec, sharding) -> StoredProgram:
        """Trace the chain program over flat carries and export it: ``(keys, inputs,
        active, record, state, first) -> (record, state, marker)``, ``record`` the kept
        sites, the statistics and the steps (:class:`~.programs.StoredProgram`'s
        order), ``state`` the leaves of the lanes' NUTS states."""
        carry_shape = self._carry_shape(problem, keys, inputs)
        state_def = jax.tree.structure(carry_shape[0])
        (value_shapes, stat_shapes), steps_shape = carry_shape[1:]
        layout = StoredProgram(None, tuple(sorted(value_shapes)), tuple(sorted(stat_shapes)))
        value_names, stat_names = layout.value_names, layout.stat_names
        program, _ = self._program(problem)

        def flat(keys, inputs, active, record, state, first):
            values, stats, steps = layout.split(record)
            carry = (jax.tree.unflatten(state_def, state), (values, stats), steps)
            (state, (values, stats), steps), marker = program(keys, inputs, active, carry, first)
            return [*(values[k] for k in value_names), *(stats[k] for k in stat_names), steps], \
                jax.tree.leaves(state), marker

        spec = lambda a: _spec(a, sharding)  # noqa: E731
        record = [spec(value_shapes[k]) for k in value_names] + [spec(stat_shapes[k]) for k in stat_names]
        exported = jax.export.export(jax.jit(flat))(
            spec(keys), jax.tree.map(spec, inputs), spec(active), record + [spec(steps_shape)],
            [spec(a) for a in jax.tree.leaves(carry_shape[0])], first_spec)
        return layout._replace(exported=exported)

    def _prepare(self, problem: Problem, keys, inputs, active, first_spec, sharding):
        """The compiled chain program of this shape, with its :class:`~.programs.StoredProgram`
        and the avals of its record and state: the stored program when an earlier
        process exported it (:mod:`~.programs`), else traced and exported now; compiled
        (or loaded from the persistent compilation cache) through ``Exported.call``
        either way, so both give the same draws."""
        key = programs.program_key(problem.signature, self.chains, self.warmup, self.samples,
                                   self.iterations_per_call, self.vectorize, self.n_devices,
                                   jax.tree.structure((keys, inputs)),
                                   [(np.shape(a), str(a.dtype)) for a in jax.tree.leaves((keys, inputs))])
        stored = programs.load(key)
        if stored is None:
            stored = self._export(problem, keys, inputs, active, first_spec, sharding)
            programs.save(key, stored)
        (_, _, _, record_avals, state_avals, _), _ = stored.exported.in_tree.unflatten(stored.exported.in_avals)
        lowered = jax.jit(stored.exported.call, donate_argnums=(3, 4)).lower(
            keys, inputs, active, [_spec(a, sharding) for a in record_avals], [_spec(a, sharding) for a in state_avals],
            first_spec)
        merge_duplicates(lowered)
        return lowered.compile(), stored, record_avals, state_avals

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
        mesh = Mesh(np.array(self.devices), ("lanes",))
        sharding, replicated = NamedSharding(mesh, P("lanes")), NamedSharding(mesh, P())
        keys, inputs, active = (jax.device_put(jnp.asarray(keys, dtype=jnp.uint32), sharding),
                                jax.tree.map(lambda a: jax.device_put(a, sharding), lane_inputs),
                                jax.device_put(jnp.asarray(active), sharding))
        signature = (problem.signature, jax.tree.structure((keys, inputs)),
                     tuple(np.shape(a) for a in jax.tree.leaves((keys, inputs))))
        compile_seconds = 0.0
        say = getattr(self.progress, "say", None)  # (a Progress reporter says what it waits for)
        first_spec = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        if signature not in self._compiled:
            if say is not None:
                say(f"preparing the sampler for {problem.n_students} students: compiling it on the first use "
                    f"of this shape, else loading it from the compilation cache")
            begin = time.perf_counter()
            self._compiled[signature] = self._prepare(problem, keys, inputs, active, first_spec, sharding)
            compile_seconds = time.perf_counter() - begin
            self.compile_seconds += compile_seconds
            if say is not None:
                say(f"sampler ready in {compile_seconds:.0f} s")
        compiled, stored, record_avals, state_avals = self._compiled[signature]
        total, per_call = self.iterations, self.iterations_per_call
        if self.progress is not None:
            self.progress(0, total)
        begin = time.perf_counter()
        zeros = lambda avals: [jax.device_put(np.zeros(a.shape, a.dtype), sharding) for a in avals]  # noqa: E731
        record, state = zeros(record_avals), zeros(state_avals)
        calls = []
        for at in range(0, max(total, 1), per_call):  # every call is dispatched before the first ends
            record, state, marker = compiled(keys, inputs, active, record, state, jax.device_put(np.int32(at), replicated))
            calls.append((min(at + per_call, total), marker))
        for done, marker in calls:
            marker.block_until_ready()
            if self.progress is not None:
                self.progress(done, total)
        values, stats, steps = stored.split([np.asarray(a)[:n_lanes] for a in record])
        seconds = time.perf_counter() - begin

        def per_dataset(a):  # (c * full, samples, ...) -> (b, c, samples, ...)
            return np.swapaxes(a.reshape((c, full) + a.shape[1:])[:, :b], 0, 1)

        steps = per_dataset(steps)
        return Draws({k: per_dataset(v) for k, v in values.items()},
                     {k: per_dataset(v) for k, v in stats.items()},
                     steps[:, :, :self.warmup], seconds, compile_seconds)


def _spec(a, sharding) -> jax.ShapeDtypeStruct:
    """The shape and dtype of ``a`` placed with ``sharding``."""
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding)


def merge_duplicates(lowered) -> None:
    """Merge the identical operations of a lowered program (MLIR's common-subexpression
    elimination), in place, before XLA compiles it: the program over one device then
    computes as the one over several (see the module docstring)."""
    from jaxlib.mlir import passmanager

    module = lowered.compiler_ir("stablehlo")
    with module.context:
        passmanager.PassManager.parse("builtin.module(cse)").run(module.operation)
