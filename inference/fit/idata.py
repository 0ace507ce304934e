r"""The InferenceData of a fit (an ``xarray.DataTree``), laid out as PyMC writes it.

Groups, each variable with named dims and the tables' own ids as coordinates (dims are
named after the tables' columns: ``student_id``, ``class_id``, ``school_id``, ``race``
(the codes), ``race_vs_reference``, ``covariate``):

* ``posterior``: the model's parameters and the three estimands, every draw of every
  chain.  Parameters that the analysis pins (a ``Delta`` prior, e.g. the randomized
  analysis's REGULAR assignment rule, or the noise sd of noise-free scores) are
  constants, not draws: they are left out, and their values are in the attribute
  ``pinned_parameters`` (JSON).
* ``unconstrained_posterior``: the coordinates the conditioned model samples in
  (``*_std``, ``*_position``, ``*_excess``; :mod:`classsize.model.conditioned`), for
  checking the sampler's geometry; ``az.summary`` does not read this group.
* ``sample_stats``: ``lp``, ``energy``, ``acceptance_rate``, ``step_size``,
  ``n_steps``, ``tree_depth``, ``diverging`` (``az.bfmi``, ``az.plot_energy``).
* ``log_likelihood``: pointwise log densities, one value per student, named after the
  observed variables: ``test_score`` (the score given the class size) and, for the
  conditioned analyses, ``small_class`` (the class size given the score) and their sum
  ``class_size_and_score``, the joint density of what the analysis explains, which
  LOO of the whole model needs (``az.loo(dt, var_name="class_size_and_score")``).
* ``posterior_predictive`` and ``prior_predictive``: replicated data of the same
  students (:meth:`~.analysis.Analysis.replicate`).
* ``prior``: the parameters (and estimands) drawn from the analysis's priors.
* ``observed_data``: the data the analysis explains, the counterparts of the
  predictive groups; ``constant_data``: what it conditions on (``is_experimental``,
  ``family_income``, ``race_of_student``, ``class_of_student``, ``school_of_class``,
  ``teacher_has_ma``, further covariates; the naive regression's class sizes).

**Draws line up by label.**  Every sampled group has the posterior's ``chain`` dim and
labels its draws with the posterior's own draw numbers.  The per-student groups
(pointwise, predictive, prior) would hold ``chains x draws x students`` values, so they
keep every ``k``-th draw of each chain (``k`` the smallest step that keeps at most
:data:`STORED_DRAWS` draws and :data:`STORED_VALUES` values per array; the prior groups
every ``2k``-th) and say so in the root attribute ``thinned_groups``: ``posterior.x * posterior_predictive.y`` aligns
the draws by label (xarray's inner join), never by position.  The prior has no
posterior draws of its own; it is drawn with ``(chain, draw)`` labels of the posterior's.

**Storage.**  Per-student groups are float32 (the scores keep the data's float64 in
``observed_data``); :func:`write_netcdf` compresses every variable (zlib) and keeps
the per-student floats to 0.01 point (scores) and 0.001 nat (log densities).

**LOO with noise-free scores.**  When scores carry no measurement noise
(``score_noise_sd = 0``, the notebook's process) a score's density is uniform on an
interval whose ends are set by the lowest and highest scores of its school: leaving
out one of those students moves the support, so their Pareto k values are large and
``az.loo`` warns.  The estimate is then unreliable for exactly those students, as the
warning says; it is not an error of the fit.  Scores fitted with a measurement-noise
likelihood have smooth densities and no such students.
"""

from __future__ import annotations

import json
import math

import numpy as np

from classsize.model.pieces import pinned

from classsize.inference.analyses.base import Problem
from classsize.inference.engine.programs import stored_jit

#: At most this many draws (over all chains) go into the pointwise and posterior
#: predictive groups; the prior groups keep every other one of those.
STORED_DRAWS = 400
#: ... and at most this many values per per-student array (draws x students), which
#: bounds their memory on large datasets.
STORED_VALUES = 20_000_000
#: Name endings of the coordinates the conditioned model samples in (not its parameters).
SAMPLER_COORDINATES = ("_std", "_position", "_excess")
#: The pointwise log density of class size and score together (conditioned analyses).
JOINT_LOG_LIKELIHOOD = "class_size_and_score"
#: Groups with one value per student and draw: stored thinned, as float32.
PER_STUDENT_GROUPS = ("log_likelihood", "posterior_predictive", "prior_predictive")

