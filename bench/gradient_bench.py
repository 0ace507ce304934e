"""Cost of one value-and-gradient of the structural analysis's potential energy.

The notebook's seed-100 tables (6,000 students) by default, or ``--data DIR``, with
the group layouts padded as a fit pads them (``padded_alike``).  The potential is
jitted with the data as arguments (as the sampler sees it), each figure the best of 7
rounds of 200 calls, as CPU time of this process on one thread (so it is little
affected by other work on the machine), with wall time beside it; and, as the sampler
calls it, 2,000 evaluations in one compiled loop (the best of 5, wall time, without
the cost of a call from Python).  Usage::

    python bench/gradient_bench.py [--data DIR] [--analysis structural]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("CLASSSIZE_DEVICES", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("--analysis", default="structural")
    args = ap.parse_args()
    import jax
    from numpyro.infer.util import initialize_model, potential_energy

    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import load_dataset
    from classsize.model import Config
    from classsize.model.notebook import simulate_notebook

    data = args.data
    if data is None:
        data = tempfile.mkdtemp(prefix="classsize-gradient-")
        simulate_notebook(Config(), 100).write(data)
    import dataclasses

    from classsize.model.pilot import padded_alike

    problem = get_analysis(args.analysis).problem(load_dataset(data))
    pilot = padded_alike([problem.inputs["pilot"]])[0]
    problem = dataclasses.replace(problem, inputs={**problem.inputs, "pilot": pilot})
    z = initialize_model(jax.random.PRNGKey(0), problem.model, model_kwargs=problem.inputs).param_info.z
    flat, unravel = jax.flatten_util.ravel_pytree(z)

    def potential(x, inputs):
        return potential_energy(problem.model, (), inputs, unravel(x))

    for name, f in (("value", jax.jit(potential)), ("value and gradient", jax.jit(jax.value_and_grad(potential)))):
        jax.block_until_ready(f(flat, problem.inputs))
        wall = cpu = float("inf")
        for _ in range(7):
            t, c = time.perf_counter(), time.process_time()
            for i in range(200):
                out = f(flat + 1e-9 * i, problem.inputs)
            jax.block_until_ready(out)
            wall = min(wall, (time.perf_counter() - t) / 200)
            cpu = min(cpu, (time.process_time() - c) / 200)
        print(f"{args.analysis}, {problem.n_students} students, {flat.size} coordinates: {name}: "
              f"{1e3 * cpu:.3f} ms CPU, {1e3 * wall:.3f} ms wall per call")

    value_and_grad = jax.value_and_grad(potential)

    @jax.jit
    def loop(x, inputs):
        def body(i, c):
            _, g = value_and_grad(x + 1e-6 * c, inputs)
            return c + 1e-3 * g

        return jax.lax.fori_loop(0, 2000, body, jax.numpy.zeros_like(x))

    jax.block_until_ready(loop(flat, problem.inputs))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(loop(flat, problem.inputs))
        best = min(best, time.perf_counter() - t)
    print(f"{args.analysis}, {problem.n_students} students: value and gradient in a compiled loop: "
          f"{1e6 * best / 2000:.1f} us wall each")


if __name__ == "__main__":
    main()
