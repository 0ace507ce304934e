"""The conditioned density with class effects, covariates, and each branch of the race windows.

The check of :mod:`test_density_independent` (the conditioned model's log density,
mapped back to the model's parameters ``theta``, against the forward model's run with
every site substituted and each student's ability integrated by brute force; the
assignment rule written out there, not taken from the model's helpers) on what the
model does beyond the notebook:

* **class (teacher) effects**: the forward model draws ``class_effect ~ Normal(0, sd)``
  per class; the conditioned model samples the class levels (in windows for noise-free
  uniform ability, around their conditional normal otherwise).  They are latent
  parameters, so ``theta`` holds every class slot's effect (and the sd when it is
  free); the slots no class uses are masked in the forward model and are draws from
  the prior in the conditioned one, so the reference adds that prior for them.  The
  sd free (``class_effects="free"``) and pinned (a number), through the analysis's
  priors (:meth:`ConditionedAnalysis.priors`), for noise-free uniform ability, noisy
  scores (noise pinned, noise sampled) and normal ability;
* **covariates**: normal ability with two student covariates (``extra_covariates``,
  weights ``extra_covariate_weights``) and two class covariates (``class_covariates``,
  per class slot, weights ``class_covariate_weights``), with class effects (and, in the
  slow suite, without them, and uniform ability with one of each);
* **the race windows** (:func:`~classsize.model.assignment.assignment_rule`):
  each race's intercept :math:`\\alpha_g = \\alpha + \\rho_g` is mapped from
  ``regular_small_race_position`` :math:`\\xi_g` by one of five branches, chosen by the
  REGULAR students of the race and by the priors:

  - *shifts pinned* (a prior that pins them): no windows, no :math:`\\xi`;
  - *two-sided* (SMALL and LARGE REGULAR students): :math:`\\alpha_g` strictly inside
    (floor, ceiling), a logistic map;
  - *empty* (two-sided with ceiling <= floor, the slopes leave no room): held
    :math:`10^{-9}` above the floor;
  - *one-sided* (SMALL, no LARGE): above the floor, :math:`\\alpha_g - \\mathrm{floor}`
    exponential in :math:`\\xi_g`;
  - *LARGE only* (no SMALL REGULAR students): unbounded, bent at the wall
    :math:`-\\max_{\\mathrm{LARGE}}(\\beta s_i + \\lambda U_i)` (ceiling - 1), where the
    likelihood turns from flat to steep: the slope :math:`d\\alpha_g / d\\xi_g` falls
    as :math:`\\alpha_g` passes it;
  - *no REGULAR students*: affine in :math:`\\xi_g`;

  with the floor :math:`-\\min_{\\mathrm{SMALL}}(\\beta s_i + \\lambda U_i)` and the
  ceiling :math:`1 - \\max_{\\mathrm{LARGE}}(\\beta s_i + \\lambda U_i)`, and with noisy
  scores :math:`\\lambda U_i` replaced by :math:`\\max(\\lambda W, 0)` (floor) and
  :math:`\\min(\\lambda W, 0)` (ceiling).  Each dataset sets its REGULAR students'
  races and class sizes so that its races take the branches named, and the test
  asserts the branch taken at every point from what it observes: the floor and ceiling
  computed here from the recorded slopes and the forward model's implied abilities, the
  race intercepts the conditioned model records, and their derivatives along
  :math:`\\xi_g`; and that the map is onto its window: at :math:`\\xi_g = \\mp 1000`
  the intercept is at the floor and at the ceiling (a window narrower than the support
  would leave the densities equal where they are compared, and the posterior cut).

Each case's (conditioned - forward) is one constant to 1e-8 nats over the points where
every student's probability of her class size is above 1e-7; a planted error of 1e-3
in the class effects' prior is seen.  The default suite runs one case of each kind
(class effects' sd free and pinned with noise-free uniform ability, noise and sd
sampled, normal ability with covariates and the sd free, the empty window); the slow
suite adds noise pinned with the sd pinned and free, normal ability with the sd pinned,
and the covariate cases above.  Deterministic (fixed seeds, fixed datasets): no false
alarms.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from test_density_independent import TOLERANCE, assert_same_up_to_a_constant, discrepancies, p_small

#: random points per case
N_POINTS = 12
#: the REGULAR students' (race, SMALL) of every dataset but the empty window's:
#: WHITE two-sided, BLACK one-sided, HISPANIC LARGE only, ASIAN none
BRANCHES = (("two-sided", 0), ("one-sided", 1), ("large-only", 2), ("no-regular", 3))
REGULAR = ([0, 0, 0, 0, 1, 1, 2, 2], [1, 0, 1, 0, 1, 1, 0, 0])


def _dataset(seed: int, *, noise_sd=0.0, class_sd=2.5, ability="uniform", regular=REGULAR, income=None,
             q_student=0, q_class=0, n_experimental=8):
    """A forward draw (16 students in two schools, classes of 2 and 3) with the REGULAR
    students' races and class sizes (and incomes, when given) set to ``regular`` and
    ``income``, the first seed from ``seed`` with students in both schools and the
    class-level and within-class columns of the score effects well conditioned.
    Returns the config, the draw, the Observed and the forward model's covariates."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from classsize.model import Config, class_size_experiment
    from classsize.model.tables import observed_from_draw

    races, small = (np.asarray(a) for a in regular)
    n_regular = len(races)
    config = Config(n_regular=n_regular, n_experimental=n_experimental, n_schools=2, small_class_size=2,
                    large_class_size=3, score_noise_sd=noise_sd, class_effect_sd=class_sd)
    n, slots = config.n_students, config.max_small_classes + config.max_large_classes
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        X = rng.normal(size=(n, q_student)) if q_student else None
        C = rng.normal(size=(slots, q_class)) if q_class else None

        def run(sub, class_covariates):
            model = handlers.substitute(handlers.seed(class_size_experiment, jax.random.PRNGKey(s)), data=sub)
            tr = handlers.trace(model).get_trace(config, ability=ability, covariates=X,
                                                 class_covariates=class_covariates)
            return {k: np.asarray(v["value"]) for k, v in tr.items()}

        draw = run({}, None if C is None else np.zeros((n, q_class)))
        sub = {"race": np.concatenate([races, draw["race"][n_regular:]]),
               "small_class": np.concatenate([small, draw["small_class"][n_regular:]])}
        if income is not None:
            sub["family_income"] = np.concatenate([income, draw["family_income"][n_regular:]])
        draw = run(sub, None if C is None else np.zeros((n, q_class)))
        per_student = None if C is None else C[draw["class_of_student"]]
        draw = run(sub, per_student)
        observed = observed_from_draw(draw, config)._replace(
            extra_covariates=None if X is None else jnp.asarray(X),
            class_covariates=None if C is None else jnp.asarray(C))
        if _well_posed(draw, observed):
            covariates = (None if X is None else jnp.asarray(X), None if C is None else jnp.asarray(per_student))
            return config, draw, observed, covariates
    raise AssertionError("no suitable tiny dataset")


