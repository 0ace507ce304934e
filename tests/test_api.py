"""The Python API as a user meets it: ``import classsize as cs`` in a fresh process.

The checks run in a process of their own, without the test suite's global 64-bit
mode and device count (``conftest.py``), as a user's script would:

* importing loads neither NumPy nor JAX, and neither importing nor any call changes
  a JAX setting (64-bit mode, ``XLA_FLAGS``), while the package's own results are
  float64;
* the README's Python blocks run as written (with short chains);
* ``cs.fit`` gives the same draws for a folder, a ``Dataset`` and two DataFrames;
* ``cs.load_run`` gives back the written result, and ``do`` on it works while the
  data folder holds the same data and says why not once it does not;
* a run folder of another output format is refused in one line naming both formats;
* ``repr`` is one short paragraph; a fit with fewer devices than chains says so, once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHORT = "chains=2, warmup=100, samples=100"


def readme_blocks() -> list[str]:
    """The Python blocks of the README's "Python" section, every ``cs.fit``/``cs.compare``
    call given short chains."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):text.index("## The analyses")]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the README's Python section has changed: update this test"
    return [_shorten(b) for b in blocks]


def _shorten(code: str) -> str:
    out = []
    for line in code.splitlines():
        for call in ("cs.fit(", "cs.compare("):
            start = line.find(call)
            if start < 0:
                continue
            depth, i = 0, start + len(call) - 1
            for i in range(start + len(call) - 1, len(line)):
                depth += {"(": 1, ")": -1}.get(line[i], 0)
                if depth == 0:
                    break
            line = f"{line[:i]}, {SHORT}{line[i:]}"
        out.append(line)
    return "\n".join(out)


def test_short_chains_are_given_to_every_call():
    first = readme_blocks()[0]
    assert first.count(SHORT) == len(re.findall(r"cs\.(fit|compare)\(", first)) >= 3


SCRIPT = r'''
import json, os, sys
flags_before = os.environ.get("XLA_FLAGS")
import classsize as cs
assert not {"numpy", "jax", "numpyro"} & set(sys.modules), "import classsize loaded heavy modules"
assert cs.__version__ and "fit" in dir(cs)
os.chdir(sys.argv[1])
README
import jax, numpy as np
assert not jax.config.jax_enable_x64, "a call left 64-bit mode on"
assert os.environ.get("XLA_FLAGS") == flags_before, "a call changed XLA_FLAGS"
assert result.idata["posterior"]["teacher_ma_effect"].dtype == np.float64
assert ds.students["test_score"].dtype == np.float64
out = {"repr": repr(result), "again": repr(again),
       "others": [repr(ds), repr(both), repr(cf)],
       "same_tables": [other.estimand_summaries == same.estimand_summaries],
       "again_summary": again.summary().round(12).equals(result.summary().round(12)),
       "do_again": again.do(small_class=1, draws=50).statement()}
folder = cs.fit("data/", analysis="randomized", SHORT)
out["same_tables"].append(folder.estimand_summaries == other.estimand_summaries)
out["still_bound"] = cs.load_run("run/").problem is not None
lines = open("data/students.csv").read().splitlines()  # now the folder holds other data
lines[1], lines[2] = lines[2], lines[1]
open("data/students.csv", "w").write("\n".join(lines) + "\n")
try:
    cs.load_run("run/").do(small_class=1)
except RuntimeError as e:
    out["unbound"] = str(e)
doc = json.load(open("run/summary.json"))
doc["format_version"] = 1
json.dump(doc, open("run/summary.json", "w"))
from classsize.inference.outputs import UsageError
try:
    cs.load_run("run/")
except UsageError as e:
    out["refused"] = str(e)
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    first, second = readme_blocks()
    script = SCRIPT.replace("README", first + "\n" + second).replace("SHORT", SHORT)
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS", "CLASSSIZE_DEVICES")}
    env["MPLBACKEND"] = "Agg"
    run = subprocess.run([sys.executable, "-c", script, str(work)], capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), run.stderr


def test_the_readme_runs_and_import_changes_no_jax_setting(api_run):
    """The script's own assertions (64-bit mode off after every call, XLA_FLAGS as
    they were, float64 results, no heavy import) held, or it would have failed."""
    out, _ = api_run
    assert out["repr"].startswith("FitResult(structural: small_class_direct_effect")


def test_fit_takes_a_folder_a_dataset_or_two_dataframes_alike(api_run):
    out, _ = api_run
    assert out["same_tables"] == [True, True]


def test_load_run_gives_the_result_back_and_do_works_on_it(api_run):
    out, _ = api_run
    assert out["again_summary"] and out["again"] == out["repr"]
    assert "average effect" in out["do_again"] or "effect" in out["do_again"]
    assert out["still_bound"]
    assert "no longer holds the data" in out["unbound"]


def test_a_run_of_another_format_is_refused_naming_both(api_run):
    out, _ = api_run
    refused = out["refused"]
    assert "output format 1" in refused and "output format 2" in refused and "\n" not in refused


def test_repr_is_one_short_paragraph(api_run):
    out, _ = api_run
    for text in (out["repr"], *out["others"]):
        assert "\n" not in text and len(text) < 600, text
    assert out["others"][0].startswith("Dataset(6000 students") and out["others"][1].startswith("Comparison(")


def test_fewer_devices_than_chains_is_said_once(api_run):
    _, err = api_run
    told = [ln for ln in err.splitlines() if "share" in ln and "JAX device" in ln]
    assert len(told) == 1, err[-2000:]  # 2 chains, 1 device: use_all_cores() was not called


def test_no_warning_of_a_dependency_reaches_the_terminal(api_run, tmp_path):
    """Neither the API script nor a ``classsize fit`` prints a Python warning: what
    remains on standard error is the package's own lines (announcement, progress,
    sampler warnings)."""
    _, err = api_run
    cli = Path(sys.executable).parent / "classsize"
    data = tmp_path / "data"
    import classsize as cs

    cs.simulate(cs.Config(n_regular=200, n_experimental=100, n_schools=3), seed=2).write(data)
    run = subprocess.run([str(cli), "fit", str(data), "--analysis", "naive", "--chains", "2", "--warmup", "100",
                          "--samples", "100", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for text in (err, run.stderr):
        assert not re.search(r"\w+Warning\b", text), text[-3000:]
