"""Recovery studies in batches: on Dask workers, resumed after an interruption, and
surviving a killed worker, all giving the numbers of the study run in one process.

Every study here is the same small SBC (randomized analysis, 300 + 300 students,
5 schools, 6 datasets in 2 batches of 3, 2 chains of 60 + 60 iterations: the design
and chains of ``tests/test_recover.py``'s SBC, so the in-process fits reuse its
compiled program).  The comparisons are exact: a dataset's numbers depend only on
the study seed and its index, not on the process, device count or batch that fits
it.  The cluster is one ``LocalCluster`` of 2 single-device workers shared by the
tests (started once: a worker process takes seconds to load JAX and the program).
The slow form runs the structural analysis through ``--workers 2`` itself.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.studies import fitting
from classsize.inference.studies import plan as bt
from classsize.inference.studies import run as st
from classsize.inference.studies.result import StudyResult
from classsize.inference.commands.cli import main
from classsize.model import Config

pytest.importorskip("distributed")
from distributed import WorkerPlugin  # noqa: E402

SMALL = Config(n_regular=300, n_experimental=300, n_schools=5)
STUDY = ["recover", "--model", "randomized", "--from-prior", "--datasets", "6", "--batch-size", "3",
         "--chains", "2", "--warmup", "60", "--samples", "60", "--seed", "3"]
#: Columns of recovery.csv that are timings (the rest must be equal).
TIMING = ["seconds"]


def study_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    config = tmp_path / "small.toml"
    if not config.exists():
        config.write_text(SMALL.to_toml())
    return [*STUDY, "--config", str(config), "--out", str(out), *extra]


def assert_same_study(out: Path, reference: Path) -> None:
    """The tables, summary and verdict (but its timing lines) of two study folders are equal."""
    mine, theirs = pd.read_csv(out / "recovery.csv"), pd.read_csv(reference / "recovery.csv")
    assert len(mine) == len(theirs) and mine["dataset"].value_counts().nunique() == 1  # each dataset once
    pd.testing.assert_frame_equal(mine.drop(columns=TIMING), theirs.drop(columns=TIMING), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(reference / "summary.csv"),
                                  check_exact=True)

    def verdict(folder):  # without the lines about time and devices
        return [line for line in (folder / "verdict.txt").read_text().splitlines()
                if not line.startswith(("fits:", "  (+"))]

    assert verdict(out) == verdict(reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The study in this process, its batch files written as they finish."""
    base = tmp_path_factory.mktemp("reference")
    assert main(study_args(base, base / "out")) in (0, 1)
    return base / "out"


@pytest.fixture(scope="module")
def cluster():
    from classsize.inference.studies.distributed import DaskRunner

    with DaskRunner(workers=2) as runner:
        yield runner


# ======================================================================== batch files
def test_batch_files_and_manifest(reference):
    manifest = json.loads((reference / "batches" / "manifest.json").read_text())
    assert manifest["datasets"] == 6 and manifest["batch_size"] == 3 and manifest["seed"] == 3
    assert manifest["versions"]["jax"] and len(manifest["plan_hash"]) == 16
    files = sorted(p.name for p in (reference / "batches").glob("batch-*.json"))
    assert files == ["batch-000000.json", "batch-000001.json"]
    record = json.loads((reference / "batches" / "batch-000001.json").read_text())
    assert [r["dataset"] for r in record["records"]] == [3, 4, 5] and record["plan_hash"] == manifest["plan_hash"]
    settings = json.loads((reference / "study.json").read_text())
    assert settings["executor"] == "in-process" and settings["workers"] == 1 and settings["resumed_batches"] == 0


