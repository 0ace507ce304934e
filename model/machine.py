"""The cores of this machine that the package may use.

:func:`machine_cores` is the one count of them: the writers of
:func:`classsize.model.simulate.write_replicates` use as many threads, the command
line as many JAX devices (:mod:`classsize.inference.engine.runtime`), and a recovery
study on local Dask workers shares them out (:mod:`classsize.inference.studies.distributed`).
"""

from __future__ import annotations

import os


def machine_cores() -> int:
    """The cores this process may use: its CPU affinity on Linux (a container or
    ``taskset`` may allow fewer than the machine has), else every core; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
