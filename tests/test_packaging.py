"""The two directories install as one package: classsize.model and classsize.inference."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_both_halves_into_classsize():
    import classsize.inference.commands.cli as cli
    import classsize.model as model

    assert Path(model.__file__).resolve().parent == ROOT / "model"
    assert Path(cli.__file__).resolve().parent == ROOT / "inference" / "commands"


def test_model_never_imports_inference():
    for path in (ROOT / "model").glob("*.py"):
        imports = [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith(("import ", "from "))]
        assert not [ln for ln in imports if "inference" in ln], path


def test_wheel_holds_classsize_model_and_inference_only(tmp_path):
    pytest.importorskip("setuptools")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("classsize-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "classsize/model/experiment.py" in names and "classsize/inference/commands/cli.py" in names
    # every subpackage of inference/ is listed in pyproject.toml, so each lands in the wheel
    for init in sorted((ROOT / "inference").glob("*/__init__.py")):
        sub = init.parent.name
        target = "classsize/__init__.py" if sub == "api" else f"classsize/inference/{sub}/__init__.py"
        assert target in names, f"inference/{sub} is missing from the wheel (add it to pyproject's packages)"
    tops = {n.split("/")[0] for n in names}
    assert tops == {"classsize", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "classsize = classsize.inference.commands.cli:main" in entry
