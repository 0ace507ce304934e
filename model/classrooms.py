r"""Class effects in the conditioned model: the class and school levels.

With class (teacher) effects :math:`u_c \sim \mathcal N(0, \sigma_u)` a student's
residual in ability units (:mod:`classsize.model.conditioned`, step 2) is

.. math:: r_i = U_i + a_{c(i)},\qquad a_c = b_{k(c)} + u_c/\beta_A,

with :math:`a_c` the level of class :math:`c` and :math:`b_k` that of its school.
:func:`class_levels` samples both in coordinates close to standard normal (with
:math:`\sigma = \sigma_u/\beta_A`):

**Windows (noise-free uniform ability).**  :math:`U_i \in [0, W]` puts each class's
level in a window, :math:`a_c \in [h_c - W, \ell_c]` (:math:`h_c, \ell_c` the
largest and smallest :math:`r_i` of the class), so :math:`W \ge \max_c (h_c -
\ell_c)`: the windows that the schools had without class effects move to the classes.
Given :math:`b_k` the class level is the normal :math:`\mathcal N(b_k, \sigma)`
truncated to its window, mapped from ``class_position`` :math:`z_c` by its inverse
cdf (:func:`~classsize.model.coordinates.truncated_normal`); the class effect's
prior and the Jacobian then add :math:`\log[\Phi(\beta_c) - \Phi(\alpha_c)] +
\log\varphi(z_c)`.  Because the scores' density is flat inside the window, that is
the class effect integrated out (up to the assignment rule's slope in :math:`U`).

**No windows (measurement noise, normal ability).**  A class's mean residual less
:math:`E\,U = W/2` reads :math:`a_c` with variance :math:`v_c = (W^2/12 +
\tau^2)/n_c` (:math:`\tau` the noise sd in ability units), so the class level is
sampled around its conditional normal: precision :math:`\pi_c = 1/\sigma^2 + 1/v_c`,
:math:`a_c = \pi_c^{-1}(b_k/\sigma^2 + \bar m_c/v_c) + \pi_c^{-1/2} z_c`.

**Schools.**  Each class reads its school's level with variance :math:`\sigma^2 +
v_c` (the window's :math:`(\text{width})^2/12` as :math:`v_c` with windows), so
``school_position`` :math:`z_k` maps to :math:`b_k = M_k + P_k^{-1/2} z_k`,
:math:`P_k = \sum_{c \in k} (\sigma^2 + v_c)^{-1}` and :math:`M_k` the
precision-weighted mean of the classes' centres.  The school levels' density comes
from the school effects' prior, as without class effects.

Every map is a bijection given the coordinates sampled before it, so the posterior is
the model's; the centres only make it close to standard normal.  A class slot with no
students (padding) gets :math:`a_c = b_k + \sigma z_c` and density
:math:`\varphi(z_c)`: its class effect is a draw from the prior.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro

from .coordinates import centred, log_standard_normal, standard, truncated_normal
from .groups import group_extremes


def class_levels(priors, pilot, data, residual, width, beta_a, windowed: bool, noise_sd=None):
    r"""``(class_level, school_level, log_jacobian, width)``: the levels :math:`a_c`
    (per class slot) and :math:`b_k` (per school) in ability units, the log-Jacobian
    of the school levels' map (the class levels' density, their prior included, is
    added here), and :math:`W`.

    ``width`` is :math:`W` or, with windows, the function of the largest class spread
    that gives :math:`W` (the width is sampled above the floor the classes set).  The
    sites ``class_effect`` (:math:`\beta_A (a_c - b_k)`, score units) and
    ``intraclass_correlation`` (:func:`intraclass_correlation`) are recorded."""
    n_slots = data.class_used.shape[-1]
    sd = centred("class_effect_sd", priors["class_effect_sd"], *pilot.class_effect_sd)
    sigma = sd / beta_a
    has = data.class_used & (pilot.class_counts > 0)
    r = residual()
    if windowed:
        low, high = group_extremes(r, pilot.classes, evaluate=residual)
        low, high = jnp.where(has, low, 0.0), jnp.where(has, high, 0.0)
        spread = jnp.max(jnp.where(has, high - low, 0.0))
        width = width(spread)
        lo, hi = high - width, low
        centre, within = (lo + hi) / 2.0, (hi - lo) ** 2 / 12.0
    else:
        tau2 = 0.0 if noise_sd is None else (noise_sd / beta_a) ** 2
        count = jnp.maximum(pilot.class_counts, 1.0)
        centre = jax.ops.segment_sum(r, data.class_of_student, num_segments=n_slots) / count - width / 2.0
        within = (width**2 / 12.0 + tau2) / count
    school = data.school_of_class
    n_schools = pilot.levels.shape[-1]
    weight = jnp.where(has, 1.0 / (sigma**2 + within), 0.0)
    precision = jax.ops.segment_sum(weight, school, num_segments=n_schools)
    known = precision > 0
    mean = jax.ops.segment_sum(weight * centre, school, num_segments=n_schools) / jnp.where(known, precision, 1.0)
    scale = jnp.where(known, 1.0 / jnp.sqrt(jnp.where(known, precision, 1.0)), pilot.level_scales)
    with numpyro.plate("schools", n_schools):
        z = standard("school_position")
    school_level = jnp.where(known, mean, pilot.levels) + scale * z
    log_jacobian = jnp.sum(jnp.log(scale))
    own = school_level[school]
    with numpyro.plate("classes", n_slots):
        zc = standard("class_position")
    if windowed:
        level, log_density = truncated_normal(zc, own, sigma, lo, hi, inside=has)
    else:
        precision_c = 1.0 / sigma**2 + jnp.where(has, 1.0 / within, 0.0)
        m = (own / sigma**2 + jnp.where(has, centre / within, 0.0)) / precision_c
        level = m + zc / jnp.sqrt(precision_c)
        t = (level - own) / sigma
        log_density = log_standard_normal(t) - jnp.log(sigma) - 0.5 * jnp.log(precision_c)
    numpyro.factor("class_levels", jnp.sum(log_density))
    numpyro.deterministic("class_effect", beta_a * (level - own))
    numpyro.deterministic("intraclass_correlation", intraclass_correlation(sd, beta_a, width, noise_sd))
    return level, school_level, log_jacobian, width


def intraclass_correlation(class_sd, beta_a, width, noise_sd=None):
    r"""The share of a class's score variance, given the covariates, that its class
    effect makes: :math:`\sigma_u^2 / (\sigma_u^2 + \beta_A^2 W^2/12 + \sigma^2)`
    (:math:`\sigma` the noise sd)."""
    noise = 0.0 if noise_sd is None else noise_sd**2
    return class_sd**2 / (class_sd**2 + (beta_a * width) ** 2 / 12.0 + noise)
