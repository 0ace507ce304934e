"""Running NUTS chains: one compiled program for one fit or a batch of fits.

Every fit, a single one (``classsize fit``) or many at once (``classsize recover``),
runs here.  Each (dataset, chain) pair is a **lane**: the whole NUTS run (warm-up
and sampling) of the analysis's kernel, with the dataset's arrays as arguments.  The
program runs one lane per JAX device (one device per core once
:func:`classsize.inference.engine.runtime.use_all_cores` has run, as the command line
does), and the lanes are cut into groups of that width that run in turn
(``vectorize="map"``, the default): four chains on two cores run as two pairs side by
side, one pair after the other.  The program so depends on the analysis, the data's
shapes and the devices, not on the number of chains or of datasets fitted together:
fits of the same shapes share it whatever their chains, and so do a study's batches.  With ``vectorize="vmap"`` all lanes of
a call run in lockstep instead (``jax.vmap``), in one program per number of lanes.

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

The iterations run in calls of one compiled program, :data:`CHUNK` iterations each,
the lanes' NUTS states carried from one call to the next; each call returns its
iterations' records (the kept sites, the sampler statistics and the leapfrog steps),
which the host joins.  Between calls the host can report progress
(``ChainRunner(progress=...)``); a callback inside the program would do the same, but
JAX does not keep a program with host callbacks in its persistent compilation cache.
The program depends on neither the number of warm-up iterations nor the number of
draws: the run's length and the warm-up's adaptation schedule are arguments
(:mod:`~classsize.inference.engine.adaptation`), so fits that differ only in
``warmup`` or ``samples`` share one program.  The calls are made alike whether
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
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from classsize.inference.analyses.base import Problem
from classsize.inference.engine import adaptation, programs
from classsize.inference.engine.programs import StoredProgram
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP

#: Sampler statistics recorded for every draw (ArviZ's names), from the NUTS state.
STATS = ("lp", "energy", "acceptance_rate", "step_size", "n_steps", "diverging")
#: Iterations per call of the compiled chain program (the last call of a run may do fewer).
CHUNK = 50
#: Groups of lanes whose calls are in flight at once: a device has a second lane's
#: chunk queued while the other device finishes the slower lane of a call; more
#: oversubscribe the cores.
IN_FLIGHT = 2
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

    #: Iterations per call of the compiled program (:data:`CHUNK`).
    chunk = CHUNK

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def iterations(self) -> int:
        """Iterations per chain: warm-up and kept draws."""
        return self.warmup + self.samples

    # ----------------------------------------------------------------- one lane
    def _lane(self, problem: Problem, start, key, inputs, active, state, first, total, schedule):
        """Iterations ``first .. first + chunk - 1`` of a lane, from its start when
        ``first`` is 0 (``state`` is then ignored), and each iteration's record: the kept
        sites (zeros during the warm-up), the statistics and the leapfrog steps.  The
        warm-up follows ``schedule`` (:class:`~.adaptation.Plan`; the kernel itself is
        initialised for no warm-up, :mod:`~.adaptation`).  The iterations from ``total``
        on, and every iteration of an inactive (padding) lane, leave the state as it is.
        ``start`` is :meth:`_start`'s pair (the initialised kernel, its ``init``)."""
        kernel, init = start
        settings = problem.analysis.kernel_settings
        state = lax.cond(first == 0, lambda _: init(key, inputs), lambda s: s, state)
        post = kernel.postprocess_fn((), inputs)
        proto = jax.eval_shape(post, state.z)
        kept = lambda s: post(s.z)  # noqa: E731
        empty = lambda s: {k: jnp.zeros(v.shape, v.dtype) for k, v in proto.items()}  # noqa: E731

        def transition(s):
            new = kernel.sample(s, (), inputs)
            warm = lambda n: adaptation.adapt(settings, schedule, s.i, n.accept_prob, n.z, n.adapt_state)  # noqa: E731
            return new._replace(adapt_state=lax.cond(s.i < schedule.warmup, warm, lambda n: n.adapt_state, new))

        def body(s, i):
            live = i < total
            s = lax.cond(active & live, transition, lambda t: t, s)
            values = lax.cond(live & (i >= schedule.warmup), kept, empty, s)
            stats = {"lp": -s.potential_energy, "energy": s.energy, "acceptance_rate": s.accept_prob,
                     "step_size": s.adapt_state.step_size, "n_steps": s.num_steps, "diverging": s.diverging}
            stats = {k: jnp.asarray(v, bool if k == "diverging" else jnp.result_type(float)) for k, v in stats.items()}
            return s, (values, stats, jnp.asarray(s.num_steps, jnp.int32))

        return lax.scan(body, state, first + jnp.arange(self.chunk))

    def _start(self, problem: Problem, keys, inputs):
        """A lane's start, traced once: the analysis's NUTS kernel, initialised for no
        warm-up and with its own adaptation off (:func:`~.adaptation.adapt` adapts, with
        the analysis's settings; the initial state is the same either way); its
        ``init(key, inputs) -> state`` (NumPyro's ``kernel.init`` as a traced function, so
        the program and the state's shapes come from one trace of it); and the shapes of
        the lanes' states (a leading axis of lanes)."""
        kernel = problem.kernel(**adaptation.KERNEL_OFF)
        one = lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype)  # noqa: E731
        traced, shape = jax.make_jaxpr(lambda k, x: kernel.init(k, 0, None, (), x), return_shape=True)(
            one(keys), jax.tree.map(one, inputs))
        run, out = jax.extend.core.jaxpr_as_fun(traced), jax.tree.structure(shape)
        init = lambda k, x: jax.tree.unflatten(out, run(*jax.tree.leaves((k, x))))  # noqa: E731
        lanes = np.shape(keys)[0]
        return (kernel, init), jax.tree.map(lambda s: jax.ShapeDtypeStruct((lanes, *s.shape), s.dtype), shape)

    def _program(self, problem: Problem, start):
        """The program over the lanes, sharded over the devices: ``(keys, inputs, active,
        state, first, total, schedule) -> (state, record)``."""
        mesh = Mesh(np.array(self.devices), ("lanes",))

        def local(keys, inputs, active, state, first, total, schedule):
            one = lambda k, x, a, s: self._lane(problem, start, k, x, a, s, first, total, schedule)  # noqa: E731
            if self.vectorize == "vmap":
                return jax.vmap(one)(keys, inputs, active, state)
            # one lane per device (:meth:`width`)
            lane = jax.tree.map(lambda a: a[0], (keys, inputs, active, state))
            return jax.tree.map(lambda a: a[None], one(*lane))

        lanes = P("lanes")
        program = jax.shard_map(local, mesh=mesh, in_specs=(lanes, lanes, lanes, lanes, P(), P(), P()),
                                out_specs=(lanes, lanes), check_vma=False)
        return jax.jit(program, donate_argnums=3), mesh

    def _export(self, problem: Problem, keys, inputs, active, scalar_spec, sharding) -> StoredProgram:
        """Trace the chain program over a flat state and record and export it: ``(keys,
        inputs, active, state, first, total, schedule) -> (state, record)``, ``state`` the leaves of
        the lanes' NUTS states, ``record`` the kept sites, the statistics and the steps of
        the call's iterations, ``(lanes, chunk, ...)`` each, in
        :class:`~.programs.StoredProgram`'s order."""
        start, state_shape = self._start(problem, keys, inputs)
        state_def = jax.tree.structure(state_shape)
        program, _ = self._program(problem, start)
        names = {}

        def flat(keys, inputs, active, state, first, total, schedule):
            state, (values, stats, steps) = program(keys, inputs, active, jax.tree.unflatten(state_def, state),
                                                    first, total, adaptation.Plan(*schedule))
            names["values"], names["stats"] = tuple(sorted(values)), tuple(sorted(stats))
            return jax.tree.leaves(state), [*(values[k] for k in names["values"]),
                                            *(stats[k] for k in names["stats"]), steps]

        spec = lambda a: _spec(a, sharding)  # noqa: E731
        exported = jax.export.export(jax.jit(flat, donate_argnums=3))(
            spec(keys), jax.tree.map(spec, inputs), spec(active), [spec(a) for a in jax.tree.leaves(state_shape)],
            scalar_spec, scalar_spec, _schedule_spec(scalar_spec.sharding))
        return StoredProgram(exported, names["values"], names["stats"])

    def _prepare(self, problem: Problem, keys, inputs, active, scalar_spec, sharding):
        """The compiled chain program of this shape, with its :class:`~.programs.StoredProgram`
        and the avals of its state: the stored program when an earlier process exported
        it (:mod:`~.programs`), else traced and exported now; compiled (or loaded from the
        persistent compilation cache) through ``Exported.call`` either way, so both give
        the same draws.  The program depends on neither the warm-up length (its schedule
        is an argument) nor the number of draws, nor on the chains beyond the lanes' shape."""
        key = programs.program_key(problem.signature, self.chunk, self.vectorize, self.n_devices,
                                   jax.tree.structure((keys, inputs)),
                                   [(np.shape(a), str(a.dtype)) for a in jax.tree.leaves((keys, inputs))])
        begin = time.perf_counter()
        stored, source = programs.load_or_export(
            key, lambda: self._export(problem, keys, inputs, active, scalar_spec, sharding))
        (_, _, _, state_avals, _, _, _), _ = stored.exported.in_tree.unflatten(stored.exported.in_avals)
        lowered = jax.jit(stored.exported.call, donate_argnums=3).lower(
            keys, inputs, active, [_spec(a, sharding) for a in state_avals], scalar_spec, scalar_spec,
            _schedule_spec(scalar_spec.sharding))
        merge_duplicates(lowered)
        compiled = lowered.compile()
        programs.note("sampler", key, source, time.perf_counter() - begin, analysis=str(problem.signature[0]),
                      students=int(problem.n_students), lanes=int(np.shape(keys)[0]), warmup=self.warmup)
        return compiled, stored, state_avals

    # ------------------------------------------------------------------ a batch
    def run(self, problem: Problem, seeds: Sequence[int], batch_size: int | None = None) -> Draws:
        """Fit the datasets of ``problem`` (its inputs stacked along a leading axis, one
        per seed in ``seeds``).

        The lanes are cut into groups of the program's width (:meth:`width`): one lane
        per device under ``map`` (the default), so the program depends on neither the
        number of chains nor of datasets, and every fit and study of an analysis and shape runs one
        program; all ``B = max(len(seeds), batch_size)`` datasets' lanes at once under
        ``vmap``, where a study's batches are padded to ``batch_size`` datasets to share
        one.  The last group is filled up with inactive lanes, which skip their
        iterations.  Each call of the program runs one group for :data:`CHUNK`
        iterations; :data:`IN_FLIGHT` groups at a time, their calls chunk by chunk, all
        dispatched before the first ends.  Lane ``d * chains + c`` is chain ``c`` of
        dataset ``d``, so a group holds chains of one dataset where it can.
        """
        b, c = len(seeds), self.chains
        full = b if self.vectorize == "map" else max(b, int(batch_size or b))
        keys = np.stack([chain_keys(s, c) for s in seeds])  # (b, c, 2)
        keys = np.concatenate([keys, np.repeat(keys[:1], full - b, axis=0)]).reshape(full * c, -1)
        lane_dataset = np.repeat(np.concatenate([np.arange(b), np.zeros(full - b, np.int64)]), c)
        active = np.repeat(np.arange(full) < b, c)
        n_lanes, width = c * full, self.width(c * full)
        groups = -(-n_lanes // width)
        extra = groups * width - n_lanes
        keys = np.concatenate([keys, np.repeat(keys[:1], extra, axis=0)])
        lane_dataset = np.concatenate([lane_dataset, np.zeros(extra, np.int64)])
        active = np.concatenate([active, np.zeros(extra, bool)])
        mesh = Mesh(np.array(self.devices), ("lanes",))
        sharding, replicated = NamedSharding(mesh, P("lanes")), NamedSharding(mesh, P())

        def group(g):  # the keys, inputs and activity of group g's lanes, on the devices
            at = slice(g * width, (g + 1) * width)
            return (jax.device_put(jnp.asarray(keys[at], dtype=jnp.uint32), sharding),
                    jax.tree.map(lambda a: jax.device_put(np.asarray(a)[lane_dataset[at]], sharding), problem.inputs),
                    jax.device_put(jnp.asarray(active[at]), sharding))

        lanes = [group(g) for g in range(groups)]
        signature = (problem.signature, jax.tree.structure(lanes[0][:2]),
                     tuple(np.shape(a) for a in jax.tree.leaves(lanes[0][:2])))
        compile_seconds = 0.0
        say = getattr(self.progress, "say", None)  # (a Progress reporter says what it waits for)
        scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
        if signature not in self._compiled:
            if say is not None:
                say(f"preparing the sampler for {problem.n_students} students: compiling it on the first use "
                    f"of this shape, else loading it from the compilation cache")
            begin = time.perf_counter()
            self._compiled[signature] = self._prepare(problem, *lanes[0], scalar, sharding)
            compile_seconds = time.perf_counter() - begin
            self.compile_seconds += compile_seconds
            if say is not None:
                say(f"sampler ready in {compile_seconds:.0f} s")
        compiled, stored, state_avals = self._compiled[signature]
        total = self.iterations
        if self.progress is not None:
            self.progress(0, total)
        begin = time.perf_counter()
        states = [[jax.device_put(np.zeros(a.shape, a.dtype), sharding) for a in state_avals] for _ in lanes]
        until = jax.device_put(np.int32(total), replicated)
        schedule = jax.device_put(tuple(adaptation.plan(self.warmup)), replicated)
        per_group = [[] for _ in lanes]  # each group's records, chunk by chunk
        starts = range(0, max(total, 1), self.chunk)
        for w0 in range(0, len(lanes), IN_FLIGHT):
            wave = range(w0, min(w0 + IN_FLIGHT, len(lanes)))
            for at in starts:  # every call of the wave is dispatched before the first ends
                first = jax.device_put(np.int32(at), replicated)
                for g in wave:
                    states[g], record = compiled(*lanes[g], states[g], first, until, schedule)
                    per_group[g].append(record)
            for j, at in enumerate(starts):
                for g in wave:
                    per_group[g][j] = [np.asarray(a) for a in per_group[g][j]]
                if self.progress is not None:  # iterations per chain, over the groups done and this wave
                    self.progress((w0 * total + len(wave) * min(at + self.chunk, total)) // len(lanes), total)
        # (lanes, iterations, ...) of every record array: each group's chunks joined
        # along the iterations, then the groups along the lanes
        rows = [[np.concatenate(parts, axis=1) for parts in zip(*records)] for records in per_group]
        record = [np.concatenate(parts)[:n_lanes, :total] for parts in zip(*rows)]
        values, stats, steps = stored.split(record)
        seconds = time.perf_counter() - begin

        def per_dataset(a):  # (full * c, iterations, ...) -> (b, c, iterations, ...)
            return a.reshape((full, c) + a.shape[1:])[:b]

        kept = lambda a: per_dataset(a[:, self.warmup:])  # noqa: E731
        return Draws({k: kept(v) for k, v in values.items()}, {k: kept(v) for k, v in stats.items()},
                     per_dataset(steps[:, :self.warmup]), seconds, compile_seconds)

    def width(self, lanes: int) -> int:
        """Lanes per call of the program, for a run of ``lanes`` lanes: one per device
        under ``map``; under ``vmap`` all of them, rounded up to a multiple of the
        devices."""
        if self.vectorize == "map":
            return self.n_devices
        return -(-lanes // self.n_devices) * self.n_devices


def _schedule_spec(replicated) -> tuple:
    """The shapes of a warm-up :class:`~.adaptation.Plan` (as a plain tuple, which an
    exported program's signature can hold), replicated."""
    return tuple(jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=replicated) for a in adaptation.plan(0))


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
