"""Shape buckets (:mod:`classsize.model.buckets`): datasets of one design are fitted by
one compiled program, and the padding that puts them there changes no draw."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.data.sources import as_loaded
from classsize.inference.engine.sampling import ChainRunner
from classsize.model import Config, simulate
from classsize.model.buckets import BLOCK, bucket, layout_blocks, pad_class_slots
from classsize.model.pilot import LAYOUTS, pilot_estimates

SMALL = Config(n_regular=300, n_experimental=300, n_schools=4)


def _shapes(problem):
    return [np.shape(a) for a in jax.tree.leaves(problem.inputs)]


def test_bucket_is_the_power_of_two_at_or_above():
    assert [bucket(n) for n in (0, 1, 2, 3, 5, 8, 9, 273, 512, 513)] == [1, 1, 2, 4, 8, 8, 16, 512, 512, 1024]
    # a layout holds ceil(capacity / BLOCK) + groups blocks: enough for any grouping of the capacity
    assert layout_blocks(6000, 20) == -(-6000 // BLOCK) + 20 and layout_blocks(0, 0) == 1
    rng = np.random.default_rng(0)
    for groups in (1, 4, 20):
        counts = rng.multinomial(600, rng.dirichlet(np.ones(groups)))
        assert np.sum(-(-counts // BLOCK)) <= layout_blocks(600, groups)


@pytest.mark.parametrize("name", ["structural", "randomized"])
def test_datasets_of_one_design_share_one_shape(name):
    """Ten seeds of one design differ in their class counts and group sizes; padded to
    their buckets they give the sampler arrays of one shape (one compiled program).
    The layouts' blocks, sized by the design's capacity, are what keeps them together."""
    spec = get_analysis(name)
    raw, padded = set(), set()
    for seed in range(10):
        data = simulate(SMALL, seed=seed)
        problem = spec.problem(as_loaded(data))
        raw.add(len(data.classes))
        padded.add(tuple(_shapes(spec.stack([problem]))))
    assert len(raw) > 1  # the datasets do differ
    assert len(padded) == 1


def _padded_twice(spec, problem):
    """The problem with its class slots and group layouts padded to twice their buckets."""
    one = spec.stack([problem])
    data = problem.inputs["data"]
    wider = pad_class_slots(data, 2 * np.shape(data.class_used)[-1])
    pilot = pilot_estimates(problem.design, problem.priors, wider, problem.ability)

    def widen(name):
        return getattr(pilot, name).padded(2 * getattr(one.inputs["pilot"], name).n_blocks)

    pilot = pilot._replace(**{name: widen(name) for name in LAYOUTS})
    two = dataclasses.replace(one, inputs=jax.tree.map(lambda a: np.asarray(a)[None], {"data": wider, "pilot": pilot}))
    assert _shapes(two) != _shapes(one)
    return one, two


def test_draws_do_not_depend_on_the_bucket():
    """One dataset fitted in its bucket and in one twice as large (class slots and group
    layouts): the draws are equal bit for bit (the padded slots enter the density by
    integer counts, the padded members by exact extremes).  (Its programs come from the
    persistent compilation cache when an earlier run compiled them.)"""
    from classsize.inference.engine.runtime import use_compilation_cache

    use_compilation_cache()
    spec = get_analysis("structural")
    problem = spec.problem(as_loaded(simulate(SMALL, seed=3)))
    one, two = _padded_twice(spec, problem)
    runner = ChainRunner(2, 100, 100)
    a, b = runner.run(one, [7]), runner.run(two, [7])
    for name in ("small_class_direct_effect", "teacher_ma_effect", "school_effect"):
        np.testing.assert_array_equal(a.sites[name], b.sites[name])
    np.testing.assert_array_equal(a.stats["lp"], b.stats["lp"])
