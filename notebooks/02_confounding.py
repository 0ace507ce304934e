# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   classsize:
#     teaches: "the difference in means, the naive regression, the randomized and the structural analyses against the truth; why adjusting for income and race is not enough; ignorability; direct and total effects; the posterior predictive check; do() on a fitted model; what the structural model owes to the uniform ability"
#     class_minutes: 45
#     fast_run: "34 s"
#     full_run: "4 min"
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Confounding: four ways to estimate the effect of a small class
#
# Notebook 1 showed that making every class SMALL instead of LARGE raises the mean
# score by 6 points (the **total effect**), of which 5 points are **direct** and 1 point
# comes through a higher chance of a teacher with a master's degree (MA). Here we try
# to recover these numbers from the data alone, four ways:
#
# | analysis | data used | what it assumes |
# | --- | --- | --- |
# | difference in means | one cohort | nothing: SMALL mean minus LARGE mean |
# | `naive` | REGULAR cohort | a regression adjusting for everything observed (log income, race, school, MA) |
# | `randomized` | EXPERIMENTAL cohort | the coin made the assignment ignorable |
# | `structural` | both cohorts | the whole data-generating process, with the unobserved ability marginalised |
#
# and then ask why the adjusted regression fails, what "ignorable" means, and how much
# of the structural model's success is owed to an assumption a real analyst could not
# check. It ends with three exercises, their solutions hidden until opened.
# `CLASSSIZE_FAST=1` runs everything on a smaller dataset with short chains.
#
# **The outputs stored with this notebook come from a full run** (`CLASSSIZE_FAST`
# unset): the notebook's 6,000 students (4,000 REGULAR, 2,000 EXPERIMENTAL) in 20
# schools, seed 100, every fit 4 chains of 1,000 warm-up and 1,000 kept draws. **A full
# run takes about 4 min on 2 CPU cores; with `CLASSSIZE_FAST=1` about 34 s.**

# %%
import os
import tempfile
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by NumPyro

import numpyro

numpyro.set_host_device_count(2)  # two chains side by side when two cores are free

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from classsize.inference.fit.result import fit
from classsize.inference.fit.figures import forest, ppc_plot
from classsize.model import Config, simulate
from classsize.model.palette import ANALYSES, COHORTS
from classsize.model.simulate import draw_many

FAST = os.environ.get("CLASSSIZE_FAST", "0") == "1"
if FAST:
    config = Config(n_regular=800, n_experimental=700, n_schools=6)
    SAMPLER = dict(chains=2, warmup=200, samples=200)
else:
    config = Config()  # the original notebook: 4000 REGULAR + 2000 EXPERIMENTAL students, 20 schools
    SAMPLER = dict(chains=4, warmup=1000, samples=1000)
SEED = 100
print(f"fast setting: {FAST}; {config.n_regular} REGULAR + {config.n_experimental} EXPERIMENTAL students, "
      f"{config.n_schools} schools; sampler {SAMPLER}")

# %%
workdir = tempfile.mkdtemp(prefix="classsize-02-")
data = simulate(config, seed=SEED)
data.write(workdir)  # students.csv, classes.csv, truth.json: what an analyst gets (plus the truth)
truth = data.truth["estimands"]
students = data.students.merge(data.classes[["class_id", "class_size", "teacher_has_ma"]], on="class_id")
print(data.summary())

# %% [markdown]
# ## 1. The difference in means
#
# The simplest estimate: the mean score of SMALL classes minus that of LARGE classes,
# within one cohort. It estimates the *total* effect (the teacher's MA is not held
# fixed). To put an uncertainty on it we use the **Bayesian bootstrap** (Rubin, 1981):
# each draw reweights the students with Dirichlet(1, ..., 1) weights, which is the
# posterior of the mean under a model that assumes nothing about the shape of the
# score distribution.


# %%
class Estimate:
    """A posterior sample of one estimand, in the shape the forest plot reads."""

    def __init__(self, name, draws):
        self.estimand_draws = {name: np.asarray(draws)[None, :]}
        self.truth = None


def bayesian_bootstrap_mean(y, draws, rng):
    weights = rng.exponential(size=(draws, len(y)))
    return (weights / weights.sum(axis=1, keepdims=True)) @ np.asarray(y)


