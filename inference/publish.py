"""One commit point per command: an output folder appears complete or not at all.

Every command that writes (``simulate``, ``fit``, ``compare``, ``demo``, ``star``,
``recover``) opens its ``--out`` folder with :class:`OutputFolder` before any work:

* **The path is checked first.**  ``--out .`` (the current folder or a folder that
  holds it), a mount point, a symbolic link (dangling, looping or not), a name longer
  than the file system allows, or a parent that cannot be created or written is
  refused in one line before anything runs.
* **One writer at a time.**  An exclusive ``fcntl`` lock on ``.NAME.classsize-lock``
  beside the folder is held for the whole command (the file holds the owner's pid);
  a second command on the same folder is refused in one line.  The kernel drops the
  lock when its process dies, however it dies.
* **Leftovers are cleared, never counted.**  Everything a command writes on its way
  is named ``.NAME.classsize-*`` beside the folder, or ``.*.tmp`` inside it
  (:func:`classsize.model.files.atomic_write`); under the lock, those of a killed run
  are removed, and they do not make a folder "not empty".
* **Replacing** (``mode="replace"``: every command but ``recover``).  The command
  writes into :attr:`OutputFolder.path`, a staging folder
  ``.NAME.classsize-new-PID`` beside the target, and :meth:`OutputFolder.commit`
  makes it visible with one ``rename``; under ``--force`` the old folder is exchanged
  with the new one in one ``renameat2(RENAME_EXCHANGE)`` (where the file system lacks
  it: two renames, the old folder kept as ``.NAME.classsize-old-PID`` in between and
  restored by the next run if the second never happened), and removed only then.
  Leaving the ``with`` block without :meth:`~OutputFolder.commit` (an error, Ctrl-C)
  removes the staging folder: the target is as it was.
* **In place** (``mode="in_place"``: ``recover``, whose batch files are its resume
  state).  The command writes its resume state into the target itself; with ``force``
  the old contents are removed first, so a stopped study is a partial study of the new
  plan, never a mix.  :meth:`OutputFolder.publish` then builds the finished folder
  beside it (the resume state hard-linked, the result files written) and exchanges it
  with the target as above: the results appear all together, and a result file of an
  earlier study is never left beside them.
* **Only our own folders are replaced.**  With ``force``, a folder is replaced only
  when it holds nothing but what the command writes (:data:`WRITES`).

Errors while writing become :class:`OutputFault`: one line naming the folder, exit
status 2 for what the user gave (a permission, an impossible path) and 3 for the
machine (a full disk, an input/output error).
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import shutil
from pathlib import Path

from classsize.inference.outputs import UsageError

#: Name patterns of what each command writes into its folder (``fnmatch``); with
#: ``--force`` a folder holding anything else is not replaced.
WRITES: dict[str, tuple[str, ...]] = {
    "simulate": ("students.csv", "classes.csv", "truth.json", "students.parquet", "classes.parquet",
                 "replicates.json", "replicate_[0-9]*"),
    "star": ("students.csv", "classes.csv", "dataset.json"),
    "fit": ("posterior.nc", "summary.json"),
    "compare": ("comparison.csv", "forest.png", "ppc_*.png", "structural*", "randomized*", "naive*"),
    "demo": ("data", "compare"),
    "recover": ("batches", "recovery.csv", "summary.csv", "recovery.nc", "verdict.txt", "study.json",
                "config.toml", "*.png"),
    "design": ("cells", "design.csv", "design.png", "summary.txt", "design.json", "config.toml"),
}
#: Errors of the machine, not of what the user gave (exit status 3).
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EFBIG}
#: The longest suffix a staging name adds to the folder's name (``.NAME`` plus this).
_SUFFIX = ".classsize-new-4194304"


class OutputFault(Exception):
    """A fault while writing an output folder: one line, with its exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def fault_of(error: OSError, where: str | Path) -> OutputFault:
    """``error`` as one line about ``where``: exit status 3 for the machine
    (:data:`MACHINE_ERRNOS`), 2 otherwise."""
    reason = error.strerror or str(error)
    status = 3 if error.errno in MACHINE_ERRNOS else 2
    return OutputFault(f"{where}: cannot write there ({reason}); nothing was written", status)


