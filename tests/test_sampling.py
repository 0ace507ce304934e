"""The one fitting path: chains as lanes of one compiled program.

A fit's draws depend on its seed only, not on how many JAX devices run the lanes:
the same fit in processes with 1 and 2 devices must give identical draws (the
check is exact, so it fails on any difference).  Every analysis runs through the
same runner; the cheapest to compile (naive) stands for them here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from classsize.inference.analysis import get_analysis
from classsize.inference.sampling import ChainRunner, chain_keys
from classsize.model import Config, simulate

TINY = Config(n_regular=150, n_experimental=250, n_schools=3)

_FIT = """
import sys, numpy as np
from classsize.inference.fit import fit
import jax
r = fit(sys.argv[1], "naive", chains=4, warmup=40, samples=30, seed=7, posterior_predictive=False)
assert len(jax.devices()) == int(sys.argv[3]), jax.devices()
np.save(sys.argv[2], np.stack([r.estimand_draws[k] for k in sorted(r.estimand_draws)]))
"""


def _fit_with_devices(data, out, devices: int) -> np.ndarray:
    env = {**os.environ, "CLASSSIZE_DEVICES": str(devices)}
    subprocess.run([sys.executable, "-c", _FIT, str(data), str(out), str(devices)], env=env, check=True,
                   timeout=600)
    return np.load(out)


def test_draws_do_not_depend_on_the_number_of_devices(tmp_path):
    simulate(TINY, 3).write(tmp_path / "data")
    runs = {d: _fit_with_devices(tmp_path / "data", tmp_path / f"draws{d}.npy", d) for d in (1, 2)}
    assert runs[1].shape == (2, 4, 30)
    assert np.unique(runs[1][0]).size > 100  # real draws, not a constant
    np.testing.assert_array_equal(runs[1], runs[2])


def test_chain_keys_are_those_of_numpyro_mcmc():
    import jax

    keys = chain_keys(5, 4)
    np.testing.assert_array_equal(keys, np.asarray(jax.random.split(jax.random.PRNGKey(5), 4)))
    np.testing.assert_array_equal(chain_keys(5, 1)[0], np.asarray(jax.random.PRNGKey(5)))


def test_a_batch_maps_back_to_its_datasets(tmp_path):
    """Fitting datasets together gives each the draws of fitting it alone, and padding
    lanes (a batch size above the number of datasets) change nothing."""
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    analysis = get_analysis("randomized")
    observed = observed_from_draw(draw_many(TINY, [0, 1]), TINY, analysis.cohort)
    runner = ChainRunner(2, 30, 20)
    both = runner.run(analysis.bind_many(TINY, observed), [10, 11], batch_size=3)
    import jax

    one = runner.run(analysis.bind_many(TINY, jax.tree.map(lambda a: a[1:], observed)), [11], batch_size=3)
    name = "small_class_direct_effect"
    np.testing.assert_array_equal(both.sites[name][1], one.sites[name][0])
    assert not np.array_equal(both.sites[name][0], both.sites[name][1])
    assert both.stats["diverging"].shape == (2, 2, 20) and both.warmup_steps.shape == (2, 2, 30)


def test_runner_refuses_an_unknown_vectorisation():
    with pytest.raises(ValueError, match="vectorize"):
        ChainRunner(vectorize="threads")
