r"""Model checks after a fit: do the data show what the fitted model rules out?

Each check is one statistic of the data, compared with what data replicated from the
fitted model give, and one threshold on the resulting p-value.  When a check fires,
the fit warns in one line naming the check, its p-value and the fix; ``--strict``
turns the warning into exit status 1, and ``summary.json`` records every check run
(``"checks"``).

**Score edges** (:func:`edge_check`; analyses with a noise-free uniform ability, the
default for data that declare no noise).  Under that model each student's ability
part :math:`U_i` is read off her score exactly, and the :math:`U_i` are independent
Uniform(0, W): in a replicated dataset the number :math:`K` of the :math:`n` students
within :math:`bW` of either edge is Binomial(:math:`n, 2b`)
(:data:`classsize.model.noise.EDGE_BAND` :math:`= b`).  The model records the
observed share :math:`k_d / n` at every posterior draw :math:`d` (site
``ability_edge_share``); the posterior predictive p-value is

.. math:: p = \frac{1}{D} \sum_d P(K \le k_d) ,

exact in the replicates (no Monte Carlo).  Measurement noise softens the edges, so the
observed share falls below :math:`2b` and :math:`p` towards 0.  Posterior predictive
p-values are not uniform when the model is right (they pile up near 1/2), so the
threshold :data:`EDGE_THRESHOLD` is set by simulation (``tests/test_model_checks.py``,
``bench/README.md``).

**Class effects** (:func:`class_check`; every fit without class effects).  The model
forms classes at random: a class's students are drawn from its school's students of
its size, whatever their scores, and its teacher's MA (and any class covariate) is
drawn apart from them.  So within a stratum of classes that share school, size, MA
and class covariates, replicating the class formation is permuting the students'
class labels, and under the model the observed labels are one such permutation.  The
statistic is the between-class sum of squares of the scores within strata,

.. math:: B = \sum_c n_c (\bar y_c - \bar y_{s(c)})^2 ,

its p-value the share of :data:`PERMUTATIONS` permutations (and the data) with a
:math:`B` at least the observed one: an exact test, false alarms at most the
threshold :data:`CLASS_THRESHOLD`.  Students of one class who share a teacher are
more alike than that, and :math:`p` falls towards 0.  Reported with :math:`B` as the
share of the within-stratum sum of squares that lies between classes, observed and
averaged over the permutations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from classsize.model.noise import EDGE_BAND, EDGE_SITE

#: p-value below which the score-edge check fires, set by simulation: on 300 noise-free
#: datasets of the notebook's design (seeds 0-299) the smallest p was 0.0013 and 4 fell
#: below 0.01; at noise sd 1 all 30 fell below it (median 3e-64; bench/README.md, "Model checks")
EDGE_THRESHOLD = 0.001
#: p-value at or below which the class-effect check fires (exact: false alarms at most this)
CLASS_THRESHOLD = 0.005
#: permutations of the class labels the class-effect check compares with
PERMUTATIONS = 999


@dataclass(frozen=True)
class Check:
    """One model check: its ``statistic`` observed and ``expected`` in replicated data,
    its ``p_value``, the ``threshold``, whether it ``fired``, what it means and its fix."""

    name: str
    statistic: float
    expected: float
    p_value: float
    threshold: float
    fired: bool
    meaning: str
    fix: str

    def line(self, analysis: str) -> str:
        """The one warning line of a check that fired."""
        return (f"{analysis}: model check '{self.name}' fired (p = {self.p_value:.4f} < {self.threshold:g}): "
                f"{self.meaning} ({self.statistic:.4f} observed, {self.expected:.4f} in replicated data); "
                f"fit with {self.fix}")

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "name"}


def edge_check(edge_share: np.ndarray, n_students: int) -> Check:
    """The score-edge check from the posterior draws of the observed edge share."""
    from scipy import stats

    share = np.ravel(np.asarray(edge_share, dtype=float))
    k = np.rint(share * n_students)
    p = float(np.mean(stats.binom.cdf(k, n_students, 2 * EDGE_BAND)))
    return Check("score edges", float(share.mean()), 2 * EDGE_BAND, p, EDGE_THRESHOLD, p < EDGE_THRESHOLD,
                 "fewer students lie at the edges of ability's range than noise-free scores give: the scores "
                 "look measured with noise", "--score-noise free")


def class_strata(observed) -> np.ndarray:
    """Each class slot's stratum: the classes that share school, size, MA and class
    covariates (one integer per slot)."""
    columns = [np.asarray(observed.school_of_class), np.asarray(observed.class_is_small),
               np.asarray(observed.teacher_has_ma)]
    if observed.class_covariates is not None and np.shape(observed.class_covariates)[-1]:
        columns += list(np.asarray(observed.class_covariates, dtype=float).T)
    keys = np.stack([np.asarray(c, dtype=float) for c in columns], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def class_check(observed, seed: int = 0) -> Check:
    """The class-effect check of one dataset's encoded data (:class:`~classsize.model.pieces.Observed`)."""
    y = np.asarray(observed.test_score, dtype=float)
    label = np.asarray(observed.class_of_student)
    stratum = class_strata(observed)[label]
    order = np.lexsort((label, stratum))  # students by stratum, then class
    y, label, stratum = y[order], label[order], stratum[order]
    n_labels = int(label.max()) + 1
    counts = np.bincount(label, minlength=n_labels)
    used = counts > 0
    stratum_sum = np.bincount(stratum, weights=y)
    stratum_n = np.bincount(stratum)
    constant = float(np.sum(stratum_sum ** 2 / np.maximum(stratum_n, 1)))
    within_total = float(np.sum(y ** 2)) - constant

    def between(values):
        sums = np.bincount(label, weights=values, minlength=n_labels)
        return float(np.sum(sums[used] ** 2 / counts[used])) - constant

    observed_b = between(y)
    rng = np.random.default_rng(seed)
    permuted = np.empty(PERMUTATIONS)
    for j in range(PERMUTATIONS):  # a uniform random order of the students within each stratum
        permuted[j] = between(y[np.argsort(stratum + rng.random(y.size), kind="stable")])
    p = float((1 + np.sum(permuted >= observed_b * (1 - 1e-12))) / (1 + PERMUTATIONS))
    scale = within_total if within_total > 0 else 1.0
    return Check("class effects", observed_b / scale, float(permuted.mean()) / scale, p, CLASS_THRESHOLD,
                 p <= CLASS_THRESHOLD,
                 "students of one class are more alike than classes formed at random give (share of the score "
                 "variation within school, size and MA that lies between classes)", "--class-effects free")


def model_checks(problem, sites: dict, seed: int = 0) -> dict[str, Check]:
    """The checks that apply to a fit of ``problem`` (one dataset) with posterior
    ``sites``: the score edges where the model recorded their share, the class effects
    where the fit has none.  When both fire, the score edges' fix is to fit the class
    effects first."""
    out = {}
    if EDGE_SITE in sites:
        out["score_edges"] = edge_check(sites[EDGE_SITE], problem.n_students)
    if not problem.analysis.class_effects_fitted():
        out["class_effects"] = class_check(problem.observed, seed)
    edges, classes = out.get("score_edges"), out.get("class_effects")
    if edges is not None and edges.fired and classes is not None and classes.fired:
        # class effects soften the edges too: fit them first
        out["score_edges"] = replace(edges, fix="--class-effects free first (class effects soften the edges too), "
                                                "then --score-noise free if this check still fires")
    return out
