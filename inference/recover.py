r"""Parameter recovery at scale: simulation-based calibration and coverage studies.

``classsize recover --model NAME --datasets N (--from-prior | --config FILE) --out DIR``
simulates ``N`` datasets with the model, fits each with the analysis ``NAME`` and
checks that the posteriors are calibrated; it exits with 0 when the verdict passes,
1 when it fails, 2 on bad input.  Two kinds of study:

**Simulation-based calibration** (``--from-prior``; Talts et al. 2018, "Validating
Bayesian inference algorithms with simulation-based calibration").  Dataset ``k``'s
parameters are drawn from the analysis model's own prior (structural:
:func:`~classsize.model.default_priors`; randomized: the same with the REGULAR
cohort's assignment parameters pinned to 0, as :func:`~.analysis.build_analysis`
pins them) and the data simulated from them by the same model; the design (cohort
sizes, schools, races, income range, class sizes) is the default ``Config``'s or
that of ``--config FILE``, whose parameter values are then unused.  If the fit is
right, the rank of the true value among posterior draws is uniform.  For each
quantity (the three estimands and every scalar structural parameter the analysis
samples), the rank is taken among :data:`RANK_DRAWS` = 99 draws thinned evenly from
the pooled chains (ties broken at random), so ranks run over 0..99, 100 values.
With the default 4 x 1000 draws that keeps every 40th draw of a chain; the table
records each quantity's bulk ESS so that ESS < 99 (thinning too light) can be seen.
Uniformity is tested twice: a chi-square test on the ranks binned into
``min(20, N // 5)`` near-equal bins (at least 2), and the simultaneous ECDF band test
of Säilynoja, Bürkner and Vehtari (2022, "Graphical test for discrete uniformity
and its applications in goodness-of-fit evaluation and multiple sample
comparison"): the statistic is the smallest, over the 99 inner rank values, of the
two-sided binomial tail probability of the ECDF count; the pointwise level
``gamma`` is adjusted by simulation (:data:`BAND_SIMULATIONS` uniform rank sets from
a fixed seed) so that the ECDF of uniform ranks leaves the band with probability
5%, and the p-value is the share of simulated statistics at or below the observed
one.  A quantity's p-value is ``min(1, 2 min(p_chi2, p_ecdf))`` (Bonferroni over its
two tests) and the quantities are corrected together by Holm's method: when the
fit is calibrated the chance that *any* quantity is flagged is at most
:data:`FAMILY_ALPHA` = 5%.  The plotted band is each panel's own 95% band (not
corrected across panels).

**Coverage at a fixed truth** (the default ``Config`` or ``--config FILE``).  Every
dataset comes from the same parameters; for each estimand, the share of datasets
whose central 50/80/90/95% posterior interval contains the truth is compared with
the nominal level.  The reported band is the Clopper-Pearson interval of the
coverage count; the verdict uses it at confidence ``1 - 0.05 / (levels x
estimands)`` (Bonferroni: family false-alarm rate 5%) and fails an estimand whose
band excludes a nominal level.  Bias, RMSE of the posterior mean, the mean
posterior z-score and the posterior contraction ``1 - var_post / var_prior`` are
reported too.  ``naive`` is fitted here as well; its regression ignores the
unobserved ability that drives the REGULAR cohort's assignment, so at the default
truth it is expected to fail, and the verdict says so.

**Fits.**  Datasets are drawn in one vectorised call and encoded straight from the
draws (:func:`classsize.model.tables.observed_from_draw`, padded class slots with
``class_used`` masks), so all datasets share array shapes.  They are fitted in
batches: each chain of each dataset is one *lane*, a whole NUTS run (warm-up and
sampling, the kernel :func:`~.fit._kernel` builds for ``fit``, so the settings are
the same) written as one ``lax.scan`` over the kernel's ``init``/``sample``
functions with the data an argument.  The lanes of a batch are laid out along one
axis, sharded over every JAX device (``jax.sharding.Mesh`` over ``jax.devices()``,
``shard_map``), and each device runs its lanes either all at once under
``jax.vmap`` (``vectorize="vmap"``, the default on GPU/TPU) or one after another with
``lax.map`` in the same compiled program (``vectorize="map"``, the default on CPU,
where vmapped NUTS advances every lane at the pace of its longest trajectory and
costs several times more to trace and compile; see ``bench/README.md``).  Every
batch has ``--batch-size`` datasets' lanes (a short last batch is padded with lanes
that skip their iterations), so a study compiles one program, and studies with the
same design and chains share it.  Dataset ``k`` is simulated under the key
``PRNGKey(S + k)`` (at a fixed truth, exactly ``classsize simulate --seed S+k``'s
dataset) and fitted with ``PRNGKey(S + k + 2**32)``, the key of ``classsize fit
--seed S+k+4294967296`` on that dataset.  A dataset with a school that has no students (of the
fitted cohort) cannot be fitted by the uniform-ability model (its per-school
minimum and maximum do not exist): it is counted as unfittable and reported.  A
fit is flagged when it has divergent transitions, an R-hat above 1.01 or a bulk ESS
below 400 (the thresholds of ``classsize fit``); flagged fits are counted in the
table and the verdict and kept in the statistics (dropping them would select on
the data).  Fits whose draws are not finite are excluded from the statistics and
counted.

Outputs in ``--out``: ``recovery.csv`` (tidy: one row per dataset and quantity,
with the fit's diagnostics), ``summary.csv`` (one row per quantity, or per estimand
and level), ``recovery.nc`` (the same as an xarray Dataset), ``verdict.txt`` (also
printed), ``study.json`` (settings), ``config.toml`` and the plots
(``sbc_ecdf_diff.png`` and ``sbc_ranks.png``, or ``coverage.png`` and
``z_contraction.png``), each written atomically.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from classsize.model import Config, class_size_experiment
from classsize.model.experiment import PARAMETERS
from classsize.model.tables import DRAW_SITES, observed_from_draw

from .analysis import ANALYSES, ASSIGNMENT_PARAMETERS, ESTIMANDS, get_analysis  # noqa: F401
from .diagnostics import ESS_MIN, R_HAT_MAX, fit_diagnostics, fit_problems
from .sampling import ChainRunner

#: Central interval levels of the coverage study.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: Posterior draws kept (evenly thinned) for the rank of the truth: ranks run over 0..RANK_DRAWS.
RANK_DRAWS = 99
#: Family-wise false-alarm rate of each study's verdict.
FAMILY_ALPHA = 0.05
#: Uniform rank sets simulated to set the ECDF band's pointwise level (fixed seed).
BAND_SIMULATIONS = 10_000
BAND_SEED = 2022
#: Most bins of the chi-square test (each bin expects at least 5 ranks when N allows).
MAX_CHI2_BINS = 20
#: Dataset k is fitted with PRNGKey(seed + k + FIT_SEED_OFFSET): a key apart from the simulation's.
FIT_SEED_OFFSET = 2**32
#: Cohort each analysis fits (None: both).
COHORT = {name: analysis.cohort for name, analysis in ANALYSES.items()}


# =============================================================================== statistics
def thin_indices(total: int, n: int) -> np.ndarray:
    """``min(n, total)`` indices spread evenly over ``0..total-1`` (first and last included)."""
    n = min(int(n), int(total))
    if n <= 0:
        raise ValueError("nothing to thin")
    if n == 1:
        return np.array([total - 1])
    return np.round(np.linspace(0, total - 1, n)).astype(np.int64)


def sbc_rank(truth: float, draws: np.ndarray, n_rank_draws: int = RANK_DRAWS, rng=None) -> tuple[int, int]:
    """The rank of ``truth`` among ``n_rank_draws`` draws thinned evenly from ``draws``
    (pooled in the given order), ties broken uniformly at random.

    Returns ``(rank, L)``: the rank is in ``0..L``, with ``L`` the number of draws used.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x = np.asarray(draws, dtype=float).ravel()
    x = x[thin_indices(x.size, n_rank_draws)]
    below = int(np.sum(x < truth))
    ties = int(np.sum(x == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0), int(x.size)


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    df: int
    p_value: float
    observed: np.ndarray
    expected: np.ndarray


def chi_square_bins(n_ranks: int, n_values: int) -> int:
    """Bins of the chi-square test: ``min(20, N // 5)`` (expected count >= 5), at least 2,
    at most the number of rank values."""
    return int(max(2, min(MAX_CHI2_BINS, n_ranks // 5, n_values)))


def chi_square_uniformity(ranks: Sequence[int], n_values: int, n_bins: int | None = None) -> ChiSquare:
    """Pearson's chi-square test that ``ranks`` (integers in ``0..n_values-1``) are uniform.

    The values are split into ``n_bins`` contiguous bins of near-equal width (the
    expected count of a bin is proportional to its width); ``df = n_bins - 1``.
    """
    from scipy import stats

    r = np.asarray(ranks, dtype=np.int64)
    if r.size == 0:
        raise ValueError("no ranks")
    if r.min() < 0 or r.max() >= n_values:
        raise ValueError(f"ranks must lie in 0..{n_values - 1}")
    n_bins = chi_square_bins(r.size, n_values) if n_bins is None else int(n_bins)
    if not 2 <= n_bins <= n_values:
        raise ValueError(f"n_bins must be in 2..{n_values}, got {n_bins}")
    edges = np.round(np.linspace(0, n_values, n_bins + 1)).astype(np.int64)
    observed = np.histogram(r, bins=edges)[0].astype(float)
    expected = r.size * np.diff(edges) / n_values
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return ChiSquare(statistic, n_bins - 1, float(stats.chi2.sf(statistic, n_bins - 1)), observed, expected)


@dataclass(frozen=True)
class EcdfBand:
    """Simultaneous band for the ECDF of ``n`` ranks uniform on ``0..n_values-1``.

    At the evaluation points ``z_k = k / n_values`` (``k = 1..n_values-1``) the ECDF is
    ``#{rank < k} / n``; the band is ``[lower_k, upper_k]`` (as fractions of ``n``).
    ``gamma`` is the adjusted pointwise level; ``null_statistics`` the simulated
    statistics (sorted).
    """

    n: int
    n_values: int
    alpha: float
    z: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    gamma: float
    null_statistics: np.ndarray
    tail: np.ndarray = field(repr=False)  # (k, count) -> two-sided binomial tail probability


def _tail_table(n: int, n_values: int) -> np.ndarray:
    """``T[k-1, c] = min(1, 2 min(P(X <= c), P(X >= c)))`` for ``X ~ Binomial(n, k/n_values)``."""
    from scipy import stats

    z = np.arange(1, n_values) / n_values
    c = np.arange(n + 1)
    cdf = stats.binom.cdf(c[None, :], n, z[:, None])
    sf = stats.binom.sf(c[None, :] - 1, n, z[:, None])  # P(X >= c)
    return np.minimum(1.0, 2.0 * np.minimum(cdf, sf))


@lru_cache(maxsize=32)
def ecdf_band(n: int, n_values: int, alpha: float = 0.05, n_sim: int = BAND_SIMULATIONS,
              seed: int = BAND_SEED) -> EcdfBand:
    """The simultaneous ``1 - alpha`` band of Säilynoja, Bürkner and Vehtari (2022) for
    the ECDF of ``n`` discrete-uniform ranks, by simulation with a fixed seed.

    The statistic of a rank set is the smallest tail probability (:func:`_tail_table`)
    of its ECDF counts over the evaluation points; ``gamma`` is the ``alpha`` quantile
    of the statistic over ``n_sim`` uniform rank sets (the largest level at which at
    most ``alpha`` of them leave the band), and the band at each point holds the
    counts whose tail probability is at least ``gamma``.
    """
    if n < 1 or n_values < 2:
        raise ValueError("need n >= 1 ranks over n_values >= 2 values")
    tail = _tail_table(n, n_values)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n_values, 1.0 / n_values), size=n_sim)
    below = np.cumsum(counts, axis=1)[:, :-1]  # #{rank < k}, k = 1..n_values-1
    stat = np.sort(tail[np.arange(n_values - 1)[None, :], below].min(axis=1))
    gamma = float(stat[int(math.floor(alpha * n_sim))])
    inside = tail >= gamma
    c = np.arange(n + 1)
    lower = np.where(inside, c[None, :], n + 1).min(axis=1) / n
    upper = np.where(inside, c[None, :], -1).max(axis=1) / n
    z = np.arange(1, n_values) / n_values
    return EcdfBand(n, n_values, alpha, z, lower, upper, gamma, stat, tail)


def ecdf_counts(ranks: Sequence[int], n_values: int) -> np.ndarray:
    """``#{rank < k}`` for ``k = 1..n_values-1``."""
    r = np.asarray(ranks, dtype=np.int64)
    return np.cumsum(np.bincount(r, minlength=n_values))[:-1]


def ecdf_test(ranks: Sequence[int], band: EcdfBand) -> tuple[float, bool]:
    """``(p_value, inside)``: the ECDF band test of uniformity for ``ranks``.

    ``inside`` is whether the ECDF stays in the band (the test at level ``band.alpha``
    does not reject); the p-value is ``(1 + #{simulated statistic <= observed}) / (n_sim + 1)``.
    """
    r = np.asarray(ranks, dtype=np.int64)
    if r.size != band.n:
        raise ValueError(f"the band is for {band.n} ranks, got {r.size}")
    below = ecdf_counts(r, band.n_values)
    stat = float(band.tail[np.arange(band.n_values - 1), below].min())
    n_le = int(np.searchsorted(band.null_statistics, stat, side="right"))
    return (1 + n_le) / (band.null_statistics.size + 1), bool(stat >= band.gamma)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a binomial proportion ``k / n``."""
    from scipy import stats

    if n <= 0:
        return (float("nan"), float("nan"))
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def holm(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down correction: ``(adjusted p-values, rejected)``; NaN p-values are ignored."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        running = 0.0
        for i, j in enumerate(order):
            running = max(running, min(1.0, (m - i) * p[j]))
            adjusted[j] = running
    return adjusted, np.where(np.isnan(adjusted), False, adjusted <= alpha)


def combined_p(p_chi2: float, p_ecdf: float) -> float:
    """A quantity's p-value from its two uniformity tests (Bonferroni over the two)."""
    return float(min(1.0, 2.0 * min(p_chi2, p_ecdf)))


# ================================================================================== priors
def analysis_priors(model: str, config: Config) -> dict | None:
    """The priors the analysis ``model`` fits with (None for ``naive``, whose regression
    has priors of its own and no generative model of the data)."""
    return get_analysis(model).priors(config)


def study_quantities(model: str, mode: str, config: Config) -> tuple[str, ...]:
    """The quantities a study checks: the analysis's estimands, and for SBC also every
    scalar structural parameter the analysis samples (not pinned)."""
    return get_analysis(model).study_quantities(config, sbc=mode == "sbc")


def quantities_from_draws(model: str, sites: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named quantities from posterior (or prior) draws of the sites."""
    est = get_analysis(model).estimands(sites)
    return {n: np.asarray(est[n] if n in est else sites[n], dtype=float) for n in names}


def prior_variances(model: str, config: Config, names: Sequence[str]) -> dict[str, float]:
    """Prior variance of each quantity under the analysis's priors."""
    return get_analysis(model).prior_variances(config, names)


# ============================================================================== simulation
@lru_cache(maxsize=8)
def _prior_sampler(model: str, config: Config):
    import jax
    import numpyro
    from numpyro import handlers

    priors = analysis_priors(model, config)

    def one(key):
        # the pinned score_noise_sd = 0 is a concrete scale of 0 here, which the Normal's
        # argument check would refuse while tracing; a scale of 0 draws the mean exactly
        with numpyro.validation_enabled(False):
            tr = handlers.trace(handlers.seed(class_size_experiment, key)).get_trace(config, priors)
        return {k: tr[k]["value"] for k in DRAW_SITES + PARAMETERS}

    return jax.jit(jax.vmap(one))


def simulate_study(model: str, config: Config, seeds: Sequence[int], from_prior: bool) -> dict[str, np.ndarray]:
    """Forward draws for every dataset in one vectorised call, stacked along axis 0.

    ``from_prior``: parameters from the analysis priors (:func:`analysis_priors`), drawn
    by the model under ``seed(PRNGKey(s))``; otherwise the parameters of ``config``
    (exactly ``classsize simulate --seed s``'s datasets).
    """
    import jax
    import jax.numpy as jnp

    from classsize.model.simulate import draw_many

    if not from_prior:
        return draw_many(config, seeds)
    if model == "naive":
        raise ValueError("the naive analysis has no generative prior: simulation-based calibration needs one")
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
    out = _prior_sampler(model, config)(keys)
    return {k: np.asarray(v) for k, v in jax.block_until_ready(out).items()}


def empty_school_counts(observed, n_schools: int) -> np.ndarray:
    """For a stacked :class:`Observed`, how many schools have no students (per dataset)."""
    school = np.take_along_axis(np.asarray(observed.school_of_class), np.asarray(observed.class_of_student), axis=1)
    out = np.empty(school.shape[0], dtype=np.int64)
    for i, s in enumerate(school):
        out[i] = int(np.sum(np.bincount(s, minlength=n_schools)[:n_schools] == 0))
    return out


# ================================================================================== study
@dataclass
class StudyResult:
    """A finished study: the tidy table, the summary, and the verdict."""

    model: str
    mode: str
    config: Config
    settings: dict
    table: Any  # pandas DataFrame, one row per (dataset, quantity)
    summary: Any  # pandas DataFrame
    verdict: str
    passed: bool
    band: EcdfBand | None = None
    ranks: dict[str, np.ndarray] | None = None

    #: Every file a study writes, by mode (``--force`` removes the other mode's files).
    FILES = {
        "sbc": ("recovery.csv", "summary.csv", "verdict.txt", "study.json", "config.toml", "recovery.nc",
                "sbc_ecdf_diff.png", "sbc_ranks.png"),
        "fixed": ("recovery.csv", "summary.csv", "verdict.txt", "study.json", "config.toml", "recovery.nc",
                  "coverage.png", "z_contraction.png"),
    }

    def write(self, out: str | Path) -> list[Path]:
        """Write every output file into ``out``; returns the paths.

        All files are first written into a temporary folder beside ``out``, then moved
        into it one by one (``os.replace``, atomic per file), so a failure while writing
        (a full disk, a plotting error) leaves ``out`` as it was.  Files of the other
        kind of study left in ``out`` by an earlier run are removed."""
        import shutil
        import tempfile

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            names = []

            def text(name, s):
                (staging / name).write_text(s)
                names.append(name)

            text("recovery.csv", self.table.to_csv(index=False))
            text("summary.csv", self.summary.to_csv(index=False))
            text("verdict.txt", self.verdict + "\n")
            text("study.json", json.dumps(self.settings, indent=2) + "\n")
            text("config.toml", self.config.to_toml())
            self.to_xarray().to_netcdf(str(staging / "recovery.nc"), engine="netcdf4")
            names.append("recovery.nc")
            from .plots import _pyplot

            plt = _pyplot()
            figures = (
                {"sbc_ecdf_diff.png": plot_ecdf_difference, "sbc_ranks.png": plot_rank_histograms}
                if self.mode == "sbc"
                else {"coverage.png": plot_coverage, "z_contraction.png": plot_z_contraction}
            )
            for name, plot in figures.items():
                fig = plot(self)
                fig.tight_layout()
                fig.savefig(staging / name, dpi=110, format="png")
                plt.close(fig)
                names.append(name)
            umask = os.umask(0)
            os.umask(umask)
            for name in names:
                os.chmod(staging / name, 0o666 & ~umask)
                os.replace(staging / name, out / name)
            for mode, files in self.FILES.items():
                if mode != self.mode:
                    for name in set(files) - set(names):
                        (out / name).unlink(missing_ok=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [out / name for name in names]

    def to_xarray(self):
        """The table and the summary as one xarray Dataset (dims dataset, quantity, level)."""
        import xarray as xr

        t = self.table
        datasets = np.sort(t["dataset"].unique())
        quantities = list(dict.fromkeys(t["quantity"]))
        t = t.set_index(["dataset", "quantity"])
        coords = {"dataset": datasets, "quantity": quantities, "level": np.asarray(LEVELS)}
        data_vars = {}
        per_q = ["truth", "mean", "sd", "z_score", "contraction", "r_hat", "ess_bulk", "rank"]
        for col in per_q:
            if col in t:
                arr = t[col].unstack("quantity").reindex(index=datasets, columns=quantities).to_numpy(float)
                data_vars[col] = (("dataset", "quantity"), arr)
        for name in ("lower", "upper", "covered"):
            cols = [f"{name}_{int(100 * lv)}" for lv in LEVELS]
            arr = np.stack([t[c].astype(float).unstack("quantity").reindex(index=datasets, columns=quantities)
                            .to_numpy(float) for c in cols], axis=-1)
            data_vars[name] = (("dataset", "quantity", "level"), arr)
        first = self.table.drop_duplicates("dataset").set_index("dataset").reindex(datasets)
        for col in ("sim_seed", "fit_seed", "divergences", "max_r_hat", "min_ess_bulk", "mean_steps",
                    "tree_depth_hits", "seconds"):
            data_vars[col] = (("dataset",), first[col].to_numpy(float))
        data_vars["status"] = (("dataset",), first["status"].astype(str).to_numpy())
        data_vars["fit_ok"] = (("dataset",), first["fit_ok"].astype(bool).to_numpy())
        s = self.summary
        if self.mode == "sbc":
            s = s.set_index("quantity").reindex(quantities)
            for col in ("chi2", "chi2_p", "ecdf_p", "p", "p_holm"):
                data_vars[f"summary_{col}"] = (("quantity",), s[col].to_numpy(float))
            data_vars["summary_pass"] = (("quantity",), s["pass"].astype(bool).to_numpy())
        else:
            s = s.set_index(["quantity", "level"])
            for col in ("covered", "n", "coverage", "cp95_lower", "cp95_upper", "band_lower", "band_upper"):
                arr = s[col].unstack("level").reindex(index=quantities, columns=list(LEVELS)).to_numpy(float)
                data_vars[f"summary_{col}"] = (("quantity", "level"), arr)
        attrs = {"model": self.model, "mode": self.mode, "settings": json.dumps(self.settings),
                 "verdict": self.verdict, "passed": int(self.passed)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


@lru_cache(maxsize=8)
def chain_runner(chains: int, warmup: int, samples: int) -> ChainRunner:
    """A :class:`~.sampling.ChainRunner`, shared by studies with the same settings (its
    compiled programs are reused: an SBC and a coverage study of one design compile once)."""
    return ChainRunner(chains, warmup, samples)


def run_study(model: str = "structural", n_datasets: int = 100, *, config: Config = Config(),
              from_prior: bool = False, seed: int = 0, chains: int = 4, warmup: int = 1000, samples: int = 1000,
              batch_size: int | None = None, rank_draws: int = RANK_DRAWS,
              progress: bool | None = None) -> StudyResult:
    """Simulate ``n_datasets`` datasets, fit each with the analysis ``model`` and check
    calibration: SBC when ``from_prior``, coverage at the fixed truth ``config`` otherwise."""
    import jax
    import pandas as pd
    from tqdm.auto import tqdm

    if model not in ANALYSES:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(ANALYSES)}")
    if from_prior and model == "naive":
        raise ValueError(
            "--from-prior needs an analysis with a generative prior; the naive regression has none "
            "(use a fixed truth: the default Config or --config FILE)"
        )
    if n_datasets < 1:
        raise ValueError("the study needs at least one dataset")
    cohort = COHORT[model]
    if cohort == "REGULAR" and config.n_regular == 0:
        raise ValueError("the naive analysis needs REGULAR students (n_regular > 0)")
    if cohort == "EXPERIMENTAL" and config.n_experimental == 0:
        raise ValueError("the randomized analysis needs EXPERIMENTAL students (n_experimental > 0)")
    mode = "sbc" if from_prior else "fixed"
    names = study_quantities(model, mode, config)
    analysis = get_analysis(model)
    fitter = chain_runner(int(chains), int(warmup), int(samples))
    compile_before = fitter.compile_seconds
    if batch_size is None:
        batch_size = 4 * fitter.n_devices
    sim_seeds = [seed + k for k in range(n_datasets)]
    fit_seeds = [s + FIT_SEED_OFFSET for s in sim_seeds]

    start_all = time.perf_counter()
    draws = simulate_study(model, config, sim_seeds, from_prior)
    simulate_seconds = time.perf_counter() - start_all
    observed = jax.jit(lambda d: observed_from_draw(d, config, cohort))({k: draws[k] for k in DRAW_SITES})
    observed = type(observed)(*[None if a is None else np.asarray(a) for a in observed])
    empty = empty_school_counts(observed, config.n_schools) if model != "naive" else np.zeros(n_datasets, int)
    if from_prior:
        truths = quantities_from_draws(model, {p: draws[p] for p in PARAMETERS}, names)
    else:
        fixed = config.estimands()
        truths = {n: np.full(n_datasets, fixed[n]) for n in names}
    prior_var = prior_variances(model, config, tuple(names))

    fittable = np.flatnonzero(empty == 0)
    per_dataset: dict[int, dict] = {}
    rng = np.random.default_rng(seed)
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=n_datasets, desc=f"recover {model}", unit="dataset", disable=not progress)
    bar.update(n_datasets - fittable.size)
    for lo in range(0, fittable.size, batch_size):
        idx = fittable[lo:lo + batch_size]
        batch = type(observed)(*[None if a is None else a[idx] for a in observed])
        out = fitter.run(analysis.bind_many(config, batch), [fit_seeds[i] for i in idx], batch_size=batch_size)
        for j, k in enumerate(idx):
            sites = {s: v[j] for s, v in out.sites.items()}
            q = quantities_from_draws(model, sites, names)
            diag = fit_diagnostics(sites, q, out.stats["diverging"][j], out.stats["n_steps"][j],
                                   analysis.kernel_settings.get("max_tree_depth", 10))
            diag["seconds"] = out.seconds / len(idx)
            per_dataset[int(k)] = _summarise_fit(q, {n: truths[n][k] for n in names}, prior_var, diag,
                                                 rank_draws, rng, diag.pop("per_quantity"))
        bar.update(len(idx))
    bar.close()
    wall = time.perf_counter() - start_all

    rows = []
    for k in range(n_datasets):
        base = {"study": mode, "model": model, "dataset": k, "sim_seed": sim_seeds[k], "fit_seed": fit_seeds[k]}
        if k not in per_dataset:
            reason = f"unfittable: {int(empty[k])} school(s) without {cohort or ''} students".replace("  ", " ")
            for n in names:
                rows.append({**base, "status": "unfittable", "fit_ok": False, "problems": reason, "quantity": n,
                             "truth": float(truths[n][k]), **_empty_fit_columns()})
            continue
        res = per_dataset[k]
        status = "fitted" if res["diag"]["finite"] else "failed"
        problems = fit_problems(res["diag"])
        for n in names:
            rows.append({**base, "status": status, "fit_ok": not problems, "problems": "; ".join(problems),
                         "quantity": n, **res["quantities"][n], **_diag_columns(res["diag"])})
    table = pd.DataFrame(rows)

    settings = {
        "model": model, "mode": mode, "datasets": n_datasets, "seed": seed,
        "sim_seeds": f"{sim_seeds[0]}..{sim_seeds[-1]}",
        "fit_seeds": f"{fit_seeds[0]}..{fit_seeds[-1]} (seed + k + 2**32)",
        "chains": chains, "warmup": warmup, "samples": samples, "batch_size": batch_size,
        "vectorize": fitter.vectorize, "devices": [str(d) for d in fitter.devices],
        "rank_draws": rank_draws if mode == "sbc" else None, "levels": list(LEVELS),
        "family_alpha": FAMILY_ALPHA, "band_simulations": BAND_SIMULATIONS, "band_seed": BAND_SEED,
        "r_hat_max": R_HAT_MAX, "ess_min": ESS_MIN, "quantities": list(names),
        "simulate_seconds": round(simulate_seconds, 2),
        "compile_seconds": round(fitter.compile_seconds - compile_before, 2), "wall_seconds": round(wall, 2),
        "fit_seconds_total": round(float(sum(r["diag"]["seconds"] for r in per_dataset.values())), 2),
        "config": config.to_dict(),
    }
    if mode == "sbc":
        summary, verdict, passed, band, ranks = _sbc_verdict(table, names, settings)
        return StudyResult(model, mode, config, settings, table, summary, verdict, passed, band, ranks)
    summary, verdict, passed = _coverage_verdict(table, names, settings)
    return StudyResult(model, mode, config, settings, table, summary, verdict, passed)


def _summarise_fit(q, truth, prior_var, diag, rank_draws, rng, qdiag) -> dict:
    quantities = {}
    for n, v in q.items():
        x = np.asarray(v, dtype=float).ravel()
        t = float(truth[n])
        row: dict[str, Any] = {"truth": t}
        if not np.all(np.isfinite(x)):
            row.update(_empty_fit_columns())
            quantities[n] = row
            continue
        mean, sd = float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0
        row.update({"mean": mean, "sd": sd, "median": float(np.median(x)),
                    "z_score": (mean - t) / sd if sd > 0 else float("nan"),
                    "contraction": 1.0 - sd**2 / prior_var[n] if prior_var[n] > 0 else float("nan")})
        for lv in LEVELS:
            lo, hi = np.quantile(x, [(1 - lv) / 2, (1 + lv) / 2])
            row[f"lower_{int(100 * lv)}"] = float(lo)
            row[f"upper_{int(100 * lv)}"] = float(hi)
            row[f"covered_{int(100 * lv)}"] = bool(lo <= t <= hi)
        # chain-major pooling: (chains, samples) -> chain 0's draws, then chain 1's, ...
        rank, used = sbc_rank(t, np.asarray(v), rank_draws, rng)
        row["rank"], row["rank_draws"] = rank, used
        row["r_hat"], row["ess_bulk"] = qdiag[n]
        quantities[n] = row
    return {"quantities": quantities, "diag": diag}


def _empty_fit_columns() -> dict:
    cols: dict[str, Any] = {c: float("nan") for c in ("mean", "sd", "median", "z_score", "contraction",
                                                     "rank", "rank_draws", "r_hat", "ess_bulk")}
    for lv in LEVELS:
        cols[f"lower_{int(100 * lv)}"] = float("nan")
        cols[f"upper_{int(100 * lv)}"] = float("nan")
        cols[f"covered_{int(100 * lv)}"] = None
    return {**cols, "divergences": np.nan, "max_r_hat": np.nan, "min_ess_bulk": np.nan, "mean_steps": np.nan,
            "tree_depth_hits": np.nan, "seconds": np.nan}


def _diag_columns(d: Mapping) -> dict:
    return {k: d[k] for k in ("divergences", "max_r_hat", "min_ess_bulk", "mean_steps", "tree_depth_hits",
                              "seconds")}


# ================================================================================ verdicts
def _fit_lines(table, settings) -> list[str]:
    per = table.drop_duplicates("dataset")
    n = len(per)
    fitted = per[per["status"] == "fitted"]
    unfittable = per[per["status"] == "unfittable"]
    failed = per[per["status"] == "failed"]
    flagged = fitted[~fitted["fit_ok"].astype(bool)]
    lines = [
        f"fits: {settings['chains']} chain(s) x ({settings['warmup']} warm-up + {settings['samples']} draws); "
        f"{len(fitted)} of {n} datasets fitted in {settings['fit_seconds_total']:.0f} s",
        f"  (+ {settings['compile_seconds']:.0f} s compiling; lanes run by {settings['vectorize']} on "
        f"{len(settings['devices'])} device(s))",
    ]
    if len(unfittable):
        lines.append(f"  {len(unfittable)} dataset(s) unfittable (a school without students): "
                     f"datasets {_list(unfittable['dataset'])}; not in the statistics")
    if len(failed):
        lines.append(f"  {len(failed)} fit(s) gave non-finite draws: datasets {_list(failed['dataset'])}; "
                     "not in the statistics")
    if len(fitted):
        div = int((fitted["divergences"] > 0).sum())
        rh = int((fitted["max_r_hat"] > R_HAT_MAX).sum())
        ess = int((fitted["min_ess_bulk"] < ESS_MIN).sum())
        depth = float(fitted["tree_depth_hits"].mean())
        lines.append(f"  {len(flagged)} of {len(fitted)} fits fail diagnostics ({div} divergent, {rh} R-hat > "
                     f"{R_HAT_MAX}, {ess} bulk ESS < {ESS_MIN:.0f}): kept in the statistics")
        lines.append(f"  mean leapfrog steps per draw {fitted['mean_steps'].mean():.0f}; "
                     f"tree depth saturated in {100 * depth:.0f}% of draws")
    return lines


def _list(values, most: int = 8) -> str:
    v = [str(int(x)) for x in values]
    return ", ".join(v[:most]) + (f" and {len(v) - most} more" if len(v) > most else "")


def _sbc_verdict(table, names, settings):
    import pandas as pd

    used = table[table["status"] == "fitted"]
    n_values = int(used["rank_draws"].max()) + 1 if len(used) else settings["rank_draws"] + 1
    ranks = {q: used.loc[used["quantity"] == q, "rank"].to_numpy(np.int64) for q in names}
    n = len(ranks[names[0]])
    rows = []
    # the printed and plotted band is simultaneous at 1 - alpha / (2m): an ECDF that leaves
    # it has p < alpha / (2m), hence a combined p < alpha / m and a Holm-adjusted p < alpha
    band = ecdf_band(n, n_values, FAMILY_ALPHA / (2 * len(names))) if n > 0 else None
    for q in names:
        r = ranks[q]
        if n == 0:
            rows.append({"quantity": q, "n": 0, "bins": 0, "chi2": np.nan, "chi2_p": np.nan, "ecdf_p": np.nan,
                         "inside_band": False, "p": np.nan})
            continue
        chi = chi_square_uniformity(r, n_values)
        p_ecdf, inside = ecdf_test(r, band)
        rows.append({"quantity": q, "n": n, "bins": chi.df + 1, "chi2": chi.statistic, "chi2_p": chi.p_value,
                     "ecdf_p": p_ecdf, "inside_band": inside, "p": combined_p(chi.p_value, p_ecdf)})
    summary = pd.DataFrame(rows)
    adjusted, rejected = holm(summary["p"].to_numpy(float), FAMILY_ALPHA)
    summary["p_holm"] = adjusted
    summary["pass"] = ~rejected & (summary["n"] > 0)
    passed = bool(summary["pass"].all())

    lines = [
        f"recover {settings['model']}: simulation-based calibration, {settings['datasets']} datasets with "
        f"parameters from the prior (seeds {settings['sim_seeds']})",
        *_fit_lines(table, settings),
        f"ranks of the truth among {n_values - 1} evenly thinned draws (0..{n_values - 1}); tests: chi-square "
        f"on {int(summary['bins'].max()) if n else 0} bins, ECDF simultaneous band",
        f"  a quantity's p = 2 x the smaller p; Holm over {len(names)} quantities: family false-alarm rate "
        f"{FAMILY_ALPHA:.0%}; band: simultaneous at {1 - FAMILY_ALPHA / (2 * len(names)):.2%} (OUT implies FAIL)",
        f"{'quantity':<27} {'chi2 p':>7} {'ECDF p':>7} {'band':>6} {'Holm p':>7}  verdict",
    ]
    for _, r in summary.iterrows():
        lines.append(f"{r['quantity']:<27} {_fmt_p(r['chi2_p'])} {_fmt_p(r['ecdf_p'])} "
                     f"{('in' if r['inside_band'] else 'OUT'):>6} {_fmt_p(r['p_holm'])}  "
                     f"{'pass' if r['pass'] else 'FAIL'}")
    if n < 10:
        lines.append(f"note: only {n} fitted datasets: the tests have little power (use 100 or more)")
    low_ess = used[used["ess_bulk"] < n_values - 1] if "ess_bulk" in used else used.iloc[:0]
    if len(low_ess):
        lines.append(f"note: {len(low_ess)} (dataset, quantity) pairs have a bulk ESS below the {n_values - 1} rank "
                     f"draws; autocorrelated draws make the ranks U-shaped (longer chains, or fewer --rank-draws)")
    failing = summary.loc[~summary["pass"], "quantity"].tolist()
    lines.append(
        f"verdict: PASS: no quantity's ranks depart from uniformity ({n} datasets)" if passed else
        f"verdict: FAIL: {', '.join(failing)} miscalibrated (ranks not uniform)"
    )
    return summary, "\n".join(lines), passed, band, ranks


def _fmt_p(p) -> str:
    return f"{'nan':>7}" if p is None or not np.isfinite(p) else f"{p:7.3f}" if p >= 0.001 else f"{p:7.0e}"


def _coverage_verdict(table, names, settings):
    import pandas as pd

    used = table[table["status"] == "fitted"]
    n_checks = len(LEVELS) * len(names)
    confidence = 1.0 - FAMILY_ALPHA / n_checks
    rows = []
    for q in names:
        u = used[used["quantity"] == q]
        n = len(u)
        for lv in LEVELS:
            k = int(u[f"covered_{int(100 * lv)}"].astype(bool).sum()) if n else 0
            lo95, hi95 = clopper_pearson(k, n, 0.95)
            lo, hi = clopper_pearson(k, n, confidence)
            rows.append({"quantity": q, "level": lv, "n": n, "covered": k, "coverage": k / n if n else np.nan,
                         "cp95_lower": lo95, "cp95_upper": hi95, "band_lower": lo, "band_upper": hi,
                         "pass": bool(n > 0 and lo <= lv <= hi)})
    summary = pd.DataFrame(rows)
    stats_rows = {}
    for q in names:
        u = used[used["quantity"] == q]
        err = u["mean"] - u["truth"]
        stats_rows[q] = {"bias": float(err.mean()) if len(u) else np.nan,
                         "rmse": float(np.sqrt(np.mean(err**2))) if len(u) else np.nan,
                         "mean_sd": float(u["sd"].mean()) if len(u) else np.nan,
                         "mean_z": float(u["z_score"].mean()) if len(u) else np.nan,
                         "mean_contraction": float(u["contraction"].mean()) if len(u) else np.nan}
    for col in ("bias", "rmse", "mean_sd", "mean_z", "mean_contraction"):
        summary[col] = summary["quantity"].map(lambda q, c=col: stats_rows[q][c])
    passed_q = {q: bool(summary.loc[summary["quantity"] == q, "pass"].all()) for q in names}
    summary["estimand_pass"] = summary["quantity"].map(passed_q)
    passed = all(passed_q.values())
    truth = table.drop_duplicates("quantity").set_index("quantity")["truth"]
    lines = [
        f"recover {settings['model']}: coverage at a fixed truth, {settings['datasets']} datasets "
        f"(seeds {settings['sim_seeds']})",
        "truth: " + ", ".join(f"{q} = {truth[q]:g}" for q in names),
        *_fit_lines(table, settings),
        f"central intervals; band: Clopper-Pearson at {100 * confidence:.2f}% (Bonferroni over {n_checks} checks:",
        f"  family false-alarm rate {FAMILY_ALPHA:.0%}); the 95% bands are in summary.csv",
        f"{'estimand':<27} {'level':>5} {'covered':>9} {'coverage':>8}  {'band':<15} verdict",
    ]
    for _, r in summary.iterrows():
        lines.append(f"{r['quantity']:<27} {r['level']:5.0%} {r['covered']:>4}/{r['n']:<4} {r['coverage']:8.2f}  "
                     f"[{r['band_lower']:.2f}, {r['band_upper']:.2f}]    {'pass' if r['pass'] else 'FAIL'}")
    for q in names:
        s = stats_rows[q]
        lines.append(f"{q:<27} bias {s['bias']:+.3f}, RMSE {s['rmse']:.3f}, mean sd {s['mean_sd']:.3f}, "
                     f"mean z {s['mean_z']:+.2f} (coverage {'pass' if passed_q[q] else 'FAIL'})")
    failing = []
    for q in names:
        s = summary[(summary["quantity"] == q) & ~summary["pass"]]
        if len(s):
            under = bool((s["band_upper"] < s["level"]).any())
            over = bool((s["band_lower"] > s["level"]).any())
            how = "under- and over-covers" if under and over else "under-covers" if under else "over-covers"
            failing.append(f"{q} ({how})" if len(used) else q)
    if passed:
        lines.append("verdict: PASS: every interval covers the truth at its nominal rate")
    else:
        lines.append(f"verdict: FAIL: {', '.join(failing)}: coverage departs from nominal at this truth")
    if settings["model"] == "naive":
        if passed:
            lines.append("naive: coverage holds at this truth: here assignment does not depend on the unobserved\n"
                         "  ability enough to bias the regression")
        else:
            lines.append("naive: fails, as expected: in the REGULAR cohort the unobserved part of ability raises\n"
                         "  both the score and the chance of a SMALL class, so the regression is confounded\n"
                         "  (see the bias above)")
    return summary, "\n".join(lines), passed


# ================================================================================== plots
def plot_ecdf_difference(result: StudyResult):
    """ECDF of the fractional ranks minus the uniform CDF, one panel per quantity, with the
    simultaneous band (Säilynoja, Bürkner and Vehtari 2022) at the level the verdict uses."""
    from .plots import _pyplot

    plt = _pyplot()
    names = list(result.ranks)
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow), squeeze=False)
    band = result.band
    for ax, q in zip(axes.ravel(), names):
        r = result.ranks[q]
        if band is None or r.size == 0:
            ax.set_title(f"{q}\n(no fitted datasets)", fontsize=8)
            continue
        ecdf = ecdf_counts(r, band.n_values) / r.size
        ax.fill_between(band.z, band.lower - band.z, band.upper - band.z, step="post", color="0.85",
                        label=f"{1 - band.alpha:.2%} simultaneous band")
        ax.step(band.z, ecdf - band.z, where="post", color="#2166ac", lw=1.2, label="ranks")
        ax.axhline(0.0, color="k", lw=0.6)
        ok = result.summary.set_index("quantity").loc[q, "pass"]
        ax.set_title(f"{q} ({'pass' if ok else 'FAIL'})", fontsize=8)
        ax.set_xlabel("fractional rank of the truth", fontsize=7)
        ax.set_ylabel("ECDF - uniform CDF", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"SBC of {result.model}: ECDF difference of the ranks ({len(result.ranks[names[0]])} datasets)",
                 fontsize=9)
    return fig


def plot_rank_histograms(result: StudyResult):
    """Histograms of the ranks with the 99% pointwise binomial range of a bin's count."""
    from scipy import stats

    from .plots import _pyplot

    plt = _pyplot()
    names = list(result.ranks)
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.4 * nrow), squeeze=False)
    n_values = result.band.n_values if result.band is not None else int(result.settings["rank_draws"]) + 1
    for ax, q in zip(axes.ravel(), names):
        r = result.ranks[q]
        n = r.size
        bins = chi_square_bins(max(n, 1), n_values)
        edges = np.round(np.linspace(0, n_values, bins + 1))
        if n:
            p = np.diff(edges) / n_values  # bins of unequal width when n_values is not a multiple
            lo, hi = stats.binom.ppf(0.005, n, p), stats.binom.ppf(0.995, n, p)
            ax.bar(edges[:-1], hi - lo, width=np.diff(edges), bottom=lo, align="edge", color="0.85",
                   label="99% range per bin")
            ax.stairs(n * p, edges, color="0.5", lw=0.8)
            ax.hist(r, bins=edges, color="#2166ac", alpha=0.8, label="ranks")
        ax.set_title(q, fontsize=8)
        ax.set_xlabel("rank of the truth", fontsize=7)
        ax.set_ylabel("datasets", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(f"SBC of {result.model}: rank histograms", fontsize=9)
    return fig


def plot_coverage(result: StudyResult):
    """Observed coverage against the nominal level, with the Clopper-Pearson bands."""
    from .plots import _pyplot

    plt = _pyplot()
    names = list(dict.fromkeys(result.summary["quantity"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, q in zip(axes.ravel(), names):
        s = result.summary[result.summary["quantity"] == q]
        lv = s["level"].to_numpy(float)
        ax.plot([0.4, 1.0], [0.4, 1.0], "k--", lw=0.8, label="nominal")
        ax.vlines(lv, s["band_lower"], s["band_upper"], color="0.6", lw=6, label="family band")
        ax.vlines(lv, s["cp95_lower"], s["cp95_upper"], color="0.3", lw=2, label="95% band")
        ax.plot(lv, s["coverage"], "o", color="#b2182b", label="observed")
        ax.set_xlim(0.4, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{q} ({'pass' if s['pass'].all() else 'FAIL'})", fontsize=8)
        ax.set_xlabel("nominal level of the central interval", fontsize=7)
        ax.set_ylabel("share of datasets covered", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=6, loc="lower right")
    n = int(result.summary["n"].max()) if len(result.summary) else 0
    fig.suptitle(f"Coverage of {result.model} at a fixed truth ({n} datasets)", fontsize=9)
    return fig


def plot_z_contraction(result: StudyResult):
    """Posterior z-score against posterior contraction, one point per dataset."""
    from .plots import _pyplot

    plt = _pyplot()
    names = list(dict.fromkeys(result.table["quantity"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    t = result.table[result.table["status"] == "fitted"]
    for ax, q in zip(axes.ravel(), names):
        u = t[t["quantity"] == q]
        ok = u["fit_ok"].astype(bool)
        ax.scatter(u.loc[ok, "contraction"], u.loc[ok, "z_score"], s=10, color="#2166ac", label="fit passes")
        ax.scatter(u.loc[~ok, "contraction"], u.loc[~ok, "z_score"], s=14, marker="x", color="#b2182b",
                   label="fit flagged")
        for y in (-2, 2):
            ax.axhline(y, color="0.6", lw=0.7, ls="--")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlim(min(0.0, float(u["contraction"].min()) if len(u) else 0.0), 1.02)
        ax.set_title(q, fontsize=8)
        ax.set_xlabel("posterior contraction 1 - var_post / var_prior", fontsize=7)
        ax.set_ylabel("posterior z-score (mean - truth) / sd", fontsize=7)
        ax.tick_params(labelsize=7)
    axes.ravel()[0].legend(fontsize=6)
    fig.suptitle(f"{result.model}: z-score vs contraction", fontsize=9)
    return fig


# ==================================================================================== CLI
def cmd_recover(args) -> int:
    from .cli import UsageError, _load_config, _prepare_out_dir
    from .fit import _check_sampler_args

    _check_sampler_args(args)
    if args.datasets < 1:
        raise UsageError(f"--datasets must be >= 1, got {args.datasets}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.rank_draws < 1:
        raise UsageError(f"--rank-draws must be >= 1, got {args.rank_draws}")
    if args.from_prior and args.model == "naive":
        raise UsageError("--from-prior is not available for naive: the naive regression has no generative prior "
                         "of the data; use a fixed truth (the default Config or --config FILE)")
    if args.rank_draws > args.chains * args.samples:
        raise UsageError(f"--rank-draws ({args.rank_draws}) must not exceed the draws of a fit "
                         f"(--chains x --samples = {args.chains * args.samples})")
    if not 0 <= args.seed <= 2**62:
        raise UsageError(f"--seed must be between 0 and 2**62, got {args.seed}")
    config = _load_config(args.config)
    if args.model == "naive" and config.n_regular == 0:
        raise UsageError("the naive analysis needs REGULAR students (n_regular > 0)")
    if args.model == "randomized" and config.n_experimental == 0:
        raise UsageError("the randomized analysis needs EXPERIMENTAL students (n_experimental > 0)")
    out = _prepare_out_dir(args.out, args.force, [])
    _check_writable(out)
    result = run_study(args.model, args.datasets, config=config, from_prior=args.from_prior, seed=args.seed,
                       chains=args.chains, warmup=args.warmup, samples=args.samples, batch_size=args.batch_size,
                       rank_draws=args.rank_draws)
    print(result.verdict, flush=True)
    paths = result.write(out)
    print(f"wrote {', '.join(p.name for p in paths)} in {out}")
    return 0 if result.passed else 1


def _check_writable(out: Path) -> None:
    """Refuse, before hours of fitting, an output folder that cannot be created or written."""
    from .cli import UsageError

    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: cannot write there ({existing} is not a writable folder)")


def register_cli(sub) -> None:
    p = sub.add_parser("recover", help="parameter recovery: SBC from the prior, or coverage at a fixed truth")
    p.add_argument("--model", choices=list(ANALYSES), default="structural")
    p.add_argument("--datasets", type=int, required=True, help="number of simulated datasets")
    p.add_argument("--from-prior", action="store_true",
                   help="simulation-based calibration: each dataset's parameters drawn from the analysis prior")
    p.add_argument("--config", help="TOML configuration: the fixed truth (default: the notebook's numbers); "
                                    "with --from-prior only its design (cohort sizes, schools, races, classes)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="dataset k is simulated with seed SEED+k")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=None,
                   help="datasets fitted in one compiled call (default: 4 per device)")
    p.add_argument("--rank-draws", type=int, default=RANK_DRAWS,
                   help="posterior draws (thinned evenly) the SBC rank is taken among")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.set_defaults(func=cmd_recover)
