"""Sampling time of one ChainRunner batch, its program compiled: the fit-test design.

``python bench/lanes_speed_bench.py ANALYSIS DATASETS CHAINS`` simulates DATASETS
datasets of the fit-test design (800 REGULAR + 700 EXPERIMENTAL students, 6 schools),
runs them once (compiling, or loading, the sampler), then twice more on new seeds, each
with CHAINS x (300 + 300) iterations, and prints the seconds of the first run, of
preparing the program, and of the two timed runs (the draws are read back to the host,
so the times are the whole run).  Compare versions by ``PYTHONPATH`` and
``CLASSSIZE_CACHE_DIR`` (one cache folder per version), alternating.
"""
import os, sys, time
os.environ["JAX_ENABLE_X64"]="1"
from classsize.inference.engine.runtime import use_all_cores, use_compilation_cache
use_all_cores(); use_compilation_cache()
import numpy as np, jax
from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.sampling import ChainRunner
from classsize.model import Config
from classsize.model.simulate import draw_many
from classsize.model.tables import observed_from_draw
cfg = Config(n_regular=800, n_experimental=700, n_schools=6)
an = get_analysis(sys.argv[1])
n = int(sys.argv[2]); chains=int(sys.argv[3])
obs = observed_from_draw(draw_many(cfg, list(range(n))), cfg, an.cohort)
prob = an.bind_many(cfg, obs)
r = ChainRunner(chains, 300, 300)
t=time.perf_counter(); d=r.run(prob, [100+i for i in range(n)]); t1=time.perf_counter()-t
ts=[]
for rep in range(2):
    t=time.perf_counter(); d=r.run(prob, [200+i+10*rep for i in range(n)]); ts.append(time.perf_counter()-t)
steps = d.stats["n_steps"].sum()
print(sys.argv[1:], "first", round(t1,1), "compile", round(r.compile_seconds,1), "runs", [round(x,2) for x in ts], "steps/draw", round(float(d.stats["n_steps"].mean()),2))
