"""The teaching notebooks: each runs top to bottom, and each is stored twice, in sync.

``notebooks/NN_name.py`` (jupytext percent format) is the source of truth;
``notebooks/NN_name.ipynb`` is its twin with every output stripped.  The notebooks are
executed in memory (from the ``.py`` file) with nbclient and the fast setting
``CLASSSIZE_FAST=1``, in a kernel that runs this interpreter, so the outputs never
touch the repository.

To refresh a twin after editing a ``.py`` file::

    jupytext --to ipynb notebooks/NN_name.py
"""

from __future__ import annotations

import json
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
EXPECTED = ("01_simulate", "02_confounding", "03_recovery", "04_real_data")
KERNEL = "classsize-notebook-tests"
#: Seconds one notebook may run under the fast setting before the test fails.
TIMEOUT = 900


def test_the_four_notebooks_are_there():
    assert tuple(p.stem for p in SOURCES) == EXPECTED


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_twin_is_in_sync_and_stripped(source: Path):
    twin = source.with_suffix(".ipynb")
    assert twin.exists(), f"{twin.name} is missing: run `jupytext --to ipynb {source}`"
    stored = nbformat.read(twin, as_version=4)
    for i, cell in enumerate(stored.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{twin.name}: cell {i} has outputs (strip them)"
            assert cell.execution_count is None, f"{twin.name}: cell {i} has an execution count"
    assert _cells(stored) == _cells(jupytext.read(source)), (
        f"{twin.name} does not match {source.name}: run `jupytext --to ipynb {source}`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_last_cell_states_the_take_away(source: Path):
    last = jupytext.read(source).cells[-1]
    assert last.cell_type == "markdown"
    assert "Take-away" in last.source


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
