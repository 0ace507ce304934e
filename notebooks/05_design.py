# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   classsize:
#     teaches: "design diagnosis by simulation: the power of a randomized class-size trial against its size, with Clopper-Pearson intervals; how many randomized students an observational cohort is worth to a structural model, with a bootstrap interval; what that worth is when the model is wrong"
#     class_minutes: 35
#     fast_run: "62 s"
#     full_run: "23 min"
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Designing a study: power, and what an observational cohort is worth
#
# Notebooks 2-4 analysed data that already existed. Before a trial is run, the question
# is different: **how big must it be?** Because the model can simulate, the answer can be
# found the way DeclareDesign and simstudy find it: simulate the design many times, fit
# each dataset as the analysis will be fitted, and count.
#
# 1. **Power.** The share of simulated trials whose 90% posterior interval for the
#    small-class effect excludes 0, against the number of EXPERIMENTAL students. Each
#    share comes from a finite number of simulated trials, so it carries its own
#    uncertainty: a Clopper-Pearson interval.
# 2. **The worth of an observational cohort.** The structural analysis also learns from
#    the REGULAR cohort, whose class sizes nobody randomized, by modelling how they were
#    assigned. How many *randomized* students would give the randomized analysis the
#    same precision? That number, with a bootstrap interval over the simulated datasets,
#    is what the REGULAR cohort is worth, **if the structural model is right**. The same
#    measurement on data whose unobserved ability is normal, fitted with the uniform,
#    shows what it is worth when the model is wrong.
#
# Both come from `classsize.inference.studies.diagnose.diagnose`, the Python side of
# `classsize design` (`--vary`, `--worth`). It ends with two exercises, their solutions
# hidden until opened. `CLASSSIZE_FAST=1` uses a handful of datasets and short chains:
# enough to see how the pieces fit, not to trust the numbers.
#
# **The outputs stored with this notebook come from a full run** (`CLASSSIZE_FAST`
# unset): a power curve over 4 trial sizes with 50 simulated trials each, and the worth
# of 1,000 REGULAR students beside 500 EXPERIMENTAL ones in 5 schools from 30 datasets per
# design in each world, every fit 2 chains of 500 warm-up and 500 kept draws. **A full run takes
# about 23 min on 2 CPU cores; with `CLASSSIZE_FAST=1` about 62 s.**

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by NumPyro

import numpyro

numpyro.set_host_device_count(2)  # the studies spread their fits over the devices

import matplotlib.pyplot as plt
import numpy as np

from classsize.inference.studies.design import DesignGrid
from classsize.inference.studies.diagnose import diagnose
from classsize.model import Config
from classsize.model.palette import ALERT, ANALYSES, MAIN

FAST = os.environ.get("CLASSSIZE_FAST", "0") == "1"
if FAST:
    SIZES, TRIALS, WORTH_DATASETS = (300, 1200), 6, 4
    SAMPLER = dict(chains=1, warmup=150, samples=150)
    REGULAR, EXPERIMENTAL, SCHOOLS = 600, 300, 3
else:
    SIZES, TRIALS, WORTH_DATASETS = (300, 600, 1200, 2400), 50, 30
    SAMPLER = dict(chains=2, warmup=500, samples=500)
    REGULAR, EXPERIMENTAL, SCHOOLS = 1000, 500, 5
print(f"fast setting: {FAST}; trial sizes {SIZES}, {TRIALS} simulated trials each; worth of {REGULAR} REGULAR "
      f"beside {EXPERIMENTAL} EXPERIMENTAL students from {WORTH_DATASETS} datasets per design; sampler {SAMPLER}")

# %% [markdown]
# ## 1. Power against the size of a randomized trial
#
# The trial: EXPERIMENTAL students only (a coin for each), in 4 schools, with a small
# class worth **half a point** (a tenth of the notebooks' 5 points: a modest effect is
# where the size of a trial matters) and the teacher's MA worth nothing, so the direct
# and total effects are equal. The randomized analysis is fitted to every simulated trial;
# `diagnose` crosses the values of each `--vary` axis and seeds each cell's datasets by
# the cell's values, so a cell added later reuses the finished ones.

# %%
trial = Config(n_regular=0, n_experimental=SIZES[0], n_schools=4, small_class_direct_effect=0.5,
               teacher_ma_effect=0.0)
grid = DesignGrid.parse(trial, ["n_experimental=" + ",".join(map(str, SIZES))])
power = diagnose(grid, ("randomized",), TRIALS, seed=1, **SAMPLER)
print(power.summary())
rows = power.table[power.table.estimand == "small_class_direct_effect"]
rows[["n_experimental", "power", "power_lower", "power_upper", "coverage", "mean_width", "bias", "warned"]].round(3)

