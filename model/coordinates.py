r"""The coordinates the conditioned model (:mod:`classsize.model.conditioned`) samples.

NUTS moves on the real line.  Every parameter of the conditioned model is a function
of such coordinates, chosen so that the posterior is close to standard normal in them
(the pilot's centres and scales, or the window a constraint leaves): a site made by
:func:`standard` is flat, and the density of the parameters it maps to, with the
log-Jacobian of the map, is added by ``numpyro.factor``.

* :func:`standard`: a flat coordinate :math:`\xi \in \mathbb R`;
* :func:`centred`: :math:`x = T(\hat x + \hat\sigma\xi)` for a parameter with prior
  :math:`p(x)`, ``T`` the bijection onto its support;
* :func:`truncated_normal`: :math:`x = m + s\,\Phi^{-1}\big(\Phi(\alpha) +
  (\Phi(\beta) - \Phi(\alpha))\,\Phi(z)\big)`, the inverse-cdf map of
  :math:`\mathcal N(m, s)` truncated to a window :math:`[lo, hi]`
  (:math:`\alpha = (lo - m)/s`, :math:`\beta = (hi - m)/s`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import Distribution

from .noise import _log_diff_ndtr
from .pieces import pinned

_LOG_SQRT_2PI = 0.9189385332046727


def standard(name: str, shape: tuple = ()):
    """A standardised coordinate: a flat site on the real line whose density is added by factors."""
    return numpyro.sample(name, dist.ImproperUniform(dist.constraints.real, (), tuple(shape)))


def centred(name: str, prior: Distribution, loc, scale):
    r"""Site ``name`` with distribution ``prior``, sampled as ``name_std``: :math:`x =
    T(\mathrm{loc} + \mathrm{scale}\,\xi)` with ``T`` the bijection onto the prior's support
    (the one NUTS uses anyway); a pinned (``Delta``) prior gives a deterministic site."""
    if pinned(prior):
        return numpyro.deterministic(name, prior.v)
    transform = dist.biject_to(prior.support)
    shape = transform.inverse_shape(prior.shape())
    xi = standard(f"{name}_std", shape)
    scale = jnp.broadcast_to(scale, shape)
    u = loc + scale * xi
    value = numpyro.deterministic(name, transform(u))
    log_density = jnp.sum(prior.log_prob(value)) + jnp.sum(transform.log_abs_det_jacobian(u, value))
    numpyro.factor(f"{name}_density", log_density + jnp.sum(jnp.log(scale)))
    return value


def log_standard_normal(z):
    """:math:`\\log\\varphi(z)`."""
    return -0.5 * z * z - _LOG_SQRT_2PI


def truncated_normal(z, loc, scale, lo, hi, inside=True):
    r"""``(x, log_density)``: :math:`x` the inverse-cdf map of ``z`` onto
    :math:`\mathcal N(\mathrm{loc}, \mathrm{scale})` truncated to [``lo``, ``hi``], and
    ``log_density`` :math:`= \log p(x) + \log|dx/dz|` with :math:`p` the untruncated
    normal density, which is :math:`\log(\Phi(\beta) - \Phi(\alpha)) + \log\varphi(z)`
    exactly: the map turns the normal density on the window into the truncated normal's
    mass times a standard normal in ``z``.

    The window is taken on the side of the mean where :math:`\Phi` has its relative
    accuracy (mirrored when :math:`\alpha + \beta > 0`) and the result is clipped into
    the window, so :math:`x` never leaves it.  Where ``inside`` is False (no window:
    the parameter has no data), :math:`x = \mathrm{loc} + \mathrm{scale}\, z` and
    ``log_density`` is :math:`\log\varphi(z)`."""
    lo = jnp.where(inside, lo, loc - scale)
    hi = jnp.where(inside, hi, loc + scale)
    alpha, beta = (lo - loc) / scale, (hi - loc) / scale
    flip = alpha + beta > 0
    a, b = jnp.where(flip, -beta, alpha), jnp.where(flip, -alpha, beta)
    w = jnp.where(flip, -z, z)
    log_mass = _log_diff_ndtr(a, b)
    log_p = jnp.logaddexp(jax.scipy.special.log_ndtr(a), log_mass + jax.scipy.special.log_ndtr(w))
    t = jnp.clip(jax.scipy.special.ndtri(jnp.exp(log_p)), a, b)
    t = jnp.where(flip, -t, t)
    x = jnp.where(inside, loc + scale * t, loc + scale * z)
    return x, jnp.where(inside, log_mass, 0.0) + log_standard_normal(z)