def difference_in_means(cohort, draws=2000, seed=0):
    rng = np.random.default_rng(seed)
    s = students[students.cohort == cohort]
    small = s.loc[s.class_size == "SMALL", "test_score"]
    large = s.loc[s.class_size == "LARGE", "test_score"]
    return bayesian_bootstrap_mean(small, draws, rng) - bayesian_bootstrap_mean(large, draws, rng)


diff = {c: difference_in_means(c) for c in ("REGULAR", "EXPERIMENTAL")}
for c, d in diff.items():
    print(f"{c:<12} SMALL - LARGE = {d.mean():5.2f} points (90% interval {np.quantile(d, 0.05):.2f} to "
          f"{np.quantile(d, 0.95):.2f}); true total effect {truth['small_class_total_effect']:g}")

# %% [markdown]
# The REGULAR cohort's difference is far too large: the students its rule sent to SMALL
# classes would have scored higher anyway. The EXPERIMENTAL cohort's is close to 6.
#
# ## 2. Adjusting for what is observed: the `naive` analysis
#
# An analyst with only the REGULAR cohort would adjust: a regression of the score on
# class size, log income, race, school and the teacher's MA (`naive`, a normal
# regression fitted with NUTS). Holding MA fixed, its class-size coefficient targets
# the **direct** effect (5 points).

# %%
results = {}
results["naive"] = fit(workdir, "naive", seed=1, progress=False, **SAMPLER)
print(results["naive"].table())

# %% [markdown]
# Still far from 5. Adjusting for income, race, school and MA moved the estimate only a
# little: most of the gap is due to something no column of the tables records.
#
# ## 3. Why adjusting for income and race is not enough
#
# The REGULAR rule also uses `ability_uniform`, the part of ability that income does
# not explain, which no table contains. A simulation, unlike an analyst, knows it: the
# same seed gives the same forward draw of the model, with ability in it.

# %%
draw = {k: v[0] for k, v in draw_many(config, [SEED]).items()}
slot = draw["class_of_student"]
scaled_income = (np.log(draw["family_income"]) - np.log(config.income_min)) / (
    np.log(config.income_max) - np.log(config.income_min))
world = pd.DataFrame({
    "cohort": np.where(np.arange(config.n_students) < config.n_regular, "REGULAR", "EXPERIMENTAL"),
    "small": draw["small_class"].astype(int),
    "race": np.asarray(config.race_codes)[draw["race"]],
    "scaled_income": scaled_income,
    "ability_uniform": draw["ability"] - config.ability_income_weight * scaled_income,
    "school": draw["school"][slot],
    "ma": draw["teacher_has_ma"][slot].astype(int),
    "test_score": draw["test_score"],
})
assert np.allclose(np.sort(world.test_score), np.sort(data.students.test_score))  # the same students

# %% alt="Left: the share of students in a SMALL class against their unobserved ability, by cohort; it climbs from about 15% to about 50% in the REGULAR cohort and stays flat near 50% in the EXPERIMENTAL cohort. Right: for each cohort and race, the mean unobserved ability of SMALL minus LARGE students; positive, by several points, for every race in the REGULAR cohort, near zero in the EXPERIMENTAL cohort."
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
edges = np.linspace(0, config.ability_uniform_width, 11)
mid = (edges[:-1] + edges[1:]) / 2
for cohort, colour in COHORTS.items():
    w = world[world.cohort == cohort]
    share = w.groupby(pd.cut(w.ability_uniform, edges), observed=False)["small"].mean()
    ax1.plot(mid, 100 * share.to_numpy(), "o-", color=colour, label=cohort)
ax1.set_xlabel("unobserved ability, ability_uniform (score points)")
ax1.set_ylabel("students in a SMALL class (%)")
ax1.set_title("Who gets a SMALL class")
ax1.legend(fontsize=8)

labels, gaps = [], []
for cohort in ("REGULAR", "EXPERIMENTAL"):
    for race in config.race_codes:
        w = world[(world.cohort == cohort) & (world.race == race)]
        gaps.append(w.loc[w.small == 1, "ability_uniform"].mean() - w.loc[w.small == 0, "ability_uniform"].mean())
        labels.append(f"{cohort[:3]} {race}")
