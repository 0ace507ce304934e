"""Sampler programs stored as exported StableHLO beside the compilation cache.

JAX's persistent compilation cache (:mod:`classsize.model.jaxcache`) keeps compiled
programs, but JAX must trace and lower the NUTS program (several seconds for the
conditioned model) before it can look a program up there.  The chain program is
therefore traced once per shape and kept as a ``jax.export.Exported``
(:func:`save`): a later process of the same package, JAX and device count loads it
(:func:`load`), lowers the small call around it, and finds the compiled program in
the persistent cache, without tracing the model.

The programs run after sampling (the pointwise log likelihood, the prior draws, the
replicates) are kept the same way (:func:`stored_jit`): traced and exported on their
first use for a key and argument shapes, loaded by later processes.

Files live in ``exported/`` of the compilation cache folder, one per key
(:func:`program_key`): a SHA-256 of the package's own source files, the versions of
JAX, jaxlib and NumPyro, and what the program depends on (the analysis's signature,
the runner's settings, the arguments' shapes and the device count), so a changed
model never meets a stale program.  Each file is JSON (the layout of the program's
carry) followed by the serialized program; a file that cannot be read is ignored and
the program traced again.  Nothing is stored when the cache is off.

When the environment variable ``CLASSSIZE_PROGRAM_LOG`` names a file, every program a
process prepares is appended to it as one JSON line (:func:`note`): its kind
(``sampler`` or ``function``), key, whether it was loaded from the folder or traced
now, the label ``CLASSSIZE_PROGRAM_CONTEXT`` holds (if set: what the process was
doing, such as the test that ran), and the seconds it took: for a sampler, until it was compiled (or loaded from the
persistent compilation cache); for a function, its loading or tracing (it is compiled
at its first call).  The test suite reads this log to say what it compiled.

Every change to the package's sources gives new keys, so old files are pruned
(:func:`prune`): after each save, when the folder holds more than :data:`MAX_BYTES`,
the files used least recently (a load touches its file) are removed until it holds at
most half of that.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

#: The first line of a stored program's file, before its JSON layout.
MAGIC = b"classsize-exported-program 1\n"
#: Most bytes the stored programs may take before the least recently used are removed.
MAX_BYTES = 512 * 2**20
#: The environment variable naming the file :func:`note` appends to.
LOG_ENV = "CLASSSIZE_PROGRAM_LOG"
#: The environment variable whose value :func:`note` writes as each line's ``context``.
CONTEXT_ENV = "CLASSSIZE_PROGRAM_CONTEXT"


class StoredProgram(NamedTuple):
    """An exported chain program and the names of its carry's record arrays, in the
    order of its ``record`` argument: the kept sites, then the sampler statistics,
    then the leapfrog steps."""

    exported: object  # jax.export.Exported
    value_names: tuple[str, ...]
    stat_names: tuple[str, ...]

    def split(self, record):
        """``record`` (a list in this order) as ``(values, stats, steps)``: the kept sites
        and the statistics by name, and the steps."""
        nv, ns = len(self.value_names), len(self.stat_names)
        return (dict(zip(self.value_names, record[:nv])), dict(zip(self.stat_names, record[nv:nv + ns])),
                record[nv + ns])


@lru_cache(maxsize=1)
def register_types() -> None:
    """Let ``jax.export`` serialize the named tuples of the chain program's arguments
    (NUTS states, the encoded data, the pilot)."""
    from jax import export
    from numpyro.infer.hmc import HMCState
    from numpyro.infer.hmc_util import HMCAdaptState

    from classsize.model.groups import Groups
    from classsize.model.pieces import Observed
    from classsize.model.pilot import Pilot

    for t in (HMCState, HMCAdaptState, Observed, Pilot, Groups):
        export.register_namedtuple_serialization(t, serialized_name=f"{t.__module__}.{t.__qualname__}")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 of the package's Python files and of the JAX, jaxlib and NumPyro versions."""
    import jax
    import jaxlib
    import numpyro

    import classsize.inference
    import classsize.model

    h = hashlib.sha256(f"{jax.__version__} {jaxlib.__version__} {numpyro.__version__}".encode())
    for package in (classsize.model, classsize.inference):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def program_key(*parts) -> str:
    """The key of a program: :func:`source_digest` and ``parts`` (their ``repr``)."""
    return hashlib.sha256(repr((source_digest(),) + parts).encode()).hexdigest()[:40]


def _folder() -> Path | None:
    from classsize.model import jaxcache

    enabled = jaxcache.enabled_dir()
    return None if enabled is None else enabled / "exported"


