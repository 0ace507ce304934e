"""The configuration: the notebook's numbers, TOML round trip, and one-line errors."""

from __future__ import annotations

import pytest

from classsize.inference.commands.cli import main
from classsize.model import Config, ConfigError


def test_defaults_are_the_notebooks_numbers():
    c = Config()
    assert (c.n_regular, c.n_experimental) == (4000, 2000)
    assert c.race_codes == ("WHITE", "BLACK", "HISPANIC", "ASIAN")
    assert c.race_probs == (0.5, 0.15, 0.2, 0.15)
    assert (c.income_min, c.income_max) == (30000, 150000)
    assert (c.ability_income_weight, c.ability_uniform_width) == (10.0, 25.0)
    assert (c.regular_small_intercept, c.regular_small_income, c.regular_small_ability) == (0.1, 0.2, 0.02)
    assert c.race_shift_vector == (-0.25, 0.0, 0.0, -0.3)
    assert c.experimental_p_small == 0.5
    assert (c.small_class_size, c.large_class_size) == (15.0, 30.0)
    assert (c.p_ma_small, c.p_ma_large) == (0.5, 0.4)
    assert (c.n_schools, c.school_effect_range) == (20, 5.0)
    coefs = (c.score_intercept, c.score_ability_weight, c.small_class_direct_effect, c.teacher_ma_effect,
             c.score_school_weight)
    assert coefs == (45, 1, 5, 10, 1)
    assert c.score_noise_sd == 0.0


def test_estimands():
    assert Config().estimands() == pytest.approx(
        {"small_class_direct_effect": 5.0, "small_class_total_effect": 6.0, "teacher_ma_effect": 10.0}
    )
    e = Config(small_class_direct_effect=-2.0, teacher_ma_effect=0.0).estimands()
    assert e["small_class_total_effect"] == pytest.approx(-2.0)


def test_toml_round_trip(tmp_path):
    c = Config(n_regular=123, small_class_direct_effect=-1.5, regular_small_race_shift={"BLACK": 0.1})
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    assert Config.from_toml(path) == c
    assert hash(Config.from_toml(path)) == hash(c)


BAD = [
    ("race_probs = [0.5, 0.5, 0.5, 0.5]", "race_probs", "sum to 1"),
    ("n_regular = -3", "n_regular", ">= 0"),
    ("small_class_size = 0", "small_class_size", ">= 1"),
    ("n_regular = 10\nn_experimental = 0\nsmall_class_size = 1e9", "small_class_size", "at most the number of students"),
    ("large_class_size = 0.5", "large_class_size", "at least one student"),
    ("n_schools = 1e20", "n_schools", "at most 2147483647"),
    ("n_schools = 7000", "n_schools", "at most the number of students"),
    ("n_regular = 3e12", "n_regular", "at most 2147483647"),
    ("n_school = 3", "n_school", "did you mean 'n_schools'"),
    ('race_codes = ["WHITE", "PURPLE", "HISPANIC", "ASIAN"]', "race_codes", "unknown race code"),
    ("income_min = 200000", "income_max", "> income_min"),
    ("colour = 3", "colour", "known keys: n_regular, n_experimental"),
    ('teacher_ma_effect = "ten"', "teacher_ma_effect", "must be a number"),
    ("p_ma_small = 1.5", "p_ma_small", "probability"),
    ("regular_small_race_shift = { MARTIAN = 0.1 }", "regular_small_race_shift", "race code"),
    ("n_schools = 2.5", "n_schools", "integer"),
]


@pytest.mark.parametrize("line,field,rule", BAD, ids=[b[1] + "-" + b[2] for b in BAD])
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, capsys, line, field, rule):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(line + "\n")
    with pytest.raises(ConfigError):
        Config.from_toml(cfg)
    out = tmp_path / "out"
    code = main(["simulate", "--out", str(out), "--config", str(cfg)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert field in err and rule in err and str(cfg) in err
    assert not out.exists() or not any(out.iterdir())


def test_config_not_toml(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("n_regular = = 3\n")
    assert main(["simulate", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert main(["simulate", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_small_designs_keep_the_notebooks_sizes():
    """Below the notebook's sizes the defaults stay valid; above the students they do not."""
    tiny = Config(n_regular=10, n_experimental=0)
    assert (tiny.small_class_size, tiny.large_class_size, tiny.n_schools) == (15.0, 30.0, 20)
    assert Config(n_regular=100, n_experimental=0, small_class_size=100.0).small_class_size == 100.0
    with pytest.raises(ConfigError, match="small_class_size.*n_regular \\+ n_experimental = 100"):
        Config(n_regular=100, n_experimental=0, small_class_size=101.0)
    with pytest.raises(ConfigError, match="n_schools"):
        Config(n_regular=10, n_experimental=0, n_schools=21)
