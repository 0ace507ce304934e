"""The teaching notebooks: each runs top to bottom, and each is stored twice, in sync.

``notebooks/NN_name.py`` (jupytext percent format) is the source of truth;
``notebooks/NN_name.ipynb`` is its twin with the same cells and the outputs of one
full run (``CLASSSIZE_FAST`` unset), so that a reader who opens it on the web sees
every table and figure.  The first cell of each notebook states the settings of the
stored outputs.  The test suite executes the notebooks in memory (from the ``.py``
file) with nbclient and the fast setting ``CLASSSIZE_FAST=1``, in a kernel that runs
this interpreter, so its outputs never touch the repository.

To refresh a twin after editing a ``.py`` file (this runs the notebook at full size)::

    python notebooks/execute.py notebooks/NN_name.py
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
EXPECTED = ("01_simulate", "02_confounding", "03_recovery", "04_real_data", "05_design")
KERNEL = "classsize-notebook-tests"
#: Seconds one notebook may run under the fast setting before the test fails.
TIMEOUT = 900


def test_the_five_notebooks_are_there():
    assert tuple(p.stem for p in SOURCES) == EXPECTED


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_twin_has_the_same_cells(source: Path):
    twin = source.with_suffix(".ipynb")
    assert twin.exists(), f"{twin.name} is missing: run `python notebooks/execute.py {source}`"
    assert _cells(nbformat.read(twin, as_version=4)) == _cells(jupytext.read(source)), (
        f"{twin.name} does not match {source.name}: run `python notebooks/execute.py {source}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_twin_carries_the_outputs_of_one_full_run(source: Path):
    """Every code cell ran, in order, in one session, without an error; the first code
    cell printed the full setting; there is at least one figure."""
    stored = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{source.stem}: the stored outputs are not from one top-to-bottom run")
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], f"{source.stem}: a cell failed"
    first = "".join(o.get("text", "") for o in code[0].outputs)
    assert "fast setting: False" in first, f"{source.stem}: the stored outputs are not from a full run"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{source.stem}: no figure"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_first_cell_states_the_settings_of_the_stored_outputs(source: Path):
    first = jupytext.read(source).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "outputs stored with this notebook come from a full run" in " ".join(first.source.split())


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_ends_with_its_take_away_then_exercises_with_hidden_solutions(source: Path):
    """The take-away, then an "Exercises" cell listing two or three exercises, then one
    solution cell per exercise: code tagged ``solution`` and collapsed in JupyterLab (the
    lessons site folds it under "Solution"), so it runs with the notebook."""
    cells = jupytext.read(source).cells
    heads = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Exercises")]
    assert len(heads) == 1, f"{source.stem}: one '## Exercises' section"
    i = heads[0]
    assert cells[i - 1].cell_type == "markdown" and cells[i - 1].source.startswith("## Take-away")
    asked = re.findall(r"^(\d)\. ", cells[i].source, flags=re.M)
    solutions = cells[i + 1:]
    assert 2 <= len(asked) <= 3 and asked == [str(k) for k in range(1, len(asked) + 1)], asked
    assert len(solutions) == len(asked), f"{source.stem}: one solution cell per exercise"
    for k, cell in enumerate(solutions, 1):
        assert cell.cell_type == "code" and cell.metadata.get("tags") == ["solution"], k
        assert cell.metadata.get("jupyter") == {"source_hidden": True, "outputs_hidden": True}, k
        assert cell.source.startswith(f"# Solution {k}:"), k


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_lesson_states_what_it_teaches_and_how_long_it_takes(source: Path):
    """Notebook metadata ``classsize`` (read by the lessons site's landing page); the first
    cell states the full run's time that ``execute.py`` measured, and the fast run's."""
    nb = jupytext.read(source)
    meta = nb.metadata.get("classsize", {})
    assert set(meta) == {"teaches", "class_minutes", "full_run", "fast_run"}, meta
    assert isinstance(meta["class_minutes"], int) and 10 <= meta["class_minutes"] <= 60
    first = " ".join(nb.cells[0].source.split())
    for key in ("full_run", "fast_run"):
        assert re.fullmatch(r"\d+ (s|min)", meta[key]), (key, meta[key])
    assert f"A full run takes about {meta['full_run']} on 2 CPU cores; with `CLASSSIZE_FAST=1` about " \
           f"{meta['fast_run']}" in first


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec that starts this very interpreter (the project's virtual environment).

    It lives in a temporary folder put first on ``JUPYTER_PATH``, so no kernel installed
    on the machine (a ``python3`` of another Python) can be picked up instead.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "classsize tests",
        "language": "python",
    }))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    mp.setenv("CLASSSIZE_FAST", "1")
    mp.delenv("JAX_ENABLE_X64", raising=False)  # the kernel runs as a user's would, without the suite's 64-bit mode
    yield KERNEL
    mp.undo()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(source: Path, kernel_name: str):
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec(kernel_name).argv[0] == sys.executable
    nb = jupytext.read(source)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    print(f"{source.stem}: {time.perf_counter() - start:.0f} s")
    first_line = nb.cells[0].source.splitlines()[0]
    assert first_line.startswith("# "), "the first cell is the notebook's title"
