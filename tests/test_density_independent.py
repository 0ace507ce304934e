"""The conditioned density is the forward model's, checked from the forward model alone.

The conditioned model (:mod:`classsize.model.conditioned`) samples in coordinates
``z`` of its own (pilot-centred, windowed) and marginalises ability analytically.
Here its log density is mapped back to the model's parameters ``theta`` (the race
probabilities less the last, every free scalar, the race shifts, the school effects,
and, where the model has them, the covariate weights, the class effects' sd and the
class effects):

    log p(theta | data) = log p(z) - log |det d theta / d z| + const,

with ``log p(z)`` numpyro's potential energy of the conditioned model and the
Jacobian of the map ``z -> theta`` taken by automatic differentiation of the values
the conditioned model records (not from the log-Jacobian terms it adds).  The same
quantity is computed from :func:`classsize.model.class_size_experiment` run forward,
every site substituted (``numpyro.handlers.substitute``/``trace``), with each
student's ability part integrated out by brute force.  The assignment rule is written
out here (:func:`p_small`, from :class:`~classsize.model.Config`'s statement of it), not
read from the forward model's ``small_class`` site, whose helpers the conditioned model
shares; the forward model's probabilities are checked against it.

* noise-free scores: the score is a Delta at a linear function of ability, so the
  integral is the change of variables ability -> score: the ability that gives the
  observed score, read off the forward model's score site at ability 0 and 1, with
  the Jacobian ``1 / |d score / d ability|``; for uniform ability that ability must
  lie in [0, W], and the school effects in [-R, R] (the support maps' promise, asserted);
* noisy scores: composite Gauss-Legendre quadrature over [0, W], split where the
  clipped assignment probability meets 0 or 1 (found by bisection on :func:`p_small`)
  and around the score's peak, so each piece is smooth and the rule converges to
  rounding error.

The two must differ by one constant (the income density, which the conditioned
model leaves out) at every random parameter point of the support where every
student's probability of her class size is above 1e-7 (see :func:`_above_floor`), on
tiny datasets (12 students, two schools, both cohorts), for noise-free scores, noise
pinned and noise sampled.  A last test plants a small error in the conditioned
density and checks that the comparison sees it.  :mod:`test_density_classrooms` runs
the same comparison (:func:`discrepancies`) with class effects, covariates, normal
ability and each branch of the race windows.  Deterministic (fixed seeds): no false
alarms.
"""

from __future__ import annotations

from functools import cache, partial
from typing import NamedTuple

import numpy as np
import pytest

#: random points per dataset (sampler coordinates ~ N(0, 0.7^2), the pilot's centre at 0)
N_POINTS = 20
#: largest allowed spread of (conditioned - forward) over the points, in nats
TOLERANCE = 1e-8
#: XLA's options for the compiled comparison
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def _tiny_dataset(noise_sd: float, seed: int):
    """A forward draw of 12 students (6 REGULAR, 6 EXPERIMENTAL) in two schools, the
    first seed from ``seed`` whose draw has students in both schools, SMALL and LARGE
    students in the REGULAR cohort, and class size, MA and income not collinear within
    schools (else the pilot's scales of the score effects, and the random points, are
    huge)."""
    import jax
    from numpyro import handlers

    from classsize.model import Config, class_size_experiment
    from classsize.model.tables import observed_from_draw

    config = Config(n_regular=6, n_experimental=6, n_schools=2, small_class_size=2, large_class_size=3,
                    score_noise_sd=noise_sd)
    for s in range(seed, seed + 200):
        tr = handlers.trace(handlers.seed(class_size_experiment, jax.random.PRNGKey(s))).get_trace(config)
        draw = {k: v["value"] for k, v in tr.items()}
        observed = observed_from_draw(draw, config)
        school = np.asarray(observed.school_of_class)[np.asarray(observed.class_of_student)]
        small = np.asarray(draw["small_class"])[:6]
        columns = np.stack([np.asarray(draw["small_class"]), np.asarray(observed.teacher_has_ma)[
            np.asarray(observed.class_of_student)], np.asarray(observed.income_scaled)], axis=1).astype(float)
        for k in set(school):
            columns[school == k] -= columns[school == k].mean(axis=0)
        if len(set(school)) == 2 and 0 < small.sum() < 6 and np.linalg.cond(columns) < 30:
            return config, draw, observed
    raise AssertionError("no suitable tiny dataset")


