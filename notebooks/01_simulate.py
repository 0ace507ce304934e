# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   classsize:
#     teaches: "the causal graph, as the data arise and under do(class size); one simulated dataset explored; the total effect of a SMALL class as an intervention on the model"
#     class_minutes: 25
#     fast_run: "19 s"
#     full_run: "19 s"
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Simulating the class-size experiment
#
# This notebook is the first of five on Bayesian causal inference with one running
# example: does a **small class** raise a kindergarten student's test score, and by how
# much? The example is a simulation modelled on the Tennessee STAR experiment (notebook 4
# looks at the real data). Everything comes from one NumPyro model,
# `classsize.model.class_size_experiment`: sampled forward, it *is* the simulation;
# conditioned on data (notebooks 2 and 3), it is the analysis.
#
# Here we
#
# 1. draw the causal graph of the experiment, as it is and under an intervention,
# 2. simulate one dataset and explore it with plots,
# 3. intervene on the model with `numpyro.handlers.do` to see what the causal effect of
#    a small class *is*, before anyone tries to estimate it.
#
# It ends with three exercises; their solutions are hidden until you open them.
#
# Set the environment variable `CLASSSIZE_FAST=1` for a quick run (fewer simulated
# worlds); the default is the full size.
#
# **The outputs stored with this notebook come from a full run** (`CLASSSIZE_FAST`
# unset): 6,000 students (4,000 REGULAR, 2,000 EXPERIMENTAL), 20 schools, seed 100,
# and 100 simulated worlds for the intervention. **A full run takes about 19 s on 2
# CPU cores; with `CLASSSIZE_FAST=1` about 19 s.**

# %%
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by NumPyro

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from numpyro import handlers

from classsize.model import Config, class_size_experiment, simulate
from classsize.model.palette import CLASS_SIZES, COHORTS

# This notebook runs the model under JAX transformations of its own (jit, vmap), so it
# turns on the 64-bit mode that classsize's own calls enter by themselves.
jax.config.update("jax_enable_x64", True)

FAST = os.environ.get("CLASSSIZE_FAST", "0") == "1"
N_WORLDS = 10 if FAST else 100  # simulated worlds for the intervention
config = Config()  # the original notebook's numbers: 4000 REGULAR + 2000 EXPERIMENTAL students
print(f"fast setting: {FAST}; {config.n_regular} REGULAR and {config.n_experimental} EXPERIMENTAL students")

# %% [markdown]
# ## The causal graph
#
# `classsize.model.graph.teaching_figure` draws the variables a learner reasons about
# and the arrows between them. **Shaded** boxes are what an analyst sees in
# `students.csv` and `classes.csv`; the **dashed** box is never observed.
#
# * **Ability** is `10 × scaled log income + U`, where `U`, the part of ability that
#   family income does not explain, is `Uniform(0, 25)` points. Nobody observes it.
# * **The class size** has four parents. The **cohort** is part of the design: it
#   decides *which rule* sets the class size. In the REGULAR cohort, P(SMALL) = 0.1 +
#   0.2 × scaled log income − 0.25 (if WHITE) − 0.3 (if ASIAN) + 0.02 × `U`: race,
#   income and ability all push. In the EXPERIMENTAL cohort, P(SMALL) = 0.5, a coin
#   that ignores all three. Ability also drives the score, so in the REGULAR cohort it
#   is a **confounder** that no analyst can adjust for.
# * The class size reaches the score **directly** (5 points) and **through the
#   teacher's master's degree (MA)**: a SMALL class gets a teacher with an MA with
#   probability 0.5 against 0.4, and an MA is worth 10 points.
# * The **school** adds a constant per school.
#
# The right panel is the same graph under the intervention `do(class size)`: setting
# every class size by decree cuts the four arrows into it, so income, race and ability
# can no longer reach the score through the class size. What is left between class size
# and score is the causal effect. The test suite checks both panels against the model's
# own dependencies (`classsize.model.graph.model_edges`).
#
# For developers, `classsize.model.graph.bookkeeping_graph` draws every site of the
# NumPyro model with `numpyro.render_model` (it needs graphviz). It also shows how
# classes are formed (`class_of_student`, `n_small_classes`, `n_large_classes`), and
# through them an arrow from the class size to the school that is bookkeeping, not
# cause: the model draws a school for each class slot it fills.

