"""Shared test configuration.

Tests marked ``@pytest.mark.slow`` (the large statistical checks) are skipped unless
the environment variable ``CLASSSIZE_SLOW`` is ``1``; ``make test-all`` sets it.

``make test`` runs the suite in two pytest processes (pytest-xdist,
``--dist loadgroup``, grouped by :func:`pytest_xdist_make_scheduler`): each test file
is one group and runs whole in one process, so its module fixtures (fitted runs, a
Dask cluster, a reference study) are built once; each notebook's run is a group of its
own, so the notebooks share out over both, and runs first.

The suite says what it compiled: every process it starts (the pytest workers, the
notebooks' kernels, the command-line runs) appends the programs it prepares to one log
(``CLASSSIZE_PROGRAM_LOG``, :func:`classsize.inference.engine.programs.note`), each
line labelled with the test that was running (``CLASSSIZE_PROGRAM_CONTEXT``), which
the terminal summary counts, in all and by the test file that first prepared each
distinct sampler program.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

import pytest

# The tests call the package's internals directly, below the entry points that enter
# 64-bit mode themselves (classsize.model.precision), so the whole test process runs
# in it, with every core a JAX device, as the command line does.  tests/test_api.py
# checks the entry points in a process of their own, without either setting.
os.environ["JAX_ENABLE_X64"] = "1"
from classsize.inference.engine.runtime import use_all_cores  # noqa: E402

use_all_cores()

SLOW = os.environ.get("CLASSSIZE_SLOW", "") == "1"
from classsize.inference.engine.programs import CONTEXT_ENV as PROGRAM_CONTEXT  # noqa: E402
from classsize.inference.engine.programs import LOG_ENV as PROGRAM_LOG  # noqa: E402


def pytest_configure(config):
    # the first process (the controller under xdist) names the log; the workers and
    # every subprocess inherit the variable
    if not hasattr(config, "workerinput") and not os.environ.get(PROGRAM_LOG):
        handle, path = tempfile.mkstemp(prefix="classsize-programs-", suffix=".jsonl")
        os.close(handle)
        os.environ[PROGRAM_LOG] = config._classsize_program_log = path


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    # the label of the programs this test prepares, its fixtures' included
    os.environ[PROGRAM_CONTEXT] = item.nodeid


def pytest_terminal_summary(terminalreporter, config):
    path = getattr(config, "_classsize_program_log", None)
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as log:
            entries = [json.loads(line) for line in log if line.strip()]
        os.unlink(path)
    except (OSError, ValueError):
        return
    terminalreporter.section("programs prepared")
    for kind in ("sampler", "function"):
        mine = [e for e in entries if e.get("kind") == kind]
        sources = Counter(e.get("source") for e in mine)
        terminalreporter.write_line(
            f"{kind} programs: {len(mine)} prepared in {len({e.get('pid') for e in mine})} processes, "
            f"{len({e.get('key') for e in mine})} distinct; {sources['traced']} traced and exported, "
            f"{sources['stored']} loaded from the store; {sum(e.get('seconds', 0.0) for e in mine):.0f} s in all")
    first: dict[str, dict] = {}
    for e in entries:
        if e.get("kind") == "sampler":
            first.setdefault(e.get("key"), e)
    by_file: dict[str, list[float]] = {}
    for e in first.values():
        by_file.setdefault(str(e.get("context") or "?").split("::")[0], []).append(e.get("seconds", 0.0))
    for name, seconds in sorted(by_file.items(), key=lambda kv: -sum(kv[1])):
        terminalreporter.write_line(f"  {len(seconds):3d} distinct sampler programs first prepared by {name}, "
                                    f"{sum(seconds):.0f} s")


def fast_or_slow(fast, slow):
    """Two parameter sets for ``pytest.mark.parametrize``: ``fast`` always runs,
    ``slow`` is marked slow (skipped unless ``CLASSSIZE_SLOW=1``)."""
    return [
        pytest.param(fast, id="fast"),
        pytest.param(slow, id="slow", marks=pytest.mark.slow),
    ]


#: Tests that run whole notebooks: each parameter is a group of its own (see the docstring).
ONE_GROUP_EACH = ("test_notebook_runs_top_to_bottom",)


def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup``, one group per test file and one per notebook run
    (:data:`ONE_GROUP_EACH`).  The scheduler groups the tests itself, by their ids:
    pytest-xdist's own ``xdist_group`` marks do not group under pytest 9 (it renames an
    item by ``item._nodeid``, which pytest 9 no longer reads), so with the marks alone a
    file's tests would be shared out one by one, each process building its fixtures."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            # the groups in the collection's order (the notebooks first:
            # pytest_collection_modifyitems), not by their number of tests
            config.option.loadscopereorder = False

        def _split_scope(self, nodeid: str) -> str:
            path, _, test = nodeid.partition("::")
            return nodeid if test.split("[")[0] in ONE_GROUP_EACH else path

    return ByFile(config, log)


def pytest_collection_modifyitems(config, items):
    # the longest groups first, so that neither process is left with one at the end
    items.sort(key=lambda item: item.originalname not in ONE_GROUP_EACH)
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow test: set CLASSSIZE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
