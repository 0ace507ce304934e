"""The conditioned density is the forward model's, checked from the forward model alone.

The conditioned model (:mod:`classsize.model.conditioned`) samples in coordinates
``z`` of its own (pilot-centred, windowed) and marginalises ability analytically.
Here its log density is mapped back to the model's parameters ``theta`` (the race
probabilities less the last, every free scalar, the race shifts and the school
effects):

    log p(theta | data) = log p(z) - log |det d theta / d z| + const,

with ``log p(z)`` numpyro's potential energy of the conditioned model and the
Jacobian of the map ``z -> theta`` taken by automatic differentiation of the values
the conditioned model records (not from the log-Jacobian terms it adds).  The same
quantity is computed from :func:`classsize.model.class_size_experiment` run forward,
every site substituted (``numpyro.handlers.substitute``/``trace``), with each
student's ability part integrated out by brute force:

* noise-free scores: the score is a Delta at a linear function of ability, so the
  integral is the change of variables ability -> score: the ability that gives the
  observed score, read off the forward model's score site at ability 0 and 1, with
  the Jacobian ``1 / |d score / d ability|``; that ability must lie in [0, W] and the
  school effects in [-R, R] (the support maps' promise, asserted);
* noisy scores: composite Gauss-Legendre quadrature over [0, W], split where the
  forward model's clipped assignment probability meets 0 or 1 (found by bisection on
  the forward model's own probabilities) and around the score's peak, so each piece is
  smooth and the rule converges to rounding error.

The two must differ by one constant (the income density, which the conditioned
model leaves out) at every random parameter point of the support, on tiny datasets
(12 students, two schools, both cohorts), for noise-free scores, noise pinned and
noise sampled.  A last test plants a small error in the conditioned density and
checks that the comparison sees it.  Deterministic (fixed seeds): no false alarms.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

#: random points per dataset (sampler coordinates ~ N(0, 0.7^2), the pilot's centre at 0)
N_POINTS = 20
#: largest allowed spread of (conditioned - forward) over the points, in nats
TOLERANCE = 1e-8


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


def _forward_log_density(config, priors, draw, params, noisy: bool, nodes: int = 16):
    """log p(theta, data) of the forward model, each student's ability integrated by brute force."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from classsize.model import class_size_experiment

    data_sites = {k: jnp.asarray(draw[k]) for k in ("race", "family_income", "small_class", "teacher_has_ma",
                                                    "school", "test_score")}
    y = data_sites["test_score"]
    width = params["ability_uniform_width"]

    def trace_at(u):
        sub = {**params, **data_sites, "ability_uniform": u}
        return handlers.trace(handlers.substitute(class_size_experiment, data=sub)).get_trace(config, priors)

    base = trace_at(jnp.zeros_like(y))
    rest = sum(jnp.sum(_site_log_prob(s)) for k, s in base.items()
               if s["type"] == "sample" and k not in STUDENT_SITES)
    support_ok = jnp.all(jnp.abs(params["school_effect"]) <= params["school_effect_range"])
    # the score's location is linear in ability: read it off the forward model at 0 and 1
    location = (lambda fn: fn.v) if not noisy else (lambda fn: fn.loc)
    loc0 = location(base["test_score"]["fn"])
    slope = location(trace_at(jnp.ones_like(y))["test_score"]["fn"]) - loc0
    implied = (y - loc0) / slope

    if not noisy:  # change of variables ability -> score
        tr = trace_at(implied)
        log_p_class = _site_log_prob(tr["small_class"])
        per_student = _site_log_prob(tr["ability_uniform"]) + log_p_class - jnp.log(jnp.abs(slope))
        support_ok = support_ok & jnp.all((implied >= 0) & (implied <= width))
        return rest + jnp.sum(per_student), support_ok, _above_floor(log_p_class)

    def probs(u):
        return trace_at(u)["small_class"]["fn"].probs

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
        return score + _site_log_prob(tr["small_class"]), score

    joint, score = jax.vmap(integrand, in_axes=1, out_axes=1)(u)
    per_student = jax.scipy.special.logsumexp(joint + log_weight, axis=1)
    log_p_class = per_student - jax.scipy.special.logsumexp(score + log_weight, axis=1)
    return rest + jnp.sum(per_student), support_ok, _above_floor(log_p_class)