def load(key: str) -> StoredProgram | None:
    """The program stored under ``key``, or None (none stored, the cache off, or a file
    that cannot be read)."""
    folder = _folder()
    if folder is None:
        return None
    try:
        path = folder / f"{key}.bin"
        blob = path.read_bytes()
        os.utime(path)  # used now: the last to be pruned
        if not blob.startswith(MAGIC):
            return None
        header, _, body = blob[len(MAGIC):].partition(b"\n")
        layout = json.loads(header)
        from jax import export

        register_types()
        return StoredProgram(export.deserialize(bytearray(body)), tuple(layout["values"]), tuple(layout["stats"]))
    except Exception:  # noqa: BLE001  (unreadable, damaged or from another JAX: trace again)
        return None


def save(key: str, program: StoredProgram) -> None:
    """Store ``program`` under ``key`` (atomically: a temporary file renamed into place);
    a folder that cannot be written is passed over."""
    folder = _folder()
    if folder is None:
        return
    try:
        register_types()
        header = json.dumps({"values": list(program.value_names), "stats": list(program.stat_names)})
        blob = MAGIC + header.encode() + b"\n" + bytes(program.exported.serialize())
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, folder / f"{key}.bin")
        prune(folder)
    except OSError:
        return


def note(kind: str, key: str, source: str, seconds: float, **what) -> None:
    """Append a line for a prepared program to the file ``$CLASSSIZE_PROGRAM_LOG`` names
    (none: nothing): ``kind``, ``key``, ``source`` (``"stored"``: loaded from the folder;
    ``"traced"``: traced now), ``seconds`` it took, ``context`` (``$CLASSSIZE_PROGRAM_CONTEXT``,
    or None) and ``what`` (JSON values).  A file that cannot be written is passed over."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"kind": kind, "key": key, "source": source, "seconds": round(seconds, 3), "pid": os.getpid(),
                       "context": os.environ.get(CONTEXT_ENV), **what})
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    except OSError:
        return


def load_or_export(key: str, export) -> tuple[StoredProgram, str]:
    """The program stored under ``key`` and ``"stored"``, else ``export()`` (a
    :class:`StoredProgram`), saved under ``key``, and ``"traced"``."""
    stored = load(key)
    if stored is not None:
        return stored, "stored"
    stored = export()
    save(key, stored)
    return stored, "traced"


def stored_jit(fn, *key_parts):
    """``jax.jit(fn)`` whose traced program is stored: on the first call with given
    argument shapes the program is loaded from the folder (under a key of
    ``key_parts``, the arguments' structure and their shapes and dtypes: ``key_parts``
    must name everything else ``fn`` depends on), else traced, exported and saved;
    either way it runs through ``Exported.call``, compiled once per process (or loaded
    from the persistent compilation cache).  With the cache off, plain ``jax.jit``.

    ``.prepare(*args)`` loads or traces the program for ``args``' shapes now and returns
    it (None with the cache off): it traces no Python function when called, only the
    stored program, so another thread may compile and run it while this one traces
    (NumPyro's handlers are one stack for all threads)."""
    import jax
    import numpy as np

    jitted = jax.jit(fn)
    compiled: dict = {}

    def prepare(*args):
        if _folder() is None:
            return None
        leaves, tree = jax.tree.flatten(args)
        shapes = tuple((np.shape(a), str(np.result_type(a))) for a in leaves)
        program = compiled.get((tree, shapes))
        if program is None:
            begin = time.perf_counter()
            key = program_key("function", *key_parts, tree, shapes)

            def export():
                register_types()
                specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.result_type(a)), args)
                return StoredProgram(jax.export.export(jitted)(*specs), (), ())

            stored, source = load_or_export(key, export)
            program = compiled[(tree, shapes)] = jax.jit(stored.exported.call)
            note("function", key, source, time.perf_counter() - begin, name=str(key_parts[0]))
        return program

    def call(*args):
        return (prepare(*args) or jitted)(*args)

    call.prepare = prepare
    return call


def prune(folder: Path, max_bytes: int = MAX_BYTES) -> list[Path]:
    """Remove the least recently used stored programs of ``folder`` when they take more
    than ``max_bytes``, down to at most half of it; returns the files removed.  A file
    another process removes first is passed over."""
    files = []
    for path in folder.glob("*.bin"):
        try:
            stat = path.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = []
    if total <= max_bytes:
        return removed
    for _, size, path in sorted(files):
        if total <= max_bytes // 2:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed
