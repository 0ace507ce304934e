"""Bad input is refused before any work, in one line naming the file and the row,
column or field, exit status 2.  What is promised, by fault:

1. Encodings: a configuration TOML, dataset.json, truth.json or CSV table that is not
   UTF-8 (latin-1 bytes, UTF-16 with its byte-order mark) is refused naming the file
   (and the line of the first bad byte); UTF-8 with a byte-order mark is read.
2. Sizes: a configuration whose simulated dataset cannot fit in memory is refused at
   validation, naming the limit: ``n_regular + n_experimental <= MAX_STUDENTS``
   (10**7) and ``n_schools * class slots <= MAX_CLASS_SCHOOL_CELLS`` (2**27); the
   estimate :attr:`Config.simulation_bytes` bounds what the sampler allocates.
3. Long rows: a CSV row longer than ``MAX_ROW_CHARS`` (2**20 characters) is refused
   naming the file, line and data row, without reading it into memory; a table of
   more than ``MAX_STUDENTS`` data rows is refused at the first row too many.
4. Ranges: ``|test_score| <= 10**6`` and ``0 < family_income <= 10**9``, or the
   ``score_range`` / ``income_range`` that dataset.json declares (themselves checked);
   a value outside is refused naming the file, line and column.
5. dataset.json: every field is checked when the folder is read, whichever analysis
   then fits it (``score_noise_sd`` of -1 or "lots" is refused for the naive analysis
   too); a likely misspelling of a field is refused; notes are kept.
6. Schools: a configuration with more schools than the classes its datasets can have
   (beyond the notebook's 20) is refused naming both numbers, in a TOML file or in a
   truth.json.  (A data folder cannot have more schools than classes: its schools are
   the school_id values of classes.csv.)
7. truth.json: its ``config`` is checked as a TOML configuration is, and refused
   naming truth.json and the field; its other fields are checked too.
"""

from __future__ import annotations

import json
import math
import shutil
import tracemalloc
from pathlib import Path

import pytest

from classsize.inference.commands.cli import main
from classsize.inference.data import read as read_module
from classsize.inference.data.folder import check_truth
from classsize.inference.data.read import MAX_ROW_CHARS, DataError, load_dataset
from classsize.model import Config, ConfigError, simulate
from classsize.model.config import MAX_CLASS_SCHOOL_CELLS, MAX_STUDENTS

TINY = Config(n_regular=60, n_experimental=60, n_schools=2)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults") / "base"
    simulate(TINY, 1).write(folder)
    return folder