def test_plan_pickles_and_differences_are_named():
    import pickle

    plan = bt.StudyPlan(get_analysis("randomized"), 6, SMALL, True, 3, 2, 60, 60, 3, 99)
    again = pickle.loads(pickle.dumps(plan))
    assert again == plan and again.plan_hash == plan.plan_hash
    assert [list(plan.datasets_of(b)) for b in range(plan.n_batches)] == [[0, 1, 2], [3, 4, 5]]
    other = bt.StudyPlan(get_analysis("randomized"), 6, SMALL.replace(n_schools=6), True, 4, 2, 60, 60, 3, 99)
    diff = bt.manifest_differences(plan.manifest, other.manifest)
    assert diff == ["--seed 3 there, 4 here", "--config another design or truth there, this one here"]
    assert other.plan_hash != plan.plan_hash
    assert bt.plain({"a": np.float32(0.5), "b": (np.int64(2), np.bool_(True)), 3: np.arange(2)}) == \
        {"a": 0.5, "b": [2, True], "3": [0, 1]}


def test_padding_group_layouts_changes_no_extreme():
    """The layouts of a study's batches are padded to more blocks (one shape per design);
    the group extremes, the members attaining them and their gradients are those of the
    unpadded layout, and those of one reduction over each whole group."""
    import jax
    import jax.numpy as jnp

    from classsize.model.groups import group_extremes, group_layout

    rng = np.random.default_rng(5)
    values = jnp.asarray(np.round(rng.normal(size=200), 1))  # ties within groups
    group, keep = rng.integers(0, 6, 200), rng.uniform(size=200) < 0.8
    layout = group_layout(group, 7, include=keep)  # group 6 empty
    padded = layout.padded(layout.n_blocks + 5)
    for groups in (layout, padded):
        low, high = group_extremes(values, groups)
        top = lambda v: group_extremes(v, groups)[1]  # noqa: E731
        grad = jax.grad(lambda v: jnp.sum(jnp.where(jnp.isfinite(top(v)), top(v), 0.0)))(values)
        if groups is layout:
            expected = (np.asarray(low), np.asarray(high), np.asarray(grad))
    np.testing.assert_array_equal(np.asarray(low), expected[0])
    np.testing.assert_array_equal(np.asarray(high), expected[1])
    np.testing.assert_array_equal(np.asarray(grad), expected[2])
    assert np.isinf(expected[1][6]) and padded.n_blocks > layout.n_blocks
    # against the whole groups: the extreme, and the gradient at its largest attaining member
    v = np.asarray(values)
    for g in range(6):
        members = np.flatnonzero((group == g) & keep)
        assert expected[0][g] == v[members].min() and expected[1][g] == v[members].max()
        who = members[v[members] == v[members].max()].max()
        assert expected[2][who] == 1.0 and np.sum(expected[2][members]) == 1.0
    rows, ok = layout.rows()
    assert sorted(rows[2][ok[2]]) == sorted(np.flatnonzero((group == 2) & keep))


# ============================================================================ resuming
def test_interrupted_study_resumes_with_only_the_missing_batch(tmp_path, reference, monkeypatch, capsys):
    out = tmp_path / "out"
    real, fitted = fitting.fit_batch, []

    def interrupted(plan, batch):
        if batch == 1:
            raise KeyboardInterrupt  # as if the machine went down during batch 1
        fitted.append(batch)
        return real(plan, batch)

    monkeypatch.setattr(fitting, "fit_batch", interrupted)
    capsys.readouterr()
    assert main(study_args(tmp_path, out)) == 130  # Ctrl-C: one line, with the way on
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun with --resume" in err and "Traceback" not in err
    assert fitted == [0]
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["batch-000000.json", "manifest.json"]
    assert not (out / "recovery.csv").exists()
    capsys.readouterr()
    # without --resume (or --force) the folder is refused, as any non-empty one
    assert main(study_args(tmp_path, out)) == 2 and "not empty" in capsys.readouterr().err

    def counted(plan, batch):
        fitted.append(batch)
        return real(plan, batch)

    monkeypatch.setattr(fitting, "fit_batch", counted)
    fitted.clear()
    assert main(study_args(tmp_path, out, "--resume")) in (0, 1)
    assert fitted == [1]
    assert "resuming: 1 of 2 batches already fitted" in capsys.readouterr().err
    assert json.loads((out / "study.json").read_text())["resumed_batches"] == 1
    assert_same_study(out, reference)
    # a finished study resumed fits nothing and writes the same tables again
    fitted.clear()
    assert main(study_args(tmp_path, out, "--resume")) in (0, 1)
    assert fitted == []
    assert_same_study(out, reference)