def _well_posed(draw, observed) -> bool:
    """Students in both schools, and the score effects' columns (class size, MA and class
    covariates between classes within schools; income and student covariates within
    classes) far from collinear, else the pilot's scales, and the random points, are huge."""
    cls = np.asarray(observed.class_of_student)
    school = np.asarray(observed.school_of_class)
    if len(set(school[cls])) < 2:
        return False
    between = [np.asarray(draw["small_class"]), np.asarray(observed.teacher_has_ma)[cls]]
    between += [] if observed.class_covariates is None else list(np.asarray(observed.class_covariates)[cls].T)
    within = [np.asarray(observed.income_scaled)]
    within += [] if observed.extra_covariates is None else list(np.asarray(observed.extra_covariates).T)
    used = np.unique(cls)
    class_means = np.stack([[np.mean(c[cls == k]) for k in used] for c in between], axis=1)
    for k in set(school[used]):
        class_means[school[used] == k] -= class_means[school[used] == k].mean(axis=0)
    within = np.stack(within, axis=1)
    for k in used:
        within[cls == k] -= within[cls == k].mean(axis=0)
    return np.linalg.cond(class_means) < 30 and np.linalg.cond(within) < 30


def _priors(config, *, noise=None, class_effects="free", pin_shifts=False, **pinned):
    """The structural analysis's priors with ``score_noise`` and ``class_effects`` as
    given (the route a fit takes), and the race shifts (or other parameters) pinned."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from classsize.inference.analyses.registry import get_analysis

    analysis = get_analysis("structural").with_class_effects(class_effects)
    priors = analysis.with_score_noise(noise).priors(config.design)
    if pin_shifts:
        priors["regular_small_race_shift"] = dist.Delta(jnp.asarray(config.race_shift_vector), event_dim=1)
    for name, value in pinned.items():
        priors[name] = dist.Delta(jnp.asarray(float(value)))
    return priors


def _windows(aux, config, draw, noisy: bool):
    """Per point and race, the floor and the ceiling of the race intercept, computed here
    from the recorded slopes and the forward model's implied ability parts (noise-free)
    or the width (noisy); +inf / -inf where the race has no such students."""
    s = (np.log(draw["family_income"]) - np.log(config.income_min)) / (
        np.log(config.income_max) - np.log(config.income_min))
    n_races = len(config.race_codes)
    regular = np.arange(len(s)) < config.n_regular
    beta, lam = aux["regular_small_income"][:, None], aux["regular_small_ability"][:, None]
    if noisy:
        reach = lam * aux["ability_uniform_width"][:, None]
        low, high = beta * s + np.maximum(reach, 0.0), beta * s + np.minimum(reach, 0.0)
    else:
        low = high = beta * s + lam * aux["implied"]
    floor = np.full((len(beta), n_races), -np.inf)
    ceiling = np.full((len(beta), n_races), np.inf)
    for g in range(n_races):
        small = regular & (draw["race"] == g) & (draw["small_class"] == 1)
        large = regular & (draw["race"] == g) & (draw["small_class"] == 0)
        if small.any():
            floor[:, g] = -np.min(low[:, small], axis=1)
        if large.any():
            ceiling[:, g] = 1.0 - np.max(high[:, large], axis=1)
    return floor, ceiling


def assert_branches(comparison, config, draw, noisy: bool, branches=BRANCHES):
    """Each race of ``branches`` (pairs of a branch and a race) takes its branch at every
    point (module docstring), and its intercept reaches the ends of its window as
    :math:`\\xi_g \\to \\mp\\infty` (``comparison.limits``: the map is onto the window,
    not into a part of it)."""
    aux = comparison.aux
    floor, ceiling = _windows(aux, config, draw, noisy)
    alpha, slope = aux["intercepts"], aux["slopes"]
    if comparison.limits:
        (floor_0, ceiling_0), (floor_1, ceiling_1) = (_windows(a, config, draw, noisy) for a in comparison.limits)
        alpha_0, alpha_1 = (a["intercepts"] for a in comparison.limits)
    for name, g in branches:
        a, d, lo, hi = alpha[:, g], slope[:, g], floor[:, g], ceiling[:, g]
        if name != "pinned":
            a0, a1, lo0, lo1, hi1 = alpha_0[0, g], alpha_1[0, g], floor_0[0, g], floor_1[0, g], ceiling_1[0, g]
        if name == "two-sided":
            assert np.isfinite(lo).all() and np.isfinite(hi).all() and (hi > lo).all()
            assert ((a > lo) & (a < hi)).all(), "a two-sided window's intercept left (floor, ceiling)"
            # not one-sided: d log(a - floor) / d xi varies with the position in the window
            assert np.ptp(d / (a - lo)) > 1e-3 * np.max(np.abs(d / (a - lo)))
            assert abs(a0 - lo0) < 1e-9 and abs(a1 - hi1) < 1e-9, "the map does not reach both ends"
        elif name == "empty":
            assert (hi <= lo).all(), "the window is not empty"
            assert ((a > lo) & (a <= lo + 1e-9 * (1 + 1e-6))).all(), "an empty window is held 1e-9 above its floor"
            assert abs(a0 - lo0) < 1e-12 and abs(a1 - lo1 - 1e-9) < 1e-12
        elif name == "one-sided":
            assert np.isfinite(lo).all() and np.isinf(hi).all()
            assert (a > lo).all()
            ratio = d / (a - lo)  # a - floor = p_min exp(scale * xi)
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-8)
            assert abs(a0 - lo0) < 1e-9 and a1 > 1e6, "the map does not reach the floor and beyond any bound"
        elif name == "large-only":
            assert np.isinf(lo).all() and np.isfinite(hi).all()
            # bent at the wall (ceiling - 1, where the first LARGE student's rule reaches 0):
            # the slope d alpha / d xi falls as alpha passes the wall, from the flat side's
            # scale to the steep side's
            past_wall = a - (hi - 1.0)
            assert (d > 0).all() and np.ptp(d) > 1e-3 * np.max(d)
            falling = np.diff(d[np.argsort(past_wall)])
            assert np.all(falling <= 1e-12 * np.max(d)), "the slope does not fall past the wall"
            assert a0 < -10 and a1 > hi1, "the map is bounded"
        elif name == "no-regular":
            assert np.isinf(lo).all() and np.isinf(hi).all()
            np.testing.assert_allclose(d, d[0], rtol=1e-10)  # affine in xi
            assert a0 < -10 and a1 > 10, "the map is bounded"
        elif name == "pinned":
            assert np.isnan(d).all() and not comparison.limits, "regular_small_race_position is sampled"
            np.testing.assert_allclose(aux["regular_small_race_shift"], np.broadcast_to(
                np.asarray(config.race_shift_vector), aux["regular_small_race_shift"].shape), rtol=0, atol=0)
        else:
            raise ValueError(name)


@cache
def _case(seed, *, noise=None, class_effects="free", ability="uniform", q_student=0, q_class=0, noise_sd=None,
          pin_shifts=False, plant=False, n_points=N_POINTS, **dataset):
    """The comparison on :func:`_dataset` of ``seed`` with the analysis's priors; with
    ``plant``, also with an error planted in the class effects' prior (size 1e-3)."""
    noise_sd = (noise if isinstance(noise, float) else 2.0 if noise == "free" else 0.0) if noise_sd is None \
        else noise_sd
    config, draw, observed, (X, C) = _dataset(seed, noise_sd=noise_sd, ability=ability, q_student=q_student,
                                              q_class=q_class, **dataset)
    priors = _priors(config, noise=noise, class_effects=class_effects, pin_shifts=pin_shifts)
    out = discrepancies(config, draw, observed, priors, ability=ability, covariates=X, class_covariates=C,
                        planted=_planted_class_prior if plant else None, sizes=(1e-3,) if plant else (),
                        n_points=n_points, seed=seed)
    return out, config, draw


