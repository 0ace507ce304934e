"""What reporting progress costs a fit: the iterations in one call of the compiled
program against the usual calls of :data:`~classsize.inference.engine.sampling.CHUNK`
iterations, with and without a progress hook.

One analysis is fitted to one simulated dataset, in one process, by three runners
(one call; calls of ``CHUNK`` iterations; the same with a hook), each compiled once (the
compilation cache off, so the compile seconds are real) and then run ``REPEATS`` times
interleaved.  Prints the compile seconds, the median sampling seconds of each (wall
clock, and the process's CPU seconds, which a busy machine disturbs less) and whether
the draws of the runs with and without the hook are identical.  Usage::

    CLASSSIZE_NO_CACHE=1 python bench/progress_bench.py [ANALYSIS] [N_REGULAR] [N_EXPERIMENTAL] [REPEATS] [DEVICES]
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main(argv: list[str]) -> None:
    import classsize.inference  # noqa: F401 (every core a device)
    from classsize.inference.engine import sampling
    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.engine.sampling import ChainRunner
    from classsize.model import Config
    from classsize.model.simulate import draw_many
    from classsize.model.tables import observed_from_draw

    name = argv[0] if argv else "structural"
    n_regular, n_experimental = (int(a) for a in argv[1:3]) if len(argv) >= 3 else (800, 700)
    repeats = int(argv[3]) if len(argv) >= 4 else 3
    import jax

    devices = jax.devices()[:int(argv[4])] if len(argv) >= 5 else None
    config = Config(n_regular=n_regular, n_experimental=n_experimental, n_schools=6)
    analysis = get_analysis(name)
    problem = analysis.bind_many(config, observed_from_draw(draw_many(config, [3]), config, analysis.cohort))

    class OneCall(ChainRunner):
        chunk = ChainRunner().iterations

    calls = f"calls of {sampling.CHUNK}"
    runners = {"1 call": OneCall(devices=devices), calls: ChainRunner(devices=devices),
               f"{calls} + hook": ChainRunner(devices=devices, progress=lambda done, total: None)}
    print(f"{name}, {config.n_students} students, {runners['1 call'].chains} chains x "
          f"({runners['1 call'].warmup} + {runners['1 call'].samples}), {runners['1 call'].n_devices} devices")
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    draws = {}
    for k, r in runners.items():
        before = time.process_time()
        draws[k] = r.run(problem, [11])
        print(f"  {k:18s} compile {r.compile_seconds:6.1f} s wall; compile and first run "
              f"{time.process_time() - before:6.1f} s CPU", flush=True)
    for _ in range(repeats):
        for k, r in runners.items():
            before = time.process_time()
            seconds[k].append(r.run(problem, [11]).seconds)
            cpu[k].append(time.process_time() - before)
    for k in runners:
        print(f"  {k:18s} sampling median {np.median(seconds[k]):6.2f} s wall, {np.median(cpu[k]):6.2f} s CPU  "
              f"(wall {np.round(seconds[k], 2).tolist()}, CPU {np.round(cpu[k], 2).tolist()})")
    a, b = draws[calls], draws[f"{calls} + hook"]
    same = all(np.array_equal(a.sites[s], b.sites[s]) for s in a.sites)
    print(f"  draws with and without the hook identical: {same}")


if __name__ == "__main__":
    main(sys.argv[1:])