# %% alt="The causal graph twice. Left, as the data arise: family income and race point to ability and to the class size; the unobserved ability (dashed box) points to the class size and to the test score; the cohort points to the class size; the class size points to the teacher's MA and to the score; the MA and the school point to the score. Right, under do(class size): the four arrows into the class size are cut."
from classsize.model.graph import teaching_figure

fig = teaching_figure(config)
plt.show()

# %% [markdown]
# ## One simulated dataset
#
# `simulate(config, seed)` samples the model forward and returns the two tables of the
# original notebook (`students`, `classes`) and the truth (the configuration and the
# estimands).

# %%
data = simulate(config, seed=100)
print(data.summary())
students = data.students.merge(data.classes[["class_id", "class_size", "teacher_has_ma"]], on="class_id")
students.head()

# %% [markdown]
# ### Class sizes by cohort
#
# The EXPERIMENTAL cohort is split about half and half by the coin. In the REGULAR
# cohort the rule gives about 30% of the students a SMALL class.

# %% alt="Bar chart of students by cohort and class size. In the REGULAR cohort about 30% of the students are in a SMALL class; in the EXPERIMENTAL cohort about 50%."
counts = students.groupby(["cohort", "class_size"]).size().unstack("class_size")
counts = counts.loc[["REGULAR", "EXPERIMENTAL"], ["SMALL", "LARGE"]]
fig, ax = plt.subplots(figsize=(6, 3.2))
counts.plot.bar(ax=ax, color=CLASS_SIZES, rot=0)
for i, (cohort, row) in enumerate(counts.iterrows()):
    share = row["SMALL"] / row.sum()
    ax.text(i, row.max() * 1.02, f"{share:.0%} SMALL", ha="center", fontsize=9)
ax.set_xlabel("cohort")
ax.set_ylabel("students (count)")
ax.set_ylim(0, counts.to_numpy().max() * 1.15)
ax.set_title("Students by class size and cohort")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Income and race by class size
#
# In the REGULAR cohort the rule favours richer families and disfavours WHITE and ASIAN
# students, so the two class sizes hold different kinds of students. In the EXPERIMENTAL
# cohort the coin ignores both, and SMALL and LARGE look alike.

# %% alt="Left: box plots of family income for each cohort and class size; in the REGULAR cohort SMALL classes hold richer families, in the EXPERIMENTAL cohort the two sizes look alike. Right: the share of each race in a SMALL class, by cohort; in the REGULAR cohort WHITE and ASIAN students are less often in a SMALL class, in the EXPERIMENTAL cohort every race is near 50%."
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
groups = [(c, s) for c in ("REGULAR", "EXPERIMENTAL") for s in ("SMALL", "LARGE")]
incomes = [
    students.loc[(students.cohort == c) & (students.class_size == s), "family_income"] / 1000 for c, s in groups
]
ax1.boxplot(incomes, showmeans=True)
ax1.set_xticks(range(1, 5), [f"{c}\n{s}" for c, s in groups], fontsize=8)
ax1.set_ylabel("family income (thousand $ a year)")
ax1.set_xlabel("cohort and class size")
ax1.set_title("Family income (triangle: mean)")

