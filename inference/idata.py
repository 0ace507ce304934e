r"""The ArviZ InferenceData of a fit, laid out as ArviZ, PyMC and Bambi users expect.

Groups (``az.InferenceData``), each variable with named dims and the data's own ids
as coordinates (``student``: student_id, ``class``: class_id, ``school``: school_id,
``race``: the race codes, ``covariate``: the further student covariates):

* ``posterior``: the model's parameters and the three estimands.  Parameters that the
  analysis pins (a ``Delta`` prior, e.g. the randomized analysis's REGULAR assignment
  rule, or the noise sd of noise-free scores) are constants, not draws: they are left
  out, and their values are in the attribute ``pinned_parameters`` (JSON).
* ``unconstrained_posterior``: the coordinates the conditioned model samples in
  (``*_std``, ``*_position``, ``*_excess``; :mod:`classsize.model.conditioned`), for
  checking the sampler's geometry; ``az.summary`` does not read this group.
* ``sample_stats``: ``lp``, ``energy``, ``acceptance_rate``, ``step_size``,
  ``n_steps``, ``tree_depth``, ``diverging``, so that ``az.bfmi`` and
  ``az.plot_energy`` work.
* ``log_likelihood``: one pointwise array, one value per student: the joint log
  density of the data the analysis explains (:attr:`~.analysis.Analysis.modeled_data`):
  ``class_size_and_score`` (class size and score) for the conditioned analyses,
  ``test_score`` for the naive regression.  ``az.loo`` and ``az.compare`` read it.
* ``posterior_predictive`` and ``prior_predictive``: replicated data of the same
  students (:meth:`~.analysis.Analysis.replicate`), from posterior and prior draws.
* ``prior``: the parameters (and estimands) drawn from the analysis's priors.
* ``observed_data``: the data the analysis explains, the counterparts of the
  predictive groups (``az.plot_ppc`` pairs them).
* ``constant_data``: what it conditions on: ``is_experimental``, ``family_income``,
  ``race_of_student``, ``class_of_student`` (class id), ``school_of_class`` (school
  id), ``teacher_has_ma`` (by class), the further covariates, and for the naive
  regression the class sizes.

**LOO with noise-free scores.**  When scores carry no measurement noise
(``score_noise_sd = 0``, the notebook's process) a score's density is uniform on an
interval whose ends are set by the lowest and highest scores of its school: leaving
out one of those students moves the support, so their Pareto k values are large and
``az.loo`` warns.  The estimate is then unreliable for exactly those students, as the
warning says; it is not an error of the fit.  Scores fitted with a measurement-noise
likelihood have smooth densities and no such students.

The pointwise and predictive groups keep at most :data:`STORED_DRAWS` draws, thinned
evenly, and at most :data:`STORED_VALUES` values per array.
"""

from __future__ import annotations

import json

import numpy as np

from .analysis import Problem

#: At most this many draws go into the pointwise and predictive groups (and the prior).
STORED_DRAWS = 500
#: ... and at most this many values per pointwise array (draws x students), which
#: bounds their memory on large datasets.
STORED_VALUES = 20_000_000
#: Name endings of the coordinates the conditioned model samples in (not its parameters).
SAMPLER_COORDINATES = ("_std", "_position", "_excess")

#: The dims of each site that has more than the chain and draw dims.
DIMS = {
    "race_probs": ["race"],
    "regular_small_race_shift": ["race"],
    "school_effect": ["school"],
    "extra_covariate_weights": ["covariate"],
    "race_probs_std": ["race_stick"],
    "regular_small_race_position": ["race"],
    "school_position": ["school"],
    "race_effect": ["race_vs_reference"],
    "school_intercept": ["school"],
    "covariate_weights": ["covariate"],
    "test_score": ["student"],
    "small_class": ["student"],
    "class_size_and_score": ["student"],
    "is_experimental": ["student"],
    "family_income": ["student"],
    "race_of_student": ["student"],
    "class_of_student": ["student"],
    "covariates": ["student", "covariate"],
    "teacher_has_ma": ["class"],
    "school_of_class": ["class"],
}


def pinned_parameters(problem: Problem) -> dict[str, object]:
    """The parameters the analysis's priors pin to a value, with that value."""
    import numpyro.distributions as dist

    return {name: np.asarray(d.v).tolist() for name, d in (problem.priors or {}).items()
            if isinstance(d, dist.Delta)}


def coordinates(problem: Problem) -> dict[str, np.ndarray]:
    """Each dim's labels: the bound dataset's ids (positions when it has none)."""
    obs = problem.observed
    codes = tuple(problem.config.race_codes)
    n_covariates = 0 if obs.extra_covariates is None else int(np.shape(obs.extra_covariates)[-1])
    coords = {
        "race": np.asarray(codes),
        "race_vs_reference": np.asarray(codes[1:]),
        "race_stick": np.arange(len(codes) - 1),
        "student": np.arange(problem.n_students),
        "class": np.arange(int(np.shape(obs.class_is_small)[-1])),
        "school": np.arange(problem.config.n_schools),
        "covariate": np.arange(n_covariates),
    }
    data = problem.data
    if data is not None:
        cohort = problem.analysis.cohort
        coords["student"] = data.students_of(cohort)["student_id"].to_numpy(np.int64)
        coords["class"] = data.classes_of(cohort)["class_id"].to_numpy(np.int64)
        coords["school"] = data.school_ids_in(cohort)
        coords["covariate"] = np.asarray([c for c in data.student_covariates if c != "family_income"])
    return coords


