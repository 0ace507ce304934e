"""What every command shares before and after its work: bad input, the configuration,
the output folder.

A leaf module (the standard library only; the model is imported when a function
needs it), so that the command line, the data reader and the study can all use it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def load_config(path: str | Path | None):
    """The :class:`~classsize.model.Config` of a TOML file (the defaults when ``path`` is None)."""
    from classsize.model import Config

    return Config() if path is None else Config.from_toml(path)


def check_writable(out: Path) -> None:
    """Refuse, before any work, an output folder that cannot be created or written."""
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there ({existing} is not a writable folder)")


def prepare_out_dir(out: str | Path, force: bool) -> Path:
    """The output folder, refused when it is a file, when it is not empty (unless
    ``force``) or when it cannot be written."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path}: output path exists and is not a folder")
    if path.exists() and any(path.iterdir()) and not force:
        raise UsageError(f"{path}: output folder is not empty (use --force to write into it)")
    check_writable(path)
    return path


def write_together(folder: str | Path, writers: Mapping[str, Callable[[Path], None]],
                   remove: Iterable[str] = ()) -> list[Path]:
    """Write several files into ``folder``, all or none: ``writers`` maps each file name
    to a function that writes a given path.

    Every file is first written into a temporary folder beside ``folder``; only when all
    of them are written is each moved into place
    (:func:`classsize.model.files.atomic_write`, atomic per file), so a failure while
    writing (a full disk, a plotting error) leaves ``folder`` as it was.  Then the files
    named in ``remove`` are deleted.  Returns the paths written.
    """
    from classsize.model.files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, write in writers.items():
            write(staging / name)
        for name in writers:
            atomic_write(folder / name, lambda tmp, name=name: os.replace(staging / name, tmp))
        for name in set(remove) - set(writers):
            (folder / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in writers]