ax2.barh(range(len(gaps)), gaps, color=[COHORTS["REGULAR"]] * 4 + [COHORTS["EXPERIMENTAL"]] * 4)
ax2.set_yticks(range(len(gaps)), labels, fontsize=8)
ax2.axvline(0, color="k", lw=0.8)
ax2.set_xlabel("mean ability_uniform, SMALL minus LARGE (score points)")
ax2.set_title("Imbalance within race (REG = REGULAR, EXP = EXPERIMENTAL)")
plt.tight_layout()
plt.show()

# %% [markdown]
# In the REGULAR cohort P(SMALL) climbs with the unobserved ability, and within every
# race SMALL classes hold students with more of it; in the EXPERIMENTAL cohort the
# line is flat and the gaps are noise.
#
# How large is the damage? Regress the unobserved ability on exactly what the `naive`
# analysis adjusts for. The coefficient of SMALL is how much more ability a SMALL-class
# student has than a LARGE-class student *with the same income, race, school and
# teacher's MA*, and, since ability enters the score one for one, that is the
# **omitted-variable bias** of the naive estimate.

# %%
def least_squares(frame, outcome):
    race = pd.get_dummies(frame.race, drop_first=True, dtype=float)
    school = pd.get_dummies(frame.school, prefix="school", drop_first=True, dtype=float)
    X = pd.concat([frame[["small", "scaled_income", "ma"]], race, school], axis=1)
    X.insert(0, "intercept", 1.0)
    coef, *_ = np.linalg.lstsq(X.to_numpy(float), frame[outcome].to_numpy(float), rcond=None)
    return dict(zip(X.columns, coef))


regular = world[world.cohort == "REGULAR"]
bias = least_squares(regular, "ability_uniform")["small"]
naive_mean = float(results["naive"].estimand_draws["small_class_direct_effect"].mean())
print(f"SMALL-class students have {bias:.2f} more points of unobserved ability, all else observed equal")
print(f"naive estimate {naive_mean:.2f} = truth {truth['small_class_direct_effect']:g} + bias "
      f"{naive_mean - truth['small_class_direct_effect']:.2f}")


# %% [markdown]
# The naive estimate is the truth plus this bias, almost exactly. No amount of
# adjustment for observed variables can remove it, because the variable that would
# remove it is not observed.
#
# ## 4. Ignorability, in Rubin's sense
#
# Write each student's two **potential outcomes**: $Y_i(1)$, her score in a SMALL
# class, and $Y_i(0)$, in a LARGE one. Here
# $Y_i(s) = 45 + \text{ability}_i + 5 s + 10\,\text{MA} + \text{school effect}$, so both
# potential outcomes contain $\text{ability}_i = 10\,s_i + U_i$ ($s_i$ the scaled log
# income, $U_i$ the unobserved `ability_uniform`). The **assignment mechanism** is the
# probability of the assignments given covariates and potential outcomes,
# $P(S \mid X, Y(0), Y(1))$. It is **ignorable** (Rubin, 1978) when it does not depend
# on the potential outcomes once the observed covariates $X$ are known:
# $P(S \mid X, Y(0), Y(1)) = P(S \mid X)$. (Rubin's definition also allows dependence
# on the *observed* outcomes, and asks that the assignment's parameters be distinct from
# the outcome model's; the simpler condition, often called unconfoundedness, is what
# matters here.)
#
# * **EXPERIMENTAL cohort**: $P(S_i = 1) = 0.5$ for everyone. Ignorable, and known.
#   For a Bayesian, ignorability means the posterior of the effect does not depend on
#   the assignment mechanism: the `randomized` analysis models the scores and leaves
#   the coin out.
# * **REGULAR cohort**: $P(S_i = 1)$ depends on $U_i$, which is
#   part of $Y_i(0)$ and $Y_i(1)$ and not part of $X$ = (income, race, school). Not
#   ignorable: the plots above are the picture of it. It would be ignorable given
#   ability, but ability is not observed.
#
# When the assignment is not ignorable, a Bayesian must model it. The `structural`
# analysis does exactly that: it conditions the full process (both cohorts, the
# REGULAR rule with its dependence on ability, and ability itself, marginalised) on the
# data.