CASES = [
    # (a) noise-free uniform ability: the class levels in windows
    pytest.param(dict(seed=1, class_effects="free", plant=True), id="uniform-sd-free"),
    pytest.param(dict(seed=2, class_effects=2.5, pin_shifts=True), id="uniform-sd-pinned-shifts-pinned"),
    # (b) noisy scores: the class levels around their conditional normal
    pytest.param(dict(seed=3, noise="free", class_effects="free"), id="noise-sampled-sd-free"),
    pytest.param(dict(seed=4, noise=2.0, class_effects=1.5), id="noise-pinned-sd-pinned", marks=pytest.mark.slow),
    pytest.param(dict(seed=25, noise=0.5, class_effects="free"), id="noise-pinned-sd-free", marks=pytest.mark.slow),
    # (c) normal ability, with student and class covariates
    pytest.param(dict(seed=6, ability="normal", class_effects="free", q_student=2, q_class=2),
                 id="normal-sd-free-covariates"),
    pytest.param(dict(seed=7, ability="normal", class_effects=2.5), id="normal-sd-pinned", marks=pytest.mark.slow),
    pytest.param(dict(seed=8, ability="normal", class_effects=0.0, class_sd=0.0, q_student=2, q_class=2),
                 id="normal-no-class-effects-covariates", marks=pytest.mark.slow),
    pytest.param(dict(seed=9, class_effects="free", q_student=1, q_class=1), id="uniform-sd-free-covariates",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", CASES)
def test_conditioned_density_is_the_forward_density(case):
    comparison, config, draw = _case(**case)
    assert_same_up_to_a_constant(comparison, str(case))
    aux = comparison.aux
    noisy = case.get("noise") not in (None, 0.0)
    assert_branches(comparison, config, draw, noisy, [("pinned", 0)] if case.get("pin_shifts") else BRANCHES)
    if case.get("class_effects") != 0.0:  # the class effects vary and are in theta
        assert np.ptp(aux["class_effect"], axis=0).min() > 0
        if case.get("class_effects") == "free":
            assert np.ptp(aux["class_effect_sd"]) > 0


def test_an_empty_window_is_held_above_its_floor():
    """WHITE's SMALL REGULAR student has the lowest income, its LARGE one the highest
    (HISPANIC's likewise), and the income slope is pinned at 3 (the ability slope at 0):
    no intercept gives both their class sizes, so the window is empty at every point;
    the conditioned model holds the intercept 1e-9 above the floor and floors P(LARGE)
    at 1e-12 (a finite density), where the rule gives that class size probability 0
    (every point below the floor).  BLACK's window is two-sided and not empty."""
    regular = ([0, 0, 1, 1, 2, 2, 0, 1], [1, 0, 1, 0, 1, 0, 0, 1])
    income = np.array([30500, 149000, 60000, 90000, 50000, 100000, 80000, 70000])
    config, draw, observed, _ = _dataset(11, regular=regular, income=income)
    priors = _priors(config, regular_small_income=3.0, regular_small_ability=0.0)
    comparison = discrepancies(config, draw, observed, priors, n_points=4)
    assert comparison.ok.all() and np.isfinite(comparison.d).all()
    assert not comparison.above.any()
    assert_branches(comparison, config, draw, False,
                    [("empty", 0), ("two-sided", 1), ("empty", 2), ("no-regular", 3)])
    aux = comparison.aux
    for k in range(len(comparison.d)):  # WHITE's LARGE student at the highest income is SMALL for sure
        p = p_small({name: value[k] for name, value in aux.items()}, config, draw["race"], draw["family_income"], 0.0)
        assert float(p[1]) == 1.0 and draw["small_class"][1] == 0


def _planted_class_prior(model, size):
    """The conditioned model with a small error in the class effects' prior:
    ``size * sum(class_effect^2) / sd^2`` (a prior sd 0.1% off, for size 1e-3)."""
    import jax.numpy as jnp
    import numpyro
    from numpyro import handlers

    def run(*args, **kwargs):
        tr = handlers.trace(model).get_trace(*args, **kwargs)
        u, sd = tr["class_effect"]["value"], tr["class_effect_sd"]["value"]
        numpyro.factor("planted", size * jnp.sum(jnp.square(u / sd)))

    return run


def test_the_check_sees_a_small_error_in_the_class_effects_prior():
    comparison, _, _ = _case(**CASES[0].values[0])
    (d, ok, above), = comparison.planted
    assert ok.all()
    d = d[above]
    assert float(np.max(np.abs(d - np.median(d)))) > 100 * TOLERANCE