def _site_log_prob(site):
    import jax.numpy as jnp

    lp = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None:
        lp = jnp.where(site["mask"], lp, 0.0)
    return lp


STUDENT_SITES = ("ability_uniform", "small_class", "test_score")
#: latent sites of the forward model besides the structural parameters: sampled by the
#: conditioned model in coordinates of its own, so they are part of ``theta``
LATENT_SITES = ("extra_covariate_weights", "class_covariate_weights", "class_effect_sd")


def p_small(params, config, race, income, u):
    """P(SMALL | race, income, ability part ``u``), written out here from the rule that
    :class:`~classsize.model.Config` states (not the model's helpers, which the forward
    and the conditioned model share): REGULAR students ``clip(intercept + income slope
    * s + race shift + ability slope * u, 0, 1)``, ``s`` the scaled log income;
    EXPERIMENTAL students the coin ``experimental_p_small``."""
    import jax.numpy as jnp

    s = (jnp.log(income) - np.log(config.income_min)) / (np.log(config.income_max) - np.log(config.income_min))
    rule = (params["regular_small_intercept"] + params["regular_small_income"] * s
            + params["regular_small_race_shift"][race] + params["regular_small_ability"] * u)
    experimental = np.arange(race.shape[0]) >= config.n_regular
    return jnp.clip(jnp.where(experimental, params["experimental_p_small"], rule), 0.0, 1.0)


def _log_p_small_class(params, config, draw, u):
    import jax.numpy as jnp

    p = p_small(params, config, draw["race"], draw["family_income"], u)
    return jnp.log(jnp.maximum(jnp.where(draw["small_class"] == 1, p, 1.0 - p), 1e-300))