# %%
results["randomized"] = fit(workdir, "randomized", seed=2, progress=False, **SAMPLER)
print(results["randomized"].table())
results["structural"] = fit(workdir, "structural", seed=3, progress=False, **SAMPLER)
print(results["structural"].table())
for r in results.values():
    for w in r.warnings:
        print("sampler warning:", w)

# %% [markdown]
# ## 5. All four, side by side
#
# Each row is one posterior (for the differences in means, the Bayesian bootstrap):
# the dot is its mean, the thick bar its 50% interval, the thin bar its 90% interval;
# the dashed lines are the truth.

# %% alt="Forest plot of every estimate of the direct effect, the total effect and the MA effect, with the truth as dashed lines. The REGULAR difference in means and the naive regression sit far above the truth; the EXPERIMENTAL difference in means and the randomized and structural analyses cover it, the structural intervals the narrowest."
everything = {
    "difference in means, REGULAR": Estimate("small_class_total_effect", diff["REGULAR"]),
    "difference in means, EXPERIMENTAL": Estimate("small_class_total_effect", diff["EXPERIMENTAL"]),
    **results,
}
ax = forest(everything)
ax.figure.set_size_inches(9, 6)
ax.set_title("Effect of a SMALL class and of a teacher's MA: estimates against the truth")
plt.tight_layout()
plt.show()
table = pd.concat({name: r.summary()[["mean", "q05", "q95", "truth"]] for name, r in results.items()})
table.round(2)

# %% [markdown]
# Before trusting the structural fit, check that it can reproduce the data: simulate the
# process again from each posterior draw (new abilities and, in the REGULAR cohort, new
# class assignments from the fitted rule) and compare what comes out with what was
# observed. The first two panels show the distribution of scores in SMALL and in LARGE
# classes, one panel per cohort: the observed histograms (lines) should run inside the
# bands that hold 90% of the replicated histograms. The last panel shows the share of
# each cohort in a SMALL class: the observed share (dot) should sit inside the
# replicated ranges (bars). A model that got the REGULAR rule wrong would miss there.

# %% alt="Posterior predictive check of the structural fit: for each cohort, the observed histograms of scores in SMALL and LARGE classes run inside the bands of the replicated histograms; the last panel shows each cohort's observed share in a SMALL class inside the replicated range."
fig = ppc_plot(results["structural"].idata)
plt.tight_layout()
plt.show()

# %% [markdown]
# * The REGULAR difference in means and the `naive` regression miss the truth by about
#   as much as the omitted-variable bias computed above.
# * The `randomized` analysis recovers the effects from the EXPERIMENTAL cohort alone.
# * The `structural` analysis uses the REGULAR cohort too, so its intervals can be
#   narrower, but only because it models how the REGULAR classes were assigned.
#
# ## 6. Direct and total effects
#
# The direct effect holds the teacher's MA fixed; the total effect lets it follow the
# class size: total = direct + MA effect × (P(MA | SMALL) − P(MA | LARGE)). The
# `randomized` and `structural` analyses estimate all three pieces, so their posterior
# of the indirect part (total minus direct) comes for free. The `naive` regression
# adjusts for MA and reports only a direct effect; the difference in means reports
# only a total effect.

# %% alt="Posterior densities of the indirect effect through the teacher's MA, total minus direct, from the randomized and the structural analyses, both wide and centred near the truth of 1 point."
fig, ax = plt.subplots(figsize=(7, 3.2))
for name in ("randomized", "structural"):
    d = results[name].estimand_draws
    indirect = np.ravel(d["small_class_total_effect"] - d["small_class_direct_effect"])
    ax.hist(indirect, bins=40, alpha=0.5, density=True, color=ANALYSES[name],
            label=f"{name}: mean {indirect.mean():.2f}")
ax.axvline(truth["small_class_total_effect"] - truth["small_class_direct_effect"], color="k", ls="--",
           label="truth: 10 x (0.5 - 0.4) = 1")