@pytest.fixture
def folder(base, tmp_path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(base, out)
    return out


def refused(capsys, argv: list[str], *words: str) -> str:
    """Run the command line; it must exit 2 with one line naming every word."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)
    return err


def load_refused(folder: Path, *words: str) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for word in words:
        assert word in msg, (word, msg)
    return info.value


def edit_cell(folder: Path, table: str, line: int, column: str, value: str) -> None:
    """Set ``column`` on file line ``line`` (the header is line 1) of ``table``."""
    path = folder / table
    lines = path.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[line - 1].rstrip("\n").split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells) + "\n"
    path.write_text("".join(lines))


def fit_argv(folder: Path, out: Path, model: str = "naive") -> list[str]:
    """A fit as short as can be, should a refusal be missed."""
    return ["fit", str(folder), "--model", model, "--out", str(out), "--quiet",
            "--chains", "1", "--samples", "10", "--warmup", "10"]


# ---------------------------------------------------------------- 1. encodings
@pytest.mark.parametrize("encoding, words", [("latin-1", ["line 2", "byte 0xe9"]), ("utf-16", ["UTF-16"])])
def test_a_configuration_not_utf8_is_one_line(tmp_path, capsys, encoding, words):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes("n_regular = 100\n# caf\u00e9\n".encode(encoding))
    out = tmp_path / "out"
    refused(capsys, ["simulate", "--out", str(out), "--config", str(cfg)], str(cfg), "not UTF-8", *words)
    assert not out.exists()


def test_a_configuration_with_a_utf8_byte_order_mark_is_read(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"\xef\xbb\xbfn_regular = 123\n")
    assert Config.from_toml(cfg).n_regular == 123


@pytest.mark.parametrize("name", ["dataset.json", "truth.json"])
@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_json_not_utf8_is_refused(folder, name, encoding):
    (folder / name).write_bytes('{"name": "caf\u00e9"}'.encode(encoding))
    err = load_refused(folder, "not UTF-8")
    assert err.file.endswith(name)


def test_json_not_utf8_through_the_command_line(folder, tmp_path, capsys):
    (folder / "dataset.json").write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    refused(capsys, fit_argv(folder, tmp_path / "run"), "dataset.json", "not UTF-8")
    assert not (tmp_path / "run").exists()


def test_csv_not_utf8_names_the_line_of_the_bad_byte(folder):
    path = folder / "students.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[40] = lines[40].replace("REGULAR", "R\u00c9GULAR").replace("EXPERIMENTAL", "EXP\u00c9RIMENTAL")
    path.write_bytes("".join(lines).encode("latin-1"))
    err = load_refused(folder, "students.csv", "line 41 (data row 40)", "byte 0xc9", "not UTF-8")
    assert err.line == 41
    path.write_bytes("".join(lines).encode("utf-16"))
    load_refused(folder, "students.csv", "line 1", "UTF-16")


def test_a_lone_surrogate_in_json_is_not_text(folder):
    (folder / "dataset.json").write_text('{"name": "a\\udcff"}')
    load_refused(folder, "dataset.json", "'name'", "lone surrogate")


# ---------------------------------------------------------------- 2. sizes
def test_too_many_students_is_refused_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("n_regular = 2147483647\n")
    out = tmp_path / "out"
    refused(capsys, ["simulate", "--out", str(out), "--config", str(cfg)],
            str(cfg), "n_regular", f"at most {MAX_STUDENTS} students", "MAX_STUDENTS")
    assert not out.exists()
    refused(capsys, ["recover", "--from-prior", "--config", str(cfg), "--datasets", "2",
                     "--out", str(tmp_path / "rec")], "MAX_STUDENTS")


def test_a_school_draw_beyond_its_memory_is_refused():
    with pytest.raises(ConfigError, match="n_schools.*MAX_CLASS_SCHOOL_CELLS"):
        Config(n_regular=MAX_STUDENTS, n_experimental=0, n_schools=200)


def test_the_largest_configurations_are_within_the_budget():
    """At the limits one dataset's estimate stays near 2 GiB; one slot more is refused."""
    big = Config(n_regular=MAX_STUDENTS, n_experimental=0, n_schools=134)
    slots = big.max_small_classes + big.max_large_classes
    assert big.n_schools * slots <= MAX_CLASS_SCHOOL_CELLS < (big.n_schools + 1) * slots
    assert big.simulation_bytes <= 2.5 * 2**30
    with pytest.raises(ConfigError, match="n_regular.*MAX_STUDENTS"):
        Config(n_regular=MAX_STUDENTS, n_experimental=1, n_schools=134)


def test_the_memory_estimate_bounds_what_the_sampler_allocates():
    """``simulation_bytes`` is an upper bound, within a factor of 2, of what XLA plans
    for one dataset (temporaries and outputs), so the limits above mean what they say."""
    import jax
    import jax.numpy as jnp

    from classsize.model.precision import float64
    from classsize.model.simulate import forward_sampler

    config = Config(n_regular=20000, n_experimental=10000, n_schools=300)

    @float64
    def planned() -> int:
        keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(1))
        memory = forward_sampler(config).lower(keys).compile().memory_analysis()
        return memory.temp_size_in_bytes + memory.output_size_in_bytes

    used = planned()
    assert config.simulation_bytes / 2 <= used <= config.simulation_bytes, (used, config.simulation_bytes)


