"""The NUTS engine: chains run side by side on JAX devices, their diagnostics, the
default chain lengths, and the process's JAX settings (devices, compilation cache).

It knows no analysis: it samples any problem that offers ``kernel()``, ``inputs`` and
``signature`` (see :mod:`classsize.inference.engine.sampling`).
"""
