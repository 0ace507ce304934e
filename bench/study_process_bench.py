"""A recovery study from Python in a fresh process: what ``run_study`` costs a user who
runs a notebook or a script again.

    python bench/study_process_bench.py            # one study, timed whole (the process)

The study is notebook 3's fast SBC: ``randomized``, 6 datasets drawn from the prior on
300 REGULAR + 300 EXPERIMENTAL students in 4 schools, 2 chains of 100 + 100 draws.  Time
the whole process with farm-bench, against the same with ``CLASSSIZE_NO_CACHE=1`` (a
process that compiles everything again, as ``run_study`` did before it turned the
persistent compilation cache on); commands and figures in bench/README.md.
"""

from __future__ import annotations

import time

import numpyro

numpyro.set_host_device_count(2)

from classsize.inference.studies.run import run_study  # noqa: E402
from classsize.model import Config  # noqa: E402

start = time.perf_counter()
study = run_study("randomized", 6, config=Config(n_regular=300, n_experimental=300, n_schools=4), from_prior=True,
                  seed=0, chains=2, warmup=100, samples=100, progress=False)
print(f"{len(study.table['dataset'].unique())} datasets in {time.perf_counter() - start:.1f} s: {study.verdict.splitlines()[0]}")