# ---------------------------------------------------------------- 3. long rows
def test_a_row_too_long_is_refused_without_reading_it(folder):
    path = folder / "students.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[6] = lines[6].rstrip("\n") + "," + "9" * (32 * MAX_ROW_CHARS) + "\n"
    path.write_text("".join(lines))
    tracemalloc.start()
    try:
        err = load_refused(folder, "students.csv", "line 7 (data row 6)", f"longer than {MAX_ROW_CHARS}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.line == 7 and err.row == 6
    assert peak < 8 * MAX_ROW_CHARS, peak  # a 32 Mi-character row was never held


def test_a_long_header_is_refused(folder):
    path = folder / "classes.csv"
    path.write_text("x" * (MAX_ROW_CHARS + 1) + "\n" + path.read_text())
    err = load_refused(folder, "classes.csv", "line 1:", "longer than")
    assert err.row is None


def test_a_row_at_the_limit_is_read(folder):
    """A row of exactly MAX_ROW_CHARS characters (in notes of at most csv's 131072
    characters a field) is read; one character more is refused."""
    path = folder / "students.csv"
    lines = path.read_text().splitlines(keepends=True)
    notes = 10
    lines[0] = lines[0].rstrip("\n") + "".join(f",note{k}" for k in range(notes)) + "\n"
    for k in range(1, len(lines)):
        lines[k] = lines[k].rstrip("\n") + "," * notes + "\n"
    fill = MAX_ROW_CHARS - len(lines[3])
    lines[3] = lines[3].rstrip(",\n") + "".join("," + "n" * (fill // notes) for _ in range(notes))
    lines[3] += "n" * (MAX_ROW_CHARS - len(lines[3]) - 1) + "\n"
    assert len(lines[3]) == MAX_ROW_CHARS
    path.write_text("".join(lines))
    assert len(load_dataset(folder).students) == TINY.n_students
    lines[3] = "n" + lines[3]
    path.write_text("".join(lines))
    load_refused(folder, "line 4 (data row 3)", "longer than")


def test_more_rows_than_students_allowed_are_refused(folder, monkeypatch):
    monkeypatch.setattr(read_module, "MAX_STUDENTS", 50)
    load_refused(folder, "students.csv", "line 52 (data row 51)", "more than 50 data rows")


# ---------------------------------------------------------------- 4. ranges
def test_a_huge_score_is_refused(folder, tmp_path, capsys):
    edit_cell(folder, "students.csv", 9, "test_score", "1e300")
    refused(capsys, fit_argv(folder, tmp_path / "run"), "students.csv", "line 9 (data row 8)",
            "column 'test_score'", "[-1000000, 1000000]")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["2e9", "1000000001"])
def test_a_huge_income_is_refused(folder, value):
    edit_cell(folder, "students.csv", 5, "family_income", value)
    load_refused(folder, "students.csv", "line 5 (data row 4)", "column 'family_income'", "1000000000")


def test_the_default_ranges_include_their_bounds(folder):
    edit_cell(folder, "students.csv", 3, "test_score", "-1000000")
    edit_cell(folder, "students.csv", 4, "family_income", "1e9")
    assert load_dataset(folder).students["test_score"].min() == -1e6


def test_declared_ranges_replace_the_defaults(folder):
    edit_cell(folder, "students.csv", 3, "test_score", "5e7")
    (folder / "dataset.json").write_text(json.dumps({"score_range": [-1e8, 1e8], "income_range": [1000, 2e5]}))
    assert load_dataset(folder).students["test_score"].max() == 5e7
    (folder / "dataset.json").write_text(json.dumps({"score_range": [0, 100]}))
    load_refused(folder, "students.csv", "line 3 (data row 2)", "column 'test_score'", "'5e7' is outside [0, 100]",
                 "dataset.json declares")
    (folder / "dataset.json").write_text(json.dumps({"income_range": [0, 1000]}))
    load_refused(folder, "students.csv", "line 2 (data row 1)", "column 'family_income'", "income_range")


@pytest.mark.parametrize("key, value", [
    ("score_range", [5, 1]), ("score_range", [0, 0]), ("score_range", [0]), ("score_range", "0-100"),
    ("score_range", [0, 1e300]), ("score_range", [0, "NaN"]), ("score_range", [False, 1]),
    ("income_range", [-1, 1000]), ("income_range", [0, 1e13]),
])
def test_bad_declared_ranges_are_refused(folder, key, value):
    (folder / "dataset.json").write_text(json.dumps({key: value}))
    err = load_refused(folder, "dataset.json", f"key '{key}'", "[lo, hi]")
    assert err.key == key


# ---------------------------------------------------------------- 5. dataset.json fields
@pytest.mark.parametrize("value", [-1, "lots"])
def test_a_bad_noise_sd_is_refused_for_the_naive_analysis_too(folder, tmp_path, capsys, value):
    (folder / "dataset.json").write_text(json.dumps({"score_noise_sd": value}))
    refused(capsys, fit_argv(folder, tmp_path / "run", "naive"), "dataset.json", "'score_noise_sd'",
            "must be a number >= 0 or 'free'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key, value, words", [
    ("score_noise_sd", -1, "number >= 0 or 'free'"), ("score_noise_sd", "lots", "or 'free'"),
    ("score_noise_sd", None, "or 'free'"), ("score_noise_sd", True, "or 'free'"),
    ("class_effect_sd", -0.5, "number >= 0 or 'free'"), ("class_effect_sd", "some", "or 'free'"),
    ("score_scale", 0, "number > 0"), ("score_scale", "wide", "number > 0"),
    ("ability", "gaussian", "'uniform' or 'normal'"), ("score_units", 7, "string"),
    ("optional_covariates", "race", "list"), ("score_noise", 2.0, "did you mean 'score_noise_sd'"),
    ("class_effects", "free", "did you mean 'class_effect_sd'"),
])
def test_every_dataset_json_field_is_checked_when_read(folder, key, value, words):
    (folder / "dataset.json").write_text(json.dumps({key: value}))
    err = load_refused(folder, "dataset.json", f"key '{key}'", words)
    assert err.key == key


def test_good_fields_and_notes_are_kept(folder):
    meta = {"score_noise_sd": "free", "class_effect_sd": 0, "score_scale": 2.5, "ability": "uniform",
            "optional_covariates": ["race"], "description": "a note", "score_scale_reason": "why",
            "sources": [{"url": "x"}]}
    (folder / "dataset.json").write_text(json.dumps(meta))
    loaded = load_dataset(folder)
    assert {k: loaded.metadata[k] for k in meta} == meta


# ---------------------------------------------------------------- 6. schools and classes
def test_more_schools_than_classes_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("n_regular = 405\nn_experimental = 0\nn_schools = 100\n")
    out = tmp_path / "out"
    refused(capsys, ["simulate", "--out", str(out), "--config", str(cfg)],
            str(cfg), "n_schools", "the 27 classes", "(got 100)")
    assert not out.exists()
    assert Config(n_regular=405, n_experimental=0, n_schools=27).n_schools == 27
    with pytest.raises(ConfigError, match="the 27 classes"):
        Config(n_regular=405, n_experimental=0, n_schools=28)


def test_small_designs_keep_the_notebooks_20_schools():
    assert Config(n_regular=10, n_experimental=0).n_schools == 20
    assert Config(n_regular=30, n_experimental=0).most_classes == 2
    with pytest.raises(ConfigError, match="the 2 classes.*notebook's 20.*got 21"):
        Config(n_regular=30, n_experimental=0, n_schools=21)


def _most_classes_by_search(n: int, small: float, large: float) -> int:
    def count(m: int, target: float) -> int:
        return 0 if m == 0 else max(1, math.floor(m / target))

    return max(count(a, small) + count(n - a, large) for a in range(n + 1))


def test_most_classes_is_the_most_any_split_of_students_makes():
    for n in range(1, 70):
        for small, large in [(15, 30), (1, 1), (2, 3), (3, 2), (4.5, 7), (7, 7), (1.5, 40), (30, 15)]:
            if small > max(n, 15) or large > max(n, 30):
                continue
            config = Config(n_regular=n, n_experimental=0, small_class_size=small, large_class_size=large,
                            n_schools=1)
            assert config.most_classes == _most_classes_by_search(n, small, large), (n, small, large)


def test_a_truth_json_with_more_schools_than_classes_is_refused(folder):
    truth = json.loads((folder / "truth.json").read_text())
    truth["config"].update(n_regular=405, n_experimental=0, n_schools=100)
    (folder / "truth.json").write_text(json.dumps(truth))
    load_refused(folder, "truth.json", "key 'config'", "n_schools", "the 27 classes")


# ---------------------------------------------------------------- 7. truth.json
def test_a_truth_config_with_a_negative_noise_sd_is_refused(folder, tmp_path, capsys):
    truth = json.loads((folder / "truth.json").read_text())
    truth["config"]["score_noise_sd"] = -3
    (folder / "truth.json").write_text(json.dumps(truth))
    refused(capsys, fit_argv(folder, tmp_path / "run"), "truth.json", "key 'config'",
            "field 'score_noise_sd'", ">= 0")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, words", [
    ({"config": {"n_shcools": 3}}, ["key 'config'", "unknown key 'n_shcools'", "n_schools"]),
    ({"config": [1, 2]}, ["key 'config'", "configuration"]),
    ({"config": {"race_probs": [1.0, 0, 0]}}, ["key 'config'", "race_probs"]),
    ({"seed": -4}, ["key 'seed'", "whole number"]),
    ({"seed": 1.5}, ["key 'seed'", "whole number"]),
    ({"engine": 3}, ["key 'engine'", "string"]),
    ({"school_effects": {"9001": "big"}}, ["key 'school_effects.9001'", "finite number"]),
    ({"class_effects": [1]}, ["key 'class_effects'", "id = number"]),
    ({"estimand": {}}, ["key 'estimand'", "did you mean 'estimands'"]),
])
def test_truth_json_fields_are_checked(folder, change, words):
    truth = json.loads((folder / "truth.json").read_text())
    truth.update(change)
    (folder / "truth.json").write_text(json.dumps(truth))
    load_refused(folder, "truth.json", *words)