ax.set_xlabel("indirect effect through the teacher's MA (test-score points)")
ax.set_ylabel("posterior density (1 / point)")
ax.set_title("Total minus direct effect of a SMALL class")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The indirect part is small and uncertain: it is the product of the MA effect and a
# difference of two proportions estimated from a few hundred classes, not from
# thousands of students.
#
# ### Intervening on the fitted model
#
# Notebook 1 intervened on the model with the *true* parameters. A fit can do the same
# with its *posterior*: `result.do(small_class=1, cohort="REGULAR")` runs the model
# forward under `numpyro.handlers.do`, once per posterior draw, with the REGULAR
# students' own race, income and school, and again with `small_class=0`. The
# difference of the two worlds' mean scores, one value per draw, is the posterior of
# the **average effect** of putting every REGULAR student in a SMALL class. The MA
# follows the class size, so this is the total effect; holding the teacher's MA as
# well (`teacher_has_ma=1`) gives the direct effect.

# %% alt="Left: the REGULAR students' predicted scores if every class were SMALL and if every class were LARGE, beside their observed scores. Right: the posterior of the average effect of putting every REGULAR student in a SMALL class, centred near the total effect of 6 points."
structural = results["structural"]
every_small = structural.do(small_class=1, cohort="REGULAR")
print(every_small.statement())
print(structural.do(small_class=1, teacher_has_ma=1, cohort="REGULAR").statement())
print(results["naive"].do(small_class=1).statement())
fig = every_small.plot()
plt.tight_layout()
plt.show()
every_small.summary().round(2)

# %% [markdown]
# The left panel shows what the REGULAR students would score in either world (and, for
# reference, what they did score); the right panel the posterior of the difference.
# The same call on the `naive` regression gives its own answer, confidently wrong:
# `do` is only as good as the model it intervenes on.
#
# ## 7. A teacher's caveat: how much is owed to the uniform's hard edges?
#
# Both model-based analyses assume that `ability_uniform` is **uniform** on $[0, W]$,
# as it is in the simulation. A uniform has hard edges: within a school no student
# scores below a floor or above a ceiling, and from $n$ students an edge can be located
# to within about $W/n$, far better than the $\sigma/\sqrt{n}$ to which the centre of a
# bell-shaped distribution can be located. The edges pin down each school's level and,
# with it, how much of each student's score is ability. A real analyst would not know
# that ability has such edges (notebook 4: real scores have none).
#
# Refit both with the unobserved ability **normal** (the uniform's mean and sd),
# everything else unchanged.

# %% alt="Forest plot of the structural and randomized analyses fitted with a uniform and with a normal unobserved ability. The normal-ability intervals are several times wider; the randomized intervals stay centred on the truth with either shape."
for name in ("structural", "randomized"):
    results[f"{name}, normal ability"] = fit(workdir, name, ability="normal", seed=4, progress=False, **SAMPLER)
    print(results[f"{name}, normal ability"].table(), end="\n\n")
shape = {k: results[k] for k in ("structural", "structural, normal ability", "randomized", "randomized, normal ability")}
ax = forest(shape)
ax.figure.set_size_inches(9, 5.5)
ax.set_title("Uniform against normal ability (coloured: uniform, black: normal)")
plt.tight_layout()
plt.show()
for name, r in shape.items():
    row = r.summary().loc["small_class_direct_effect"]
    print(f"{name:<28} direct effect {row['mean']:5.2f} points, posterior sd {row['sd']:.2f}, "
          f"90% interval [{row['q05']:.2f}, {row['q95']:.2f}]: truth {'inside' if row['truth_in_90'] else 'OUTSIDE'}")
for name in ("structural", "randomized"):
    ratio = shape[f"{name}, normal ability"].summary().loc["small_class_direct_effect", "sd"] / \
        shape[name].summary().loc["small_class_direct_effect", "sd"]
    print(f"{name}: the normal ability's posterior sd is {ratio:.1f} times the uniform's")

# %% [markdown]
# Read two things off the plot: the **width** and the **location** of each interval.
#
# * The uniform fits are several times more precise than the normal ones. That
#   precision is not in the design; it is the functional form talking, and it is only
#   honest because the simulation really drew ability from a uniform.
# * The `randomized` analysis stays centred on the truth with either shape: its
#   identification comes from the coin, and only its precision came from the uniform.
# * The `structural` analysis also keeps assumptions that no swap of distribution
#   tests: that the REGULAR rule is linear in ability, with the form the model gives it,
#   and that the scores carry no noise beyond ability (so that, given the parameters,
#   each student's ability can be read off her score). Where its normal-ability fit
#   moves away from the truth, or its sampler struggles (R-hat, ESS and divergences in
#   the tables above), the answer leaned on the shape, not just its precision.