#: The dims of each site that has more than the chain and draw dims.
DIMS = {
    "race_probs": ["race"],
    "regular_small_race_shift": ["race"],
    "school_effect": ["school_id"],
    "extra_covariate_weights": ["covariate"],
    "race_probs_std": ["race_stick"],
    "regular_small_race_position": ["race"],
    "school_position": ["school_id"],
    "race_effect": ["race_vs_reference"],
    "school_intercept": ["school_id"],
    "covariate_weights": ["covariate"],
    "class_covariate_weights": ["class_covariate"],
    "class_effect": ["class_id"],
    "class_position": ["class_id"],
    "test_score": ["student_id"],
    "small_class": ["student_id"],
    JOINT_LOG_LIKELIHOOD: ["student_id"],
    "is_experimental": ["student_id"],
    "family_income": ["student_id"],
    "race_of_student": ["student_id"],
    "class_of_student": ["student_id"],
    "covariates": ["student_id", "covariate"],
    "teacher_has_ma": ["class_id"],
    "school_of_class": ["class_id"],
}


def pinned_parameters(problem: Problem) -> dict[str, object]:
    """The parameters the analysis's priors pin to a value, with that value."""
    return {name: np.asarray(d.v).tolist() for name, d in (problem.priors or {}).items() if pinned(d)}


def coordinates(problem: Problem) -> dict[str, np.ndarray]:
    """Each dim's labels: the bound dataset's ids (positions when it has none)."""
    obs = problem.observed
    codes = tuple(problem.design.race_codes)
    n_covariates = 0 if obs.extra_covariates is None else int(np.shape(obs.extra_covariates)[-1])
    n_class_covariates = 0 if obs.class_covariates is None else int(np.shape(obs.class_covariates)[-1])
    coords = {
        "race": np.asarray(codes),
        "race_vs_reference": np.asarray(codes[1:]),
        "race_stick": np.arange(len(codes) - 1),
        "student_id": np.arange(problem.n_students),
        "class_id": np.arange(int(np.shape(obs.class_is_small)[-1])),
        "school_id": np.arange(problem.design.n_schools),
        "covariate": np.arange(n_covariates),
        "class_covariate": np.arange(n_class_covariates),
    }
    data = problem.data
    if data is not None:
        cohort = problem.analysis.cohort
        coords["student_id"] = data.students_of(cohort)["student_id"].to_numpy(np.int64)
        coords["class_id"] = data.classes_of(cohort)["class_id"].to_numpy(np.int64)
        coords["school_id"] = data.school_ids_in(cohort)
        coords["covariate"] = np.asarray([c for c in data.student_covariates if c != "family_income"])
        coords["class_covariate"] = np.asarray(getattr(data, "class_covariate_names", ()) or
                                               np.arange(n_class_covariates))
    return coords


