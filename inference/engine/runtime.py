"""How JAX runs for ``classsize``: the cores as devices, and the compilation cache.

Importing the package changes no JAX setting.  Two calls do, each documented:

* :func:`use_all_cores` exposes each CPU core as a JAX device (``XLA_FLAGS
  --xla_force_host_platform_device_count``, and one thread per device, so that a
  chain's arithmetic does not depend on how many devices share the cores), so that the
  chains of a fit run side by side.  It must run before JAX starts its CPU backend; it
  leaves alone a device count the user has already set in ``XLA_FLAGS``, and
  ``CLASSSIZE_DEVICES=N`` chooses N.  The command line calls it first thing;
  in Python it is ``classsize.use_all_cores()``.
* :func:`use_compilation_cache` turns on JAX's persistent compilation cache in the
  folder of :mod:`classsize.model.jaxcache`, unless the user has chosen a cache folder
  of their own.  The first fit calls it.
"""

from __future__ import annotations

import os
import sys
import warnings

_FLAG = "--xla_force_host_platform_device_count"
#: Each device computes on its own thread: the devices already use the cores, and a
#: lane's arithmetic then does not depend on how many devices share them.
_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def device_count_wanted() -> int:
    """``$CLASSSIZE_DEVICES`` when set, else the number of cores this process may use
    (:func:`classsize.model.machine.machine_cores`)."""
    env = os.environ.get("CLASSSIZE_DEVICES")
    if env:
        return max(1, int(env))
    from classsize.model.machine import machine_cores

    return machine_cores()


def jax_started() -> bool:
    """Whether JAX has started a backend (after which the device count is fixed)."""
    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def use_all_cores() -> bool:
    """Expose the cores as JAX CPU devices, unless ``XLA_FLAGS`` already chooses a count.

    Returns whether the setting can still take effect: once JAX has started its
    backend the device count is fixed, and this says so in one warning.
    """
    if jax_started():
        warnings.warn("classsize.use_all_cores(): JAX has already started, so its device count is fixed; "
                      "call it before any JAX computation (e.g. right after import)", stacklevel=2)
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if _FLAG in flags and not os.environ.get("CLASSSIZE_DEVICES"):
        return True
    flags = " ".join(f for f in flags.split() if not f.startswith(_FLAG))
    if _SINGLE_THREAD.split("=")[0] not in flags:
        flags = f"{flags} {_SINGLE_THREAD}"
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={device_count_wanted()}".strip()
    return True


def _user_chose_cache() -> bool:
    """Whether a cache folder other than the package's was chosen (and no
    ``CLASSSIZE_CACHE_DIR`` asks for the package's: :func:`classsize.model.jaxcache.chosen_dir`)."""
    from classsize.model import jaxcache

    if jaxcache.chosen_dir() is not None:
        return False
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return True
    import jax

    return bool(jax.config.jax_compilation_cache_dir) and jaxcache.enabled_dir() is None


def use_compilation_cache() -> None:
    """Turn on the package's persistent compilation cache (:mod:`classsize.model.jaxcache`),
    unless the user has chosen a cache folder (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) or turned it off (``CLASSSIZE_NO_CACHE=1``, :func:`~classsize.model.jaxcache.cache_off`)."""
    from classsize.model import jaxcache

    if jaxcache.cache_off() or _user_chose_cache():
        return
    jaxcache.enable_compilation_cache()


def configure() -> None:
    """The command line's set-up, before it imports JAX: 64-bit mode (the whole process
    is the package's own), every core, and the cache."""
    os.environ["JAX_ENABLE_X64"] = "1"
    if not jax_started():  # (a second command in one process keeps the first's devices)
        use_all_cores()
    use_compilation_cache()
