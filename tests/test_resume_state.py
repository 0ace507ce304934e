"""Resume state that can be trusted, and draws that do not depend on the device count.

What is promised, fault by fault, when ``classsize recover --resume`` reads an
output folder (``batches/manifest.json`` and ``batches/batch-NNNNNN.json``):

* the manifest is not a JSON object (``[]``), lacks a field or holds one of another
  kind (``"seed": "3"``), or is a folder: refused before any work, exit 2, one line
  naming the file and what is wrong;
* a batch file is damaged: bad JSON, a folder in its place, no checksum, a checksum
  that does not match (a posterior mean edited to 1e9), or a field the study reads of
  another kind (``"fit": "oops"``, with its checksum made to match): one warning line
  on standard error naming the file and why, the batch is fitted again, its refit is
  written in its place, and the study's tables equal those of an uninterrupted run;
* an intact batch of another plan (another seed) or of other software versions:
  refused before any work, exit 2, one line, the folder left as it was.

The draws: one fit (naive, randomized and structural: 2 chains x (50 + 50) on a
300 + 300 student design) gives the same draws bit for bit on one JAX device or
several: through ``classsize fit`` in fresh processes with ``CLASSSIZE_DEVICES``
1 and 2 (the naive regression, whose draws differed before; slow: 1, 2 and 4 for
every analysis, and in this process over a mesh of 1 and of 2 devices, which XLA
compiles differently).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.commands.cli import main
from classsize.inference.studies import plan as bt
from classsize.model import Config

SMALL = Config(n_regular=300, n_experimental=300, n_schools=5)
#: A tiny coverage study: 3 datasets in 3 batches, the naive regression (the cheapest fit).
STUDY = ["recover", "--model", "naive", "--datasets", "3", "--batch-size", "1", "--chains", "2",
         "--warmup", "30", "--samples", "30", "--rank-draws", "20", "--seed", "7", "-q"]


def study_args(tmp_path, out, *extra):
    config = tmp_path / "small.toml"
    if not config.exists():
        config.write_text(SMALL.to_toml())
    return [*STUDY, "--config", str(config), "--out", str(out), *extra]


def the_plan(**changes):
    """The plan of :data:`STUDY` (as ``recover`` builds it)."""
    values = dict(analysis=get_analysis("naive").knowing(SMALL), n_datasets=3, config=SMALL, from_prior=False,
                  seed=7, chains=2, warmup=30, samples=30, batch_size=1, rank_draws=20)
    return bt.StudyPlan(**{**values, **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The study run once, uninterrupted."""
    base = tmp_path_factory.mktemp("reference")
    assert main(study_args(base, base / "out")) in (0, 1)
    return base / "out"


