"""JAX's persistent compilation cache for the ``classsize`` commands.

:func:`enable_compilation_cache` points JAX at a cache folder on disk, so a program
compiled once (e.g. the batched forward sampler) is loaded, not compiled, by every
later process on the same machine.  The folder is ``$CLASSSIZE_CACHE_DIR`` when set,
else ``$XDG_CACHE_HOME/classsize/jax``, else ``~/.cache/classsize/jax``.  Setting
``CLASSSIZE_NO_CACHE=1`` turns the cache off.

A program's entry is found by a key of its computation, the compile options and the
machine, never by the folder's path: JAX would also point XLA's GPU autotuning cache
into the folder (``jax_persistent_cache_enable_xla_caches``), and that path would
enter every key, so a folder copied or moved elsewhere (``CLASSSIZE_CACHE_DIR``, a
restored CI cache) would miss all its programs.  That cache serves GPUs alone and is
turned off.
"""

from __future__ import annotations

import os
from pathlib import Path

_enabled: Path | None = None


def chosen_dir() -> Path | None:
    """``$CLASSSIZE_CACHE_DIR``, the folder chosen for the cache, when set; else None."""
    env = os.environ.get("CLASSSIZE_CACHE_DIR")
    return Path(env).expanduser() if env else None


def cache_dir() -> Path:
    """The folder the cache uses (whether or not it is enabled)."""
    chosen = chosen_dir()
    if chosen is not None:
        return chosen
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "classsize" / "jax"


def cache_off() -> bool:
    """Whether ``CLASSSIZE_NO_CACHE=1`` turns the cache off."""
    return os.environ.get("CLASSSIZE_NO_CACHE") == "1"


def enabled_dir() -> Path | None:
    """The cache folder when :func:`enable_compilation_cache` has turned it on, else None."""
    return _enabled


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache; return its folder (None when off).

    Every compiled program is cached, however small or quick to compile.  Calling it
    again does nothing; ``CLASSSIZE_NO_CACHE=1`` leaves JAX as it is.
    """
    global _enabled
    if cache_off():
        return None
    if _enabled is not None:
        return _enabled
    import jax

    path = cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    try:  # (keys free of the path; a JAX without the option keeps no such cache)
        jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    except AttributeError:
        pass
    _enabled = path
    return path