def data_groups(problem: Problem, coords) -> tuple[dict, dict]:
    """``observed_data`` (what the analysis explains) and ``constant_data`` (the rest)."""
    obs = problem.observed
    student_data = {
        "test_score": np.asarray(obs.test_score, dtype=np.float64),
        "small_class": np.asarray(obs.small_class, dtype=np.int8),
        "is_experimental": np.asarray(obs.is_experimental, dtype=bool),
        "race_of_student": coords["race"][np.asarray(obs.race)],
        "class_of_student": coords["class_id"][np.asarray(obs.class_of_student)],
        "teacher_has_ma": np.asarray(obs.teacher_has_ma, dtype=np.int8),
        "school_of_class": coords["school_id"][np.asarray(obs.school_of_class)],
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


def thinning_step(chains: int, draws: int, n_students: int) -> int:
    """The step ``k`` of the per-student groups: the smallest that keeps at most
    :data:`STORED_DRAWS` draws and :data:`STORED_VALUES` values per array."""
    keep = max(1, min(STORED_DRAWS, STORED_VALUES // max(n_students, 1)))
    return max(1, math.ceil(draws / max(1, keep // chains)))


def predictive_keys(seed: int):
    """The keys of the replicates and of the prior draws of a fit of ``seed``."""
    import jax

    key_replicate, key_prior = jax.random.split(jax.random.PRNGKey(seed + 1))
    return key_replicate, key_prior


def kept_draws(chains: int, draws: int, n_students: int) -> tuple[np.ndarray, np.ndarray]:
    """The draw labels the per-student groups keep (every :func:`thinning_step`-th) and
    those the prior groups keep (every other one of those)."""
    kept = np.arange(0, draws, thinning_step(chains, draws, n_students))
    return kept, kept[::2]


def prior_draw_count(chains: int, draws: int, n_students: int) -> int:
    """How many prior draws the prior groups hold, over every chain."""
    return chains * len(kept_draws(chains, draws, n_students)[1])


def start_prior(problem: Problem, chains: int, draws: int, seed: int = 0):
    """The prior draws :func:`inference_data` makes for ``chains x draws`` posterior
    draws and ``seed``, begun now on another thread (a ``Future``), so that their
    program compiles and runs while this thread prepares the sampler (XLA compiles one
    program on one core); None where the analysis draws them in the calling thread
    (:meth:`~.base.Analysis.prior_sampler`).  The draws are the same either way."""
    from concurrent.futures import ThreadPoolExecutor

    import jax

    n = prior_draw_count(chains, draws, problem.n_students)
    sampler = problem.analysis.prior_sampler(problem, predictive_keys(seed)[1], n)
    if sampler is None:
        return None
    x64 = bool(jax.config.jax_enable_x64)  # (a thread-local setting: the new thread takes this one's)

    def run():
        with jax.enable_x64(x64):
            return sampler()

    pool = ThreadPoolExecutor(1, thread_name_prefix="classsize-prior")
    started = pool.submit(run)
    pool.shutdown(wait=False)
    return started


def _per_student(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    return v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v


def inference_data(problem: Problem, sites, stats, estimands, *, posterior_predictive: bool = True,
                   prior: bool = True, seed: int = 0, attrs: dict | None = None, started_prior=None):
    """The InferenceData (``xarray.DataTree``) of one fit (see the module's docstring).

    ``sites`` and ``estimands`` are ``(chains, draws, ...)`` arrays, ``stats`` the
    sampler statistics of :class:`~.sampling.Draws`; the predictive groups and the
    prior are drawn with keys from ``seed`` (the prior by ``started_prior``, the
    :func:`start_prior` of the same fit, when given).  ``attrs`` go to the root
    (provenance).
    """
    import arviz_base as az  # (ArviZ's data layer: no plotting library to import)
    from numpyro.infer import log_likelihood

    analysis = problem.analysis
    chains, n_draws = next(iter(sites.values())).shape[:2]
    pinned = pinned_parameters(problem)
    coordinate_sites = {k: v for k, v in sites.items() if k.endswith(SAMPLER_COORDINATES)}
    posterior = {k: v for k, v in sites.items() if k not in coordinate_sites and k not in pinned}
    posterior.update(estimands)

    step = thinning_step(chains, n_draws, problem.n_students)
    kept, kept_prior = kept_draws(chains, n_draws, problem.n_students)
    n_kept = chains * len(kept)
    # (chains, kept, ...) flattened chain-major, so that a flat index unflattens back
    flat = {k: v[:, kept].reshape((n_kept,) + v.shape[2:]) for k, v in sites.items()}

    n_prior = chains * len(kept_prior)

    def unflat(v, labels=kept):
        v = np.asarray(v)
        return v.reshape((chains, len(labels)) + v.shape[1:])

    def pointwise(draws, inputs):
        per_site = log_likelihood(problem.model, draws, **inputs)
        return {k: per_site[k] for k in analysis.modeled_data}

    program = stored_jit(pointwise, "pointwise", problem.signature, tuple(analysis.modeled_data))
    ll = {k: _per_student(unflat(v)) for k, v in program(flat, problem.inputs).items()}
    if len(analysis.modeled_data) > 1:
        ll[JOINT_LOG_LIKELIHOOD] = sum(ll[k] for k in analysis.modeled_data)

    sample_stats = dict(stats)
    sample_stats["n_steps"] = np.asarray(stats["n_steps"]).astype(np.int64)
    sample_stats["tree_depth"] = np.ceil(np.log2(np.asarray(stats["n_steps"]) + 1.0)).astype(np.int64)
    coords = coordinates(problem)
    observed, constant = data_groups(problem, coords)
    groups = dict(posterior=posterior, sample_stats=sample_stats, log_likelihood=ll,
                  observed_data=observed, constant_data=constant)

    if posterior_predictive or prior:
        key_replicate, key_prior = predictive_keys(seed)
        draws = {k: v for k, v in flat.items() if k not in coordinate_sites}
        if prior:
            prior_draws = None if started_prior is None else started_prior.result()
            if prior_draws is None or len(next(iter(prior_draws.values()))) != n_prior:
                prior_draws = analysis.prior_draws(problem, key_prior, n_prior)
            draws = {k: np.concatenate([v, np.asarray(prior_draws[k], dtype=v.dtype)])
                     for k, v in draws.items() if k in prior_draws}
            groups["prior"] = {k: unflat(v, kept_prior) for k, v in prior_draws.items() if k not in pinned}
            groups["prior"].update({k: unflat(v, kept_prior) for k, v in problem.estimands(prior_draws).items()})
        # one call replicates the posterior and the prior draws (one compiled program)
        reps = analysis.replicate(problem, draws, key_replicate)
        reps = {k: np.asarray(v) for k, v in reps.items() if k in analysis.modeled_data}
        if posterior_predictive:
            groups["posterior_predictive"] = {k: _per_student(unflat(v[:n_kept])) for k, v in reps.items()}
        if prior:
            groups["prior_predictive"] = {k: _per_student(unflat(v[n_kept:], kept_prior)) for k, v in reps.items()}

    root = {
        "analysis": problem.name,
        "description": analysis.description,
        "pinned_parameters": json.dumps(pinned),
        "log_likelihood": (f"{', '.join(ll)}: pointwise log densities, one value per student"
                           + (f"; {JOINT_LOG_LIKELIHOOD} is the joint of "
                              f"{' and '.join(analysis.modeled_data)}" if JOINT_LOG_LIKELIHOOD in ll else "")),
        "thinned_groups": (f"{', '.join(g for g in PER_STUDENT_GROUPS[:2] if g in groups)} hold every "
                           f"{step}th draw of each chain (draw labels {', '.join(str(d) for d in kept[:3])}, ...; "
                           f"{len(kept)} of {n_draws}); prior and prior_predictive every {2 * step}th "
                           f"({len(kept_prior)}); labelled as in the posterior"),
        **(attrs or {}),
    }
    tree = az.from_dict(groups, coords=coords, dims=DIMS, attrs={"/": root})
    for name in groups:
        if name in ("observed_data", "constant_data", "posterior", "sample_stats"):
            continue
        tree[name] = tree[name].to_dataset().assign_coords(draw=kept_prior if name.startswith("prior") else kept)
    if coordinate_sites:
        tree["unconstrained_posterior"] = az.convert_to_dataset(
            coordinate_sites, coords=coords, dims={k: v for k, v in DIMS.items() if k in coordinate_sites})
    return tree


#: Decimal digits kept of the per-student floats when written (netCDF-4's quantisation:
#: the bits below that precision are zeroed, so zlib compresses the rest): scores to
#: 0.01 point, pointwise log densities to 0.001 nat.  The posterior, the prior and the
#: sample statistics are written whole.
STORED_DIGITS = {"log_likelihood": 3, "posterior_predictive": 2, "prior_predictive": 2}


#: zlib's level for every variable: 1, the fastest (bench/README.md compares it with 4).
COMPRESSION_LEVEL = 1


def write_netcdf(tree, path) -> None:
    """Write the DataTree ``tree`` to ``path`` as netCDF-4, every variable compressed
    (zlib at :data:`COMPRESSION_LEVEL`) and the per-student floats quantised to :data:`STORED_DIGITS`.  A failure
    of the HDF5 library (a full disk) is raised as the :class:`OSError` it stands for."""
    encoding = {}
    for node in tree.subtree:
        digits = STORED_DIGITS.get(node.name)
        encoding[node.path] = {
            name: {"zlib": True, "complevel": COMPRESSION_LEVEL,
                   **({"least_significant_digit": digits} if digits is not None and var.dtype.kind == "f" else {})}
            for name, var in node.data_vars.items() if var.dtype.kind in "biuf"}
    from classsize.inference.publish import write_netcdf_file

    write_netcdf_file(tree, path, encoding=encoding)
