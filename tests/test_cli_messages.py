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

from classsize.inference.commands.cli import main
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


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "ten"])
def test_seed_out_of_range_is_one_line(tmp_path, capsys, seed):
    refused_by_parser(capsys, ["simulate", "--out", str(tmp_path / "sim"), "--seed", seed], "--seed", "2**62")
    assert not (tmp_path / "sim").exists()


def test_last_replicate_seed_out_of_range_is_one_line(tmp_path, capsys):
    refused(capsys, ["simulate", "--out", str(tmp_path / "sim"), "--seed", str(2**62), "--replicates", "2"],
            "--seed", "2**62")


def test_parser_errors_are_one_line(capsys):
    refused_by_parser(capsys, ["fit", "somewhere"], "--out", "required")
    refused_by_parser(capsys, ["fit", "d", "--out", "o", "--model", "bayes"], "unknown analysis 'bayes'")
    refused_by_parser(capsys, ["frobnicate"], "invalid choice")


# ---------------------------------------------------------------- help and version
def test_help_and_version_load_no_jax():
    """``--help`` (of the program and of each command) and ``--version`` build the parser
    without importing NumPy or JAX (what makes them answer at once)."""
    code = (
        "import sys\n"
        "from classsize.inference.commands.cli import main\n"
        "for argv in (['--help'], ['--version'], ['fit', '--help'], ['recover', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "heavy = [m for m in ('numpy', 'jax', 'numpyro', 'arviz', 'matplotlib', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: classsize" in done.stdout


def test_version_is_the_installed_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"classsize {version('classsize')}"


def test_every_option_has_help_and_shows_its_default():
    from classsize.inference.commands.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    assert set(commands.choices) >= {"simulate", "demo", "fit", "compare", "recover", "star"}
    for name, command in [("classsize", parser), *commands.choices.items()]:
        for action in command._actions:
            if action is commands:
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        text = command.format_help()
        if name in ("fit", "compare", "recover"):
            for default in ("(default: 4)", "(default: 500)", "(default: 1000)"):
                assert default in " ".join(text.split()), (name, default)
    fit_help = " ".join(commands.choices["fit"].format_help().split())
    assert "(default: structural)" in fit_help and "(default: 0)" in fit_help
    assert "(default: None)" not in fit_help and "(default: False)" not in fit_help


# ---------------------------------------------------------------- announcing and progress
def test_progress_prints_a_plain_line_per_tenth_when_not_a_terminal():
    import io

    from classsize.inference.outputs import Progress

    stream = io.StringIO()
    progress = Progress("fit x", stream=stream, terminal=False)
    for done in range(0, 101, 5):
        progress(done, 100)
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == [f"{k}/100" for k in range(0, 101, 10)]
    assert lines[-1].startswith("fit x: 100/100 iterations per chain (100%)")
    quiet = io.StringIO()
    progress = Progress("fit x", stream=quiet, terminal=False, quiet=True)
    progress(0, 10), progress(10, 10)
    assert quiet.getvalue() == ""


def test_progress_draws_a_bar_on_a_terminal():
    import io

    from classsize.inference.outputs import Progress

    stream = io.StringIO()
    progress = Progress("fit x", stream=stream, terminal=True)
    for done in (0, 50, 100):
        progress(done, 100)
    assert "fit x" in stream.getvalue() and "100/100" in stream.getvalue()


def test_runner_reports_progress_and_its_draws_do_not_depend_on_it():
    """The hook sees every call of the program (0 .. total, increasing); the draws with
    and without it are identical (exact check)."""
    import numpy as np

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.engine.sampling import CHUNK, ChainRunner
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    analysis = get_analysis("naive")
    problem = analysis.bind_many(REGULAR_ONLY, observed_from_draw(draw_many(REGULAR_ONLY, [3]), REGULAR_ONLY,
                                                                  analysis.cohort))
    seen = []
    with_hook = ChainRunner(2, 30, 125, progress=lambda done, total: seen.append((done, total))).run(problem, [4])
    without = ChainRunner(2, 30, 125).run(problem, [4])
    done = [d for d, _ in seen]
    assert done == [0, *range(CHUNK, 155, CHUNK), 155]  # before the first call, then after each
    assert {t for _, t in seen} == {155}
    assert np.unique(without.sites["small_class_direct_effect"]).size > 20  # real draws
    for name in without.sites:
        np.testing.assert_array_equal(with_hook.sites[name], without.sites[name], err_msg=name)
    np.testing.assert_array_equal(with_hook.warmup_steps, without.warmup_steps)


def test_fit_announces_and_shows_progress_on_stderr_unless_quiet(folders, tmp_path, capsys):
    argv = ["fit", str(folders / "regular"), "--model", "naive", "--chains", "1", "--warmup", "20",
            "--samples", "20"]
    assert main(argv + ["--out", str(tmp_path / "a")]) in (0, 1)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("fitting the naive analysis to 60 students: 1 chain x (20 warm-up + 20 draws) "
                               "iterations on "), err
    assert lines[1].startswith("fit naive: preparing the sampler for 60 students: compiling it on the first use"), err
    assert lines[2].startswith("fit naive: sampler ready in "), err
    progress = [line for line in lines if line.startswith("fit naive: ") and "/40 " in line]
    assert progress[0].startswith("fit naive: 0/40 ") and progress[-1].startswith("fit naive: 40/40 "), err
    assert "model: naive" in out and "model: naive" not in err
    assert main(argv + ["--out", str(tmp_path / "b"), "--quiet"]) in (0, 1)
    assert not [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert main(["-q"] + argv + ["--out", str(tmp_path / "c")]) in (0, 1)
    assert not [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]


# ---------------------------------------------------------------- compare
def test_compare_skips_an_analysis_the_data_cannot_support(folders, tmp_path, capsys):
    """On REGULAR-only data the randomized analysis is skipped with its reason; the
    table and the forest plot are still written."""
    import pandas as pd

    from classsize.inference.commands.compare import compare_models

    code = compare_models(folders / "regular", tmp_path / "cmp", chains=1, warmup=20, samples=20,
                          models=("randomized", "naive"), quiet=True)
    out, err = capsys.readouterr()
    assert code == 0
    assert "randomized: skipped" in out and "needs EXPERIMENTAL students" in out
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert set(table["analysis"]) == {"naive"}
    assert (tmp_path / "cmp" / "forest.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "naive" / "posterior.nc").exists() and not (tmp_path / "cmp" / "randomized").exists()


def test_compare_with_no_analysis_the_data_support_is_refused(folders, tmp_path, capsys):
    from classsize.inference.commands.compare import compare_models
    from classsize.inference.data.read import DataError

    with pytest.raises(DataError, match="no analysis can use these data"):
        compare_models(folders / "experimental", tmp_path / "cmp", models=("naive",), quiet=True)
    assert not (tmp_path / "cmp").exists()