def copy_of(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    return out


def batch_file(out, b):
    return out / "batches" / f"batch-{b:06d}.json"


def rewrite(path, record, keep_checksum=True):
    """Write ``record``, its checksum made to match unless ``keep_checksum`` is False
    (then it keeps the checksum it has)."""
    if keep_checksum:
        record = {**record, "checksum": bt.checksum(record)}
    path.write_text(json.dumps(record))


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def assert_same_tables(out, reference):
    mine, theirs = pd.read_csv(out / "recovery.csv"), pd.read_csv(reference / "recovery.csv")
    pd.testing.assert_frame_equal(mine.drop(columns="seconds"), theirs.drop(columns="seconds"), check_exact=True)


# ================================================================= the batch files
def test_batches_carry_a_checksum_and_the_plan(reference):
    manifest = json.loads((reference / "batches" / "manifest.json").read_text())
    plan = the_plan()
    assert manifest["plan_hash"] == plan.plan_hash
    for b in range(3):
        record = json.loads(batch_file(reference, b).read_text())
        assert record["checksum"] == bt.checksum(record) and len(record["checksum"]) == 64
        assert bt.read_batch(reference, plan, b) == (record, None)
    # the checksum covers every field: one digit of one mean changes it
    record = json.loads(batch_file(reference, 1).read_text())
    record["records"][0]["fit"]["quantities"]["small_class_direct_effect"]["mean"] += 1e-12
    assert bt.checksum(record) != record["checksum"]


# ==================================================================== the manifest
@pytest.mark.parametrize("content, message", [
    ("[]", "not a study manifest (a JSON object): it holds a list"),
    ("{not json", "not a readable study manifest"),
    (None, "not a readable study manifest"),  # a folder in its place
    ({"seed": "7"}, "'seed' is a string"),
    ({"batch_size": 0}, "'batch_size' is 0"),
    ({"versions": {"jax": 10}}, "'versions.jax' is a number"),
    ({"plan_hash": None}, "'plan_hash' is null"),
])
def test_a_damaged_manifest_is_refused_in_one_line(reference, tmp_path, capsys, content, message):
    out = copy_of(reference, tmp_path)
    path = out / "batches" / "manifest.json"
    if content is None:
        path.unlink()
        path.mkdir()
    elif isinstance(content, dict):
        path.write_text(json.dumps({**json.loads(path.read_text()), **content}))
    else:
        path.write_text(content)
    before = sorted(p.name for p in (out / "batches").iterdir())
    assert main(study_args(tmp_path, out, "--resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("classsize recover: error: ") and str(path) in line and message in line, line
    assert sorted(p.name for p in (out / "batches").iterdir()) == before


# ======================================================= damaged batches: fitted again
def test_damaged_batches_are_fitted_again_with_one_warning_each(reference, tmp_path, capsys):
    out = copy_of(reference, tmp_path)
    # batch 0: a folder in the file's place
    batch_file(out, 0).unlink()
    (batch_file(out, 0) / "inside").mkdir(parents=True)
    # batch 1: a posterior mean edited to 1e9, the checksum left as it was
    edited = json.loads(batch_file(out, 1).read_text())
    edited["records"][0]["fit"]["quantities"]["small_class_direct_effect"]["mean"] = 1e9
    rewrite(batch_file(out, 1), edited, keep_checksum=False)
    # batch 2: a fit that is a string, the checksum made to match
    malformed = json.loads(batch_file(out, 2).read_text())
    malformed["records"][0]["fit"] = "oops"
    rewrite(batch_file(out, 2), malformed)
    plan = the_plan()
    assert [bt.read_batch(out, plan, b)[1] for b in range(3)] == [
        "a folder, not a batch file", "its checksum does not match its content (edited or damaged)",
        "'records[0].fit' is a string, not an object or null"]

    assert main(study_args(tmp_path, out, "--resume")) in (0, 1)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, warnings
    for b, why in enumerate(("a folder", "checksum does not match", "'records[0].fit' is a string")):
        assert warnings[b].startswith(f"warning: {batch_file(out, b)}: ") and why in warnings[b], warnings[b]
        assert warnings[b].endswith("fitting it again")
        # the refit is written in the file's place, intact
        assert batch_file(out, b).is_file() and bt.read_batch(out, plan, b)[1] is None
    assert json.loads((out / "study.json").read_text())["resumed_batches"] == 0
    assert_same_tables(out, reference)


@pytest.mark.parametrize("damage, why", [
    (lambda r: {k: v for k, v in r.items() if k != "checksum"}, "no checksum"),
    (lambda r: {**r, "records": [{**r["records"][0], "truth": {}}]}, "'records[0].truth.small_class_direct_effect' "
                                                                      "missing"),
    (lambda r: {**r, "batch": 0}, "it holds batch 0 of 1 dataset(s)"),
    (lambda r: [r], "not a batch: it holds a list"),
])
def test_what_makes_a_batch_unusable(reference, tmp_path, damage, why):
    """Each fault alone (read, not fitted): the batch is to be fitted again, and why."""
    out = copy_of(reference, tmp_path)
    record = damage(json.loads(batch_file(out, 1).read_text()))
    if isinstance(record, dict) and "checksum" in record:
        record = {**record, "checksum": bt.checksum(record)}
    batch_file(out, 1).write_text(json.dumps(record))
    assert bt.read_batch(out, the_plan(), 1) == (None, why)
    batch_file(out, 1).write_text('{"batch": 1, ')  # cut short by a full disk
    assert bt.read_batch(out, the_plan(), 1)[1].startswith("not readable as JSON")


# ====================================================== another study's batches: refused
@pytest.mark.parametrize("foreign, message", [
    (dict(plan_hash="0123456789abcdef"), "a batch of another study (plan 0123456789abcdef there, "),
    (dict(plan_hash="0123456789abcdef", versions={**bt.software_versions(), "jax": "0.0.1"}),
     "a batch of another study (software versions jax 0.0.1 there, jax "),
])
def test_an_intact_batch_of_another_study_is_refused(reference, tmp_path, capsys, foreign, message):
    out = copy_of(reference, tmp_path)
    record = json.loads(batch_file(out, 2).read_text())
    rewrite(batch_file(out, 2), {**record, **foreign})
    before = {p.name: p.read_bytes() for p in (out / "batches").iterdir()}
    assert main(study_args(tmp_path, out, "--resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert f"classsize recover: error: {batch_file(out, 2)}: {message}" in line, line
    assert line.endswith("use another folder, or --force to start afresh")
    assert {p.name: p.read_bytes() for p in (out / "batches").iterdir()} == before
    # the Python side refuses it too, while reading the batches
    with pytest.raises(bt.UsageError, match="a batch of another study"):
        list(bt.finished_batches(out, the_plan()))


def test_a_batch_of_another_seed_is_refused(reference, tmp_path, capsys):
    """A batch file copied from a study of another seed (fitted for real, intact)."""
    other = tmp_path / "other"
    assert main(study_args(tmp_path, other, "--datasets", "1", "--seed", "8")) in (0, 1)
    out = copy_of(reference, tmp_path)
    shutil.copyfile(batch_file(other, 0), batch_file(out, 0))
    assert main(study_args(tmp_path, out, "--resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{batch_file(out, 0)}: a batch of another study (plan " in line, line


# ========================================================== the draws on any device count
def _draws(folder, model, devices):
    from classsize.inference.engine.sampling import ChainRunner
    from classsize.inference.fit.result import fit

    runner = ChainRunner(2, 50, 50, devices=devices)
    result = fit(folder, model, runner=runner, seed=5, progress=False, posterior_predictive=False)
    return {name: np.asarray(v) for name, v in result.idata.posterior.data_vars.items()}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from classsize.model import simulate

    folder = tmp_path_factory.mktemp("data")
    simulate(SMALL, 1).write(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("model", ["naive", "randomized", "structural"])
def test_the_draws_are_the_same_on_one_device_or_two(small_data, model):
    """Over a mesh of one device XLA compiles the program without its partitioner,
    over two with it; the draws are equal bit for bit all the same."""
    import jax

    if jax.device_count() < 2:
        pytest.skip("needs two JAX devices")
    one, two = _draws(small_data, model, jax.devices()[:1]), _draws(small_data, model, jax.devices()[:2])
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


_FIT = """
import sys, hashlib, numpy as np
from classsize.inference.commands.cli import main
import jax
assert main(sys.argv[1:]) == 0
import xarray as xr
with xr.open_datatree(sys.argv[sys.argv.index("--out") + 1] + "/posterior.nc", engine="netcdf4") as tree:
    post = tree["posterior"].to_dataset()
    print("devices", jax.device_count(), "draws", hashlib.sha256(b"".join(
        np.ascontiguousarray(post[k].values).tobytes() for k in sorted(post.data_vars))).hexdigest())
"""


def _cli_draws(folder, out, model, devices):
    """The SHA-256 of the draws of ``classsize fit`` run in a fresh process for each
    device count in ``devices`` (the processes side by side)."""
    runs = {}
    for d in devices:
        env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "CLASSSIZE_DEVICES": str(d)}
        args = ["fit", str(folder), "--model", model, "--chains", "2", "--warmup", "50", "--samples", "50",
                "--seed", "5", "--out", str(out / str(d)), "-q"]
        runs[d] = subprocess.Popen([sys.executable, "-c", _FIT, *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
    hashes = {}
    for d, run in runs.items():
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-3000:]
        line = stdout.strip().splitlines()[-1].split()
        assert line[:2] == ["devices", str(d)], stdout
        hashes[d] = line[-1]
    return hashes


@pytest.mark.parametrize("models, devices", [
    (["naive"], (1, 2)),
    pytest.param(["naive", "randomized", "structural"], (1, 2, 4), marks=pytest.mark.slow),
])
def test_classsize_fit_gives_the_same_draws_whatever_classsize_devices(small_data, tmp_path, models, devices):
    for model in models:
        hashes = _cli_draws(small_data, tmp_path / model, model, devices)
        assert len(set(hashes.values())) == 1, (model, hashes)
