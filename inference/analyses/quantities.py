"""The quantities a study reports, by name: an estimand or parameter (``"teacher_ma_effect"``)
or one element of a vector site (``"race_probs[2]"``, ``"school_effect[0]"``)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from classsize.model.design import Design
from classsize.model.format import FIRST_SCHOOL_ID


def element_of(name: str) -> tuple[str, int | None]:
    """``("race_probs", 2)`` for the quantity ``"race_probs[2]"``; ``(name, None)`` for a
    quantity that is not an element of a vector site."""
    if name.endswith("]") and "[" in name:
        site, index = name[:-1].split("[", 1)
        return site, int(index)
    return name, None


def quantity_label(name: str, design: Design) -> str:
    """The name a study's tables and plots give the quantity ``name``: an element of a
    vector site labelled as the data label it, ``race_probs[WHITE]`` for
    ``race_probs[0]`` (the race codes) and ``school_effect[9001]`` for
    ``school_effect[0]`` (the school ids, :data:`~classsize.model.format.FIRST_SCHOOL_ID` + k)."""
    site, index = element_of(name)
    if index is None:
        return name
    label = FIRST_SCHOOL_ID + index if site == "school_effect" else design.race_codes[index]
    return f"{site}[{label}]"


def quantity_draws(draws: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """The draws of a site, or of element ``i`` (its last axis) of a vector site for a
    quantity named ``site[i]``."""
    site, index = element_of(name)
    v = np.asarray(draws[site])
    return v if index is None else v[..., index]


def moments(d, index: int | None = None) -> tuple[float, float]:
    """Mean and variance of a prior, or of its element ``index`` (a vector prior)."""
    mean, var = np.asarray(d.mean), np.asarray(d.variance)
    if index is not None:
        mean, var = mean[..., index], var[..., index]
    return float(mean), float(var)