def _above_floor(log_p_class):
    """Whether every student's P(observed class size | score) is above 1e-10 (the
    conditioned likelihood floors it at 1e-12, see ``P_FLOOR``)."""
    import jax.numpy as jnp

    return jnp.all(log_p_class > jnp.log(1e-10))


def _discrepancies(noise_sd: float, seed: int, free_noise: bool = False, planted=None):
    """(conditioned - forward) log densities at N_POINTS random points, and whether
    each point met the support conditions."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

    from classsize.model import PARAMETERS, class_size_experiment, default_priors
    from classsize.model.pieces import free_noise_prior
    from classsize.model.pilot import pilot_estimates, pinned

    config, draw, observed = _tiny_dataset(noise_sd, seed)
    priors = default_priors(config, config.score_noise_sd)
    if free_noise:
        priors["score_noise_sd"] = free_noise_prior()
    pilot = pilot_estimates(config, priors, observed)
    model = partial(class_size_experiment, config, priors, observed, pilot=pilot)
    if planted is not None:
        model = planted(model)
    z0 = initialize_model(jax.random.PRNGKey(0), model).param_info.z
    flat0, unravel = ravel_pytree(z0)
    free = [k for k in PARAMETERS if not pinned(priors[k])]

    def theta(values):
        parts = [jnp.ravel(values[k])[:-1] if k == "race_probs" else jnp.ravel(values[k]) for k in free]
        return jnp.concatenate(parts + [jnp.ravel(values["school_effect"])])

    def conditioned(flat):
        z = unravel(flat)
        values = constrain_fn(model, (), {}, z, return_deterministic=True)
        return -potential_energy(model, (), {}, z), values

    @jax.jit
    def difference(flat):
        log_density, values = conditioned(flat)
        jacobian = jax.jacfwd(lambda f: theta(conditioned(f)[1]))(flat)
        sign, log_det = jnp.linalg.slogdet(jacobian)
        params = {k: values[k] for k in PARAMETERS}
        params["school_effect"] = values["school_effect"]
        forward, support_ok, above_floor = _forward_log_density(config, priors, draw, params,
                                                                noisy=noise_sd > 0 or free_noise)
        ok = support_ok & (sign != 0) & (jacobian.shape[0] == jacobian.shape[1])
        return log_density - log_det - forward, ok, above_floor

    rng = np.random.default_rng(seed)
    out = [difference(jnp.asarray(rng.normal(0.0, 0.7, flat0.shape))) for _ in range(N_POINTS)]
    d, ok, above = (np.array([np.asarray(o[j]).item() for o in out]) for j in range(3))
    return d, ok.astype(bool), above.astype(bool)


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
    d, ok, above = _discrepancies(noise_sd, seed, free_noise)
    assert ok.all(), "a random point of the sampler's coordinates left the support"
    assert np.isfinite(d).all()
    assert above.sum() >= 2 * N_POINTS // 3
    d = d[above]
    spread = float(np.max(np.abs(d - np.median(d))))
    print(f"noise sd {noise_sd}, sampled {free_noise}: largest discrepancy {spread:.2e} nats "
          f"over {above.sum()} of {N_POINTS} points")
    assert spread < TOLERANCE


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
    d, ok, above = _discrepancies(noise_sd, 3 if noise_sd == 0 else 5, planted=lambda m: _with_factor(m, 1e-3))
    assert ok.all()
    d = d[above]
    assert float(np.max(np.abs(d - np.median(d)))) > 100 * TOLERANCE
