"""Run teaching notebooks at full size and store their outputs in the ``.ipynb`` twins.

    python notebooks/execute.py notebooks/01_simulate.py [notebooks/02_confounding.py ...]

Each ``.py`` source (jupytext percent format) is read, executed top to bottom with
``CLASSSIZE_FAST`` unset in a kernel that runs this interpreter, and written, outputs
included, to the ``.ipynb`` next to it (atomically: a failed run leaves the old twin
in place).  The run's time is written into the first cell of both files (and into the
notebook metadata ``classsize.full_run``).  A notebook writes its own files to a temporary folder and runs from the
``notebooks`` folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


#: The first cell's statement of the full run's time, which :func:`execute` fills in.
FULL_RUN = re.compile(r"(A full run takes about\s+)(.*?)(\s+on\s+2\b)")
#: The same figure in the notebook's metadata (``classsize.full_run``), in the ``.py`` header.
FULL_RUN_META = re.compile(r'^(#\s+full_run: ")[^"]*(")$', re.M)


def duration(seconds: float) -> str:
    """``seconds`` as the notebooks state a run's time: ``"40 s"`` under 90 s, else whole minutes."""
    return f"{round(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


def _with_full_run(text: str, took: str, where: str) -> str:
    text, n = FULL_RUN.subn(lambda m: m.group(1) + took + m.group(3), text, count=1)
    if not n:
        raise SystemExit(f"{where}: the first cell does not say 'A full run takes about ... on 2 CPU cores'")
    return text


def execute(source: Path) -> float:
    """Execute ``source`` at full size and write its ``.ipynb`` twin; returns the seconds taken.

    The time taken is written into the first cell and the ``classsize.full_run`` metadata
    of both files, so the notebook states how long its full run took."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=KERNEL, timeout=None,
                   resources={"metadata": {"path": str(source.parent.resolve())}}).execute()
    seconds = time.perf_counter() - start
    took = duration(seconds)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("classsize", {})["full_run"] = took
    nb.cells[0].source = _with_full_run(nb.cells[0].source, took, source.name)
    text = _with_full_run(source.read_text(), took, source.name)
    text, n = FULL_RUN_META.subn(lambda m: m.group(1) + took + m.group(2), text, count=1)
    if not n:
        raise SystemExit(f"{source.name}: the header has no classsize.full_run")
    twin = source.with_suffix(".ipynb")
    for path, write in ((twin, lambda p: nbformat.write(nb, p)), (source, lambda p: p.write_text(text))):
        partial = path.with_name(f".{path.name}.partial")
        write(partial)
        os.replace(partial, path)
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
