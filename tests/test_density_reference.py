"""The conditioned model's log density is the one the project's earlier releases fitted.

``tests/data/reference_density.npz`` holds the potential energy (minus the log
density) and its gradient at 10 random points of the sampler's coordinates, for
three fits: structural and randomized on the notebook's seed-100 tables, structural
on a small design (seed 2).  They were computed by the conditioned model before its
speed work (segment reductions, the library's Bernoulli, Categorical and Uniform
densities).  The model today must give the same numbers: any change to the density,
its Jacobians or its support maps moves them far beyond the tolerance, 1e-12
relative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "data" / "reference_density.npz"


def _data(tag, tmp_path):
    from classsize.model import Config, simulate
    from classsize.model.notebook import simulate_notebook

    folder = tmp_path / tag
    if tag.startswith("d100"):
        simulate_notebook(Config(), 100).write(folder)
    else:
        simulate(Config(n_regular=800, n_experimental=700, n_schools=6), 2).write(folder)
    return folder


@pytest.mark.parametrize("tag, analysis", [("d100s", "structural"), ("d100r", "randomized"),
                                           pytest.param("smalls", "structural", marks=pytest.mark.slow)])
def test_log_density_and_gradient_equal_the_reference(tmp_path, tag, analysis):
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import initialize_model, potential_energy

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset

    ref = np.load(REFERENCE)
    problem = get_analysis(analysis).problem(load_dataset(_data(tag, tmp_path)))
    z0 = initialize_model(jax.random.PRNGKey(0), problem.model, model_kwargs=problem.inputs).param_info.z
    keys = [str(k) for k in ref[f"{tag}_keys"]]
    assert sorted(z0) == keys
    shapes = {k: np.shape(z0[k]) for k in keys}
    sizes = [int(np.prod(shapes[k])) for k in keys]

    def potential(x):
        parts = jnp.split(x, np.cumsum(sizes)[:-1])
        return potential_energy(problem.model, (), problem.inputs,
                                {k: p.reshape(shapes[k]) for k, p in zip(keys, parts)})

    value_and_grad = jax.jit(jax.value_and_grad(potential))

    for x, v, g in zip(ref[f"{tag}_z"], ref[f"{tag}_v"], ref[f"{tag}_g"]):
        value, grad = value_and_grad(jnp.asarray(x))
        assert float(value) == pytest.approx(float(v), rel=1e-12)
        np.testing.assert_allclose(np.asarray(grad), g, rtol=1e-9, atol=1e-10)
