"""Forward simulation: sample :func:`class_size_experiment` and turn draws into tables.

``simulate(config, seed)`` gives one :class:`Dataset`; ``simulate_many`` draws many
datasets in one vectorised call (``jax.vmap`` over seeds of the jitted model), which
is what calibration studies use.  Dataset ``k`` of ``simulate_many(config, seeds)``
is the same as ``simulate(config, seeds[k])``, byte for byte.
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
from .experiment import PARAMETERS, class_size_experiment
from .files import atomic_write_text
from .tables import DRAW_SITES, school_effects_from_draw, tables_from_draw


@dataclass(frozen=True)
class Dataset:
    """One simulated (or loaded) dataset: the two tables and, when known, the truth."""

    students: pd.DataFrame
    classes: pd.DataFrame
    truth: Mapping | None = None
    config: Config | None = None
    seed: int | None = None
    extra: Mapping = field(default_factory=dict)

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
        atomic_write_text(out / "classes.csv", self.classes.to_csv(index=False))
        atomic_write_text(out / "students.csv", self.students.to_csv(index=False))
        if self.truth is not None:
            atomic_write_text(out / "truth.json", json.dumps(self.truth, indent=2) + "\n")


@lru_cache(maxsize=16)
def _batched_sampler(config: Config):
    """A jitted function: stacked PRNG keys -> dict of stacked draws (sites in DRAW_SITES)."""

    def one(key):
        tr = handlers.trace(handlers.seed(class_size_experiment, key)).get_trace(config)
        return {k: tr[k]["value"] for k in DRAW_SITES + ("ability",) + PARAMETERS}

    return jax.jit(jax.vmap(one))


def draw_many(config: Config, seeds: Sequence[int]) -> dict[str, np.ndarray]:
    """Forward draws of the model for each seed, stacked along a leading axis."""
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    out = _batched_sampler(config)(keys)
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
    return Dataset(students, classes, truth, config, seed)


def simulate(config: Config = Config(), seed: int = 0) -> Dataset:
    """One dataset from the model, the notebook's process."""
    return simulate_many(config, [seed])[0]


def simulate_many(config: Config = Config(), seeds: Sequence[int] = (0,)) -> list[Dataset]:
    """Many datasets from one vectorised call of the model."""
    draws = draw_many(config, seeds)
    return [
        _dataset_from_draw(config, {k: v[i] for k, v in draws.items()}, s)
        for i, s in enumerate(seeds)
    ]