# %% [markdown]
# ## Take-away
#
# * Observational contrasts (the REGULAR difference in means, the `naive` regression
#   adjusted for income, race, school and MA) are biased upwards by the unobserved part
#   of ability, which drives both the score and the chance of a SMALL class; the bias
#   equals the ability gap between SMALL and LARGE students *after* adjustment, which
#   only the simulation can see.
# * Randomization makes the assignment **ignorable** in Rubin's sense, so the
#   `randomized` analysis recovers the direct (5), total (6) and MA (10) effects without
#   modelling the assignment.
# * The `structural` analysis recovers them from both cohorts by modelling the
#   assignment, but it leans on functional form: the uniform's hard edges make both
#   model-based analyses several times more precise than a normal ability would, and
#   the structural model's deconfounding rests on the exact form of the assignment rule
#   and on scores without noise. A randomized design needs none of that: with a normal
#   ability it is less precise but still right. Design beats assumptions.

# %% [markdown]
# ## Exercises
#
# Predict first, then check. The solutions are hidden: in JupyterLab click the collapsed
# cell under an exercise; on the lessons site, click "Solution".
#
# 1. Simulate the same design with a REGULAR rule that ignores the unobserved ability
#    (`regular_small_ability=0`). **Predict** the REGULAR cohort's adjusted estimate of
#    the direct effect: the `least_squares` regression of section 3, now on the test
#    score. Is the regression then right, and why?
# 2. The simulation can see the unobserved ability. Using the `world` table of section 3,
#    regress `ability_uniform` on class size, income, race, school and MA in the
#    **EXPERIMENTAL** cohort. **Predict** the coefficient of SMALL before you run it.
# 3. Every student gains the same from a SMALL class in this model. **Predict** the
#    structural fit's average effect of a SMALL class for the EXPERIMENTAL cohort, against
#    the REGULAR cohort's above; check with `result.do(small_class=1, cohort=...)`.

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 1: the same regression on data whose REGULAR rule ignores ability.
def observed_frame(data, cohort):
    """The columns an analyst has, in the names the least_squares function of section 3 reads."""
    s = data.students.merge(data.classes[["class_id", "class_size", "teacher_has_ma"]], on="class_id")
    s = s[s.cohort == cohort]
    return pd.DataFrame({
        "small": (s.class_size == "SMALL").astype(int), "race": s.race, "school": s.school_id,
        "ma": s.teacher_has_ma.astype(int), "test_score": s.test_score,
        "scaled_income": (np.log(s.family_income) - np.log(config.income_min))
        / (np.log(config.income_max) - np.log(config.income_min)),
    })


for slope in (config.regular_small_ability, 0.0):
    d = simulate(config.replace(regular_small_ability=slope), seed=SEED)
    estimate = least_squares(observed_frame(d, "REGULAR"), "test_score")["small"]
    print(f"REGULAR rule with ability slope {slope:.2f}: adjusted estimate {estimate:5.2f} "
          f"(true direct effect {d.truth['estimands']['small_class_direct_effect']:g})")
print("Without the ability slope every push into a SMALL class is observed (income, race), so the\n"
      "assignment is ignorable given them: the adjusted regression is centred on the direct effect, up to\n"
      "the noise of one dataset.")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 2: randomization balances what nobody observes, too.
experimental = world[world.cohort == "EXPERIMENTAL"]
print(f"EXPERIMENTAL: SMALL-class students have {least_squares(experimental, 'ability_uniform')['small']:+.2f} "
      f"points of unobserved ability, all else observed equal (REGULAR: {bias:+.2f})")
print("Near zero, up to noise: the coin ignores ability, so there is no omitted-variable bias to remove.")

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
# Solution 3: a constant effect is the same for every cohort; only the uncertainty differs.
for cohort in ("REGULAR", "EXPERIMENTAL"):
    row = structural.do(small_class=1, cohort=cohort).summary().loc["average effect"]
    print(f"{cohort:<12} average effect {row['mean']:.2f} points, 90% interval [{row['q05']:.2f}, {row['q95']:.2f}]")
print("The two are the same posterior, draw for draw, of the total effect (truth 6): the model gives every\n"
      "student the same effect, so who the students are changes the scores in either world, not their difference.")