def write_netcdf_file(data, path: str | Path, **options) -> None:
    """``data.to_netcdf(path)`` (an xarray Dataset or DataTree, netCDF-4), with HDF5's
    errors, which carry no ``errno`` (``RuntimeError: NetCDF: HDF error`` on a full
    disk), raised as the :class:`OSError` they stand for: ``ENOSPC`` when the file
    system has less than 1 MiB free, else ``EIO``."""
    try:
        data.to_netcdf(str(path), engine="netcdf4", **options)
    except RuntimeError as error:
        try:
            stat = os.statvfs(Path(path).parent)
            full = stat.f_bavail * stat.f_frsize < 2**20
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code) if full else f"{os.strerror(code)}: {error}", str(path)) from None


def _leftover(name: str) -> bool:
    """Whether ``name``, inside an output folder, is a temporary of a killed run (``.*.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Exchange two paths in one system call (Linux ``RENAME_EXCHANGE``); False when the
    system or the file system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    if not ok and ctypes.get_errno() not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))
    return ok


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


class OutputFolder:
    """The output folder of one command (see the module docstring); a context manager.

    ``command`` names the command (a key of :data:`WRITES`); ``force`` replaces a folder
    of that command; ``keep`` (``recover --resume``) keeps the contents in place."""

    def __init__(self, target: str | Path, command: str, *, force: bool = False, mode: str = "replace",
                 keep: bool = False):
        if mode not in ("replace", "in_place"):
            raise ValueError(f"mode must be 'replace' or 'in_place', got {mode!r}")
        self.target = Path(target)
        self.command, self.force, self.mode, self.keep = command, force, mode, keep
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None
        self._staging: Path | None = None
        self.committed = False

    # --------------------------------------------------------------- checking
    def _check_path(self) -> Path:
        target = self.target
        if target.name in ("", ".", ".."):
            raise UsageError(f"{target}: give a folder of its own for the output, not '{target}'")
        if target.is_symlink():
            raise UsageError(f"{target}: is a symbolic link; give the folder itself")
        try:
            parent = target.parent.resolve(strict=False)
        except (OSError, RuntimeError) as e:
            raise UsageError(f"{target}: not a usable path ({getattr(e, 'strerror', None) or e})") from None
        full = parent / target.name
        cwd = Path.cwd().resolve()
        if full == cwd or full in cwd.parents:
            raise UsageError(f"{target}: is the current folder or holds it; give a folder of its own")
        if full.exists() and os.path.ismount(full):
            raise UsageError(f"{target}: is a mount point; give a folder inside it")
        if full.exists() and not full.is_dir():
            raise UsageError(f"{target}: output path exists and is not a folder")
        try:
            limit = os.pathconf(self._existing_ancestor(parent), "PC_NAME_MAX")
        except (OSError, ValueError):
            limit = 255
        if len(os.fsencode(target.name)) + len(_SUFFIX) + 1 > limit:
            raise UsageError(f"{target}: the folder's name is too long (at most {limit - len(_SUFFIX) - 1} bytes "
                             f"here, {len(os.fsencode(target.name))} given)")
        return full

    @staticmethod
    def _existing_ancestor(path: Path) -> Path:
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    def _check_contents(self, full: Path) -> None:
        if not full.is_dir():
            return
        entries = [e for e in os.listdir(full) if not _leftover(e)]
        if not entries or self.keep:
            return
        if not self.force:
            raise UsageError(f"{self.target}: output folder is not empty (use --force to replace it)")
        foreign = self._foreign(full, entries)
        if foreign:
            raise UsageError(f"{self.target}: holds files classsize {self.command} did not write "
                             f"({', '.join(sorted(foreign)[:3])}{', ...' if len(foreign) > 3 else ''}); "
                             "--force replaces only its own output: use another folder")

    def _foreign(self, full: Path, entries: list[str]) -> list[str]:
        patterns = WRITES[self.command]
        return [e for e in entries if not any(fnmatch.fnmatchcase(e, p) for p in patterns)]

    # ----------------------------------------------------------------- locking
    def _lock(self, parent: Path) -> None:
        import fcntl

        path = parent / f".{self.target.name}.classsize-lock"
        for _ in range(5):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UsageError(f"{self.target}: another classsize command (pid {owner}) is writing there; "
                                 "wait for it to end, or use another folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # (not a lock file its last owner removed while we opened it)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._lock_fd, self._lock_path = fd, path
                return
            os.close(fd)
        raise UsageError(f"{self.target}: its lock file keeps changing; another command is writing there")

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            if self._lock_path is not None:
                self._lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------- leftovers
    def _clear_leftovers(self, parent: Path, full: Path) -> None:
        prefix = f".{self.target.name}.classsize-"
        olds = []
        for entry in os.listdir(parent):
            if entry.startswith(prefix) and entry != f"{prefix}lock":
                if entry.startswith(f"{prefix}old-") and not full.exists():
                    olds.append(entry)  # a replaced folder whose successor never arrived
                    continue
                shutil.rmtree(parent / entry, ignore_errors=True)
        if olds:
            os.rename(parent / sorted(olds)[-1], full)
            for extra in sorted(olds)[:-1]:
                shutil.rmtree(parent / extra, ignore_errors=True)
        if full.is_dir():
            for dirpath, _, files in os.walk(full):
                for f in files:
                    if _leftover(f):
                        Path(dirpath, f).unlink(missing_ok=True)

    # ------------------------------------------------------------- the block
    def __enter__(self) -> "OutputFolder":
        full = self._check_path()
        parent = full.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._lock(parent)
        except UsageError:
            raise
        except OSError as e:
            raise fault_of(e, self.target) from None
        try:
            self._clear_leftovers(parent, full)
            self._check_contents(full)
            if self.mode == "replace":
                self._staging = parent / f".{self.target.name}.classsize-new-{os.getpid()}"
                self._staging.mkdir()
            else:
                if full.exists() and self.force and not self.keep:
                    trash = parent / f".{self.target.name}.classsize-trash-{os.getpid()}"
                    os.rename(full, trash)  # the old study goes in one step, then is removed
                    shutil.rmtree(trash, ignore_errors=True)
                full.mkdir(exist_ok=True)
        except BaseException as e:
            self._abandon()
            if isinstance(e, OSError):
                raise fault_of(e, self.target) from None
            raise
        self._full = full
        return self

    @property
    def path(self) -> Path:
        """Where the command writes: the staging folder (replace) or the target (in place)."""
        return self._staging if self._staging is not None else self._full

    def commit(self) -> Path:
        """Make the output visible (replace: one rename) and return the target's path."""
        try:
            if self._staging is not None:
                if self._full.exists():
                    if _renameat2_exchange(self._staging, self._full):
                        shutil.rmtree(self._staging, ignore_errors=True)
                    else:
                        old = self._full.parent / f".{self.target.name}.classsize-old-{os.getpid()}"
                        os.rename(self._full, old)
                        os.rename(self._staging, self._full)
                        shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(self._staging, self._full)
                self._staging = None
        except OSError as e:
            raise fault_of(e, self.target) from None
        self.committed = True
        return self.target

    def publish(self, writers, state: tuple[str, ...] = ("batches",)) -> list[Path]:
        """In place: put the result files in place together and return their paths.

        ``writers`` maps each file name to a function that writes a given path.  A
        staging folder gets the entries ``state`` of the target (hard links, or copies
        where the file system has none) and the result files, then :meth:`commit`
        exchanges it with the target."""
        if self.mode != "in_place":
            raise RuntimeError("publish() is for a folder written in place; use commit()")
        staging = self._full.parent / f".{self.target.name}.classsize-new-{os.getpid()}"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            self._staging = staging
            for entry in state:
                if (self._full / entry).is_dir():
                    shutil.copytree(self._full / entry, staging / entry, copy_function=_link_or_copy)
            for name, write in writers.items():
                write(staging / name)
        except OSError as e:
            raise fault_of(e, self.target) from None
        self.commit()
        return [self.target / name for name in writers]

    def _abandon(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._unlock()

    def __exit__(self, kind, error, tb) -> bool:
        self._abandon()
        if isinstance(error, OSError):
            raise fault_of(error, self.target) from error
        return False
