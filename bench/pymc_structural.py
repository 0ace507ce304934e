"""The ``structural`` analysis written in PyMC, for an ESS-per-second comparison with NumPyro.

    python bench/pymc_structural.py DATA_DIR --check                 # log densities agree up to a constant?
    python bench/pymc_structural.py DATA_DIR --chains 4 --warmup 1000 --samples 1000   # JSON on stdout
    python bench/pymc_structural.py DATA_DIR ... --fresh-compiledir  # count a cold PyTensor compilation

A port of the NumPyro conditioned model (``classsize.model.conditioned.condition_on_data``,
the model of ``classsize.inference.analyses.base.get_analysis("structural").problem(data)``) to
PyMC/PyTensor: the same density in the same coordinates, so that a comparison with
``classsize.inference.fit.result.fit(folder, "structural", ...)`` is one of samplers and
implementations, not of parameterisations.

* Sampled coordinates: the same sites as NumPyro's (``*_std``, ``school_position``,
  ``ability_uniform_width_excess``, ``school_effect_range_excess``,
  ``score_intercept_position``, ``regular_small_race_position``), each a ``pm.Flat``
  (NumPyro's ``ImproperUniform`` on the real line, already unconstrained).
* Every factor of the NumPyro model (priors, Jacobians, the pilot's ``log scale``) is a
  ``pm.Potential`` with the same name, and so is every observed term (race Categorical,
  SMALL Bernoulli with the clipped probability, the uniform (or normal) score density,
  teacher MA Bernoulli, school Categorical).  Constants are kept, so the two log densities
  agree exactly, not only up to a constant (the check allows a constant anyway).
* The pilot estimates (functions of the data alone) are computed by the project's own
  ``classsize.model.pilot.pilot_estimates``, then passed to PyMC as numpy constants.  The
  check also confirms that they equal the pilot the NumPyro problem carries in its inputs.
* Group extremes (a school's highest and lowest residual, a race's lowest and highest
  assignment term) are taken over the pilot's group layouts (``Pilot.schools``,
  ``small_by_race``, ``large_by_race``) as a max/min over each row, padding replaced by
  a -inf/+inf pad value: the same values as NumPyro's ``group_extreme``.
* Estimands as ``pm.Deterministic``: ``small_class_direct_effect``, ``teacher_ma_effect``
  and ``small_class_total_effect = direct + teacher_ma_effect * (p_ma_small - p_ma_large)``
  (``ConditionedAnalysis.estimands`` of ``classsize.inference.analyses.base``).
* Initialisation matches NumPyro's: the NUTS kernel of the analysis uses
  NumPyro's default ``init_to_uniform`` (every unconstrained coordinate uniform on
  (-2, 2), drawn per chain), so by default each PyMC chain starts at such a draw and NUTS
  is initialised with ``adapt_diag`` (diagonal mass-matrix adaptation, no extra jitter).
  ``--init pymc`` uses PyMC's default instead (zero point + ``jitter+adapt_diag``),
  ``--init zero`` starts every chain at the standardised coordinates' zero.
* ``--sampler nutpie`` samples the same PyMC model with nutpie (numba backend) instead
  of PyMC's NUTS (nutpie's own initialisation and mass-matrix adaptation).

Chain lengths default to those of ``classsize.inference.fit.result.fit``.  Needs PyMC (and
nutpie for ``--sampler nutpie``: the project's ``bench`` extra), e.g. a virtual environment made with
``pip install -e '.[bench]' -c constraints.txt``.  Run under ``ulimit -v``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings

import numpy as np

ESTIMANDS = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")


# ----------------------------------------------------------------------------- setup
def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _pytensor():
    import pytensor

    pytensor.config.floatX = "float64"
    return pytensor


def fit_defaults() -> dict:
    """``chains``, ``warmup`` and ``samples`` as ``classsize.inference.fit.result.fit`` defaults them."""
    import inspect

    from classsize.inference.fit.result import fit

    params = inspect.signature(fit).parameters
    return {k: int(params[k].default) for k in ("chains", "warmup", "samples")}


def load_structural(data, ability: str | None = None):
    """``(loaded, problem)``: the data (a folder or a ``LoadedData``) and the NumPyro structural
    problem, as ``classsize.inference.fit.result.fit`` builds them (``ability`` from dataset.json by default)."""
    _jax()
    from classsize.inference.analyses.registry import get_analysis
    from classsize.inference.data.read import LoadedData, load_dataset

    loaded = data if isinstance(data, LoadedData) else load_dataset(data)
    if ability is None:
        ability = loaded.metadata.get("ability", "uniform")
    return loaded, get_analysis("structural").problem(loaded, ability)


def pilot_estimates(config, priors, data, ability: str):
    """The pilot of ``condition_on_data`` (``classsize.model.pilot.pilot_estimates``), as numpy arrays.

    Returns ``(pilot, free)``, ``pilot`` with numpy arrays, ``free`` the indices of the free
    score effects (in ``SCORE_EFFECTS``).
    """
    jax = _jax()
    from classsize.model.pilot import SCORE_EFFECTS, pinned
    from classsize.model.pilot import pilot_estimates as numpyro_pilot

    free = tuple(j for j, k in enumerate(SCORE_EFFECTS) if not pinned(priors[k]))
    pilot = numpyro_pilot(config, priors, data, ability)
    return jax.tree.map(lambda a: np.asarray(a), pilot), free


# -------------------------------------------------------- NumPyro pieces in PyTensor
def _prior_logp(prior, x):
    """``prior.log_prob(x)`` (NumPyro's formula, constants included), summed over event dims."""
    import pytensor.tensor as pt
    import numpyro.distributions as dist

    if isinstance(prior, dist.Independent):
        return pt.sum(_prior_logp(prior.base_dist, x))
    if isinstance(prior, dist.LogNormal):  # Normal(log x) - log x
        lx = pt.log(x)
        return _normal_logp(lx, float(prior.loc), float(prior.scale)) - lx
    if isinstance(prior, dist.Normal):
        return _normal_logp(x, np.asarray(prior.loc), np.asarray(prior.scale))
    if isinstance(prior, dist.Beta):
        a, b = float(prior.concentration1), float(prior.concentration0)
        norm = float(np.sum([_gammaln(a), _gammaln(b)]) - _gammaln(a + b))
        return pt.log(x) * (a - 1.0) + pt.log(1.0 - x) * (b - 1.0) - norm
    if isinstance(prior, dist.Dirichlet):
        c = np.asarray(prior.concentration, dtype=float)
        norm = float(np.sum([_gammaln(ci) for ci in c]) - _gammaln(c.sum()))
        return pt.sum(pt.log(x) * (c - 1.0)) - norm
    raise NotImplementedError(f"no PyTensor port of the prior {type(prior).__name__}")


def _gammaln(a: float) -> float:
    from scipy.special import gammaln

    return float(gammaln(a))


def _normal_logp(x, loc, scale):
    loc, scale = np.asarray(loc, dtype=float), np.asarray(scale, dtype=float)
    return -0.5 * ((x - loc) / scale) ** 2 - np.log(np.sqrt(2 * np.pi) * scale)


def _clipped_expit(x):
    import pytensor.tensor as pt

    fi = np.finfo(np.float64)
    return pt.clip(pt.sigmoid(x), fi.tiny, 1.0 - fi.eps)


def _transform(prior):
    """``(forward, log_abs_det_jacobian)`` of ``biject_to(prior.support)``, as NumPyro defines them."""
    import pytensor.tensor as pt
    import numpyro.distributions as dist
    from numpyro.distributions import transforms as T

    t = dist.biject_to(prior.support)
    if isinstance(t, T.IdentityTransform):
        return (lambda u: u), (lambda u, y: pt.zeros_like(u))
    if isinstance(t, T.ExpTransform):
        return pt.exp, (lambda u, y: u)
    if isinstance(t, T.SigmoidTransform):
        return _clipped_expit, (lambda u, y: -pt.softplus(u) - pt.softplus(-u))
    if isinstance(t, T.StickBreakingTransform):

        def forward(u):
            m = u.type.shape[-1]
            x = u - np.log(m - np.arange(m))
            z = _clipped_expit(x)
            z1m_cumprod = pt.cumprod(1.0 - z, axis=-1)
            z_padded = pt.concatenate([z, pt.ones((1,))])
            shifted_cumprod = pt.concatenate([pt.ones((1,)), z1m_cumprod])
            return z_padded * shifted_cumprod

        def ladj(u, y):
            m = u.type.shape[-1]
            x = u - np.log(m - np.arange(m))
            return pt.sum(pt.log(y[:-1]) + (-pt.softplus(-x) - x))

        return forward, ladj
    raise NotImplementedError(f"no PyTensor port of the transform {type(t).__name__}")


def _centred(name, prior, loc, scale):
    """Port of ``conditioned._centred``: ``x = T(loc + scale * xi)`` with ``xi`` = flat site ``name_std``."""
    import pymc as pm
    import pytensor.tensor as pt
    import numpyro.distributions as dist

    from classsize.model.pilot import pinned

    if pinned(prior):
        return pt.as_tensor_variable(np.asarray(prior.v, dtype=float))
    shape = tuple(dist.biject_to(prior.support).inverse_shape(prior.shape()))
    forward, ladj = _transform(prior)
    xi = pm.Flat(f"{name}_std", shape=shape)
    if shape:
        xi = pt.specify_shape(xi, shape)
    loc = np.broadcast_to(np.asarray(loc, dtype=float), shape)
    scale = np.broadcast_to(np.asarray(scale, dtype=float), shape)
    u = loc + scale * xi
    value = forward(u)
    log_density = pt.sum(_prior_logp(prior, value)) + pt.sum(ladj(u, value))
    pm.Potential(f"{name}_density", log_density + float(np.sum(np.log(scale))))
    return value


def _group_index(groups, n: int):
    """The pilot's group layout (:class:`~classsize.model.groups.Groups`, one row per group
    by ``Groups.rows``) as ``(n_groups, width)`` indices with padding replaced by ``n`` (the
    position of a pad value appended to the array).  Padding with a pad value rather than a
    repeated member keeps the gradient of max/min exact (PyTensor's Max gradient goes to
    every entry equal to the maximum)."""
    members, valid = groups.rows()
    idx = np.where(valid, members.astype(np.int64), n)
    return idx, valid.sum(axis=1)


def _segment_max(x, idx):
    import pytensor.tensor as pt

    return pt.max(pt.concatenate([x, pt.as_tensor_variable(np.array([-np.inf]))])[idx], axis=1)


def _segment_min(x, idx):
    import pytensor.tensor as pt

    return pt.min(pt.concatenate([x, pt.as_tensor_variable(np.array([np.inf]))])[idx], axis=1)


def _ndtr(z):
    import pytensor.tensor as pt

    return 0.5 * pt.erfc(-z / np.sqrt(2.0))


# ---------------------------------------------------------------------- the model
def build_pymc_model(data_dir, ability: str | None = None):
    """``(model, info)``: the PyMC port of the structural analysis of the data in ``data_dir``
    (a folder, or a ``LoadedData`` from ``classsize.inference.data.read.load_dataset``).

    ``info`` holds ``students``, ``ability``, ``free_sites`` (the flat sites, NumPyro's names),
    ``pilot`` (numpy), ``problem`` (the NumPyro problem) and ``build_seconds``.
    """
    start = time.perf_counter()
    _pytensor()
    import pymc as pm
    import pytensor.tensor as pt
    import numpyro.distributions as dist

    from classsize.model.conditioned import P_FLOOR, SCORE_WEIGHTS
    from classsize.model.pilot import SCORE_EFFECTS, pinned, prior_variance

    loaded, problem = load_structural(data_dir, ability)
    config, priors, obs, ability = problem.design, problem.priors, problem.observed, problem.ability
    if ability not in ("uniform", "normal"):
        raise ValueError(f"ability must be 'uniform' or 'normal', got {ability!r}")
    uniform = ability == "uniform"
    for name in SCORE_WEIGHTS:
        if not pinned(priors[name]):
            raise NotImplementedError(f"the port assumes {name} is pinned (a Delta prior), as default_priors has it")
    pilot, free = pilot_estimates(config, priors, obs, ability)

    d = {k: (None if v is None else np.asarray(v)) for k, v in obs._asdict().items()}
    n_schools, n_races = config.n_schools, len(config.race_codes)
    n = d["test_score"].shape[0]
    y = d["test_score"].astype(float)
    income = d["income_scaled"].astype(float)
    race = d["race"].astype(np.int64)
    small = d["small_class"].astype(np.int64)
    is_exp = d["is_experimental"].astype(bool)
    student_ma = pilot.student_ma.astype(float)
    student_school = pilot.student_school.astype(np.int64)
    has_constraint, has_cap = pilot.has_constraint.astype(bool), pilot.has_cap.astype(bool)
    extra = d.get("extra_covariates") is not None and d["extra_covariates"].shape[-1] > 0
    school_idx, school_count = _group_index(pilot.schools, n)
    if np.any(school_count == 0):
        raise ValueError("a school without students: the NumPyro model's density is not finite there")
    small_idx, _ = _group_index(pilot.small_by_race, n)  # SMALL REGULAR students of each race
    large_idx, _ = _group_index(pilot.large_by_race, n)  # LARGE REGULAR students of each race
    beta_a = float(priors["score_ability_weight"].v)
    beta_s = float(priors["score_school_weight"].v)
    effect_priors = [priors[k] for k in SCORE_EFFECTS]
    alpha_prior, shift_prior = priors["regular_small_intercept"], priors["regular_small_race_shift"]
    slope_priors = (priors["regular_small_income"], priors["regular_small_ability"])

    with pm.Model() as model:
        # ---- parameters informed by counts alone
        p = {
            "race_probs": _centred("race_probs", priors["race_probs"], *pilot.race_probs),
            "experimental_p_small": _centred("experimental_p_small", priors["experimental_p_small"],
                                             *pilot.experimental_p_small),
            "p_ma_small": _centred("p_ma_small", priors["p_ma_small"], *pilot.p_ma_small),
            "p_ma_large": _centred("p_ma_large", priors["p_ma_large"], *pilot.p_ma_large),
        }

        # ---- score effects, and r_i = U_i + b_k(i) in ability units
        effects = {}
        for j, name in enumerate(SCORE_EFFECTS):
            loc, scale = (pilot.effects[free.index(j)], pilot.effect_scales[free.index(j)]) if j in free else (0.0, 1.0)
            effects[name] = _centred(name, effect_priors[j], loc, scale)
        covariate_term = 0.0
        if extra:
            q = d["extra_covariates"].shape[-1]
            eta_prior = priors.get("extra_covariate_weights", dist.Normal(np.zeros(q), 10.0).to_event(1))
            eta = _centred("extra_covariate_weights", eta_prior, pilot.effects[len(free):], pilot.effect_scales[len(free):])
            covariate_term = pt.dot(d["extra_covariates"].astype(float), eta)
        r = (
            (y - effects["small_class_direct_effect"] * small - effects["teacher_ma_effect"] * student_ma) / beta_a
            - effects["ability_income_weight"] * income
            - covariate_term
        )

        # ---- width W of ability's uniform part and school levels b_k (ability units)
        z = pt.specify_shape(pm.Flat("school_position", shape=(n_schools,)), (n_schools,))
        if uniform:
            lo = _segment_min(r, school_idx)
            hi = _segment_max(r, school_idx)
            spread = hi - lo
            v = pm.Flat("ability_uniform_width_excess")
            width = pt.max(spread) + float(pilot.width_unit) * pt.exp(v)
            base = hi - width + (width - spread) * _ndtr(z)
            log_jacobian = np.log(pilot.width_unit) + v + pt.sum(pt.log(width - spread) - 0.5 * z * z)
            log_jacobian = log_jacobian + _prior_logp(priors["ability_uniform_width"], width)
        else:
            width = _centred("ability_uniform_width", priors["ability_uniform_width"], *pilot.width)
            base = pilot.levels + pilot.level_scales * z
            log_jacobian = float(np.sum(np.log(pilot.level_scales)))
        level = beta_a * base
        log_jacobian = log_jacobian + n_schools * np.log(beta_a)

        # ---- intercept c and school-effect range R, given the levels
        half_range = (pt.max(level) - pt.min(level)) / 2.0
        midpoint = (pt.max(level) + pt.min(level)) / 2.0
        t = pm.Flat("school_effect_range_excess")
        s = pm.Flat("score_intercept_position")
        excess = float(pilot.range_unit) * pt.exp(t)
        effect_range = half_range / beta_s + excess
        intercept = midpoint + beta_s * excess * (2.0 * _ndtr(s) - 1.0)
        log_jacobian = log_jacobian + 2.0 * (np.log(pilot.range_unit) + t) + np.log(2.0 * beta_s) - 0.5 * s * s
        log_prior = (
            _prior_logp(priors["school_effect_range"], effect_range)
            + _prior_logp(priors["score_intercept"], intercept)
            # sum_k Uniform(-R, R).log_prob(e_k) = K * -log(2R) (NumPyro's Uniform has no support check)
            - n_schools * pt.log(effect_range - (-effect_range))
            - n_schools * np.log(beta_s)
        )
        pm.Potential("reparameterisation", log_jacobian + log_prior)
        ability_uniform = r - base[student_school]

        # ---- the REGULAR cohort's assignment rule
        coef, coef_scale = pilot.assignment
        p["regular_small_income"] = _centred("regular_small_income", slope_priors[0], coef[n_races], coef_scale[n_races])
        p["regular_small_ability"] = _centred("regular_small_ability", slope_priors[1], coef[n_races + 1],
                                              coef_scale[n_races + 1])
        if pinned(shift_prior):
            sv = np.asarray(shift_prior.v, dtype=float)
            alpha = _centred("regular_small_intercept", alpha_prior, np.mean(coef[:n_races] - sv),
                             np.sqrt(np.mean(coef_scale[:n_races] ** 2) / n_races))
            shift = pt.as_tensor_variable(sv)
        else:
            alpha_sd = float(np.sqrt(np.asarray(prior_variance(alpha_prior))))
            alpha = _centred("regular_small_intercept", alpha_prior, np.mean(coef[:n_races]) * n_races / (n_races + 1.0),
                             (alpha_sd if alpha_sd > 0 else 1.0) / np.sqrt(n_races + 1.0))
            xi = pt.specify_shape(pm.Flat("regular_small_race_position", shape=(n_races,)), (n_races,))
            linear = p["regular_small_income"] * income + p["regular_small_ability"] * ability_uniform
            lowest = pt.switch(has_constraint, _segment_min(linear, small_idx), 0.0)
            # the LARGE students of the REGULAR cohort bound the intercept from above (P(SMALL) < 1)
            highest = pt.switch(has_cap, _segment_max(linear, large_idx), 0.0)  # guards the -inf of races without any
            two_sided = has_constraint & has_cap
            floor = -lowest
            window = pt.switch(two_sided, pt.maximum(1.0 - highest - floor, 1e-9), 1.0)
            step = pilot.log_p_min_scale * xi
            eta = np.log(pilot.p_min) - pt.log(window) + step
            # exp only where it is used, so a large step in another branch cannot make a 0 * inf gradient
            one_sided = pilot.p_min * pt.exp(pt.switch(two_sided | ~has_constraint, 0.0, step))
            race_intercept = pt.switch(
                has_constraint,
                floor + pt.switch(two_sided, window * pt.sigmoid(eta), one_sided),
                coef[:n_races] + coef_scale[:n_races] * xi,
            )
            shift = race_intercept - alpha
            log_sigmoid = lambda x: -pt.softplus(-x)  # noqa: E731
            log_jacobian = pt.switch(
                two_sided,
                pt.log(window * pilot.log_p_min_scale) + log_sigmoid(eta) + log_sigmoid(-eta),
                pt.switch(has_constraint, np.log(pilot.p_min * pilot.log_p_min_scale) + step,
                          np.log(coef_scale[:n_races])),
            )
            pm.Potential("race_reparameterisation", pt.sum(log_jacobian) + _prior_logp(shift_prior, shift))
        p["regular_small_intercept"], p["regular_small_race_shift"] = alpha, shift

        # ---- observed terms
        race_counts = np.bincount(race, minlength=n_races).astype(float)
        pm.Potential("race", pt.sum(race_counts * pt.log(p["race_probs"])))
        rule = (
            p["regular_small_intercept"]
            + p["regular_small_income"] * income
            + p["regular_small_race_shift"][race]
            + p["regular_small_ability"] * ability_uniform
        )
        p_small = pt.clip(pt.switch(is_exp, p["experimental_p_small"], rule), 0.0, 1.0)
        p_small = pt.clip(p_small, P_FLOOR, 1.0 - P_FLOOR)
        pm.Potential("small_class", pt.sum(pt.switch(small == 1, pt.log(p_small), pt.log1p(-p_small))))
        if uniform:
            # Uniform(location, location + beta_a W).log_prob(y) = -log(beta_a W) for each student
            pm.Potential("test_score", -n * pt.log(beta_a * width))
        else:
            sd = beta_a * width / np.sqrt(12.0)
            mean = (y - beta_a * ability_uniform) + beta_a * width / 2.0
            pm.Potential("test_score", pt.sum(-0.5 * ((y - mean) / sd) ** 2 - pt.log(np.sqrt(2 * np.pi) * sd)))
        used = d["class_used"].astype(bool)
        slot_small = d["class_is_small"].astype(np.int64) == 1
        ma = d["teacher_has_ma"].astype(np.int64) == 1
        counts = {k: float(np.sum(used & m)) for k, m in {
            "s1": slot_small & ma, "s0": slot_small & ~ma, "l1": ~slot_small & ma, "l0": ~slot_small & ~ma}.items()}
        fi = np.finfo(np.float64)
        ps = pt.clip(p["p_ma_small"], fi.tiny, 1.0 - fi.eps)
        pl = pt.clip(p["p_ma_large"], fi.tiny, 1.0 - fi.eps)
        pm.Potential("teacher_has_ma", counts["s1"] * pt.log(ps) + counts["s0"] * pt.log1p(-ps)
                     + counts["l1"] * pt.log(pl) + counts["l0"] * pt.log1p(-pl))
        # school ~ Categorical(1/K) for every used class: a constant, kept so the densities agree exactly
        school_term = float(np.sum(used)) * float(np.log(np.float64(1.0) / n_schools))
        pm.Potential("school", pt.as_tensor_variable(np.float64(school_term)))

        # ---- estimands
        direct = pm.Deterministic("small_class_direct_effect", effects["small_class_direct_effect"])
        ma_effect = pm.Deterministic("teacher_ma_effect", effects["teacher_ma_effect"])
        pm.Deterministic("small_class_total_effect", direct + ma_effect * (p["p_ma_small"] - p["p_ma_large"]))

    info = {
        "students": int(n),
        "ability": ability,
        "free_sites": [v.name for v in model.value_vars],
        "pilot": pilot,
        "problem": problem,
        "build_seconds": time.perf_counter() - start,
    }
    return model, info


# ------------------------------------------------------------------------ the check
def _numpyro_site_names(problem):
    """The sampled (non-observed) sites of the NumPyro model with their shapes."""
    import jax
    import numpyro

    def zeros(site):  # the flat (ImproperUniform) sites cannot be sampled: put them at zero
        if site["type"] == "sample" and not site["is_observed"]:
            return np.zeros(site["fn"].shape())
        return None

    model = numpyro.handlers.substitute(numpyro.handlers.seed(problem.model, jax.random.PRNGKey(0)), substitute_fn=zeros)
    tr = numpyro.handlers.trace(model).get_trace(**problem.inputs)
    return {k: tuple(np.shape(s["value"])) for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}


def check_log_density(data_dir, n_points: int = 5, seed: int = 0, ability: str | None = None,
                      rtol: float = 1e-9, radius: float = 2.0) -> bool:
    """Compare the PyMC model's log density and gradient with NumPyro's at random points.

    NumPyro's side is ``numpyro.infer.util.log_density(problem.model, (), problem.inputs, point)``.
    Points: the zero point and ``n_points - 1`` draws uniform on (-radius, radius) in every
    coordinate (NumPyro's ``init_to_uniform`` region).  Passes when the log densities differ by
    the same constant at every point (to ``rtol`` relative to the log density), the gradients
    agree (to ``rtol`` relative to their size), the estimands agree, and the pilot the PyMC
    model was built from equals the one the NumPyro problem carries.  Prints a table.
    """
    jax = _jax()
    import jax.numpy as jnp
    from numpyro.infer.util import log_density

    model, info = build_pymc_model(data_dir, ability)
    problem = info["problem"]
    names = info["free_sites"]
    sites = _numpyro_site_names(problem)
    ok = True
    if set(sites) != set(names):
        print(f"site mismatch: NumPyro {sorted(sites)}, PyMC {sorted(names)}")
        return False
    shapes = {v.name: tuple(model.initial_point()[v.name].shape) for v in model.value_vars}
    for k in names:
        if shapes[k] != sites[k]:
            print(f"shape mismatch at {k}: NumPyro {sites[k]}, PyMC {shapes[k]}")
            return False

    numpyro_pilot = jax.tree.leaves(jax.tree.map(np.asarray, problem.inputs["pilot"]))
    same_pilot = all(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
                     for a, b in zip(numpyro_pilot, jax.tree.leaves(info["pilot"])))
    print(f"pilot identical to the NumPyro problem's: {same_pilot}")
    ok &= same_pilot

    def logp(params):
        lp, tr = log_density(problem.model, (), problem.inputs, params)
        det = {k: tr[k]["value"] for k in ("small_class_direct_effect", "teacher_ma_effect", "p_ma_small", "p_ma_large")}
        return lp, det

    value_and_grad = jax.jit(jax.value_and_grad(logp, has_aux=True))

    logp_fn = model.compile_logp()
    dlogp_fn = model.compile_dlogp()
    det_fn = model.compile_fn(
        model.replace_rvs_by_values([model[k] for k in ESTIMANDS]), inputs=model.value_vars, on_unused_input="ignore")
    rng = np.random.default_rng(seed)
    points = []
    for i in range(n_points):
        points.append({k: (np.zeros(shapes[k]) if i == 0 else rng.uniform(-radius, radius, shapes[k])) for k in names})

    rows = []
    for pt_ in points:
        (lp_np, det_np), g_np = value_and_grad({k: jnp.asarray(v) for k, v in pt_.items()})
        lp_pm = float(logp_fn(pt_))
        g_pm = np.asarray(dlogp_fn(pt_))
        g_np_flat = np.concatenate([np.ravel(np.asarray(g_np[k])) for k in names])
        est_pm = dict(zip(ESTIMANDS, [float(x) for x in det_fn(pt_)]))
        d_np = {k: float(v) for k, v in det_np.items()}
        est_np = {"small_class_direct_effect": d_np["small_class_direct_effect"],
                  "teacher_ma_effect": d_np["teacher_ma_effect"],
                  "small_class_total_effect": d_np["small_class_direct_effect"]
                  + d_np["teacher_ma_effect"] * (d_np["p_ma_small"] - d_np["p_ma_large"])}
        rows.append({
            "lp_numpyro": float(lp_np), "lp_pymc": lp_pm, "diff": lp_pm - float(lp_np),
            "grad_abs": float(np.max(np.abs(g_pm - g_np_flat))),
            "grad_rel": float(np.max(np.abs(g_pm - g_np_flat)) / max(1.0, np.max(np.abs(g_np_flat)))),
            "estimand_abs": max(abs(est_pm[k] - est_np[k]) for k in ESTIMANDS),
        })
    const = float(np.median([r["diff"] for r in rows]))
    print(f"{'point':>5} {'NumPyro log density':>22} {'PyMC log density':>22} {'PyMC - NumPyro':>15} "
          f"{'- constant':>11} {'rel':>9} {'grad max|d|':>11} {'grad rel':>9} {'estimands':>9}")
    worst_rel = worst_grad = worst_est = 0.0
    for i, r in enumerate(rows):
        dev = r["diff"] - const
        rel = abs(dev) / max(1.0, abs(r["lp_numpyro"]))
        finite = np.isfinite(r["lp_numpyro"]) and np.isfinite(r["lp_pymc"])
        worst_rel = max(worst_rel, rel if finite else np.inf)
        worst_grad = max(worst_grad, r["grad_rel"])
        worst_est = max(worst_est, r["estimand_abs"])
        print(f"{i:5d} {r['lp_numpyro']:22.10f} {r['lp_pymc']:22.10f} {r['diff']:15.3e} {dev:11.2e} {rel:9.1e} "
              f"{r['grad_abs']:11.2e} {r['grad_rel']:9.1e} {r['estimand_abs']:9.1e}")
    max_abs_dev = max(abs(r["diff"] - const) for r in rows)
    passed = ok and worst_rel <= rtol and worst_grad <= rtol and worst_est <= 1e-8
    print(f"constant (median PyMC - NumPyro): {const:.6e}; max |difference - constant| {max_abs_dev:.3e} "
          f"(relative {worst_rel:.1e}); max gradient difference relative {worst_grad:.1e}; "
          f"max estimand difference {worst_est:.1e}; tolerance {rtol:g}")
    print(f"check {'PASSED' if passed else 'FAILED'} ({info['students']} students, {len(names)} sites, "
          f"{sum(int(np.prod(shapes[k])) for k in names)} coordinates, ability {info['ability']})")
    return bool(passed)


# -------------------------------------------------------------------------- the fit
def _peak_rss_mb() -> dict:
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": self_mb, "children": children_mb}


def initial_values(model, chains: int, seed: int, init: str = "numpyro", radius: float = 2.0):
    """Per-chain initial values: NumPyro's ``init_to_uniform`` (uniform on (-radius, radius) in
    every coordinate), or zeros."""
    rng = np.random.default_rng([seed, 20240])
    ip = model.initial_point()
    out = []
    for _ in range(chains):
        if init == "numpyro":
            out.append({v.name: rng.uniform(-radius, radius, np.shape(ip[v.name])) for v in model.value_vars})
        else:
            out.append({v.name: np.zeros(np.shape(ip[v.name])) for v in model.value_vars})
    return out


def fit_pymc(data_dir, chains: int | None = None, warmup: int | None = None, samples: int | None = None,
             seed: int = 0, cores: int = 2, init: str = "numpyro", ability: str | None = None,
             sampler: str = "pymc") -> dict:
    """Fit the PyMC port with PyMC's NUTS; the figures ``bench/fit_bench.py`` reports for NumPyro.

    ``fit_seconds``: wall time from the start of the model build (the pilot, the graph) to
    the draws being available (PyTensor's compilation included), with the data loaded and
    the libraries imported before the clock starts, as ``fit``'s own timer (``run_mcmc``)
    has it; ``load_seconds`` (not in ``fit_seconds``) loading the data; ``build_seconds``
    the model build; ``compile_seconds`` compiling the log density and its gradient
    (``init_nuts``); ``sample_seconds`` the rest (``pm.sample``: the deterministics'
    function, the worker processes, warm-up and draws).  PyTensor caches compiled C code
    in its compile directory, so a second run compiles faster than a first: run with
    ``--fresh-compiledir`` (the ``__main__``) to count a cold compilation, as JAX, without a
    persistent cache, pays it on every run.
    ``init``: ``"numpyro"`` (default: each chain starts uniform on (-2, 2) in every
    coordinate, NumPyro's ``init_to_uniform``, with ``adapt_diag``), ``"zero"`` (every
    chain at zero, ``adapt_diag``), ``"pymc"`` (PyMC's default: zero + ``jitter+adapt_diag``).
    ``sampler="nutpie"``: nutpie (numba backend, its own initialisation) samples the same model;
    ``compile_seconds`` is then ``nutpie.compile_pymc_model``.  Chain lengths default to ``fit``'s.
    """
    defaults = fit_defaults()
    chains = defaults["chains"] if chains is None else chains
    warmup = defaults["warmup"] if warmup is None else warmup
    samples = defaults["samples"] if samples is None else samples
    import arviz as az

    _pytensor()
    import pymc  # noqa: F401  (imported before the clock starts)

    from classsize.inference.data.read import load_dataset

    # like fit()'s timer (run_mcmc), the clock starts with the data loaded and the libraries imported
    t_load = time.perf_counter()
    loaded = load_dataset(data_dir)
    start = time.perf_counter()
    model, info = build_pymc_model(loaded, ability)
    built = time.perf_counter()
    if init == "pymc":
        nuts_init, initvals = "jitter+adapt_diag", None
    elif init in ("numpyro", "zero"):
        nuts_init, initvals = "adapt_diag", initial_values(model, chains, seed, init)
    else:
        raise ValueError(f"init must be 'numpyro', 'zero' or 'pymc', got {init!r}")
    if sampler == "nutpie":
        import nutpie

        compiled_model = nutpie.compile_pymc_model(model)
        compiled = time.perf_counter()
        idata = nutpie.sample(compiled_model, draws=samples, tune=warmup, chains=chains, cores=cores, seed=seed,
                              progress_bar=False)
    else:
        compiled, idata = _pymc_sample(model, chains, warmup, samples, seed, cores, nuts_init, initvals)
    done = time.perf_counter()
    seconds = done - start
    post = idata.posterior
    ess = {k: float(az.ess(post[k].values, method="bulk")) for k in ESTIMANDS}
    r_hat = {k: float(az.rhat(post[k].values)) if chains > 1 else float("nan") for k in ESTIMANDS}
    # as fit()'s diagnostics["max_r_hat"]: over every stored variable (the flat coordinates and the estimands)
    # ArviZ 1 returns a DataTree node: its dataset, stacked into one array
    r_hat_all = float(np.nanmax(az.rhat(post).to_dataset().to_dataarray().values)) if chains > 1 else float("nan")
    stats = idata.sample_stats
    rss = _peak_rss_mb()
    out = {
        "model": "structural (PyMC)" if sampler == "pymc" else "structural (PyMC model, nutpie)",
        "students": info["students"],
        "chains": chains,
        "warmup": warmup,
        "samples": samples,
        "fit_seconds": seconds,
        "load_seconds": start - t_load,
        "build_seconds": built - start,
        "compile_seconds": compiled - built,
        "sample_seconds": done - compiled,
        "divergences": int(np.asarray(stats["diverging"]).sum()),
        "max_r_hat": float(np.nanmax(list(r_hat.values()))) if chains > 1 else float("nan"),
        "r_hat": r_hat,
        "max_r_hat_all_variables": r_hat_all,
        "ess_bulk": ess,
        "ess_per_second": {k: v / seconds for k, v in ess.items()},
        "mean": {k: float(post[k].values.mean()) for k in ESTIMANDS},
        "sd": {k: float(post[k].values.std(ddof=1)) for k in ESTIMANDS},
        "mean_leapfrog_steps": float(np.asarray(stats["n_steps"]).mean()),
        "max_tree_depth_draws": int(np.sum(np.asarray(stats[_first(stats, "reached_max_treedepth", "maxdepth_reached")]))),
        "step_size": [float(x) for x in np.asarray(stats["step_size"])[:, -1]],
        "sampler": sampler,
        "init": init if sampler == "pymc" else "nutpie",
        "cores": cores,
        "peak_rss_mb": rss["self"] + rss["children"],
        "peak_rss_self_mb": rss["self"],
        "peak_rss_children_mb": rss["children"],
        "versions": _versions(),
    }
    return out


def _pymc_sample(model, chains, warmup, samples, seed, cores, nuts_init, initvals):
    """``(time compiled, idata)``: PyMC's NUTS, each chain started at ``initvals``."""
    import pymc as pm
    from pymc.util import get_random_generator

    # the seeds pm.sample derives from random_seed, so that init_nuts + pm.sample(step=...) is
    # pm.sample(init=..., initvals=..., random_seed=seed)
    seeds = [int(rng.integers(2**30)) for rng in get_random_generator(seed).spawn(chains)]
    with model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*os.fork\\(\\) was called.*")
        initial_points, step = pm.init_nuts(init=nuts_init, chains=chains, model=model, random_seed=seeds,
                                            initvals=initvals, progressbar=False, target_accept=0.8)
        compiled = time.perf_counter()
        # PyMC 6 picks nutpie when it can: say which NUTS is meant (the step above is PyMC's)
        idata = pm.sample(draws=samples, tune=warmup, chains=chains, cores=cores, random_seed=seed, step=step,
                          initvals=initial_points, progressbar=False, compute_convergence_checks=False,
                          nuts_sampler="pymc")
    return compiled, idata


def _first(stats, *names):
    return next(n for n in names if n in stats)


def _versions() -> dict:
    import importlib.metadata as md

    names = ("pymc", "pytensor", "nutpie", "numpyro", "jax", "arviz", "numpy")
    out = {}
    for k in names:
        try:
            out[k] = md.version(k)
        except md.PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("--check", action="store_true", help="compare log densities with NumPyro and exit 0/1")
    p.add_argument("--points", type=int, default=5, help="--check: number of points (the first is zero)")
    p.add_argument("--radius", type=float, default=2.0, help="--check: points uniform on (-radius, radius)")
    p.add_argument("--rtol", type=float, default=1e-9, help="--check: relative tolerance")
    p.add_argument("--chains", type=int, default=None, help="default: classsize.inference.fit.result.fit's")
    p.add_argument("--warmup", type=int, default=None, help="default: fit's")
    p.add_argument("--samples", type=int, default=None, help="default: fit's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--init", choices=["numpyro", "zero", "pymc"], default="numpyro")
    p.add_argument("--sampler", choices=["pymc", "nutpie"], default="pymc")
    p.add_argument("--ability", choices=["uniform", "normal"], default=None)
    p.add_argument("--fresh-compiledir", action="store_true",
                   help="compile into a new, empty PyTensor compile directory (a cold compilation)")
    a = p.parse_args(argv)
    fresh = None
    if a.fresh_compiledir:
        if "pytensor" in sys.modules:
            raise RuntimeError("--fresh-compiledir must be set before PyTensor is imported")
        import atexit
        import shutil
        import tempfile

        fresh = tempfile.mkdtemp(prefix="pytensor-compiledir-")
        # registered before PyTensor is imported, so it runs after PyTensor's own exit handlers
        atexit.register(shutil.rmtree, fresh, ignore_errors=True)
        flags = os.environ.get("PYTENSOR_FLAGS", "")
        os.environ["PYTENSOR_FLAGS"] = (flags + "," if flags else "") + f"base_compiledir={fresh}"
    return _run(a, fresh)


def _run(a, fresh) -> int:
    if a.check:
        ok = check_log_density(a.data_dir, n_points=a.points, seed=a.seed, ability=a.ability, radius=a.radius,
                               rtol=a.rtol)
        print(json.dumps({"check": ok}))
        return 0 if ok else 1
    result = fit_pymc(a.data_dir, chains=a.chains, warmup=a.warmup, samples=a.samples, seed=a.seed,
                      cores=a.cores, init=a.init, ability=a.ability, sampler=a.sampler)
    result["fresh_compiledir"] = fresh is not None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
