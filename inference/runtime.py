"""How JAX runs for ``classsize.inference``: every core a device, compilation cached.

:func:`use_all_cores` exposes each CPU core as a JAX device (``XLA_FLAGS
--xla_force_host_platform_device_count``), so the chains of a fit run side by side.
It must run before JAX starts its CPU backend; importing :mod:`classsize.inference`
calls it, and it leaves alone a device count the user has already set in
``XLA_FLAGS`` (or ``CLASSSIZE_DEVICES=N``, which sets it).  Importing the package also
turns on the persistent compilation cache (:mod:`classsize.model.jaxcache`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_FLAG = "--xla_force_host_platform_device_count"
#: Each device computes on its own thread: the devices already use the cores, and a
#: lane's arithmetic then does not depend on how many devices share them.
_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def device_count_wanted() -> int:
    """``$CLASSSIZE_DEVICES`` when set, else the number of cores this process may use."""
    env = os.environ.get("CLASSSIZE_DEVICES")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def use_all_cores() -> None:
    """Expose the cores as JAX CPU devices, unless ``XLA_FLAGS`` already chooses a count."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags and not os.environ.get("CLASSSIZE_DEVICES"):
        return
    flags = " ".join(f for f in flags.split() if not f.startswith(_FLAG))
    if _SINGLE_THREAD.split("=")[0] not in flags:
        flags = f"{flags} {_SINGLE_THREAD}"
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={device_count_wanted()}".strip()


def cache_folder() -> Path:
    """The compilation cache's folder, by the rules of :mod:`classsize.model.jaxcache`."""
    env = os.environ.get("CLASSSIZE_CACHE_DIR")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return Path(env).expanduser() if env else base / "classsize" / "jax"


def configure() -> None:
    """Both settings of this module (called when :mod:`classsize.inference` is imported).

    Before JAX is imported the cache is set through JAX's environment variables, so
    that importing the package (and ``classsize --help``) does not load JAX.
    """
    use_all_cores()
    if os.environ.get("CLASSSIZE_NO_CACHE") == "1":
        return
    if "jax" in sys.modules:
        from classsize.model.jaxcache import enable_compilation_cache

        enable_compilation_cache()
        return
    if os.environ.get("CLASSSIZE_CACHE_DIR"):  # the user's choice wins over an inherited setting
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache_folder())
    else:
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_folder()))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
