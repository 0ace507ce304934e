r"""The class-size experiment as one NumPyro model.

One function, :func:`class_size_experiment`, is the data-generating process of the
notebook.  Called without data it samples forward (simulation); called with an
:class:`Observed` it conditions the same process on data (inference).  Its sites,
in the order the notebook draws them:

===========================  =========  ==============================================
site                         plate      meaning
===========================  =========  ==============================================
structural parameters        --         fixed (``Delta``) or drawn from priors
``race``                     students   index into ``config.race_codes``
``family_income``            students   DiscreteUniform[income_min, income_max)
``ability_uniform``          students   :math:`U_i \sim \mathrm{Uniform}(0, W)`, unobserved (or
                                       :math:`\mathcal N(W/2, W/\sqrt{12})`: ``ability_shape``)
``ability``                  students   deterministic, :math:`w\,s_i + U_i`
``small_class``              students   1 = SMALL; rule depends on the cohort
``class_of_student``         students   deterministic round-robin allocation
``teacher_has_ma``           classes    Bernoulli(p_ma_small or p_ma_large)
``school``                   classes    uniform over schools
``school_effect``            schools    Uniform(-school_effect_range, school_effect_range)
``class_effect_sd``          --         only with class effects (see below)
``class_effect``             classes    Normal(0, class_effect_sd), the teacher's effect
``test_score``               students   score equation (+ optional noise)
===========================  =========  ==============================================

with :math:`s_i = (\log \mathrm{income}_i - \log \mathrm{income\_min}) /
(\log \mathrm{income\_max} - \log \mathrm{income\_min})` the scaled log income.

**Class allocation.**  The number of classes depends on the data
(:math:`\lfloor n_\mathrm{SMALL}/15 \rfloor` SMALL, :math:`\lfloor n_\mathrm{LARGE}/30\rfloor`
LARGE), so the ``classes`` plate is padded to the most classes any dataset can have
(``config.max_small_classes + config.max_large_classes``; SMALL slots first) and the
slots a dataset does not use are masked out.  Shapes are then fixed, so the model
can be ``jit``-ed and ``vmap``-ed over seeds.  Student :math:`i` with rank
:math:`r_i` among students of its class size goes to slot :math:`r_i \bmod
n_\mathrm{classes}` of that size, the notebook's rule.  (The notebook divides by zero
when fewer students than one class's target size land in a size; here such a size
gets one class.)

**Class effects.**  With ``class_effect_sd`` not pinned to 0 each class adds its
own effect :math:`u_c \sim \mathcal N(0, \sigma_u)` to its students' scores (the
teacher's effect, which makes students of one class alike).  Pinned to 0, the
notebook's process, the two sites are left out, so a seed draws the same numbers as
without them.  Class covariates (``class_covariates``: each student's class's values,
held as observed) add :math:`z_c^\top\theta` (``class_covariate_weights``).

**Conditioning.**  With data, ability is marginalised exactly
(:mod:`classsize.model.conditioned`): with noise-free scores (``score_noise_sd``
pinned to 0) each student's ability is, given the parameters, a deterministic
function of her score; with measurement noise (``score_noise_sd`` pinned above 0 or
sampled) the uniform ability convolved with the normal noise gives the score's
density in closed form, and the assignment rule is averaged over ability given the
score.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .config import Config
from .conditioned import condition_on_data
from .pieces import (
    Observed,
    allocate_to_classes,
    class_effects_on,
    class_slots,
    fixed_parameters,
    noise_free,
    sample_parameters,
    scaled_log_income,
    score_without_ability,
    small_probability,
    teacher_ma_probability,
)


def class_size_experiment(
    config: Config = Config(),
    priors: Mapping[str, Distribution] | None = None,
    data: Observed | None = None,
    *,
    ability: str | None = None,
    pilot=None,
    covariates=None,
    class_covariates=None,
):
    r"""The class-size experiment.

    :param config: the design (cohort sizes, races, income range, class sizes, number
        of schools) and, when ``priors`` is None, the parameter values.
    :param priors: a distribution for each name in :data:`~classsize.model.pieces.PARAMETERS`;
        ``None`` pins them to ``config`` (the notebook's simulation).
    :param data: ``None`` to simulate; an :class:`Observed` to condition on it.
    :param ability: the distribution of the unobserved part of ability, ``"uniform"``
        or ``"normal"`` (with the uniform's mean and sd).  Simulating, it defaults to
        the configuration's ``ability_shape`` (the process that makes the data);
        conditioning, to ``"uniform"`` (``"normal"`` shows how much a fit owes to the
        uniform's hard edges, or fits data whose ability has none).
    :param covariates: further student covariates of ability (students x q, e.g. free
        lunch in real data), with weights ``extra_covariate_weights``; simulation only
        (conditioning reads them from ``data.extra_covariates``).
    :param class_covariates: each student's class's covariates (students x q, e.g. an
        aide), with weights ``class_covariate_weights``; simulation only (conditioning
        reads them per class from ``data.class_covariates``).
    :param pilot: :func:`classsize.model.pilot.pilot_estimates` of ``data``, when the
        caller has computed it (a fit does, once); otherwise it is computed here.
    """
    priors = fixed_parameters(config) if priors is None else priors
    if data is None:
        return _simulate(config, priors, ability or config.ability_shape, covariates, class_covariates)
    return condition_on_data(config, priors, data, ability or "uniform", pilot)


def _weighted(name: str, priors, covariates):
    """``covariates @ weights``, the weights a site ``name`` (prior ``priors[name]``, by
    default Normal(0, 10) each); None without covariates."""
    if covariates is None or covariates.shape[-1] == 0:
        return None
    q = covariates.shape[-1]
    return covariates @ numpyro.sample(name, priors.get(name, dist.Normal(jnp.zeros(q), 10.0).to_event(1)))


def _simulate(config: Config, priors: Mapping[str, Distribution], ability_kind: str = "uniform", covariates=None,
              class_covariates=None):
    p = sample_parameters(priors)
    covariate_term = _weighted("extra_covariate_weights", priors, covariates)
    covariate_term = 0.0 if covariate_term is None else covariate_term
    n = config.n_students
    is_experimental = jnp.arange(n) >= config.n_regular
    with numpyro.plate("students", n):
        race = numpyro.sample("race", dist.Categorical(probs=p["race_probs"]))
        income = numpyro.sample(
            "family_income", dist.DiscreteUniform(config.income_min, config.income_max - 1)
        )
        s = scaled_log_income(income, config)
        width = p["ability_uniform_width"]
        unobserved = (dist.Uniform(0.0, width) if ability_kind == "uniform"
                      else dist.Normal(width / 2.0, width / jnp.sqrt(12.0)))
        ability_uniform = numpyro.sample("ability_uniform", unobserved)
        ability = numpyro.deterministic("ability", p["ability_income_weight"] * s + covariate_term + ability_uniform)
        small = numpyro.sample(
            "small_class",
            dist.Bernoulli(probs=small_probability(p, s, race, ability_uniform, is_experimental)),
        )
        slot, n_small_classes, n_large_classes = allocate_to_classes(small, config)
        slot = numpyro.deterministic("class_of_student", slot)
    numpyro.deterministic("n_small_classes", n_small_classes)
    numpyro.deterministic("n_large_classes", n_large_classes)
    slot_is_small, slot_used = class_slots(config, n_small_classes, n_large_classes)
    with numpyro.plate("classes", slot_is_small.shape[0]), numpyro.handlers.mask(mask=slot_used):
        has_ma = numpyro.sample(
            "teacher_has_ma", dist.Bernoulli(probs=teacher_ma_probability(p, slot_is_small))
        )
        school = numpyro.sample(
            "school", dist.Categorical(probs=jnp.ones(config.n_schools) / config.n_schools)
        )
    with numpyro.plate("schools", config.n_schools):
        school_effect = numpyro.sample(
            "school_effect",
            dist.Uniform(-p["school_effect_range"], p["school_effect_range"]),
        )
    class_term = _weighted("class_covariate_weights", priors, class_covariates)
    if class_effects_on(priors):
        sd = numpyro.sample("class_effect_sd", priors["class_effect_sd"])
        with numpyro.plate("classes", slot_is_small.shape[0]), numpyro.handlers.mask(mask=slot_used):
            class_effect = numpyro.sample("class_effect", dist.Normal(0.0, sd))
        effect = jnp.asarray(class_effect)[slot]
        class_term = effect if class_term is None else class_term + effect
    with numpyro.plate("students", n):
        has_ma, school, school_effect = jnp.asarray(has_ma), jnp.asarray(school), jnp.asarray(school_effect)
        mean = score_without_ability(p, small, has_ma[slot], school_effect[school[slot]])
        mean = mean + p["score_ability_weight"] * ability
        if class_term is not None:
            mean = mean + class_term
        if noise_free(priors["score_noise_sd"]):
            return numpyro.sample("test_score", dist.Delta(mean))
        return numpyro.sample("test_score", dist.Normal(mean, p["score_noise_sd"]))
