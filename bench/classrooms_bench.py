"""Class effects: what they cost a fit, on the CLI's path and defaults.

Simulates a 6,000-student design (the notebook's) with class effects of sd 2.5 and
without, into fresh folders, then times ``classsize fit`` (the structural analysis,
default chains and draws, one process per fit, compilation included) for:

* data without class effects, fitted as before (class effects pinned at 0);
* data with class effects, fitted with their sd free (what such a folder gets);
* the same data with ``--class-effects 0``.

Each fit runs in its own process; the table reports the wall time of the process,
the sampler's mean leapfrog steps per draw, the smallest bulk ESS of the estimands
and ESS per second of sampling.  Run: ``python bench/classrooms_bench.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "classsize.inference.commands.cli"]


def _simulate(folder: Path, sd: float, seed: int) -> None:
    config = folder.with_suffix(".toml")
    config.write_text(f"class_effect_sd = {sd}\n" if sd else "")
    subprocess.run([*CLI, "simulate", "--config", str(config), "--seed", str(seed), "--out", str(folder), "-q"],
                   check=True, capture_output=True)


def _fit(data: Path, out: Path, *extra: str) -> dict:
    start = time.perf_counter()
    subprocess.run([*CLI, "fit", str(data), "--out", str(out), "-q", *extra], check=True, capture_output=True)
    wall = time.perf_counter() - start
    doc = json.loads((out / "summary.json").read_text())
    ess = min(s["ess_bulk"] for s in doc["estimands"].values())
    sampling = doc["diagnostics"]["seconds"]
    classrooms = doc.get("classrooms", {})
    import xarray as xr

    with xr.open_datatree(out / "posterior.nc") as tree:
        steps = float(tree["sample_stats"]["n_steps"].mean())
    return {"wall_s": wall, "fit_s": sampling, "steps": steps, "min_ess": ess, "ess_per_s": ess / sampling,
            "class_sd": classrooms.get("class_effect_sd", {}).get("mean", float("nan")),
            "divergences": doc["diagnostics"]["divergences"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="fits per case, each on a new dataset (new seed)")
    args = parser.parse_args()
    cases = (("no class effects, pinned 0", 0.0, ()), ("class effects, sd free", 2.5, ()),
             ("class effects, --class-effects 0", 2.5, ("--class-effects", "0")))
    rows = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for i, (name, sd, extra) in enumerate(cases):
                data = Path(tmp) / f"data_{r}_{i}"
                _simulate(data, sd, seed=1000 + r)
                rows[name].append(_fit(data, Path(tmp) / f"run_{r}_{i}", *extra))
                print(name, rows[name][-1], flush=True)
    print(f"\n{'case':<34} {'wall s':>7} {'fit s':>6} {'steps':>6} {'min ESS':>8} {'ESS/s':>6} {'class sd':>8} "
          f"{'div':>4}")
    for name, rs in rows.items():
        med = {k: float(np.median([x[k] for x in rs])) for k in rs[0]}
        print(f"{name:<34} {med['wall_s']:7.1f} {med['fit_s']:6.1f} {med['steps']:6.1f} {med['min_ess']:8.0f} "
              f"{med['ess_per_s']:6.1f} "
              f"{med['class_sd']:8.2f} {med['divergences']:4.0f}")


if __name__ == "__main__":
    main()