def test_resume_refuses_another_study(tmp_path, reference, capsys):
    before = {p.name: p.read_bytes() for p in (reference / "batches").iterdir()}
    cases = [
        (["--resume", "--seed", "4"], "--seed 3 there, 4 here"),
        (["--resume", "--samples", "70"], "--samples 60 there, 70 here"),
        (["--resume", "--batch-size", "2"], "--batch-size 3 there, 2 here"),
        (["--resume", "--force"], "--resume and --force exclude each other"),
    ]
    for extra, message in cases:
        code = main([*study_args(tmp_path, reference), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    # a design of another config file
    other = tmp_path / "other.toml"
    other.write_text(SMALL.replace(n_schools=6).to_toml())
    code = main([*study_args(tmp_path, reference), "--resume", "--config", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "--config another design" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (reference / "batches").iterdir()} == before
    # a non-empty folder without a study
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    code = main(study_args(tmp_path, stray, "--resume"))
    err = capsys.readouterr().err
    assert code == 2 and "nothing to resume" in err and len(err.strip().splitlines()) == 1
    # a batch file of another plan is not used: fitted again
    plan = bt.StudyPlan(get_analysis("randomized"), 6, SMALL, True, 3, 2, 60, 60, 3, 99)
    assert len(list(bt.finished_batches(reference, plan))) == 2
    foreign = tmp_path / "foreign"
    (foreign / "batches").mkdir(parents=True)
    record = json.loads((reference / "batches" / "batch-000000.json").read_text())
    (foreign / "batches" / "batch-000000.json").write_text(json.dumps({**record, "plan_hash": "0" * 16}))
    (foreign / "batches" / "batch-000001.json").write_text("{not json")
    assert list(bt.finished_batches(foreign, plan)) == []
    assert capsys.readouterr().err.count("fitting it again") == 2


# ========================================================================== on Dask
def test_dask_missing_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    for flags in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]):
        code = main(study_args(tmp_path, tmp_path / "never", *flags))
        err = capsys.readouterr().err
        assert code == 2 and "pip install 'classsize[dask]'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never").exists()
    monkeypatch.undo()
    for flags, message in ((["--workers", "0"], "--workers must be >= 1"),
                           (["--workers", str(os.cpu_count() + 1)], "core(s) of this machine"),
                           (["--workers", "1", "--scheduler", "tcp://x:1"], "exclude each other")):
        code = main(study_args(tmp_path, tmp_path / "never", *flags))
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