share = students.assign(small=students.class_size == "SMALL").groupby(["race", "cohort"])["small"].mean().unstack()
(100 * share[["REGULAR", "EXPERIMENTAL"]]).loc[list(config.race_codes)].plot.bar(ax=ax2, rot=0, color=COHORTS)
ax2.set_xlabel("race")
ax2.set_ylabel("students in a SMALL class (%)")
ax2.set_title("Share in a SMALL class, by race")
ax2.legend(title="cohort", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Scores by class size and cohort
#
# SMALL classes score higher in both cohorts, but the gap is about twice as large in the
# REGULAR cohort. The EXPERIMENTAL gap is close to the true total effect (6 points); the
# REGULAR gap is not, because the students the rule sends to SMALL classes have more of
# the unobserved ability.

# %% alt="Histograms of test scores in SMALL and LARGE classes, one panel per cohort, with each mean marked. The SMALL minus LARGE gap is about 11 points in the REGULAR cohort and about 6 points in the EXPERIMENTAL cohort."
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
bins = np.linspace(students.test_score.min(), students.test_score.max(), 40)
gaps = {}
for ax, cohort in zip(axes, ("REGULAR", "EXPERIMENTAL")):
    means = {}
    for size, colour in CLASS_SIZES.items():
        y = students.loc[(students.cohort == cohort) & (students.class_size == size), "test_score"]
        means[size] = y.mean()
        ax.hist(y, bins=bins, alpha=0.5, color=colour, label=f"{size} (mean {y.mean():.1f})")
        ax.axvline(y.mean(), color=colour, lw=2)
    gaps[cohort] = means["SMALL"] - means["LARGE"]
    ax.set_title(f"{cohort}: SMALL - LARGE = {gaps[cohort]:.1f} points")
    ax.set_xlabel("test score (points)")
    ax.legend(fontsize=8)
axes[0].set_ylabel("students (count)")
plt.tight_layout()
plt.show()
print({k: round(v, 2) for k, v in gaps.items()})

# %% [markdown]
# ## Intervening with `do`
#
# A causal effect is a statement about an intervention: what would the scores be **if
# we set** every class to SMALL, against **if we set** every class to LARGE? The model
# can answer directly. `numpyro.handlers.do(model, {"small_class": value})` replaces the
# assignment with a fixed value *for everything downstream* (the classes formed, the
# teachers' MA, the scores), while everything upstream (race, income, ability) is drawn
# as before. This is Pearl's do-operator: it cuts the arrows into `small_class`, so the
# confounding through ability is gone by construction.
#
# The same random key for both worlds draws the same students (common random numbers):
# the difference in mean scores is then the effect of the intervention alone, up to the
# luck of which teachers hold an MA and which school each class lands in.

# %%
n = config.n_students


def scores_if(every_class_small: int):
    """A jitted function: random key -> the scores of a world where every class has one size."""
    value = jnp.full(n, every_class_small, dtype=jnp.int32)
    model = handlers.do(class_size_experiment, {"small_class": value})

    def one(key):
        trace = handlers.trace(handlers.seed(model, key)).get_trace(config)
        return trace["test_score"]["value"]

    return jax.jit(jax.vmap(one))


keys = jax.random.split(jax.random.PRNGKey(0), N_WORLDS)
all_small = np.asarray(scores_if(1)(keys))
all_large = np.asarray(scores_if(0)(keys))
shift = all_small.mean(axis=1) - all_large.mean(axis=1)
truth = data.truth["estimands"]
print(f"mean shift over {N_WORLDS} worlds: {shift.mean():.2f} points (sd over worlds {shift.std():.2f})")
print(f"the configuration's total effect: {truth['small_class_total_effect']:g} = "
      f"{config.small_class_direct_effect:g} direct + {config.teacher_ma_effect:g} x "
      f"({config.p_ma_small:g} - {config.p_ma_large:g}) through the MA probability")

# %% alt="Left: in one simulated world, the histograms of all students' scores if every class were SMALL and if every class were LARGE; the SMALL world is shifted up by about 6 points. Right: the mean shift in each simulated world, clustered around the total effect of 6 points, above the direct effect of 5."
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [2, 1]})
bins = np.linspace(min(all_small[0].min(), all_large[0].min()), max(all_small[0].max(), all_large[0].max()), 50)
for y, label, colour in ((all_small[0], "do(every class SMALL)", CLASS_SIZES["SMALL"]),
                         (all_large[0], "do(every class LARGE)", CLASS_SIZES["LARGE"])):
    ax1.hist(y, bins=bins, alpha=0.5, color=colour, label=f"{label}: mean {y.mean():.1f}")
    ax1.axvline(y.mean(), color=colour, lw=2)
ax1.set_xlabel("test score (points)")
ax1.set_ylabel("students (count)")
ax1.set_title(f"One world, {n} students, both interventions")
ax1.legend(fontsize=8)
ax2.hist(shift, bins=min(15, N_WORLDS), color="0.5")
ax2.axvline(truth["small_class_total_effect"], color="k", ls="--", label="total effect (6)")
ax2.axvline(truth["small_class_direct_effect"], color="k", ls=":", label="direct effect (5)")
ax2.set_xlabel("mean score, SMALL minus LARGE (points)")
ax2.set_ylabel("worlds (count)")
ax2.set_title(f"Mean shift in {N_WORLDS} worlds")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The intervention moves the whole distribution by about 6 points: 5 points directly,
# and 1 point because a SMALL class is more likely to get a teacher with an MA
# (10 × (0.5 − 0.4)). That is the **total effect**. Holding the teacher's MA fixed
# instead gives the **direct effect**, 5 points; notebook 2 estimates both.
#
# Compare with the REGULAR cohort's gap above (about 11 points): the observational
# difference in means is almost twice the causal effect.