# %% alt="Two panels against the number of EXPERIMENTAL students in the trial. Top: the power of the randomized analysis, the share of simulated trials whose 90% interval excludes 0, rising with the trial's size, with a band of its 95% Clopper-Pearson interval and a dotted line at 80%. Bottom: the mean width of the 90% interval, falling with the trial's size."
fig = power.plot()
plt.show()

# %% [markdown]
# Read the band, not just the line: with a few dozen trials per size, a power of 0.8
# is compatible with anything from about 0.65 to 0.9. A design whose power's *lower*
# bound clears the target is one you can plan on; the summary names the first such
# size, or says that none reaches it. The coverage column is the check that the power
# is honest: an analysis with intervals that are too narrow would have "power" without
# being right.
#
# ## 2. What is the REGULAR cohort worth?
#
# Now a design with both cohorts. The structural analysis fits them together; the
# randomized analysis is fitted to EXPERIMENTAL-only designs from the design's own
# EXPERIMENTAL students up to those plus twice its REGULAR ones (the **ladder**). Its
# mean interval width falls with the size $n$ about as $a n^{-b}$; the size $n^*$ at
# which that curve meets the structural analysis's mean width is what the combined design
# is worth in randomized students, and $n^*$ minus the EXPERIMENTAL students is what the
# REGULAR cohort adds. Resampling the datasets of every cell (a bootstrap) gives the
# interval. With `worth=True` the same is measured again on data whose unobserved ability
# is normal, still fitted with the uniform ability (`misspecified`, the default).

# %%
combined = Config(n_regular=REGULAR, n_experimental=EXPERIMENTAL, n_schools=SCHOOLS)
worth = diagnose(DesignGrid.parse(combined, []), ("structural",), WORTH_DATASETS, seed=2, worth=True,
                 boots=2000, **SAMPLER)
print(worth.worth.statement() if worth.worth is not None else worth.settings["worth_error"])

# %% alt="Left: the randomized analysis's mean 90% interval width against the number of EXPERIMENTAL students on log scales, a straight falling line through the ladder of sizes, with a horizontal line at the structural analysis's width on the combined design; they cross at the size the combined design is worth. Right: the bootstrap distribution of that worth in randomized students, with its 90% interval marked."
w = worth.worth
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
n = np.geomspace(min(w.sizes) / 2, max(w.sizes) * 4, 100)
ax1.plot(n, np.exp(w.log_a) * n ** -w.b, color=ANALYSES["randomized"], label=f"randomized: {np.exp(w.log_a):.3g} n^-{w.b:.2f}")
ax1.plot(w.sizes, np.exp(w.log_a) * np.asarray(w.sizes, float) ** -w.b, "o", color=ANALYSES["randomized"],
         label="the ladder's sizes")
ax1.axhline(w.target_width, color=ANALYSES["structural"], label=f"structural on {REGULAR} + {EXPERIMENTAL}")
ax1.axvline(w.n_star, color="k", ls="--", lw=0.8, label=f"n* = {w.n_star:,.0f}")
ax1.set_xscale("log")
ax1.set_yscale("log")
ax1.set_xlabel("EXPERIMENTAL students of a randomized-only design")
ax1.set_ylabel("mean 90% interval width (points)")
ax1.set_title("Where the randomized analysis matches the structural one")
ax1.legend(fontsize=7)
finite = w.bootstrap[np.isfinite(w.bootstrap)] - w.n_experimental
ax2.hist(finite, bins=40, color=MAIN, alpha=0.7, label=f"{len(finite)} bootstrap replicates")
lo, hi = w.value_interval
ax2.axvspan(lo, hi, color="0.85", zorder=0, label=f"{w.level:.0%} bootstrap interval")
ax2.axvline(w.value, color="k", ls="--", label=f"estimate: {w.value:,.0f}")
ax2.set_xlabel("randomized students the REGULAR cohort is worth")
ax2.set_ylabel("replicates (count)")
ax2.set_title(f"The worth of {REGULAR} REGULAR students")
ax2.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The structural analysis turns each REGULAR student into several randomized ones: it
# knows how the REGULAR rule assigned class sizes, including through the unobserved
# ability, and the uniform ability's hard edges let it read each school's level off its
# scores (notebook 2, section 7). That is a claim about the model, not about the world.
#
# ## 3. The same worth when the model is wrong