def test_local_workers_have_their_share_of_the_cores(cluster):
    from classsize.inference.studies.distributed import worker_devices
    from classsize.model.machine import machine_cores

    devices = cluster.client.run(worker_devices)
    assert len(devices) == 2 and set(devices.values()) == {max(1, machine_cores() // 2)}
    assert set(cluster.client.nthreads().values()) == {1}


def on_cluster(cluster, task):
    """A runner on the fixture's cluster whose batches run ``task`` (defined here and
    pickled by value: the workers need not import this file)."""
    from classsize.inference.studies.distributed import DaskRunner

    runner = DaskRunner.__new__(DaskRunner)
    runner.client, runner.cluster, runner.task, runner.description = cluster.client, None, task, "dask: test"
    return runner


@pytest.fixture
def by_value():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def small_study(out: Path, runner) -> StudyResult:
    """The study of ``STUDY`` through the Python API."""
    return st.run_study("randomized", 6, config=SMALL, from_prior=True, seed=3, chains=2, warmup=60, samples=60,
                        batch_size=3, out=out, runner=runner, progress=False)


def failing_task(plan, batch, attempts):
    """The batch task, but batch 1 raises on every attempt (each noted in ``attempts``)."""
    from pathlib import Path

    from classsize.inference.studies.distributed import fit_batch_task

    if batch == 1:
        with Path(attempts).open("a") as f:
            f.write("attempt\n")
        raise RuntimeError("no luck")
    return fit_batch_task(plan, batch)


def test_a_failing_batch_is_retried_then_reported_and_the_others_kept(tmp_path, cluster, by_value):
    from classsize.inference.studies.distributed import RETRIES

    attempts = tmp_path / "attempts.txt"
    out = tmp_path / "out"
    with pytest.raises(st.StudyIncomplete, match="1 batch\\(es\\) failed on every attempt \\(1\\); batch 1: "
                                                 "RuntimeError: no luck"):
        small_study(out, on_cluster(cluster, partial(failing_task, attempts=str(attempts))))
    assert attempts.read_text().count("attempt") == 1 + RETRIES
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["batch-000000.json", "manifest.json"]


class KillOnce(WorkerPlugin):
    """Kills the worker process that starts batch 1, half a second into the batch
    (once: the flag file is claimed by whoever deletes it)."""

    def __init__(self, flag: str):
        self.flag = flag

    def transition(self, key, start, finish, **kwargs):
        import os
        import threading
        from pathlib import Path

        if finish != "executing" or not str(key).startswith("classsize-batch-") or str(key).split("-")[3] != "1":
            return
        try:
            Path(self.flag).unlink()
        except FileNotFoundError:
            return
        Path(self.flag).with_suffix(".pid").write_text(str(os.getpid()))
        threading.Timer(0.5, os._exit, (1,)).start()


def test_workers_give_the_in_process_study_though_one_is_killed(tmp_path, reference, cluster, by_value, monkeypatch):
    """Through the command line with --scheduler ADDRESS (the fixture's cluster is what
    --workers 2 starts), a worker killed in the middle of batch 1: the batch is fitted
    again by another worker, and the study is the in-process one.  --workers N is
    routed to a local cluster of N workers."""
    from classsize.inference.studies import distributed

    flag = tmp_path / "kill.flag"
    flag.write_text("")
    cluster.client.register_plugin(KillOnce(str(flag)), name="kill-once")
    try:
        out = tmp_path / "scheduler"
        assert main(study_args(tmp_path, out, "--scheduler", cluster.address)) in (0, 1)
    finally:
        cluster.client.unregister_worker_plugin("kill-once")
    assert not flag.exists(), "no worker was killed"
    killed = int(flag.with_suffix(".pid").read_text())
    assert_same_study(out, reference)
    settings = json.loads((out / "study.json").read_text())
    assert settings["executor"] == f"dask: scheduler {cluster.address}"
    worker_pids = set(cluster.client.run(os.getpid).values())
    fitted_by = {json.loads(p.read_text())["pid"] for p in (out / "batches").glob("batch-*.json")}
    assert fitted_by <= worker_pids and killed not in worker_pids | fitted_by and os.getpid() not in fitted_by
    assert all(d.split("/")[0].split(":")[1] in map(str, worker_pids) for d in settings["devices"])

    class Routed(Exception):
        pass

    def local_cluster(address=None, workers=None):
        raise Routed(address, workers)

    monkeypatch.setattr(distributed, "DaskRunner", local_cluster)
    with pytest.raises(Routed) as routed:
        main(study_args(tmp_path, tmp_path / "workers", "--workers", "2"))
    assert routed.value.args == (None, 2)


@pytest.mark.slow
def test_cli_workers_give_the_in_process_structural_study(tmp_path):
    """The structural analysis (its pilots and group layouts) through ``--workers 2``
    itself, a cluster the command starts and stops, against the study in this process."""
    config = tmp_path / "small.toml"
    config.write_text(SMALL.to_toml())
    args = ["recover", "--model", "structural", "--from-prior", "--datasets", "8", "--batch-size", "2",
            "--chains", "2", "--warmup", "100", "--samples", "100", "--seed", "20", "--config", str(config)]
    assert main([*args, "--out", str(tmp_path / "here")]) in (0, 1)
    assert main([*args, "--out", str(tmp_path / "workers"), "--workers", "2"]) in (0, 1)
    assert_same_study(tmp_path / "workers", tmp_path / "here")
    settings = json.loads((tmp_path / "workers" / "study.json").read_text())
    assert settings["executor"].startswith("dask: 2 local worker(s)") and settings["workers"] == 2
