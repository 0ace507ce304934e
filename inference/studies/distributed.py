"""Recovery studies on Dask distributed: each batch of datasets one task.

:class:`DaskRunner` is a runner for :func:`~.run.run_study`: it submits one task
per batch (:func:`fit_batch_task`, which runs :func:`~.fitting.fit_batch` in the
worker) and yields the batches' records as they complete; the process that runs the
study writes each one into the output folder (:mod:`.plan`), so the workers need
no shared file system.  The task's plan carries the analysis itself
(:class:`~.plan.StudyPlan`), pickled to the worker.

- ``DaskRunner(workers=N)`` starts a ``LocalCluster`` of ``N`` worker processes on
  this machine, one thread each, and gives each worker ``cores // N`` JAX devices
  (``CLASSSIZE_DEVICES``, set in the worker's environment before JAX starts; see
  :mod:`.runtime`), so workers x devices never exceed the cores.
- ``DaskRunner(address="tcp://host:8786")`` connects to a running scheduler.  Its
  workers should run one thread each (``dask worker ADDRESS --nthreads 1``); each
  worker then uses every core of its machine as a device, unless its environment
  sets ``CLASSSIZE_DEVICES`` (for several workers on one machine).

A worker that dies (killed, out of memory, its machine lost) costs the batch it was
fitting: the scheduler runs the task again on another worker (up to Dask's
``distributed.scheduler.allowed-failures`` times); a task that raises is retried
:data:`RETRIES` times.  Each batch's record reaches the study once, whatever the
attempts, so every dataset is counted once.  A batch that fails on every attempt is
reported when the other batches are done (:class:`~.run.StudyIncomplete`); the
finished batches stay in the output folder for ``--resume``.

Dask is an optional extra (``pip install 'classsize[dask]'``): this module imports
it only when a runner is made (:func:`require_dask`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterator, Sequence

from classsize.model.machine import machine_cores
from classsize.model.precision import float64

from classsize.inference.outputs import UsageError

#: Times a task that raises is run again before its batch counts as failed.
RETRIES = 2
#: Seconds to wait for the first worker of a cluster.
WORKER_WAIT_SECONDS = 120


def require_dask() -> None:
    """Refuse (one line) when Dask distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError("--scheduler and --workers need Dask distributed, an optional extra: "
                         "pip install 'classsize[dask]'") from None


def check_runner_args(address: str | None, workers: int | None) -> None:
    """Refuse (one line) ``--scheduler`` with ``--workers``, more local workers than
    cores, or either flag without Dask."""
    if address is None and workers is None:
        return
    if address is not None and workers is not None:
        raise UsageError("--scheduler and --workers exclude each other")
    require_dask()
    if workers is not None and not 1 <= workers <= machine_cores():
        raise UsageError(f"--workers must be between 1 and the {machine_cores()} core(s) of this machine, "
                         f"got {workers}")


def worker_environment(devices: int) -> dict[str, str]:
    """Environment of a local worker process: ``devices`` JAX devices, one thread each."""
    from classsize.inference.engine.runtime import _FLAG

    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(_FLAG))
    return {"CLASSSIZE_DEVICES": str(devices), "XLA_FLAGS": f"{flags} {_FLAG}={devices}".strip()}


def _set_up_worker() -> None:
    """Apply the worker's device count before JAX starts (a no-op once it has)."""
    from classsize.inference.engine.runtime import jax_started, use_all_cores

    if not jax_started():
        use_all_cores()


def worker_devices() -> int:
    """The JAX devices of the worker this runs in."""
    _set_up_worker()
    import jax

    return jax.device_count()


@float64
def fit_batch_task(plan, batch: int) -> dict:
    """The task of one batch: :func:`~.fitting.fit_batch` in the worker (in 64-bit mode:
    a task runs in a thread of its own)."""
    _set_up_worker()
    from classsize.inference.studies.fitting import fit_batch

    return fit_batch(plan, batch)


class DaskRunner:
    """Fits a study's batches as tasks of a Dask cluster (see the module docstring);
    a context manager that closes the client (and a local cluster) on exit."""

    def __init__(self, address: str | None = None, workers: int | None = None, *, task=fit_batch_task):
        if address is None and workers is None:
            raise ValueError("give an address or a number of workers")
        check_runner_args(address, workers)
        from distributed import Client, LocalCluster

        self.task, self.cluster = task, None
        if workers is not None:
            cores = machine_cores()
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        env=worker_environment(cores // workers), dashboard_address=None,
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            self.description = f"dask: {workers} local worker(s), {cores // workers} device(s) each"
        else:
            try:
                self.client = Client(address, timeout="30s")
            except (OSError, TimeoutError) as e:
                raise UsageError(f"--scheduler {address}: cannot connect ({e})") from None
            self.description = f"dask: scheduler {address}"

    def __enter__(self) -> "DaskRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    def devices_per_worker(self) -> int:
        """The fewest JAX devices of a worker (waiting for the first worker)."""
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise UsageError(f"{self.description}: no worker joined within {WORKER_WAIT_SECONDS} s") from None
        return min(self.client.run(worker_devices).values())

    def _warn_threads(self) -> None:
        threads = self.client.nthreads()
        busy = {w: n for w, n in threads.items() if n > 1}
        if busy:
            w, n = next(iter(busy.items()))
            print(f"warning: {len(busy)} worker(s) run several threads ({w}: {n}); each batch uses all of a "
                  "worker's devices, so start workers with --nthreads 1", file=sys.stderr)

    def run(self, plan, batches: Sequence[int]) -> Iterator[dict]:
        """Submit one task per batch; yield each batch's record as it completes, then
        raise :class:`~.run.StudyIncomplete` if a batch failed on every attempt."""
        from distributed import as_completed

        from classsize.inference.studies.run import StudyIncomplete

        if not batches:
            return
        self._warn_threads()
        futures = {self.client.submit(self.task, plan, b, retries=RETRIES, pure=False,
                                      key=f"classsize-batch-{plan.plan_hash}-{b}-{os.urandom(4).hex()}"): b
                   for b in batches}
        failed = {}
        for future in as_completed(futures):
            b = futures[future]
            if future.status == "finished":
                yield future.result()
            else:
                failed[b] = future.exception()
            future.release()
        if failed:
            b, error = next(iter(failed.items()))
            raise StudyIncomplete(f"{len(failed)} batch(es) failed on every attempt ({', '.join(map(str, failed))}); "
                                  f"batch {b}: {type(error).__name__}: {error}")


def open_runner(address: str | None, workers: int | None):
    """A :class:`DaskRunner` for ``--scheduler`` / ``--workers``, or a context holding
    None (the study runs in this process) when neither is given."""
    from contextlib import nullcontext

    if address is None and workers is None:
        return nullcontext(None)
    return DaskRunner(address=address, workers=workers)
