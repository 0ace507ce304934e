"""Running NUTS chains: compiled programs for one fit or a batch of fits.

Every fit, a single one (``classsize fit``) or many at once (``classsize recover``),
runs here.  Each (dataset, chain) pair is a **lane**: the whole NUTS run (warm-up
and sampling) of the analysis's kernel, with the dataset's arrays as arguments, in
the three programs of :mod:`~classsize.inference.engine.nuts`: a **start** program
(the initial state), a **chain** program (iterations from a state, each one's
position, statistics and steps) and, once sampling is done, the **site values** of the
kept positions (:data:`SITES_BLOCK` at a time).  The start and chain programs run one lane per JAX device (one device per core once
:func:`classsize.inference.engine.runtime.use_all_cores` has run, as the command line
does), and the lanes are cut into groups of that width that run in turn
(``vectorize="map"``, the default): four chains on two cores run as two pairs side by
side, one pair after the other.  The programs so depend on the analysis, the data's
shapes and the devices, not on the number of chains or of datasets fitted together:
fits of the same shapes share them whatever their chains, and so do a study's batches.
With ``vectorize="vmap"`` all lanes of a call run in lockstep instead (``jax.vmap``),
in programs for one number of lanes.

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

The iterations run in calls of the chain program, :data:`CHUNK` iterations each,
the lanes' NUTS states carried from one call to the next; each call returns its
iterations' records (the positions, the sampler statistics and the leapfrog steps),
which the host joins.  Between calls the host can report progress
(``ChainRunner(progress=...)``); a callback inside the program would do the same, but
JAX does not keep a program with host callbacks in its persistent compilation cache.
The program depends on neither the number of warm-up iterations nor the number of
draws: the run's length and the warm-up's adaptation schedule are arguments
(:mod:`~classsize.inference.engine.adaptation`), so fits that differ only in
``warmup`` or ``samples`` share one program.  The calls are made alike whether
progress is reported or not, so the draws are the same either way.

The start and chain programs are traced once per shape over flat carries (the
positions, the statistics and the steps as one list, the NUTS states' leaves as
another), exported (``jax.export``) and stored beside the compilation cache
(:mod:`~classsize.inference.engine.programs`), as is the site values' function, so a
later process loads them instead of tracing the model; they are compiled through
``Exported.call`` either way (the same draws), or loaded from JAX's persistent
compilation cache when an earlier process compiled them (:mod:`classsize.model.jaxcache`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from classsize.inference.analyses.base import Problem
from classsize.inference.engine import adaptation, nuts, programs
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
#: Kept positions per call of the site-values function (:func:`~.nuts.postprocess`):
#: a dataset's draws run in blocks of this many, the last filled up, so every number of
#: draws shares one program.
SITES_BLOCK = 256
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

    # ----------------------------------------------------------------- programs
    def _sharded(self, one, lane_args: int, args: int):
        """``one`` (a function of one lane's first ``lane_args`` arguments, then ``args -
        lane_args`` arguments shared by the lanes) over a leading axis of lanes, sharded
        over the devices: one lane per device under ``map``, ``jax.vmap`` over a device's
        lanes under ``vmap``."""
        mesh = Mesh(np.array(self.devices), ("lanes",))

        def local(*a):
            per_lane, shared = a[:lane_args], a[lane_args:]
            f = lambda *lane: one(*lane, *shared)  # noqa: E731
            if self.vectorize == "vmap":
                return jax.vmap(f)(*per_lane)
            # one lane per device (:meth:`width`)
            return jax.tree.map(lambda x: x[None], f(*jax.tree.map(lambda x: x[0], per_lane)))

        specs = (P("lanes"),) * lane_args + (P(),) * (args - lane_args)
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P("lanes"), check_vma=False)

    def _export(self, functions, keys, inputs, active, scalar_spec, sharding) -> tuple[StoredProgram, StoredProgram]:
        """Trace and export the lanes' two programs over flat NUTS states
        (:mod:`~.nuts`): the start ``(keys, inputs) -> state`` and the chain program
        ``(inputs, active, state, first, total, schedule) -> (state, record)``, ``state``
        the leaves of the lanes' NUTS states, ``record`` each iteration's position, the
        statistics and the steps, ``(lanes, chunk, ...)`` each, in
        :class:`~.programs.StoredProgram`'s order."""
        functions = functions()
        one = lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype)  # noqa: E731
        shape = jax.eval_shape(partial(nuts.start, functions), one(keys), jax.tree.map(one, inputs))
        state_def, lanes = jax.tree.structure(shape), np.shape(keys)[0]
        state = [jax.ShapeDtypeStruct((lanes, *s.shape), s.dtype, sharding=sharding) for s in jax.tree.leaves(shape)]
        start = self._sharded(lambda k, x: jax.tree.leaves(nuts.start(functions, k, x)), 2, 2)
        names = {}

        def step(x, a, s, first, total, schedule):
            s, (z, stats, steps) = nuts.chain(functions, self.chunk, jax.tree.unflatten(state_def, s), x, a, first,
                                              total, adaptation.Plan(*schedule))
            names["stats"] = tuple(sorted(stats))
            return jax.tree.leaves(s), [z, *(stats[k] for k in names["stats"]), steps]

        spec = lambda a: _spec(a, sharding)  # noqa: E731
        begun = jax.export.export(jax.jit(start))(spec(keys), jax.tree.map(spec, inputs))
        chain = jax.export.export(jax.jit(self._sharded(step, 3, 6), donate_argnums=2))(
            jax.tree.map(spec, inputs), spec(active), state, scalar_spec, scalar_spec,
            _schedule_spec(scalar_spec.sharding))
        return StoredProgram(begun, (), ()), StoredProgram(chain, ("z",), names["stats"])

    def _prepare(self, problem: Problem, keys, inputs, active, scalar_spec, sharding):
        """The compiled start and chain programs of this shape (:meth:`_export`), the
        chain's :class:`~.programs.StoredProgram` and the site values' function: stored
        programs when an earlier process exported them (:mod:`~.programs`), else traced
        and exported now; compiled (or loaded from the persistent compilation cache)
        through ``Exported.call`` either way, so both give the same draws.  The programs
        depend on neither the warm-up length (its schedule is an argument) nor the
        number of draws, nor on the chains beyond the lanes' shape."""
        key = partial(programs.program_key, problem.signature, self.chunk, self.vectorize, self.n_devices,
                      jax.tree.structure((keys, inputs)),
                      [(np.shape(a), str(a.dtype)) for a in jax.tree.leaves((keys, inputs))])
        begin = time.perf_counter()
        functions = _once(lambda: nuts.model_functions(
            problem.kernel(**adaptation.KERNEL_OFF), problem.analysis.kernel_settings,
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), inputs)))
        exported = _once(lambda: self._export(functions, keys, inputs, active, scalar_spec, sharding))
        begun, source = programs.load_or_export(key("start"), lambda: exported()[0])
        stored, chain_source = programs.load_or_export(key("chain"), lambda: exported()[1])
        (_, _, state_avals, _, _, _), _ = stored.exported.in_tree.unflatten(stored.exported.in_avals)
        state = [_spec(a, sharding) for a in state_avals]
        compiled = []
        for program, args, donate in ((begun, (keys, inputs), ()), (
                stored, (inputs, active, state, scalar_spec, scalar_spec, _schedule_spec(scalar_spec.sharding)), 2)):
            lowered = jax.jit(program.exported.call, donate_argnums=donate).lower(*args)
            merge_duplicates(lowered)
            compiled.append(lowered.compile())
        sites = programs.stored_jit(lambda x, zs: nuts.postprocess(functions(), x, zs), "sites", problem.signature)
        programs.note("sampler", key("chain"), "traced" if "traced" in (source, chain_source) else "stored",
                      time.perf_counter() - begin, analysis=str(problem.signature[0]),
                      students=int(problem.n_students), lanes=int(np.shape(keys)[0]), warmup=self.warmup)
        return compiled[0], compiled[1], stored, sites

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
        start, compiled, stored, sites = self._compiled[signature]
        total = self.iterations
        if self.progress is not None:
            self.progress(0, total)
        begin = time.perf_counter()
        states = [start(*lane[:2]) for lane in lanes]
        until = jax.device_put(np.int32(total), replicated)
        schedule = jax.device_put(tuple(adaptation.plan(self.warmup)), replicated)
        per_group = [[] for _ in lanes]  # each group's records, chunk by chunk
        starts = range(0, max(total, 1), self.chunk)
        for w0 in range(0, len(lanes), IN_FLIGHT):
            wave = range(w0, min(w0 + IN_FLIGHT, len(lanes)))
            for at in starts:  # every call of the wave is dispatched before the first ends
                first = jax.device_put(np.int32(at), replicated)
                for g in wave:
                    states[g], record = compiled(*lanes[g][1:], states[g], first, until, schedule)
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
        positions, stats, steps = stored.split(record)
        values = _site_values(sites, problem.inputs, positions["z"][:, self.warmup:].reshape(full, c, -1, 
                              positions["z"].shape[-1])[:b])
        seconds = time.perf_counter() - begin

        def per_dataset(a):  # (full * c, iterations, ...) -> (b, c, iterations, ...)
            return a.reshape((full, c) + a.shape[1:])[:b]

        kept = lambda a: per_dataset(a[:, self.warmup:])  # noqa: E731
        return Draws(values, {k: kept(v) for k, v in stats.items()},
                     per_dataset(steps[:, :self.warmup]), seconds, compile_seconds)

    def width(self, lanes: int) -> int:
        """Lanes per call of the program, for a run of ``lanes`` lanes: one per device
        under ``map``; under ``vmap`` all of them, rounded up to a multiple of the
        devices."""
        if self.vectorize == "map":
            return self.n_devices
        return -(-lanes // self.n_devices) * self.n_devices


def _site_values(sites, inputs, z) -> dict[str, np.ndarray]:
    """The model's sites at kept positions ``z`` (``(datasets, chains, draws, d)``),
    each dataset on its own ``inputs`` (a leading axis of datasets): ``(datasets,
    chains, draws, ...)`` each, :data:`SITES_BLOCK` positions per call of ``sites``."""
    b, c, n, d = z.shape
    blocks = max(1, -(-c * n // SITES_BLOCK))
    out = []
    for k in range(b):
        rows = np.zeros((blocks * SITES_BLOCK, d), z.dtype)
        rows[:c * n] = z[k].reshape(c * n, d)
        one = jax.tree.map(lambda a: np.asarray(a)[k], inputs)
        parts = [sites(one, rows[i * SITES_BLOCK:(i + 1) * SITES_BLOCK]) for i in range(blocks)]
        out.append({name: np.concatenate([np.asarray(p[name]) for p in parts])[:c * n].reshape(
            (c, n) + np.shape(parts[0][name])[1:]) for name in parts[0]})
    return {name: np.stack([o[name] for o in out]) for name in out[0]}


def _once(make: Callable) -> Callable:
    """``make`` called at most once: its value, made on the first call."""
    memo = []
    return lambda: memo[0] if memo else memo.append(make()) or memo[0]


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
