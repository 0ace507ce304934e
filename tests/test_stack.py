"""The pinned versions install beside the current PyMC stack, on Python 3.12 or newer.

``constraints.txt`` must resolve together with PyMC 6.4, nutpie 0.16 and Bambi 0.21
(what our users already have), the project and all its extras included.  pip
resolves it without installing anything (``--dry-run``); the test skips, with the
reason, only when no package index answers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What our users run beside us.
BESIDE = ("pymc==6.4.0", "nutpie==0.16.11", "bambi==0.21.0")


def test_the_project_needs_python_3_12_or_newer():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.12"' in text and '"arviz>=1.1,<2"' in text
    assert sys.version_info >= (3, 12)
    import arviz

    assert int(arviz.__version__.split(".")[0]) >= 1


def _index_answers() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "bambi"],
                           capture_output=True, text=True, timeout=120)
    return probe.returncode == 0 and "0.21.0" in probe.stdout


def test_constraints_resolve_beside_pymc_nutpie_and_bambi(tmp_path):
    if not _index_answers():
        pytest.skip("no package index answers: the resolution beside PyMC 6.4 cannot be checked here")
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation",
           "--quiet", "--report", str(tmp_path / "report.json"), "-c", str(ROOT / "constraints.txt"),
           f"{ROOT}[test,star,dask,bench]", *BESIDE]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert chosen["pymc"] == "6.4.0" and chosen["bambi"] == "0.21.0" and chosen["nutpie"] == "0.16.11"
    assert chosen["arviz"].split(".")[0] == "1"
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name in ("jax", "numpyro", "numpy", "arviz", "xarray"):
        assert chosen[name] == pins[name], name
