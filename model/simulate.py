"""Forward simulation: sample :func:`class_size_experiment` and turn draws into tables.

``simulate(config, seed)`` gives one :class:`Dataset`; ``simulate_many`` draws many
datasets in one vectorised call (``jax.vmap`` over seeds of the jitted model), which
is what calibration studies use.  Dataset ``k`` of ``simulate_many(config, seeds)``
is the same as ``simulate(config, seeds[k])``, byte for byte.

``write_replicates`` is the path of ``classsize simulate --replicates K``: batches of
draws go straight to files (CSV folders or stacked Parquet, see
:mod:`classsize.model.writers`) without a pandas table per dataset; its files are
the bytes ``Dataset.write`` gives for the same seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpyro import handlers

from .config import Config
from .experiment import class_size_experiment
from .files import atomic_write_text
from .format import CLASSES_FILE, STUDENTS_FILE, TRUTH_FILE
from .machine import machine_cores
from .pieces import PARAMETERS
from .precision import float64
from .tables import CLASS_SITES, DRAW_SITES, class_effects_from_draw, school_effects_from_draw, tables_from_draw


@dataclass(frozen=True)
class Dataset:
    """One simulated (or loaded) dataset: the two tables and, when known, the truth."""

    students: pd.DataFrame
    classes: pd.DataFrame
    truth: Mapping | None = None
    config: Config | None = None
    seed: int | None = None
    extra: Mapping = field(default_factory=dict)

    def __repr__(self) -> str:
        s = self.students
        cohorts = ", ".join(f"{n} {c}" for c, n in s["cohort"].value_counts().sort_index().items())
        seed = "" if self.seed is None else f", seed {self.seed}"
        return (f"Dataset({len(s)} students ({cohorts}), {len(self.classes)} classes, "
                f"{self.classes['school_id'].nunique()} schools{seed}; .students, .classes, .truth, .write(folder))")

    def summary(self) -> str:
        s, c = self.students, self.classes
        lines = []
        for size in ("SMALL", "LARGE"):
            cls = c[c["class_size"] == size]
            ids = cls["class_id"]
            n_stu = int(cls["n_students"].sum())
            rng = f"{ids.min()}-{ids.max()}" if len(ids) else "none"
            lines.append(f"{size}: {n_stu} students, {len(cls)} classes, class_id range: {rng}")
        lines.append(f"Test score range: {s['test_score'].min()}-{s['test_score'].max()}")
        merged = s.merge(c[["class_id", "class_size"]], on="class_id")
        tab = merged.groupby(["cohort", "class_size"])["test_score"].agg(["count", "mean"])
        lines.append("Mean test score by cohort and class size:")
        for (cohort, size), row in tab.iterrows():
            lines.append(f"  {cohort:<12} {size:<5} n={int(row['count']):>5}  mean={row['mean']:.2f}")
        lines.append(f"Teachers with an MA: {c['teacher_has_ma'].mean():.3f} of {len(c)} classes")
        if self.truth:
            est = self.truth.get("estimands", {})
            lines.append("Estimands: " + ", ".join(f"{k} = {v:g}" for k, v in est.items()))
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> None:
        """Write students.csv, classes.csv and (when known) truth.json, each atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CLASSES_FILE, self.classes.to_csv(index=False))
        atomic_write_text(out / STUDENTS_FILE, self.students.to_csv(index=False))
        if self.truth is not None:
            atomic_write_text(out / TRUTH_FILE, json.dumps(self.truth, indent=2) + "\n")


@lru_cache(maxsize=16)
def _batched_sampler(config: Config):
    """:func:`forward_sampler` of ``config`` with its parameters pinned (cached per configuration)."""
    return forward_sampler(config)


def forward_sampler(config: Config, priors=None):
    """A jitted function: stacked PRNG keys -> dict of stacked forward draws (the sites of
    ``DRAW_SITES``, ``ability`` and the parameters).  ``priors`` None pins the parameters
    to ``config``; otherwise each dataset's parameters are drawn from ``priors``."""
    import numpyro

    def one(key):
        # a scale pinned to a concrete 0 is a Delta in the model; argument checks are
        # off so that no distribution refuses a traced boundary value
        with numpyro.validation_enabled(False):
            tr = handlers.trace(handlers.seed(class_size_experiment, key)).get_trace(config, priors)
        return {k: tr[k]["value"] for k in DRAW_SITES + ("ability",) + PARAMETERS + CLASS_SITES if k in tr}

    return jax.jit(jax.vmap(one))


