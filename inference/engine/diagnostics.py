"""Sampler diagnostics of a fit, the same for a single fit and for each fit of a study.

Sampler trouble is reported, never hidden: divergences, an R-hat above
:data:`R_HAT_MAX` or a bulk ESS below :data:`ESS_MIN` each give a line.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from classsize.model.noise import EDGE_SITE

R_HAT_MAX = 1.01
ESS_MIN = 400.0


def fit_diagnostics(sites: Mapping[str, np.ndarray], quantities: Mapping[str, np.ndarray], diverging, num_steps,
                    max_tree_depth: int) -> dict:
    """Divergences, max R-hat and min bulk ESS (over every non-constant float site and
    the quantities, with ArviZ), mean leapfrog steps, tree-depth use, whether every
    draw is finite, and ``per_quantity``: each quantity's ``(R-hat, bulk ESS)``.

    Arrays are ``(chains, draws, ...)``.  R-hat needs two chains or more (NaN otherwise).
    """
    from arviz_stats.base import array_stats

    chains = next(iter(quantities.values())).shape[0]
    finite = True
    variables = {}
    for name, v in {**dict(sites), **{f"quantity:{k}": v for k, v in quantities.items()}}.items():
        v = np.asarray(v)
        if not np.issubdtype(v.dtype, np.floating):
            continue
        if not np.all(np.isfinite(v)):
            finite = False
            continue
        if np.all(np.ptp(v, axis=(0, 1)) == 0):
            continue  # pinned
        variables[name] = v
    r_hat, ess = {}, {}
    if variables:
        # every element of every variable as one (chains, draws, elements) array: one
        # call of ArviZ's array functions, the same numbers as az.ess / az.rhat
        columns = [v.reshape(v.shape[:2] + (-1,)) for v in variables.values()]
        ends = np.cumsum([c.shape[-1] for c in columns])[:-1]
        stacked = np.concatenate(columns, axis=-1).astype(np.float64)
        ess = dict(zip(variables, (float(np.nanmin(e)) for e in np.split(
            array_stats.ess(stacked, chain_axis=0, draw_axis=1, method="bulk"), ends))))
        if chains > 1:  # R-hat compares chains
            r_hat = dict(zip(variables, (float(np.nanmax(r)) for r in np.split(
                array_stats.rhat(stacked, chain_axis=0, draw_axis=1), ends))))
    steps = np.asarray(num_steps)
    nan = float("nan")
    return {
        "divergences": int(np.asarray(diverging).sum()),
        "max_r_hat": float(np.nanmax(list(r_hat.values()))) if r_hat and chains > 1 else nan,
        "min_ess_bulk": float(np.nanmin(list(ess.values()))) if ess else nan,
        "mean_steps": float(steps.mean()),
        "tree_depth_hits": float(np.mean(steps >= 2**max_tree_depth - 1)),
        "finite": finite,
        "per_quantity": {
            k: (r_hat.get(f"quantity:{k}", nan) if chains > 1 else nan, ess.get(f"quantity:{k}", nan))
            for k in quantities
        },
    }


class OneFit(NamedTuple):
    """One dataset's part of a run: its sites and sampler statistics ``(chains,
    samples, ...)``, its quantities and their :func:`fit_diagnostics`."""

    sites: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    quantities: dict[str, np.ndarray]
    diagnostics: dict[str, Any]


def one_fit(draws, k: int, analysis, quantities: Callable[[Mapping[str, np.ndarray]], Mapping]) -> OneFit:
    """Dataset ``k`` of a run's ``draws`` (:class:`~.sampling.Draws`, arrays ``(datasets,
    chains, samples, ...)``) fitted with ``analysis``: its sites, its statistics, the
    quantities ``quantities(sites)`` and :func:`fit_diagnostics` of both, with the
    tree-depth limit of the analysis's NUTS settings (10 unless they set one).  What a
    single fit and each fit of a recovery study read from their draws."""
    sites = {n: v[k] for n, v in draws.sites.items()}
    stats = {n: v[k] for n, v in draws.stats.items()}
    q = dict(quantities(sites))
    parameters = {n: v for n, v in sites.items() if n != EDGE_SITE}  # (a model check's statistic)
    diag = fit_diagnostics(parameters, q, stats["diverging"], stats["n_steps"],
                           analysis.kernel_settings.get("max_tree_depth", 10))
    return OneFit(sites, stats, q, diag)


def fit_problems(diag: Mapping) -> list[str]:
    """Short phrases for each problem of :func:`fit_diagnostics`'s output."""
    out = []
    if not diag["finite"]:
        out.append("non-finite draws")
    if diag["divergences"] > 0:
        out.append(f"{diag['divergences']} divergences")
    if diag["max_r_hat"] > R_HAT_MAX:
        out.append(f"R-hat {diag['max_r_hat']:.3f} > {R_HAT_MAX}")
    if diag["min_ess_bulk"] < ESS_MIN:
        out.append(f"bulk ESS {diag['min_ess_bulk']:.0f} < {ESS_MIN:.0f}")
    return out


def sampler_warnings(name: str, diag: Mapping) -> list[str]:
    """One sentence for each sampler problem of a fit, with its figures."""
    out = []
    if not diag["finite"]:
        out.append(f"{name}: some draws are not finite")
    if diag["divergences"] > 0:
        out.append(f"{name}: {diag['divergences']} divergent transitions after warm-up")
    for quantity, (r_hat, ess) in diag["per_quantity"].items():
        if r_hat > R_HAT_MAX:
            out.append(f"{name}: R-hat of {quantity} is {r_hat:.3f} (> {R_HAT_MAX})")
        if ess < ESS_MIN:
            out.append(f"{name}: bulk ESS of {quantity} is {ess:.0f} (< {ESS_MIN:.0f})")
    if diag["max_r_hat"] > R_HAT_MAX:
        out.append(f"{name}: the largest R-hat over all parameters is {diag['max_r_hat']:.3f} (> {R_HAT_MAX})")
    return out
