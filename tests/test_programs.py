"""Stored sampler programs (:mod:`classsize.inference.engine.programs`): a later fit of
the same shape loads the exported program instead of tracing the model, with the same
draws; a damaged file is passed over."""

from __future__ import annotations

import numpy as np
import pytest

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.data.sources import as_loaded
from classsize.inference.engine import programs
from classsize.inference.engine.sampling import ChainRunner
from classsize.model import Config, simulate


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "_folder", lambda: tmp_path)
    return tmp_path


def test_a_stored_program_gives_the_same_draws_without_tracing(folder, monkeypatch):
    """(The design, dataset and sampler settings of tests/test_buckets.py, so that the
    compiled program comes from the persistent compilation cache when that ran first.)"""
    from classsize.inference.engine.runtime import use_compilation_cache

    use_compilation_cache()
    spec = get_analysis("structural")
    problem = spec.stack([spec.problem(as_loaded(simulate(Config(n_regular=300, n_experimental=300, n_schools=4),
                                                          seed=3)))])
    first = ChainRunner(2, 100, 100).run(problem, [7])
    stored = list(folder.glob("*.bin"))  # the start, the chain and the site values' programs
    assert len(stored) == 3 and all(p.read_bytes().startswith(programs.MAGIC) for p in stored)
    chain = [p for p in stored if b'"values": ["z"]' in p.read_bytes()[:200]]
    assert len(chain) == 1

    traced = []
    original = ChainRunner._export

    def spy(self, *args):
        traced.append(1)
        return original(self, *args)

    monkeypatch.setattr(ChainRunner, "_export", spy)
    again = ChainRunner(2, 100, 100).run(problem, [7])  # a new runner: nothing compiled in it
    assert traced == []  # loaded, not traced
    for name in ("small_class_direct_effect", "teacher_ma_effect", "school_effect"):
        np.testing.assert_array_equal(first.sites[name], again.sites[name])
    np.testing.assert_array_equal(first.stats["lp"], again.stats["lp"])

    # a run that differs only in its number of draws shares the program, and its draws
    # are the first ones of the longer run's (the same chain)
    shorter = ChainRunner(2, 100, 37).run(problem, [7])
    assert traced == [] and len(list(folder.glob("*.bin"))) == 3
    for name in ("small_class_direct_effect", "school_effect"):
        np.testing.assert_array_equal(shorter.sites[name], first.sites[name][:, :, :37])
    np.testing.assert_array_equal(shorter.warmup_steps, first.warmup_steps)
    # so does a run with another warm-up (its schedule is an argument): another chain
    other = ChainRunner(2, 60, 20).run(problem, [7])
    assert traced == [] and len(list(folder.glob("*.bin"))) == 3
    assert other.warmup_steps.shape == (1, 2, 60) and other.sites["school_effect"].shape[:3] == (1, 2, 20)
    assert not np.array_equal(other.sites["small_class_direct_effect"],
                              first.sites["small_class_direct_effect"][:, :, :20])

    chain[0].write_bytes(chain[0].read_bytes()[:200])  # damaged: traced again, same draws
    third = ChainRunner(2, 100, 100).run(problem, [7])
    assert traced == [1]
    np.testing.assert_array_equal(first.sites["small_class_direct_effect"], third.sites["small_class_direct_effect"])


def test_a_stored_function_is_loaded_by_a_later_instance_and_logged(folder, tmp_path, monkeypatch):
    """``stored_jit``: the first use traces and stores, a new instance with the same key
    parts and shapes loads (same values), other key parts trace anew; the log has a
    line for each."""
    import json

    import jax.numpy as jnp

    log = tmp_path / "programs.jsonl"
    monkeypatch.setenv(programs.LOG_ENV, str(log))
    monkeypatch.setenv(programs.CONTEXT_ENV, "a label")

    def f(x, y):
        return {"s": jnp.sin(x) * y}

    x, y = jnp.arange(5.0), jnp.asarray(2.5)
    first = programs.stored_jit(f, "test", 1)(x, y)
    again = programs.stored_jit(f, "test", 1)(x, y)
    other = programs.stored_jit(f, "test", 2)(x, y)
    np.testing.assert_array_equal(first["s"], again["s"])
    np.testing.assert_array_equal(first["s"], other["s"])
    np.testing.assert_allclose(first["s"], np.sin(np.arange(5.0)) * 2.5)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["kind"], e["source"], e["name"]) for e in lines] == [
        ("function", "traced", "test"), ("function", "stored", "test"), ("function", "traced", "test")]
    assert lines[0]["key"] == lines[1]["key"] != lines[2]["key"]
    assert {e["context"] for e in lines} == {"a label"}
    assert len(list(folder.glob("*.bin"))) == 2


def test_the_key_changes_with_what_the_program_depends_on():
    base = programs.program_key(("structural", "design"), 4, 500, 1000, [(3, 4)])
    assert base == programs.program_key(("structural", "design"), 4, 500, 1000, [(3, 4)])
    assert base != programs.program_key(("structural", "design"), 4, 500, 1000, [(3, 5)])
    assert base != programs.program_key(("randomized", "design"), 4, 500, 1000, [(3, 4)])
    assert len(programs.source_digest()) == 64


def test_stored_programs_are_pruned_least_recently_used_first(tmp_path):
    """Past the size limit the least recently used files go, down to half the limit; a
    load marks its file as used."""
    import os

    for i, age in enumerate((50, 40, 30, 20, 10)):  # file 0 the oldest
        path = tmp_path / f"{i}.bin"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1e9 - age, 1e9 - age))
    assert programs.prune(tmp_path, max_bytes=500) == []  # at the limit: nothing to do
    os.utime(tmp_path / "0.bin")  # used now: the newest
    removed = programs.prune(tmp_path, max_bytes=400)
    assert [p.name for p in removed] == ["1.bin", "2.bin", "3.bin"]
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == ["0.bin", "4.bin"]


COMPILE_ONE = """
import jax, jax.numpy as jnp
from classsize.model import jaxcache
jaxcache.enable_compilation_cache()
print(float(jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.cos(x))(jnp.float32(0.5))))
"""


def test_a_cache_folder_moved_elsewhere_serves_its_programs(tmp_path):
    """The compilation cache's keys hold no path: a folder copied to another place (a
    restored CI cache, another ``CLASSSIZE_CACHE_DIR``) finds the programs compiled
    into it, so the run there writes no new entry."""
    import os
    import shutil
    import subprocess
    import sys

    def run(folder):
        env = {**os.environ, "CLASSSIZE_CACHE_DIR": str(folder)}
        env.pop("CLASSSIZE_NO_CACHE", None)
        out = subprocess.run([sys.executable, "-c", COMPILE_ONE], env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip(), sorted(p.name for p in folder.iterdir())

    value, first = run(tmp_path / "a")
    assert any(name.endswith("-cache") for name in first)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert run(tmp_path / "b") == (value, first)