# %%
from classsize.inference.studies.diagnose import misspecified_statement

print(misspecified_statement(worth.misspecified))

# %% alt="Two bars per world, uniform and normal ability in the data: the share of datasets whose structural 90% interval covers the true direct effect, with the nominal 90% as a dashed line; high when the data's ability is uniform, far lower when it is normal. A second panel shows the structural analysis's bias in each world."
s = worth.misspecified["structural"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
worlds = ["uniform", "normal"]
ax1.bar(worlds, [s[k]["coverage"] for k in worlds], color=[MAIN, ALERT])
ax1.axhline(0.9, color="k", ls="--", lw=0.8, label="nominal 90%")
ax1.set_ylim(0, 1.05)
ax1.set_xlabel("the data's unobserved ability (the fit assumes uniform)")
ax1.set_ylabel("share of datasets covered")
ax1.set_title("Structural 90% intervals: coverage")
ax1.legend(fontsize=7)
ax2.bar(worlds, [s[k]["bias"] for k in worlds], color=[MAIN, ALERT])
ax2.axhline(0, color="k", lw=0.8)
ax2.set_xlabel("the data's unobserved ability (the fit assumes uniform)")
ax2.set_ylabel("mean of posterior mean - truth (points)")
ax2.set_title("Structural posterior means: bias")
plt.tight_layout()
plt.show()

# %% [markdown]
# When the data's ability is normal, the uniform model still reports narrow intervals,
# so by the width criterion the REGULAR cohort still looks valuable, but the intervals
# now miss the truth far more often than one time in ten. A worth is only as good as
# the model's coverage in the world it is used in: before trusting a structural model's
# precision, check its calibration under the misspecifications you cannot rule out
# (notebook 3), and prefer designs whose answer does not depend on them.

# %% [markdown]
# ## Take-away
#
# * **Power by simulation**: simulate the trial as designed, fit each dataset as it will
#   be analysed, count the intervals that exclude 0, and report the share with its
#   Clopper-Pearson interval. Plan on the interval's lower bound.
# * **The worth of an observational cohort** in randomized students is the size at which
#   the randomized analysis's interval width meets the structural analysis's on the
#   combined design, with a bootstrap interval over the simulated datasets.
# * That worth is conditional on the structural model. With a normal ability in the data
#   and the uniform in the fit, the intervals stay narrow while their coverage collapses:
#   the apparent worth is borrowed from an assumption, which randomization does not need.

# %% [markdown]
# ## Exercises
#
# Predict first, then check. The solutions are hidden: in JupyterLab click the collapsed
# cell under an exercise; on the lessons site, click "Solution".
#
# 1. Double the small-class effect to 1 point. **Predict** the smallest trial of section
#    1 whose power reaches 80%, then run the same grid with
#    `trial.replace(small_class_direct_effect=1.0)`.
# 2. How many EXPERIMENTAL students would the randomized analysis need for intervals
#    **half as wide** as the structural analysis's on the combined design? Predict it from
#    the rule of thumb that width falls as $1/\sqrt{n}$, then read it off the fitted
#    width curve (`classsize.inference.studies.worth.size_for_width`).

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 1: twice the effect, the same trials (the same seeds: common random numbers).
double = diagnose(DesignGrid.parse(trial.replace(small_class_direct_effect=1.0),
                                   ["n_experimental=" + ",".join(map(str, SIZES))]), ("randomized",), TRIALS,
                  seed=1, **SAMPLER)
for label, result in (("0.5 points", power), ("1 point", double)):
    r = result.table[result.table.estimand == "small_class_direct_effect"]
    print(f"effect {label:<10}", "  ".join(f"n={n}: {p:.2f} [{lo:.2f}, {hi:.2f}]" for n, p, lo, hi in
                                         zip(r.n_experimental, r.power, r.power_lower, r.power_upper)))
print("The interval widths do not depend on the effect, so doubling it doubles the distance from 0 in\n"
      "widths: the size needed for the same power falls by about four (width falls as 1/sqrt(n)).")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 2: the fitted curve width = a n^-b, solved for half the structural width.
from classsize.inference.studies.worth import size_for_width

half = size_for_width(w.log_a, w.b, w.target_width / 2)
print(f"matching the structural width: n* = {w.n_star:,.0f}; half of it: {half:,.0f} EXPERIMENTAL students "
      f"({half / w.n_star:.1f} times as many; 1/sqrt(n) says 4, the fitted exponent b = {w.b:.2f} says "
      f"{2 ** (1 / w.b):.1f})")