def data_groups(problem: Problem, coords) -> tuple[dict, dict]:
    """``observed_data`` (what the analysis explains) and ``constant_data`` (the rest)."""
    obs = problem.observed
    student_data = {
        "test_score": np.asarray(obs.test_score, dtype=np.float64),
        "small_class": np.asarray(obs.small_class, dtype=np.int8),
        "is_experimental": np.asarray(obs.is_experimental, dtype=bool),
        "race_of_student": coords["race"][np.asarray(obs.race)],
        "class_of_student": coords["class"][np.asarray(obs.class_of_student)],
        "teacher_has_ma": np.asarray(obs.teacher_has_ma, dtype=np.int8),
        "school_of_class": coords["school"][np.asarray(obs.school_of_class)],
    }
    if problem.data is not None and problem.data.has_income:
        student_data["family_income"] = problem.data.students_of(problem.analysis.cohort)[
            "family_income"].to_numpy(np.float64)
    if obs.extra_covariates is not None and np.shape(obs.extra_covariates)[-1] > 0:
        student_data["covariates"] = np.asarray(obs.extra_covariates, dtype=np.float64)
    modeled = problem.analysis.modeled_data
    observed = {k: v for k, v in student_data.items() if k in modeled}
    constant = {k: v for k, v in student_data.items() if k not in modeled}
    return observed, constant


def inference_data(problem: Problem, sites, stats, estimands, *, posterior_predictive: bool = True,
                   prior: bool = True, seed: int = 0):
    """The InferenceData of one fit (see the module's docstring for its groups).

    ``sites`` and ``estimands`` are ``(chains, draws, ...)`` arrays, ``stats`` the
    sampler statistics of :class:`~.sampling.Draws`; the predictive groups and the
    prior are drawn with keys from ``seed``.
    """
    import arviz as az
    import jax
    from numpyro.infer import log_likelihood

    analysis = problem.analysis
    chains, n_draws = next(iter(sites.values())).shape[:2]
    pinned = pinned_parameters(problem)
    coordinate_sites = {k: v for k, v in sites.items() if k.endswith(SAMPLER_COORDINATES)}
    posterior = {k: v for k, v in sites.items() if k not in coordinate_sites and k not in pinned}
    posterior.update(estimands)

    keep = max(1, min(STORED_DRAWS, STORED_VALUES // max(problem.n_students, 1)))
    step = max(1, (chains * n_draws) // keep)
    thinned = {k: v.reshape((chains * n_draws,) + v.shape[2:])[::step] for k, v in sites.items()}
    n_thinned = next(iter(thinned.values())).shape[0]

    def pointwise(draws, inputs):
        sites = log_likelihood(problem.model, draws, **inputs)
        return sum(sites[k] for k in analysis.modeled_data)

    pointwise_name = "class_size_and_score" if len(analysis.modeled_data) > 1 else analysis.modeled_data[0]
    ll = np.asarray(jax.jit(pointwise)(thinned, problem.inputs), dtype=np.float32)

    sample_stats = dict(stats)
    sample_stats["n_steps"] = np.asarray(stats["n_steps"]).astype(np.int64)
    sample_stats["tree_depth"] = np.ceil(np.log2(np.asarray(stats["n_steps"]) + 1.0)).astype(np.int64)
    coords = coordinates(problem)
    observed, constant = data_groups(problem, coords)
    groups = dict(posterior=posterior, sample_stats=sample_stats, log_likelihood={pointwise_name: ll[None]},
                  observed_data=observed, constant_data=constant)

    if posterior_predictive or prior:
        key_replicate, key_prior = jax.random.split(jax.random.PRNGKey(seed + 1))
        draws = {k: v for k, v in thinned.items() if k not in coordinate_sites}
        if prior:
            prior_draws = analysis.prior_draws(problem, key_prior, n_thinned)
            draws = {k: np.concatenate([v, np.asarray(prior_draws[k], dtype=v.dtype)])
                     for k, v in draws.items() if k in prior_draws}
            groups["prior"] = {k: v[None] for k, v in prior_draws.items() if k not in pinned}
            groups["prior"].update({k: v[None] for k, v in problem.estimands(prior_draws).items()})
        # one call replicates the posterior and the prior draws (one compiled program)
        reps = analysis.replicate(problem, draws, key_replicate)
        reps = {k: np.asarray(v) for k, v in reps.items() if k in analysis.modeled_data}
        if posterior_predictive:
            groups["posterior_predictive"] = {k: v[None, :n_thinned] for k, v in reps.items()}
        if prior:
            groups["prior_predictive"] = {k: v[None, n_thinned:] for k, v in reps.items()}

    idata = az.from_dict(
        **groups,
        coords=coords,
        dims=DIMS,
        attrs={
            "analysis": problem.name,
            "description": analysis.description,
            "pinned_parameters": json.dumps(pinned),
            "pointwise_log_likelihood": f"{pointwise_name}: the joint log density of "
                                        f"{' and '.join(analysis.modeled_data)}, one value per student",
            "thinned_groups": f"log_likelihood, posterior_predictive, prior and prior_predictive "
                              f"hold {n_thinned} draws (every {step}th posterior draw)",
        },
    )
    if coordinate_sites:
        idata.add_groups({"unconstrained_posterior": az.convert_to_dataset(
            coordinate_sites, coords=coords, dims={k: v for k, v in DIMS.items() if k in coordinate_sites})})
    return idata