def _forward_log_density(config, priors, draw, params, noisy: bool, nodes: int = 16, ability: str = "uniform",
                         covariates=None, class_covariates=None):
    """log p(theta, data) of the forward model, each student's ability integrated by brute
    force; with its support condition, whether every P(class size | score) is above the
    floor, the implied ability parts (noise-free reading) and how far the forward model's
    own assignment probabilities are from :func:`p_small` (at the implied abilities;
    with noise, at abilities 0 and 1)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from classsize.model import class_size_experiment

    data_sites = {k: jnp.asarray(draw[k]) for k in ("race", "family_income", "small_class", "teacher_has_ma",
                                                    "school", "test_score")}
    y = data_sites["test_score"]
    width = params["ability_uniform_width"]
    forward = partial(class_size_experiment, config, priors, ability=ability, covariates=covariates,
                      class_covariates=class_covariates)

    def trace_at(u):
        sub = {**params, **data_sites, "ability_uniform": u}
        return handlers.trace(handlers.substitute(forward, data=sub)).get_trace()

    base = trace_at(jnp.zeros_like(y))
    rest = sum(jnp.sum(_site_log_prob(s)) for k, s in base.items()
               if s["type"] == "sample" and k not in STUDENT_SITES)
    if "class_effect" in base:  # every class slot's effect is a draw from the prior (the forward model
        site = base["class_effect"]  # masks the slots no class uses: their prior is added here)
        prior = jax.scipy.stats.norm.logpdf(site["value"], 0.0, params["class_effect_sd"])
        rest = rest + jnp.sum(prior) - jnp.sum(_site_log_prob(site))
    support_ok = jnp.all(jnp.abs(params["school_effect"]) <= params["school_effect_range"])
    # the score's location is linear in ability: read it off the forward model at 0 and 1
    location = (lambda fn: fn.v) if not noisy else (lambda fn: fn.loc)
    loc0 = location(base["test_score"]["fn"])
    one = trace_at(jnp.ones_like(y))
    slope = location(one["test_score"]["fn"]) - loc0
    implied = (y - loc0) / slope

    if not noisy:  # change of variables ability -> score
        tr = trace_at(implied)
        log_p_class = _log_p_small_class(params, config, data_sites, implied)
        rule_gap = jnp.max(jnp.abs(tr["small_class"]["fn"].probs - p_small(
            params, config, data_sites["race"], data_sites["family_income"], implied)))
        per_student = _site_log_prob(tr["ability_uniform"]) + log_p_class - jnp.log(jnp.abs(slope))
        if ability == "uniform":
            support_ok = support_ok & jnp.all((implied >= 0) & (implied <= width))
        return rest + jnp.sum(per_student), support_ok, _above_floor(log_p_class), implied, rule_gap

    def probs(u):
        return p_small(params, config, data_sites["race"], data_sites["family_income"], u)

    def switch(indicator):
        """Where ``indicator(probs(u))`` changes on [0, W] (0 when it does not)."""
        at0 = indicator(probs(jnp.zeros_like(y)))
        changes = at0 != indicator(probs(jnp.full_like(y, width)))

        def step(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            same = indicator(probs(mid)) == at0
            return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, step, (jnp.zeros_like(y), jnp.full_like(y, width)))
        return jnp.where(changes, 0.5 * (lo + hi), 0.0)

    tau = params["score_noise_sd"] / jnp.abs(slope)
    n = y.shape[0]
    peaks = implied[:, None] + tau[:, None] * jnp.array([-16., -8., -4., -2., -1., -.5, 0., .5, 1., 2., 4., 8., 16.])
    # geometric cuts towards both ends resolve an integrand that decays fast from an end
    # (a score far outside the uniform's range)
    ends = width * 4.0 ** -jnp.arange(1.0, 16.0)
    cuts = jnp.concatenate([jnp.zeros((n, 1)), jnp.full((n, 1), width), switch(lambda p: p > 0)[:, None],
                            switch(lambda p: p < 1)[:, None], peaks, jnp.broadcast_to(ends, (n, 15)),
                            jnp.broadcast_to(width - ends, (n, 15))], axis=1)
    cuts = jnp.sort(jnp.clip(cuts, 0.0, width), axis=1)
    x, w = np.polynomial.legendre.leggauss(nodes)
    half = 0.5 * (cuts[:, 1:] - cuts[:, :-1])
    mid = 0.5 * (cuts[:, 1:] + cuts[:, :-1])
    u = (mid[:, :, None] + half[:, :, None] * x).reshape(n, -1)
    log_weight = jnp.log((half[:, :, None] * w).reshape(n, -1))

    def integrand(u_column):
        tr = trace_at(u_column)
        score = _site_log_prob(tr["ability_uniform"]) + _site_log_prob(tr["test_score"])
        return score + _log_p_small_class(params, config, data_sites, u_column), score

    joint, score = jax.vmap(integrand, in_axes=1, out_axes=1)(u)
    per_student = jax.scipy.special.logsumexp(joint + log_weight, axis=1)
    log_p_class = per_student - jax.scipy.special.logsumexp(score + log_weight, axis=1)
    rule_gap = jnp.maximum(jnp.max(jnp.abs(base["small_class"]["fn"].probs - probs(jnp.zeros_like(y)))),
                           jnp.max(jnp.abs(one["small_class"]["fn"].probs - probs(jnp.ones_like(y)))))
    return rest + jnp.sum(per_student), support_ok, _above_floor(log_p_class), implied, rule_gap


def _above_floor(log_p_class):
    """Whether every student's P(observed class size | score) is above 1e-7: the
    conditioned likelihood floors it at 1e-12 (``P_FLOOR``), and with noisy scores
    computes it to a few 1e-16 absolute (``expected_clipped_rule``), so below about 1e-8
    its logarithm is not good to the tolerance (a point at 3e-9 was off by 6e-8 nats)."""
    import jax.numpy as jnp

    return jnp.all(log_p_class > jnp.log(1e-7))


class Comparison(NamedTuple):
    """(conditioned - forward) log densities ``d`` at random points, whether each point met
    the support conditions (``ok``) and was above the floor (``above``), per point
    values (``aux``), ``(d, ok, above)`` with each planted error (``planted``), and the
    values at the ends of the race windows (``limits``: ``aux`` at one point with every
    ``regular_small_race_position`` at -1000, and at +1000)."""

    d: np.ndarray
    ok: np.ndarray
    above: np.ndarray
    aux: dict
    planted: tuple = ()
    limits: tuple = ()


def discrepancies(config, draw, observed, priors, *, ability="uniform", covariates=None, class_covariates=None,
                  planted=None, sizes=(), n_points=N_POINTS, seed=0) -> Comparison:
    """The :class:`Comparison` at ``n_points`` random points of the conditioned model's
    coordinates; ``aux`` holds per point the race intercepts :math:`\\alpha + \\rho_g`,
    their derivatives along ``regular_small_race_position`` :math:`\\xi_g` (``NaN``
    without that site), the parameters, the implied ability parts and the largest gap
    between the forward model's assignment probabilities and :func:`p_small`.

    ``covariates`` and ``class_covariates`` are the forward model's (per student), ``observed``
    holds them as the conditioned model reads them.  With ``planted(model, size)`` (the
    conditioned model with an error of ``size`` planted in it) the comparison is also
    made at each of ``sizes``, at the same points and compiled once (``size`` is an
    argument; 0 is the model itself)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, potential_energy

    from classsize.model import PARAMETERS, class_size_experiment
    from classsize.model.pieces import noise_free
    from classsize.model.pilot import pilot_estimates, pinned

    pilot = pilot_estimates(config, priors, observed, ability)
    model = partial(class_size_experiment, config, priors, observed, ability=ability, pilot=pilot)
    z0 = _latent_zeros(model)
    flat0, unravel = ravel_pytree(z0)
    free = [k for k in PARAMETERS if not pinned(priors[k])] + [k for k in LATENT_SITES if f"{k}_std" in z0]
    latent = ["school_effect"] + (["class_effect"] if "class_position" in z0 else [])
    xi = "regular_small_race_position"
    position = np.flatnonzero(np.asarray(ravel_pytree(
        {k: jnp.full_like(v, float(k == xi)) for k, v in z0.items()})[0])) if xi in z0 else None
    noisy = not noise_free(priors["score_noise_sd"])

    def theta(values):
        parts = [jnp.ravel(values[k])[:-1] if k == "race_probs" else jnp.ravel(values[k]) for k in free]
        intercepts = values["regular_small_intercept"] + values["regular_small_race_shift"]
        return jnp.concatenate(parts + [jnp.ravel(values[k]) for k in latent]), intercepts

    def mapped(flat, size):
        z = unravel(flat)
        m = model if planted is None else planted(model, size)
        values = constrain_fn(m, (), {}, z, return_deterministic=True)
        t, intercepts = theta(values)
        return (t, intercepts), (-potential_energy(m, (), {}, z), values, intercepts)

    def difference(flat, size):
        (jacobian, d_intercepts), (log_density, values, intercepts) = jax.jacfwd(mapped, has_aux=True)(flat, size)
        sign, log_det = jnp.linalg.slogdet(jacobian)
        params = {k: values[k] for k in PARAMETERS + tuple(latent) + LATENT_SITES if k in values}
        forward, support_ok, above_floor, implied, rule_gap = _forward_log_density(
            config, priors, draw, params, noisy, ability=ability, covariates=covariates,
            class_covariates=class_covariates)
        ok = support_ok & (sign != 0) & (jacobian.shape[0] == jacobian.shape[1])
        slopes = (jnp.diagonal(d_intercepts[:, position]) if position is not None
                  else jnp.full(d_intercepts.shape[0], jnp.nan))
        aux = {"intercepts": intercepts, "slopes": slopes, "implied": implied, "rule_gap": rule_gap, **params}
        return log_density - log_det - forward, ok, above_floor, aux

    # (compiled without LLVM's optimisations: about half the compile time, and rounding
    # differences, if any, far below the tolerance)
    difference = jax.jit(difference).lower(flat0, 0.0).compile(compiler_options=COMPILER_OPTIONS)

    rng = np.random.default_rng(seed)
    points = [jnp.asarray(rng.normal(0.0, 0.7, flat0.shape)) for _ in range(n_points)]

    def at(size, flats=points):
        out = [difference(flat, size) for flat in flats]
        d, ok, above = (np.array([np.asarray(o[j]).item() for o in out]) for j in range(3))
        return d, ok.astype(bool), above.astype(bool), {k: np.stack([np.asarray(o[3][k]) for o in out])
                                                        for k in out[0][3]}

    # the ends of the race windows: the first point with every xi_g at -1000 and at +1000
    limits = () if position is None else tuple(at(0.0, [points[0].at[position].set(v)])[3] for v in (-1e3, 1e3))
    return Comparison(*at(0.0), planted=tuple(at(size)[:3] for size in sizes), limits=limits)


