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