# %% [markdown]
# ## Take-away
#
# * The causal graph: the unobserved ability is a parent of both the class size (in the
#   REGULAR cohort) and the score, so it confounds the effect of a small class. The
#   cohort decides which assignment rule applies: the REGULAR rule uses income, race
#   and ability; the EXPERIMENTAL rule is a coin. `do(class size)` cuts every arrow
#   into the class size.
# * In the simulated data the REGULAR cohort's SMALL-LARGE gap (about 11 points) is far
#   from the truth, while the EXPERIMENTAL cohort's gap is close to it.
# * `do(small_class = SMALL)` against `do(small_class = LARGE)` shifts the mean score by
#   the **total effect, 6 points** (5 direct + 1 through the teacher's MA). That is the
#   number the analyses of notebook 2 try to recover from data alone.

# %% [markdown]
# ## Exercises
#
# Each exercise asks for a prediction first: write it down, then run the check. The
# solutions are hidden: in JupyterLab click the collapsed cell under an exercise; on
# the lessons site, click "Solution".
#
# 1. The REGULAR rule raises P(SMALL) by `regular_small_ability = 0.02` for every point
#    of the unobserved `U`. **Predict** the REGULAR cohort's SMALL − LARGE gap when that
#    slope is 0, and when it is doubled to 0.04. Will the gap fall all the way to the
#    total effect (6 points) at 0? Check with `simulate(Config(regular_small_ability=...),
#    seed=100)`.
# 2. Give SMALL and LARGE classes the same chance of a teacher with an MA
#    (`p_ma_small = p_ma_large = 0.45`). **Predict** the total effect, then read it from
#    the truth that `simulate` returns (`data.truth["estimands"]`) and compare with the
#    EXPERIMENTAL cohort's difference in means.
# 3. Make the EXPERIMENTAL coin unfair: `experimental_p_small = 0.2`. Does the
#    EXPERIMENTAL gap still estimate the total effect? What does the unfair coin cost?

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 1: the slope of the REGULAR rule in U, the only unobserved push.
def cohort_gap(data, cohort):
    s = data.students.merge(data.classes[["class_id", "class_size"]], on="class_id")
    s = s[s.cohort == cohort]
    return s.loc[s.class_size == "SMALL", "test_score"].mean() - s.loc[s.class_size == "LARGE", "test_score"].mean()


by_slope = {slope: cohort_gap(simulate(Config(regular_small_ability=slope), seed=100), "REGULAR")
            for slope in (0.0, 0.02, 0.04)}
for slope, gap in by_slope.items():
    print(f"ability slope {slope:.2f}: REGULAR gap {gap:5.2f} points")
print(f"The gap grows with the slope: that growth is the confounding through U, which no regression\n"
      f"can remove. At slope 0 the gap is {by_slope[0.0]:.1f} points: what confounding is left runs through\n"
      f"income and race, both observed (here they push in opposite directions: richer families towards\n"
      f"SMALL classes, WHITE and ASIAN students away from them).")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 2: no difference in the MA's chance, no indirect path.
equal_ma = simulate(Config(p_ma_small=0.45, p_ma_large=0.45), seed=100)
print({k: equal_ma.truth["estimands"][k] for k in ("small_class_direct_effect", "small_class_total_effect")})
print(f"EXPERIMENTAL difference in means: {cohort_gap(equal_ma, 'EXPERIMENTAL'):.2f} points")
print("total = direct + 10 x (0.45 - 0.45) = 5: the path through the teacher's MA carries nothing.")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 3: an unfair coin is still a coin.
for p_small in (0.5, 0.2):
    gaps = [cohort_gap(simulate(Config(experimental_p_small=p_small), seed=seed), "EXPERIMENTAL")
            for seed in range(100, 100 + (5 if FAST else 20))]
    print(f"P(SMALL) = {p_small}: EXPERIMENTAL gap {np.mean(gaps):.2f} on average over {len(gaps)} datasets, "
          f"sd {np.std(gaps):.2f}")
print("The coin still ignores ability, so the gap stays an honest estimate of the total effect (6);\n"
      "with fewer SMALL classes it is noisier (a larger sd over datasets).")
