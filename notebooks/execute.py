"""Run teaching notebooks at full size and store their outputs in the ``.ipynb`` twins.

    python notebooks/execute.py notebooks/01_simulate.py [notebooks/02_confounding.py ...]

Each ``.py`` source (jupytext percent format) is read, executed top to bottom with
``CLASSSIZE_FAST`` unset in a kernel that runs this interpreter, and written, outputs
included, to the ``.ipynb`` next to it (atomically: a failed run leaves the old twin
in place).  A notebook writes its own files to a temporary folder and runs from the
``notebooks`` folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

KERNEL = "classsize-notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _kernel_path() -> str:
    """A folder holding a kernel spec that starts this very interpreter."""
    root = Path(tempfile.mkdtemp(prefix="classsize-kernel-"))
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "classsize notebooks",
        "language": "python",
    }))
    return str(root)


def execute(source: Path) -> float:
    """Execute ``source`` at full size and write its ``.ipynb`` twin; returns the seconds taken."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=KERNEL, timeout=None,
                   resources={"metadata": {"path": str(source.parent.resolve())}}).execute()
    seconds = time.perf_counter() - start
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    twin = source.with_suffix(".ipynb")
    partial = twin.with_name(f".{twin.name}.partial")
    nbformat.write(nb, partial)
    os.replace(partial, twin)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", type=Path, help="notebook sources (notebooks/NN_name.py)")
    args = parser.parse_args(argv)
    os.environ.pop("CLASSSIZE_FAST", None)
    os.environ["JUPYTER_PATH"] = _kernel_path() + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    for source in args.sources:
        print(f"{source}: running at full size ...", file=sys.stderr, flush=True)
        seconds = execute(source)
        print(f"{source}: {seconds:.0f} s, outputs written to {source.with_suffix('.ipynb')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