def test_stacked_truth_entries_are_checked(tmp_path):
    path = tmp_path / "truth.json"
    good = {"format": "stacked", "n_replicates": 1, "config": TINY.to_dict(),
            "replicates": [{"replicate": 0, "seed": 5, "school_effects": {"9001": 1.0}}]}
    check_truth(path, good)
    for entry, key in [({"replicate": -1}, "replicates[0].replicate"),
                       ({"replicate": 0, "seed": "x"}, "replicates[0].seed"),
                       ({"replicate": 0, "school_effects": {"9001": None}}, "replicates[0].school_effects.9001")]:
        with pytest.raises(DataError) as info:
            check_truth(path, {**good, "replicates": [entry]})
        assert info.value.key == key
    with pytest.raises(DataError, match="one per replicate"):
        check_truth(path, {**good, "replicates": [3]})


def test_a_replicate_keeps_its_class_effects(tmp_path):
    from classsize.inference.data.stacked import _replicate_truth

    truth = {"format": "stacked", "config": TINY.to_dict(), "replicates": [
        {"replicate": 0, "seed": 5, "school_effects": {"9001": 1.0}, "class_effects": {"7001": 0.5}}]}
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    assert _replicate_truth(tmp_path, 0)["class_effects"] == {"7001": 0.5}