def _export_path(config: Config, batch: int) -> Path | None:
    """Where the traced sampler of ``config`` for ``batch`` keys is stored, or None
    when the compilation cache is off.  The name hashes everything the traced
    program depends on: the sources of this package, the versions of JAX, jaxlib
    and NumPyro, 64-bit mode, the configuration and the batch size."""
    import hashlib

    import jaxlib
    import numpyro

    from . import jaxcache

    folder = jaxcache.enabled_dir()
    if folder is None:
        return None
    h = hashlib.sha256()
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    key = keys_of([0])
    h.update(json.dumps([jax.__version__, jaxlib.__version__, numpyro.__version__,
                         bool(jax.config.jax_enable_x64), str(jax.config.jax_default_prng_impl),
                         list(key.shape[1:]), str(key.dtype), config.to_dict(), int(batch)],
                        sort_keys=True).encode())
    return folder / "samplers" / f"{h.hexdigest()[:32]}.bin"


@lru_cache(maxsize=16)
def sampler(config: Config, batch: int):
    """The batched sampler for ``batch`` keys: stacked PRNG keys -> dict of stacked draws.

    With the compilation cache on (:mod:`classsize.model.jaxcache`), the traced
    program is stored beside it (``jax.export``), so later processes skip tracing
    the model: they load it and JAX's cache gives the compiled code.  The stored
    program is the same computation, so the draws are the same bytes.  A damaged
    file is stored again; any other problem falls back to tracing.
    """
    f = _batched_sampler(config)
    try:
        path = _export_path(config, batch)
        if path is None:
            return f
        from jax import export

        if path.exists():
            try:
                return jax.jit(export.deserialize(bytearray(path.read_bytes())).call)
            except Exception:  # damaged: stored again below
                path.unlink(missing_ok=True)
        key = keys_of([0])
        exported = export.export(f)(jax.ShapeDtypeStruct((batch, *key.shape[1:]), key.dtype))
        blob = exported.serialize()
        from .files import atomic_write

        atomic_write(path, lambda p: p.write_bytes(blob))
        return jax.jit(exported.call)  # the program later processes load, compiled once
    except Exception:  # e.g. no flatbuffers, a read-only folder: trace as usual
        return f


@lru_cache(maxsize=1)
def _keys_of_seeds():
    return jax.jit(jax.vmap(jax.random.PRNGKey))


def keys_of(seeds: Sequence[int]) -> jax.Array:
    """``jax.random.PRNGKey(s)`` for every seed, stacked (one vectorised call)."""
    return _keys_of_seeds()(jnp.asarray(np.asarray(seeds, dtype=np.int64)))


