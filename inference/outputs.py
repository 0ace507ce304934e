"""What every command shares before, during and after its work: bad input, the
configuration, the output format, and what it says on standard error about long work
(:func:`announce`, :class:`Progress`).  The output folder is
:mod:`classsize.inference.publish`'s.

A leaf module (the standard library only; the model is imported when a function
needs it), so that the command line, the data reader and the study can all use it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


#: The layout of every file the commands write (a run's ``posterior.nc`` and
#: ``summary.json``, a comparison's table, a study's files): written into each of them,
#: and a folder of another format is refused (:func:`check_format`).  CHANGELOG.md
#: records what each format changed.
FORMAT_VERSION = 2


def package_version() -> str:
    """The installed classsize's version (``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("classsize")
    except PackageNotFoundError:
        return "unknown"


def check_format(source: str | Path, found) -> None:
    """Refuse (one line) a file written in another output format than :data:`FORMAT_VERSION`."""
    if found != FORMAT_VERSION:
        written = "no format version (written before format 2)" if found is None else f"output format {found}"
        raise UsageError(f"{source}: has {written}; this classsize {package_version()} reads output format "
                         f"{FORMAT_VERSION} only (CHANGELOG.md lists the changes): fit the data again")


def load_config(path: str | Path | None):
    """The :class:`~classsize.model.Config` of a TOML file (the defaults when ``path`` is None)."""
    from classsize.model import Config

    return Config() if path is None else Config.from_toml(path)


# ---------------------------------------------------------------- standard error
def announce(line: str, quiet: bool = False, stream: TextIO | None = None) -> None:
    """Say on standard error what is about to run (nothing when ``quiet``)."""
    if not quiet:
        print(line, file=stream or sys.stderr, flush=True)


class Progress:
    """The progress of one long piece of work, on standard error.

    Called as ``progress(done, total)`` (the hook :class:`~.sampling.ChainRunner`
    takes).  On a terminal it draws a tqdm bar; otherwise it writes a plain line when
    the work starts and each time another tenth of it is done, with the seconds since
    the reporter was made (so the first line also tells how long compiling took).
    With ``quiet`` it says nothing.
    """

    def __init__(self, label: str, unit: str = "iterations per chain", *, quiet: bool = False,
                 stream: TextIO | None = None, terminal: bool | None = None):
        self.label, self.unit, self.quiet = label, unit, quiet
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.began = time.perf_counter()
        self._bar = None
        self._tenths = -1

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.terminal:
            self._draw(done, total)
            return
        tenths = 10 * done // max(total, 1)
        if tenths > self._tenths:
            self._tenths = tenths
            seconds = time.perf_counter() - self.began
            print(f"{self.label}: {done}/{total} {self.unit} ({10 * tenths}%), {seconds:.0f} s",
                  file=self.stream, flush=True)

    def say(self, text: str) -> None:
        """One line of what the work is doing (``LABEL: text``), unless quiet."""
        if not self.quiet:
            print(f"{self.label}: {text}", file=self.stream, flush=True)

    def _draw(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, unit="it", file=self.stream, leave=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_plan(chains: int, warmup: int, samples: int, devices) -> str:
    """``4 chains x (500 warm-up + 1000 draws) iterations on 2 CPU cores``: what a fit runs."""
    platforms = {getattr(d, "platform", "cpu") for d in devices}
    where = (f"{len(devices)} CPU core{'s' * (len(devices) != 1)}" if platforms == {"cpu"}
             else f"{len(devices)} {'/'.join(sorted(p.upper() for p in platforms))} device{'s' * (len(devices) != 1)}")
    return f"{chains} chain{'s' * (chains != 1)} x ({warmup} warm-up + {samples} draws) iterations on {where}"