def _latent_zeros(model):
    """Zeros shaped like each latent site of ``model`` (its sites are all on the real line),
    from an abstract trace: nothing runs (``initialize_model`` runs the model eagerly)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    def fill(site):
        return None if site["type"] != "sample" or site["is_observed"] else jnp.zeros(site["fn"].shape())

    def latent():
        tr = handlers.trace(handlers.seed(handlers.substitute(model, substitute_fn=fill), 0)).get_trace()
        return {k: s["value"] for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}

    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(latent))


@cache
def _discrepancies(noise_sd: float, seed: int, free_noise: bool = False) -> Comparison:
    """:func:`discrepancies` on the tiny dataset of ``seed``, with the default priors, and
    with a planted error (:func:`_with_factor`) of size 1e-3."""
    from classsize.model import default_priors
    from classsize.model.pieces import free_noise_prior

    config, draw, observed = _tiny_dataset(noise_sd, seed)
    priors = default_priors(config, config.score_noise_sd)
    if free_noise:
        priors["score_noise_sd"] = free_noise_prior()
    return discrepancies(config, draw, observed, priors, planted=_with_factor, sizes=(1e-3,), seed=seed)


def assert_same_up_to_a_constant(comparison: Comparison, label: str, tolerance: float = None):
    """Every point in the support, finite, two thirds above the floor, the forward model's
    assignment probabilities :func:`p_small`'s, and (conditioned - forward) one constant
    over the points above the floor."""
    tolerance = TOLERANCE if tolerance is None else tolerance
    d, ok, above, aux = comparison[:4]
    assert ok.all(), "a random point of the sampler's coordinates left the support"
    assert np.isfinite(d).all()
    assert np.max(aux["rule_gap"]) < 1e-12, "the forward model's assignment rule is not the one written out here"
    assert above.sum() >= 2 * len(d) // 3
    d = d[above]
    spread = float(np.max(np.abs(d - np.median(d))))
    print(f"{label}: largest discrepancy {spread:.2e} nats over {above.sum()} of {len(above)} points")
    assert spread < tolerance


CASES = [
    pytest.param(0.0, 3, False, id="noise-free"),
    pytest.param(2.0, 5, False, id="noise-2-pinned"),
    pytest.param(2.0, 7, True, id="noise-sampled"),
    pytest.param(0.0, 40, False, id="noise-free-other-data", marks=pytest.mark.slow),
    pytest.param(0.5, 60, False, id="noise-0.5-pinned", marks=pytest.mark.slow),
    pytest.param(5.0, 80, True, id="noise-5-sampled", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("noise_sd, seed, free_noise", CASES)
def test_conditioned_density_is_the_forward_density(noise_sd, seed, free_noise):
    assert_same_up_to_a_constant(_discrepancies(noise_sd, seed, free_noise),
                                 f"noise sd {noise_sd}, sampled {free_noise}")


def _with_factor(model, size):
    """The conditioned model with a small wrong log-Jacobian term, ``size * log W``."""
    import jax.numpy as jnp
    import numpyro
    from numpyro import handlers

    def run(*args, **kwargs):
        tr = handlers.trace(model).get_trace(*args, **kwargs)
        numpyro.factor("planted", size * jnp.log(tr["ability_uniform_width"]["value"]))

    return run


@pytest.mark.parametrize("noise_sd", [2.0, pytest.param(0.0, marks=pytest.mark.slow)])
def test_the_check_sees_a_small_jacobian_error(noise_sd):
    (d, ok, above), = _discrepancies(noise_sd, 3 if noise_sd == 0 else 5, False).planted
    assert ok.all()
    d = d[above]
    assert float(np.max(np.abs(d - np.median(d)))) > 100 * TOLERANCE