@float64
def draw_many(config: Config, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Forward draws of the model for each seed, stacked along a leading axis."""
    out = sampler(config, len(seeds))(keys_of(seeds))
    return {k: np.asarray(v) for k, v in jax.block_until_ready(out).items()}


def _dataset_from_draw(config: Config, draw: Mapping[str, np.ndarray], seed: int) -> Dataset:
    students, classes = tables_from_draw(draw, config, shuffle_seed=seed)
    truth = {
        "seed": int(seed),
        "engine": "model",
        "estimands": config.estimands(),
        "school_effects": school_effects_from_draw(draw),
        "config": config.to_dict(),
    }
    class_effects = class_effects_from_draw(draw, config)
    if class_effects is not None:
        truth["class_effects"] = class_effects
    return Dataset(students, classes, truth, config, seed)


@float64
def simulate(config: Config = Config(), seed: int = 0) -> Dataset:
    """One dataset from the model, the notebook's process."""
    return simulate_many(config, [seed])[0]


@float64
def simulate_many(config: Config = Config(), seeds: Sequence[int] = (0,)) -> list[Dataset]:
    """Many datasets from one vectorised call of the model."""
    draws = draw_many(config, seeds)
    return [
        _dataset_from_draw(config, {k: v[i] for k, v in draws.items()}, s)
        for i, s in enumerate(seeds)
    ]


#: Replicates drawn and written per batch by :func:`write_replicates` (bounds memory;
#: also the row-group size of the Parquet files, so it is fixed, not tuned per machine).
BATCH_SIZE = 256
#: The most memory one batch's draws may take (:attr:`Config.simulation_bytes` per
#: replicate): a batch of a large design holds fewer than :data:`BATCH_SIZE` replicates.
BATCH_BYTES = 4 * 2**30


def _start_batch(config: Config, seeds: Sequence[int], size: int):
    """Dispatch the draws of ``seeds``, padded to ``size`` seeds so that every batch of
    a run has one shape (one compilation); JAX computes them while the caller writes."""
    padded = list(seeds) + [int(seeds[-1])] * (size - len(seeds))
    return sampler(config, size)(keys_of(padded))


@float64
def write_replicates(
    out_dir: str | Path,
    config: Config,
    seed: int,
    replicates: int,
    fmt: str = "csv",
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
) -> None:
    """Simulate datasets with seeds ``seed .. seed+replicates-1`` and write them.

    ``fmt="csv"``: one folder per dataset, ``replicate_0000`` ... under ``out_dir``
    (for one replicate, the files go into ``out_dir`` itself), the bytes of
    :meth:`Dataset.write`, each folder renamed into place complete, then
    ``replicates.json`` listing them all (:func:`~.writers.write_replicate_list`).
    ``fmt="parquet"``: ``students.parquet``, ``classes.parquet`` and ``truth.json`` in
    ``out_dir`` (see :mod:`classsize.model.writers`).  Datasets are drawn
    ``batch_size`` at a time (fewer when a batch would take more than
    :data:`BATCH_BYTES`); the next batch is computed while the current one is written,
    and CSV folders are written by ``workers`` threads (default: the number of cores).
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import writers

    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = max(1, min(batch_size, replicates, BATCH_BYTES // config.simulation_bytes))
    starts = list(range(0, replicates, size))
    estimands, config_dict = config.estimands(), config.to_dict()
    stacked = writers.StackedWriter(out, config, replicates) if fmt == "parquet" else None
    pool = ThreadPoolExecutor(workers or machine_cores()) if fmt == "csv" else None
    sink = ThreadPoolExecutor(1)  # writes batch j while batch j+1 is turned into tables
    written = None

    def write(a: int, seeds: list[int], students, classes, school_effect: np.ndarray, class_effects) -> None:
        if stacked is not None:
            stacked.add(students, classes, seeds, school_effect, class_effects)
            return
        truths = [
            writers.truth_of(config, s, school_effect[i], estimands, config_dict, class_effects[i])
            for i, s in enumerate(seeds)
        ]
        names = ["."] if replicates == 1 else [writers.replicate_name(a + i) for i in range(len(seeds))]
        writers.write_csv_folders(out, students, classes, truths, names, pool)

    try:
        seeds_of = [[seed + k for k in range(a, min(a + size, replicates))] for a in starts]
        pending = _start_batch(config, seeds_of[0], size)
        for j, a in enumerate(starts):
            draws = {k: np.asarray(v) for k, v in pending.items()}
            if j + 1 < len(starts):
                pending = _start_batch(config, seeds_of[j + 1], size)
            seeds = seeds_of[j]
            students, classes = writers.stacked_tables(draws, config, seeds, first_replicate=a)
            if written is not None:
                written.result()  # at most one batch waits to be written: bounded memory
            class_effects = [class_effects_from_draw({k: v[i] for k, v in draws.items()}, config)
                             for i in range(len(seeds))]
            written = sink.submit(write, a, seeds, students, classes, draws["school_effect"][: len(seeds)],
                                  class_effects)
            del draws, students, classes
        written.result()
        if stacked is not None:
            stacked.close()
        elif replicates > 1:
            writers.write_replicate_list(out, config, [seed + k for k in range(replicates)])
    except BaseException:
        # the writer threads stop (their queued work cancelled) before the files close
        sink.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if stacked is not None:
            stacked.abort()
        raise
    finally:
        sink.shutdown()
        if pool is not None:
            pool.shutdown()
