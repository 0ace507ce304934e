# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   classsize:
#     teaches: "simulation-based calibration (rank histograms, ECDF difference plots) and coverage at a fixed truth for the randomized, structural and naive analyses; posterior z-score against contraction; power by simulation"
#     class_minutes: 40
#     fast_run: "30 s"
#     full_run: "12 min"
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Can we trust the posterior? Simulation-based calibration and coverage
#
# Notebook 2 fitted one dataset and compared each posterior with the truth. One dataset
# proves little: a 90% interval *should* miss the truth one time in ten, and a model
# that is subtly wrong can still get one dataset right. Because the model can
# simulate, we can do better: simulate many datasets whose truth we know, fit each one,
# and check the posteriors **as a collection**.
#
# * **Simulation-based calibration (SBC)** (Talts, Betancourt, Simpson, Vehtari and
#   Gelman, 2018): draw the parameters *from the prior*, simulate a dataset, fit it.
#   If the inference is right, the true value is just another draw from the posterior,
#   so its **rank** among the posterior draws is uniformly distributed. Any pattern in
#   the ranks points to a bug in the model, the sampler or the code.
# * **Coverage at a fixed truth**: simulate every dataset from the *same* parameters
#   (the notebook's numbers) and count how often the central 50/80/90/95% intervals
#   contain the truth. A calibrated analysis covers at the nominal rate; a confounded one
#   does not, however many datasets it sees.
#
# Both studies come from `classsize.inference.studies.run.run_study` (the Python side of
# `classsize recover`). They fit many datasets, so they use a small design; with
# `CLASSSIZE_FAST=1` they use only a handful of datasets and short chains, enough to see
# how the plots work but far too few to detect anything but gross errors. The lesson
# ends with two exercises, their solutions hidden until opened.
#
# **The outputs stored with this notebook come from a full run** (`CLASSSIZE_FAST`
# unset): a design of 1,000 REGULAR and 1,000 EXPERIMENTAL students in 10 schools, 100
# datasets for SBC and 50 for each coverage study, every fit 4 chains of 500 warm-up
# and 500 kept draws. **A full run takes about 12 min on 2 CPU cores; with
# `CLASSSIZE_FAST=1` about 30 s.**

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by NumPyro

import numpyro

numpyro.set_host_device_count(2)  # the studies spread their fits over the devices

import matplotlib.pyplot as plt
import numpy as np

from classsize.inference.studies.figures import (
    PARTS,
    plot_coverage,
    plot_ecdf_difference,
    plot_rank_histograms,
    plot_z_contraction,
)
from classsize.inference.studies.run import run_study
from classsize.model import Config, simulate_many
from classsize.model.palette import ALERT, MAIN

FAST = os.environ.get("CLASSSIZE_FAST", "0") == "1"
if FAST:
    design = Config(n_regular=300, n_experimental=300, n_schools=4)
    N_SBC, N_COVERAGE = 6, 6
    SAMPLER = dict(chains=2, warmup=100, samples=100)
else:
    design = Config(n_regular=1000, n_experimental=1000, n_schools=10)
    N_SBC, N_COVERAGE = 100, 50
    SAMPLER = dict(chains=4, warmup=500, samples=500)
print(f"fast setting: {FAST}; {design.n_regular} REGULAR + {design.n_experimental} EXPERIMENTAL students, "
      f"{design.n_schools} schools; {N_SBC} datasets for SBC, {N_COVERAGE} for coverage; sampler {SAMPLER}")

# %% [markdown]
# ## 1. Simulation-based calibration of the `randomized` analysis
#
# For each dataset $k$: draw parameters $\theta_k$ from the prior the analysis uses,
# simulate the EXPERIMENTAL cohort from $\theta_k$ with the same model, fit it, and
# record the rank of $\theta_k$ among 99 posterior draws (0 = every draw is above the
# truth, 99 = every draw is below it). The study checks the three effects and every
# other parameter the analysis samples.

# %%
sbc = run_study("randomized", N_SBC, config=design, from_prior=True, seed=0, **SAMPLER)
print(sbc.verdict)

# %% [markdown]
# First, the raw material. Each dataset has its own truth (drawn from the prior), so
# the points below are spread along the x axis; a well-calibrated analysis puts about
# nine in ten of the true values inside their 90% intervals, and the misses are not all
# on one side.

# %% alt="One point per SBC dataset: the posterior mean and 90% interval of the direct effect against its true value drawn from the prior. The points lie along the diagonal; about nine in ten intervals cross it, and the misses fall on both sides."
fitted = sbc.table[(sbc.table.status == "fitted") & (sbc.table.quantity == "small_class_direct_effect")]
fig, ax = plt.subplots(figsize=(6, 4))
covered = fitted.covered_90.astype(bool)
for ok, colour, label in ((True, MAIN, "truth inside the 90% interval"),
                          (False, ALERT, "truth outside the 90% interval")):
    f = fitted[covered == ok]
    ax.errorbar(f.truth, f["mean"], yerr=[f["mean"] - f.lower_90, f.upper_90 - f["mean"]], fmt="o",
                color=colour, ms=4, lw=1, label=f"{label} ({len(f)})")
