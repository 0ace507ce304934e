"""The one fitting path: chains as lanes of one compiled program.

A fit's draws depend on its seed only, not on how many JAX devices run the lanes:
the same fit run by one device or by two must give identical draws (the check is
exact, so it fails on any difference).
"""

from __future__ import annotations

import numpy as np
import pytest

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.sampling import ChainRunner, chain_keys
from classsize.model import Config, simulate

TINY = Config(n_regular=150, n_experimental=250, n_schools=3)

def test_draws_do_not_depend_on_the_number_of_devices():
    """One device running every lane, or two sharing them: the same draws, exactly."""
    import jax

    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    if len(jax.devices()) < 2:
        pytest.skip("needs two JAX devices (two cores)")
    analysis = get_analysis("randomized")
    problem = analysis.bind_many(TINY, observed_from_draw(draw_many(TINY, [3]), TINY, analysis.cohort))
    # 3 chains: three calls of a program of one lane on one device, or two calls of a
    # program of one lane on each of two (the fourth lane inactive)
    runners = [ChainRunner(3, 40, 30, devices=jax.devices()[:k]) for k in (1, 2)]
    one, two = (r.run(problem, [7]) for r in runners)
    assert [next(iter(r._compiled))[2][0][0] for r in runners] == [1, 2]  # one lane per device (the keys' shape)
    name = "small_class_direct_effect"
    assert one.sites[name].shape == (1, 3, 30)
    assert np.unique(one.sites[name]).size > 60  # real draws, not a constant
    for k in one.sites:
        np.testing.assert_array_equal(one.sites[k], two.sites[k], err_msg=k)


def test_chain_keys_are_those_of_numpyro_mcmc():
    import jax

    keys = chain_keys(5, 4)
    np.testing.assert_array_equal(keys, np.asarray(jax.random.split(jax.random.PRNGKey(5), 4)))
    np.testing.assert_array_equal(chain_keys(5, 1)[0], np.asarray(jax.random.PRNGKey(5)))


def test_a_batch_maps_back_to_its_datasets(tmp_path):
    """Fitting datasets together gives each the draws of fitting it alone, padding
    lanes (a batch size above the number of datasets) change nothing, and both runs use
    one program (one lane per device, whatever the number of lanes)."""
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    analysis = get_analysis("randomized")
    observed = observed_from_draw(draw_many(TINY, [0, 1]), TINY, analysis.cohort)
    runner = ChainRunner(2, 30, 20)
    both = runner.run(analysis.bind_many(TINY, observed), [10, 11], batch_size=3)
    import jax

    one = runner.run(analysis.bind_many(TINY, jax.tree.map(lambda a: a[1:], observed)), [11])
    assert len(runner._compiled) == 1
    name = "small_class_direct_effect"
    np.testing.assert_array_equal(both.sites[name][1], one.sites[name][0])
    assert not np.array_equal(both.sites[name][0], both.sites[name][1])
    assert both.stats["diverging"].shape == (2, 2, 20) and both.warmup_steps.shape == (2, 2, 30)


def test_runner_refuses_an_unknown_vectorisation():
    with pytest.raises(ValueError, match="vectorize"):
        ChainRunner(vectorize="threads")


def test_an_analysis_the_data_cannot_support_is_one_line_and_exit_2(tmp_path, capsys):
    """The randomized analysis of a folder without EXPERIMENTAL students: no traceback."""
    from classsize.inference.commands.cli import main

    simulate(Config(n_regular=200, n_experimental=0, n_schools=2), 1).write(tmp_path / "data")
    code = main(["fit", str(tmp_path / "data"), "--model", "randomized", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "needs EXPERIMENTAL students" in err and "students.csv" in err
    assert not (tmp_path / "run").exists()
