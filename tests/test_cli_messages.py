"""The command line's answers: bad input is one line on standard error and exit status
2, with nothing written; help and version come at once; long work is announced and its
progress shown on standard error, unless ``--quiet``.

Each refusal here is checked before any fit runs, or with a fit of a few iterations.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classsize.inference.cli import main
from classsize.model import Config, simulate

#: Tiny designs: one cohort each.
REGULAR_ONLY = Config(n_regular=60, n_experimental=0, n_schools=2)
EXPERIMENTAL_ONLY = Config(n_regular=0, n_experimental=60, n_schools=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    simulate(REGULAR_ONLY, 1).write(base / "regular")
    simulate(EXPERIMENTAL_ONLY, 2).write(base / "experimental")
    return base


def copy(folders: Path, name: str, to: Path) -> Path:
    shutil.copytree(folders / name, to)
    return to


def refused(capsys, argv: list[str], *words: str) -> str:
    """Run the command; it must exit 2 with one line naming ``words`` and no traceback."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def refused_by_parser(capsys, argv: list[str], *words: str) -> str:
    """An argument the parser itself refuses: one line, exit 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


# ---------------------------------------------------------------- data folders
def test_semicolon_separated_csv_is_named_as_a_delimiter_problem(folders, tmp_path, capsys):
    d = copy(folders, "regular", tmp_path / "d")
    path = d / "students.csv"
    path.write_text(path.read_text().replace(",", ";"))
    refused(capsys, ["fit", str(d), "--out", str(tmp_path / "run")],
            "students.csv, line 1", "separated by semicolons", "comma-separated")
    assert not (tmp_path / "run").exists()


def test_unterminated_quote_is_named_as_a_quoting_problem(folders, tmp_path, capsys):
    d = copy(folders, "regular", tmp_path / "d")
    path = d / "students.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",REGULAR", ',"REGULAR')
    path.write_text("".join(lines) + "".join(lines[4:]) * 50)  # long enough to pass csv's field limit
    err = refused(capsys, ["fit", str(d), "--out", str(tmp_path / "run")],
                  "students.csv, line 4", "unterminated quote")
    assert "field larger than field limit" in err  # csv's own words stay, after the explanation


def test_misplaced_quote_is_named_as_a_quoting_problem(folders, tmp_path, capsys):
    d = copy(folders, "regular", tmp_path / "d")
    path = d / "students.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace(",REGULAR", ',"REG"ULAR')
    path.write_text("".join(lines))
    refused(capsys, ["fit", str(d), "--out", str(tmp_path / "run")], "students.csv, line 6", "misplaced quote")


@pytest.mark.parametrize("value", ['"five"', "[5]", "true", "NaN"])
def test_truth_with_a_non_numeric_estimand_is_refused_at_load(folders, tmp_path, capsys, value):
    d = copy(folders, "regular", tmp_path / "d")
    truth = json.loads((d / "truth.json").read_text())
    text = json.dumps(truth).replace('"small_class_direct_effect": 5.0', f'"small_class_direct_effect": {value}')
    assert text != json.dumps(truth)
    (d / "truth.json").write_text(text)
    refused(capsys, ["fit", str(d), "--model", "naive", "--out", str(tmp_path / "run")],
            "truth.json", "estimands.small_class_direct_effect", "finite number")
    assert not (tmp_path / "run").exists()


def test_truth_whose_estimands_are_not_an_object_is_refused(folders, tmp_path, capsys):
    d = copy(folders, "regular", tmp_path / "d")
    (d / "truth.json").write_text('{"estimands": 5}')
    refused(capsys, ["compare", str(d), "--out", str(tmp_path / "run")], "truth.json", "'estimands'")


@pytest.mark.parametrize("model,folder,cohort", [("naive", "experimental", "REGULAR"),
                                                  ("randomized", "regular", "EXPERIMENTAL")])
def test_an_analysis_without_its_cohort_is_refused_before_fitting(folders, tmp_path, capsys, model, folder, cohort):
    refused(capsys, ["fit", str(folders / folder), "--model", model, "--out", str(tmp_path / "run")],
            "students.csv", f"needs {cohort} students")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- configurations
def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,words", [
    ("n_schools = 1e20\n", ["n_schools", "at most"]),
    ("n_regular = 10\nn_experimental = 0\nsmall_class_size = 1e9\n",
     ["small_class_size", "at most the number of students (n_regular + n_experimental = 10)"]),
    ("n_shcools = 4\n", ["unknown key 'n_shcools'", "did you mean 'n_schools'"]),
])
def test_bad_configurations_through_simulate_and_recover(tmp_path, capsys, text, words):
    cfg = config_file(tmp_path, text)
    refused(capsys, ["simulate", "--out", str(tmp_path / "sim"), "--config", str(cfg)], str(cfg), *words)
    refused(capsys, ["recover", "--from-prior", "--config", str(cfg), "--datasets", "2",
                     "--out", str(tmp_path / "rec")], str(cfg), *words)
    assert not (tmp_path / "sim").exists() and not (tmp_path / "rec").exists()