lim = [fitted[["truth", "lower_90"]].min().min(), fitted[["truth", "upper_90"]].max().max()]
ax.plot(lim, lim, "k--", lw=0.8, label="estimate = truth")
ax.set_xlabel("true direct effect of a SMALL class, drawn from the prior (points)")
ax.set_ylabel("posterior mean and 90% interval (points)")
ax.set_title(f"SBC: one point per dataset ({len(fitted)} datasets)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Rank histograms
#
# One panel per estimand (the study's other quantities, the priors' parameters and the
# school effects, are on the figures after it): how many datasets put the truth at each
# rank (grouped into bins). If the inference is calibrated, every bin's count is a binomial draw around the
# grey line, inside the grey band 99 times in 100. The shapes to look for:
#
# * **∪ (too many ranks at both ends)**: the truth is often outside the bulk of the
#   posterior: posteriors too narrow, **overconfident**;
# * **∩ (too many in the middle)**: posteriors too wide, **underconfident**;
# * **a slope (too many at one end)**: the posterior is **biased** (too many high
#   ranks: it sits below the truth).
#
# With a handful of datasets (the fast setting) the histogram is mostly noise: it takes
# about a hundred datasets before a modest departure shows.

# %% alt="Rank histograms of the randomized analysis's three estimands (direct, total and MA effect), each bin's count with the grey band of its 99% binomial range and the expected count as a line; the bars stay inside their bands."
fig = plot_rank_histograms(sbc)
plt.show()

# %% [markdown]
# ### ECDF difference plots
#
# Histograms depend on the binning. The ECDF plot does not: for each fraction $z$ of
# the way along the ranks, it draws the share of datasets whose rank falls below $z$,
# *minus* $z$ (what uniform ranks give on average). A calibrated analysis wanders near
# zero and stays inside the grey band, a *simultaneous* band (Säilynoja, Bürkner and
# Vehtari, 2022): uniform ranks leave it anywhere along the curve with a small,
# known probability. The study checks many quantities at once, so each band is drawn at
# the level the verdict uses (a family false-alarm rate of 5% over all the panels): a
# curve that leaves its band fails the verdict. A ∪ in the histogram shows here as a
# curve that rises early and falls late (an S), a bias as a hump on one side.

# %% alt=["ECDF difference plots of the randomized analysis's three estimands: each curve of the ranks' ECDF minus the uniform CDF stays inside its grey simultaneous band.", "ECDF difference plots of the other quantities the SBC ranks (the priors' parameters and the school effects), each inside its grey simultaneous band."]
fig = plot_ecdf_difference(sbc)
plt.show()
fig = plot_ecdf_difference(sbc, part=PARTS[1])
plt.show()

# %% [markdown]
# ## 2. Coverage at the notebook's truth: `randomized`, `structural` and `naive`
#
# Now every dataset comes from the same parameters: a direct effect of 5 points, a
# total effect of 6 and an MA effect of 10. Each study fits the same simulated
# datasets (the same seeds): the `randomized` analysis their EXPERIMENTAL cohort, the
# `structural` analysis both cohorts (modelling how the REGULAR classes were
# assigned), the `naive` regression their REGULAR cohort.

# %%
coverage = {name: run_study(name, N_COVERAGE, config=design, seed=1000, **SAMPLER)
            for name in ("randomized", "structural", "naive")}
for study in coverage.values():
    print(study.verdict, end="\n\n")

# %% [markdown]
# ### Coverage plots
#
# For each estimand, the share of datasets whose central interval contains the truth
# (vermillion dots), at each nominal level (x axis). A calibrated analysis sits on the dashed
# diagonal, up to the luck of a finite number of datasets: the dark bar is the 95%
# Clopper-Pearson range of that share, and the light bar the wider range used for the
# verdict (corrected for testing many levels and estimands at once).

# %% alt=["Coverage of the randomized analysis: for each estimand, the share of datasets covered against the nominal level sits on the diagonal, inside its bands.", "Coverage of the structural analysis: for each estimand, the share covered sits on the diagonal, inside its bands.", "Coverage of the naive regression: the MA effect is covered at about the nominal rates, the direct effect of a SMALL class almost never."]
for name, study in coverage.items():
    fig = plot_coverage(study)
    plt.show()

# %% [markdown]
# The `randomized` and `structural` analyses cover at about the nominal rates; the
# structural intervals are much narrower, because they also use the REGULAR cohort and
# lean on the uniform ability's hard edges (notebook 2, section 7). The `naive` regression
# covers the MA effect (the MA was assigned by class size alone, so holding class size
# fixed leaves it unconfounded) but essentially never covers the small-class effect:
# its intervals are narrow and centred in the wrong place.
#
# ### Posterior z-score against contraction
#
# One point per dataset. The x axis is the **posterior contraction**,
# $1 - \mathrm{var}_\text{post} / \mathrm{var}_\text{prior}$: near 1 when the data
# have taught the model a lot. The y axis is the **posterior z-score**,
# $(\text{posterior mean} - \text{truth}) / \text{posterior sd}$: how many posterior
# standard deviations the estimate is from the truth, mostly between the dashed lines at
# ±2 if the posterior is honest. Reading the corners (Betancourt, 2018, "Towards a
# principled Bayesian workflow"):
# high contraction and small z is the ideal; **high contraction and large z is a
# posterior that is confidently wrong**, the signature of the `naive` regression.
# Crosses mark fits that failed a sampler diagnostic (R-hat, ESS, divergences): short
# chains in the fast setting flag many of them.

# %% alt=["Posterior z-score against contraction for the randomized analysis: the points sit between -2 and 2.", "Posterior z-score against contraction for the structural analysis: high contraction, z-scores between -2 and 2.", "Posterior z-score against contraction for the naive regression: for the direct effect of a SMALL class, high contraction and z-scores far beyond -2, a posterior confidently wrong."]
for name, study in coverage.items():
    fig = plot_z_contraction(study)
    plt.show()

# %%
for name, study in coverage.items():
    s = study.summary
    row = s[(s.quantity == "small_class_direct_effect") & (s.level == 0.9)].iloc[0]
    print(f"{name:<10} direct effect: 90% intervals cover the truth in {int(row.covered)} of {int(row.n)} "
          f"datasets; bias {row.bias:+.2f} points, mean posterior sd {row.mean_sd:.2f} points")

# %% [markdown]
# ## Take-away
#
# * **SBC** checks the whole inference machine (model, priors, sampler, code) at once:
#   draw the truth from the prior, simulate, fit, and the rank of the truth among the
#   posterior draws must be uniform. Read the rank histograms and the ECDF difference
#   plots for ∪ (overconfident), ∩ (underconfident) or one-sided (biased) patterns;
#   they need about a hundred datasets to have power.
# * **Coverage at a fixed truth** asks whether the 50-95% intervals contain the truth as
#   often as they claim. The `randomized` and `structural` analyses do; the `naive` regression is
#   precise and wrong (high contraction, large z), so its small-class intervals almost
#   never contain the truth. More data would only make it more confidently wrong.
# * Calibration is a property of an analysis *and* the process that made the data: the
#   naive regression is a fine regression, calibrated for the wrong question.

# %% [markdown]
# ## Exercises
#
# Predict first, then check. The solutions are hidden: in JupyterLab click the collapsed
# cell under an exercise; on the lessons site, click "Solution".
#
# 1. Repeat the `naive` coverage study on a design whose REGULAR rule ignores the
#    unobserved ability (`design.replace(regular_small_ability=0.0)`). **Predict** its
#    coverage of the direct effect. What does this say about the regression, and about
#    the data?
# 2. Find the smallest EXPERIMENTAL cohort (250, 500, 1,000 or 2,000 students in 10
#    schools) whose difference in means detects a **2-point** effect of a SMALL class
#    (its 90% interval excludes 0) in at least 80% of datasets. Simulate the datasets with
#    `simulate_many` and a `Config` whose effect is 2 points, with the teacher's MA
#    worth nothing (`teacher_ma_effect=0`). Why does the MA have to go for this simple
#    test to be honest? For the Bayesian analyses, `classsize design` answers the same
#    question over a grid (see the README).

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 1: without the ability slope, nothing unobserved confounds the REGULAR cohort.
ignorable = run_study("naive", N_COVERAGE, config=design.replace(regular_small_ability=0.0), seed=1000, **SAMPLER)
for label, study in (("ability slope 0.02", coverage["naive"]), ("ability slope 0", ignorable)):
    s = study.summary
    row = s[(s.quantity == "small_class_direct_effect") & (s.level == 0.9)].iloc[0]
    print(f"naive, {label}: 90% intervals cover the direct effect in {int(row.covered)} of {int(row.n)} datasets, "
          f"bias {row.bias:+.2f} points")
print("The same regression is calibrated once the assignment is ignorable given what it adjusts for:\n"
      "its failure came from the data's assignment rule, not from the regression.")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 2: power of the EXPERIMENTAL difference in means, by simulation.
def detected(data) -> bool:
    """Whether the difference in means' 90% interval (normal approximation) excludes 0."""
    s = data.students.merge(data.classes[["class_id", "class_size"]], on="class_id")
    small, large = (s.loc[s.class_size == size, "test_score"] for size in ("SMALL", "LARGE"))
    se = np.sqrt(small.var() / len(small) + large.var() / len(large))
    return abs(small.mean() - large.mean()) > 1.645 * se


K = 20 if FAST else 200
for n in (250, 500, 1000, 2000):
    two_points = Config(n_regular=0, n_experimental=n, n_schools=10, small_class_direct_effect=2.0,
                        teacher_ma_effect=0.0)
    power = np.mean([detected(d) for d in simulate_many(two_points, seeds=range(K))])
    print(f"{n:>5} EXPERIMENTAL students: power {power:.2f} ({K} datasets, simulation sd "
          f"{np.sqrt(power * (1 - power) / K):.2f})")
print("An MA worth 10 points is a class effect: every student of a class shares it, so the students are not\n"
      "independent, and the s.e. above, which treats them so, would overstate the power (notebook 4). The\n"
      "school effects, drawn per class, cluster the students a little even so.")
