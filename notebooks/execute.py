"""Run teaching notebooks at full size and store their outputs in the ``.ipynb`` twins.

    python notebooks/execute.py notebooks/01_simulate.py [notebooks/02_confounding.py ...]

Each ``.py`` source (jupytext percent format) is read, executed top to bottom with
``CLASSSIZE_FAST`` unset in a kernel that runs this interpreter, and written, outputs
included, to the ``.ipynb`` next to it (atomically: a failed run leaves the old twin
in place).  Before it, the fast setting (``CLASSSIZE_FAST=1``) runs twice, the second
time timed; both times are written into the first cell of both files and into the
notebook metadata (``classsize.full_run``, ``classsize.fast_run``).  A notebook writes
its own files to a temporary folder and runs from the ``notebooks`` folder.
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


#: The first cell's statements of the full and the fast run's times, which :func:`execute` fills in.
#: (Between words: white space, and in the ``.py`` file a line's ``#``.)
_GAP = r"[\s#]+"
STATED = {"full_run": re.compile(rf"(A{_GAP}full{_GAP}run{_GAP}takes{_GAP}about{_GAP})(\d+ \w+|[A-Z]+)({_GAP}on{_GAP}2\b)"),
          "fast_run": re.compile(rf"(with{_GAP}`CLASSSIZE_FAST=1`{_GAP}about{_GAP})(\d+ \w+|[A-Z]+)(\.\*\*)")}


def _meta(key: str) -> re.Pattern:
    """The same figure in the notebook's metadata (``classsize.<key>``), in the ``.py`` header."""
    return re.compile(rf'^(#\s+{key}: ")[^"]*(")$', re.M)


def duration(seconds: float) -> str:
    """``seconds`` as the notebooks state a run's time: ``"40 s"`` under 90 s, else whole minutes."""
    return f"{round(seconds)} s" if seconds < 90 else f"{round(seconds / 60)} min"


def _stating(text: str, times: dict[str, str], where: str, header: bool) -> str:
    """``text`` with the first cell's statements (and, for the ``.py`` file, the header's
    metadata) set to ``times``."""
    for key, took in times.items():
        text, n = STATED[key].subn(lambda m: m.group(1) + took + m.group(3), text, count=1)
        if header:
            text, m = _meta(key).subn(lambda g: g.group(1) + took + g.group(2), text, count=1)
            n = min(n, m)
        if not n:
            raise SystemExit(f"{where}: the first cell (or the header's classsize metadata) does not state {key}")
    return text


def _run(nb, source: Path, fast: bool) -> float:
    """Execute ``nb`` in place (``CLASSSIZE_FAST`` set or not) from the notebook's folder; seconds."""
    from nbclient import NotebookClient

    if fast:
        os.environ["CLASSSIZE_FAST"] = "1"
    else:
        os.environ.pop("CLASSSIZE_FAST", None)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=KERNEL, timeout=None,
                   resources={"metadata": {"path": str(source.parent.resolve())}}).execute()
    return time.perf_counter() - start


def execute(source: Path) -> dict[str, float]:
    """Execute ``source`` at full size and write its ``.ipynb`` twin; returns the seconds taken.

    First the fast setting runs twice, the second time timed (what a class waits for on a
    machine that has run it before), then the full size.  Both times are written into the
    first cell and the ``classsize`` metadata of both files, so the notebook states them."""
    import jupytext
    import nbformat

    _run(jupytext.read(source), source, fast=True)  # compiles what the fast run needs
    seconds = {"fast_run": _run(jupytext.read(source), source, fast=True)}
    nb = jupytext.read(source)
    seconds["full_run"] = _run(nb, source, fast=False)
    times = {key: duration(s) for key, s in seconds.items()}
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("classsize", {}).update(times)
    nb.cells[0].source = _stating(nb.cells[0].source, times, source.name, header=False)
    text = _stating(source.read_text(), times, source.name, header=True)
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
    os.environ["JUPYTER_PATH"] = _kernel_path() + os.pathsep + os.environ.get("JUPYTER_PATH", "")
    for source in args.sources:
        print(f"{source}: running at full size ...", file=sys.stderr, flush=True)
        seconds = execute(source)
        print(f"{source}: full run {seconds['full_run']:.0f} s, fast run {seconds['fast_run']:.0f} s (warm); "
              f"outputs written to {source.with_suffix('.ipynb')}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
