"""The NumPyro model: sites, plates, handlers, allocation, determinism, the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.inspect import get_model_relations

from classsize.inference.commands.cli import main
from classsize.model import Config, class_size_experiment, simulate, simulate_many
from classsize.model.simulate import draw_many

SMALL = Config(n_regular=600, n_experimental=400, n_schools=6)


def trace(config=Config(), seed=0, model=class_size_experiment):
    return handlers.trace(handlers.seed(model, seed)).get_trace(config)


def test_sites_follow_the_process_in_order():
    tr = trace(SMALL)
    order = [k for k, v in tr.items() if v["type"] in ("sample", "deterministic")]
    expected = ["race_probs", "race", "family_income", "ability_uniform", "ability", "small_class",
                "class_of_student", "n_small_classes", "n_large_classes", "teacher_has_ma", "school",
                "school_effect", "test_score"]
    assert [k for k in order if k in expected] == expected
    assert tr["race"]["cond_indep_stack"][0].name == "students"
    assert tr["teacher_has_ma"]["cond_indep_stack"][0].name == "classes"
    assert tr["school_effect"]["cond_indep_stack"][0].name == "schools"
    # structural parameters are sites, pinned to the configuration
    assert float(tr["small_class_direct_effect"]["value"]) == 5.0


def _ancestors(deps, site):
    out, todo = set(), list(deps[site])
    while todo:
        s = todo.pop()
        if s not in out:
            out.add(s)
            todo.extend(deps.get(s, []))
    return out


def test_graph_has_ability_unobserved_and_the_causal_arrows():
    from classsize.model.graph import observed_model

    rel = get_model_relations(observed_model(SMALL), model_args=(SMALL,))
    deps = rel["sample_sample"]
    assert {"ability_uniform", "small_class", "teacher_has_ma", "school", "school_effect"} <= _ancestors(deps, "test_score")
    assert {"ability_uniform", "race", "family_income"} <= set(deps["small_class"])
    assert "small_class" in _ancestors(deps, "teacher_has_ma")  # class size -> MA probability
    assert "ability_uniform" not in _ancestors(deps, "family_income")  # income -> ability, not back
    assert {"test_score", "small_class", "race", "family_income", "teacher_has_ma", "school"} <= set(rel["observed"])
    assert "ability_uniform" not in rel["observed"] and "school_effect" not in rel["observed"]


def test_substitute_and_condition():
    base = handlers.trace(handlers.seed(handlers.substitute(class_size_experiment, {"small_class_direct_effect": 5.0}), 1)).get_trace(SMALL)
    sub = handlers.trace(handlers.seed(handlers.substitute(class_size_experiment, {"small_class_direct_effect": 105.0}), 1)).get_trace(SMALL)
    small = np.asarray(base["small_class"]["value"]) == 1
    diff = np.asarray(sub["test_score"]["value"]) - np.asarray(base["test_score"]["value"])
    np.testing.assert_allclose(diff[small], 100.0)
    np.testing.assert_allclose(diff[~small], 0.0, atol=1e-9)
    cond = handlers.trace(handlers.seed(handlers.condition(class_size_experiment, {"small_class": jnp.ones(SMALL.n_students, int)}), 1)).get_trace(SMALL)
    assert int(cond["n_large_classes"]["value"]) == 0
    assert int(cond["n_small_classes"]["value"]) == SMALL.n_students // 15


@pytest.fixture(scope="module")
def interventional_shift():
    """Mean score under do(SMALL) minus under do(LARGE), one value per seed."""
    cfg = Config()

    def mean_score(key, value):
        model = handlers.do(class_size_experiment, {"small_class": jnp.full(cfg.n_students, value)})
        tr = handlers.trace(handlers.seed(model, key)).get_trace(cfg)
        return tr["test_score"]["value"].mean()

    keys = jax.random.split(jax.random.PRNGKey(7), 40)
    f = jax.jit(jax.vmap(lambda k: mean_score(k, 1) - mean_score(k, 0)))
    return np.asarray(f(keys))


def test_do_small_class_shifts_mean_score_by_the_total_effect(interventional_shift):
    """E[score | do(SMALL)] - E[score | do(LARGE)] = 5 + 10 (0.5 - 0.4) = 6.

    Per dataset the shift has sd about 0.4 (the MA share of 400 SMALL / 200 LARGE
    classes); over 40 datasets the mean's sd is about 0.07, so the tolerance of
    0.3 (over 4 sd) makes a false alarm rarer than 1 in 10,000.  A model that
    ignored the MA path would give 5 and fail.
    """
    assert abs(interventional_shift.mean() - 6.0) < 0.3


def test_allocation_is_the_notebooks_round_robin():
    ds = simulate(SMALL, 3)
    s, c = ds.students, ds.classes
    for size, first, target in (("SMALL", 7001, 15), ("LARGE", 8001, 30)):
        cls = c[c.class_size == size]
        n = int(cls.n_students.sum())
        assert len(cls) == n // target
        assert list(cls.class_id) == list(range(first, first + len(cls)))
        assert cls.n_students.max() - cls.n_students.min() <= 1  # round robin
    assert list(s.student_id) == list(range(len(s)))
    assert s.class_id.is_monotonic_increasing
    merged = s.merge(c, on="class_id", suffixes=("", "_c"))
    assert (merged.school_id == merged.school_id_c).all()


def test_same_seed_same_bytes_and_batch_equals_single(tmp_path):
    a, b = simulate(SMALL, 11), simulate(SMALL, 11)
    a.write(tmp_path / "a")
    b.write(tmp_path / "b")
    for f in ("students.csv", "classes.csv", "truth.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    many = simulate_many(SMALL, [10, 11, 12])
    assert many[1].students.equals(a.students) and many[1].classes.equals(a.classes)
    assert not many[0].students.equals(a.students)


def test_padding_masks_unused_class_slots():
    d = draw_many(SMALL, [0, 1])
    for i in range(2):
        used = int(d["n_small_classes"][i]) + int(d["n_large_classes"][i])
        slots = np.unique(d["class_of_student"][i])
        assert len(slots) == used


def test_no_students_of_a_size_gives_no_class():
    cfg = Config(n_regular=0, n_experimental=100, experimental_p_small=0.0, n_schools=3)
    ds = simulate(cfg, 3)
    assert (ds.classes.class_size == "LARGE").all() and (ds.classes.n_students > 0).all()


def test_cli_simulate_writes_three_files_and_refuses_non_empty(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["simulate", "--out", str(out), "--seed", "5"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["estimands"] == {"small_class_direct_effect": 5.0, "small_class_total_effect": 6.0,
                                  "teacher_ma_effect": 10.0}
    assert len(truth["school_effects"]) == 20 and truth["config"]["n_regular"] == 4000
    header = (out / "students.csv").read_text().splitlines()[0]
    assert header == "student_id,class_id,school_id,test_score,family_income,race,cohort"
    assert (out / "classes.csv").read_text().splitlines()[1].split(",")[0] == "7001"
    before = (out / "students.csv").read_bytes()
    assert main(["simulate", "--out", str(out), "--seed", "6"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "students.csv").read_bytes() == before
    assert main(["simulate", "--out", str(out), "--seed", "6", "--force"]) == 0
    assert (out / "students.csv").read_bytes() != before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_cli_replicates(tmp_path):
    out = tmp_path / "r"
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.to_toml())
    assert main(["simulate", "--out", str(out), "--seed", "20", "--replicates", "3", "--config", str(cfg)]) == 0
    dirs = sorted(p.name for p in out.iterdir())
    assert dirs == ["replicate_0000", "replicate_0001", "replicate_0002", "replicates.json"]
    listed = json.loads((out / "replicates.json").read_text())["replicates"]
    assert listed == [{"folder": f"replicate_{k:04d}", "seed": 20 + k} for k in range(3)]
    single = tmp_path / "s"
    assert main(["simulate", "--out", str(single), "--seed", "21", "--config", str(cfg)]) == 0
    assert (single / "students.csv").read_bytes() == (out / "replicate_0001" / "students.csv").read_bytes()
