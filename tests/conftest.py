"""Shared test configuration.

Tests marked ``@pytest.mark.slow`` (the large statistical checks) are skipped unless
the environment variable ``CLASSSIZE_SLOW`` is ``1``; ``make test-all`` sets it.

``make test`` runs the suite in two pytest processes (pytest-xdist,
``--dist loadfile``): each test file runs whole in one process, so its module
fixtures (fitted runs, a Dask cluster, a reference study) are built once.
"""

from __future__ import annotations

import os

import pytest

# The tests call the package's internals directly, below the entry points that enter
# 64-bit mode themselves (classsize.model.precision), so the whole test process runs
# in it, with every core a JAX device, as the command line does.  tests/test_api.py
# checks the entry points in a process of their own, without either setting.
os.environ["JAX_ENABLE_X64"] = "1"
from classsize.inference.engine.runtime import use_all_cores  # noqa: E402

use_all_cores()

SLOW = os.environ.get("CLASSSIZE_SLOW", "") == "1"


def fast_or_slow(fast, slow):
    """Two parameter sets for ``pytest.mark.parametrize``: ``fast`` always runs,
    ``slow`` is marked slow (skipped unless ``CLASSSIZE_SLOW=1``)."""
    return [
        pytest.param(fast, id="fast"),
        pytest.param(slow, id="slow", marks=pytest.mark.slow),
    ]


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow test: set CLASSSIZE_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
