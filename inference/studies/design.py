r"""Design diagnosis: what a grid of designs can detect (``classsize design``).

A **grid** (:class:`DesignGrid`) is a base configuration and one or more axes, each a
configuration field with the values it takes (``n_experimental=250,500,1000``); the
axes are crossed, and each **cell** is the base with one value of each axis.  For each
cell, every analysis named is fitted to the same ``K`` simulated datasets (common
random numbers): the cell is a coverage study at the cell's truth
(:func:`~.run.run_study`), whose simulation seed

.. math:: S_{cell} = \mathrm{int}(\mathrm{SHA256}([S, \text{the cell's field: value pairs, sorted}])_{:15})

depends on the design seed :math:`S` and the cell's values, not on the cell's place
in the grid, so that dataset :math:`k` is ``simulate --seed`` :math:`S_{cell} + k`'s
and a grid with another value on an axis reuses the finished cells' fits
(``--resume``).  Each cell's study keeps its batch files in
``cells/<cell>/<analysis>/batches`` (:mod:`.plan`), so a design resumes, and runs on
Dask workers, as a study does.

For each cell, analysis and estimand, over the fitted datasets (:func:`design_table`):

* **power**, the share of 90% intervals that exclude 0, with its 95% Clopper–Pearson
  interval (``power_lower``, ``power_upper``);
* **bias** and **RMSE** of the posterior mean, **coverage** of the 90% interval, the
  **mean width** of the 90% interval, and **warned**, the share of fits with sampler
  warnings (divergences, R-hat above 1.01, bulk ESS below 400).

An analysis a cell's data cannot support (``naive`` without REGULAR students) is
skipped for that cell, with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from classsize.model import Config, palette
from classsize.model.config import ConfigError

from classsize.inference.outputs import UsageError

#: The level of the intervals a design reports (power, coverage, width).
DESIGN_LEVEL = 90
#: The confidence of the Clopper–Pearson interval around each power.
POWER_CONFIDENCE = 0.95
#: Power a design is said to reach (the summary names the first cell that does).
TARGET_POWER = 0.8
#: The columns of ``design.csv`` after the axes.
COLUMNS = ("analysis", "estimand", "truth", "datasets", "power", "power_lower", "power_upper", "bias", "rmse",
           "coverage", "mean_width", "warned", "unfittable")
#: Line styles of an analysis's lines in the design plot (one per value of the other axes).
LINE_STYLES = ("-", "--", ":", "-.")


def _field_types() -> dict[str, type]:
    """The configuration's scalar fields (an axis may vary them) and their types."""
    defaults = Config()
    return {f.name: type(getattr(defaults, f.name)) for f in fields(Config)
            if isinstance(getattr(defaults, f.name), (int, float)) and not isinstance(getattr(defaults, f.name), bool)}


@dataclass(frozen=True)
class DesignGrid:
    """A base configuration and its axes (``(field, values)`` pairs, in the order given)."""

    base: Config
    axes: tuple[tuple[str, tuple], ...] = ()

    @classmethod
    def parse(cls, base: Config, vary: Sequence[str]) -> "DesignGrid":
        """The grid of ``--vary FIELD=V1,V2,...`` arguments; a bad field, value or cell
        is refused in one line (:class:`~classsize.inference.outputs.UsageError`)."""
        types = _field_types()
        axes: list[tuple[str, tuple]] = []
        for text in vary:
            name, sep, values = text.partition("=")
            name = name.strip()
            if not sep or not values.strip():
                raise UsageError(f"--vary {text!r}: give FIELD=V1,V2,... (e.g. n_experimental=250,500,1000)")
            if name not in types:
                raise UsageError(f"--vary {text!r}: {name!r} is not a number field of the configuration "
                                 f"(one of {', '.join(sorted(types))})")
            if name in dict(axes):
                raise UsageError(f"--vary: {name!r} is given twice")
            parsed = []
            for v in values.split(","):
                try:
                    value = types[name](v.strip()) if types[name] is float else int(v.strip())
                except ValueError:
                    raise UsageError(f"--vary {name}: {v.strip()!r} is not a{'n integer' if types[name] is int else ' number'}") from None
                if isinstance(value, float) and not math.isfinite(value):
                    raise UsageError(f"--vary {name}: {v.strip()!r} is not a finite number")
                if value in parsed:
                    raise UsageError(f"--vary {name}: {value} is given twice")
                parsed.append(value)
            axes.append((name, tuple(parsed)))
        grid = cls(base, tuple(axes))
        for cell in grid.cells():
            grid.config_of(cell)  # every cell is a valid configuration, before any work
        return grid

    def cells(self) -> list[dict[str, Any]]:
        """The crossed axes: one mapping of field to value per cell (the base alone when
        there are no axes)."""
        names = [n for n, _ in self.axes]
        return [dict(zip(names, values)) for values in itertools.product(*(v for _, v in self.axes))]

    def config_of(self, cell: dict[str, Any]) -> Config:
        """The cell's configuration: the base with the cell's values."""
        try:
            return Config.from_dict({**self.base.to_dict(), **cell})
        except ConfigError as e:
            raise UsageError(f"--vary cell {cell_name(cell)}: {e}") from None


def cell_name(cell: dict[str, Any]) -> str:
    """A cell as its folder is named: ``n_experimental=500,n_schools=10`` (``base``
    without axes)."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items()) or "base"


def cell_seed(seed: int, cell: dict[str, Any]) -> int:
    """The simulation seed of a cell's dataset 0 (see the module docstring): below
    2**60, so that ``seed + k`` stays a valid seed."""
    text = json.dumps([int(seed), sorted((k, float(v)) for k, v in cell.items())])
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def interval_widths(study, estimand: str) -> np.ndarray:
    """The width of each dataset's 90% interval for ``estimand`` in a study (NaN where
    the dataset was not fitted)."""
    rows = study.table[study.table["quantity"] == estimand]
    width = rows[f"upper_{DESIGN_LEVEL}"].to_numpy(float) - rows[f"lower_{DESIGN_LEVEL}"].to_numpy(float)
    return np.where(rows["status"].to_numpy() == "fitted", width, np.nan)


def interval_summary(table, estimand: str) -> dict[str, float]:
    """The design statistics of one estimand in one study's table (see the module
    docstring); NaN where no dataset was fitted."""
    from classsize.inference.studies.calibration import clopper_pearson

    rows = table[table["quantity"] == estimand]
    fitted = rows[rows["status"] == "fitted"]
    n = len(fitted)
    out = {"truth": float(rows["truth"].iloc[0]) if len(rows) else math.nan, "datasets": n,
           "unfittable": int((rows["status"] != "fitted").sum())}
    if n == 0:
        return {**out, **{c: math.nan for c in ("power", "power_lower", "power_upper", "bias", "rmse", "coverage",
                                                  "mean_width", "warned")}}
    lo, hi = fitted[f"lower_{DESIGN_LEVEL}"].to_numpy(float), fitted[f"upper_{DESIGN_LEVEL}"].to_numpy(float)
    excludes = (lo > 0) | (hi < 0)
    err = fitted["mean"].to_numpy(float) - fitted["truth"].to_numpy(float)
    k = int(excludes.sum())
    p_lo, p_hi = clopper_pearson(k, n, POWER_CONFIDENCE)
    return {**out, "power": k / n, "power_lower": p_lo, "power_upper": p_hi, "bias": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err**2))), "coverage": float(fitted[f"covered_{DESIGN_LEVEL}"].mean()),
            "mean_width": float(np.mean(hi - lo)), "warned": float((~fitted["fit_ok"].astype(bool)).mean())}


def design_table(grid: DesignGrid, studies: dict[tuple[str, str], Any], estimands: Sequence[str]):
    """``design.csv``: one row per cell, analysis and estimand, the axes first
    (``studies`` maps ``(cell name, analysis)`` to its finished study)."""
    import pandas as pd

    rows = []
    for cell in grid.cells():
        for (name, analysis), study in studies.items():
            if name != cell_name(cell):
                continue
            for estimand in estimands:
                rows.append({**cell, "analysis": analysis, "estimand": estimand,
                             **interval_summary(study.table, estimand)})
    return pd.DataFrame(rows, columns=[n for n, _ in grid.axes] + list(COLUMNS))


def summary_text(grid: DesignGrid, table, estimand: str, skipped: dict[tuple[str, str], str],
                 datasets: int) -> str:
    """The design's one-paragraph summary: per analysis, the power for ``estimand``
    across the cells and the first cell along the axes that reaches
    :data:`TARGET_POWER` (its Clopper–Pearson lower bound named)."""
    rows = table[table["estimand"] == estimand]
    axes = [n for n, _ in grid.axes]
    parts = [f"{len(grid.cells())} design cell(s) x {datasets} simulated datasets each, "
             f"{DESIGN_LEVEL}% posterior intervals for {estimand}."]
    for analysis, group in rows.groupby("analysis", sort=False):
        powers = group["power"].to_numpy(float)
        text = (f"{analysis}: power {np.nanmin(powers):.2f} to {np.nanmax(powers):.2f}, mean interval width "
                f"{group['mean_width'].min():.2f} to {group['mean_width'].max():.2f}, coverage "
                f"{group['coverage'].min():.2f} to {group['coverage'].max():.2f}")
        reach = group[group["power"] >= TARGET_POWER]
        if len(reach):
            first = reach.iloc[0]
            where = ", ".join(f"{a} = {first[a]:g}" for a in axes) or "the base design"
            text += (f"; power {TARGET_POWER:.0%} first reached at {where} "
                     f"({first['power']:.2f}, 95% interval {first['power_lower']:.2f} to {first['power_upper']:.2f})")
        else:
            text += f"; no cell reaches power {TARGET_POWER:.0%}"
        parts.append(text + ".")
    for (name, analysis), reason in skipped.items():
        parts.append(f"{analysis} skipped at {name}: {reason}.")
    return " ".join(parts)


def plot_design(grid: DesignGrid, table, estimand: str):
    """Power (with its Clopper–Pearson interval) and mean interval width against each
    axis, one line per analysis (and per value of the other axes)."""
    import matplotlib.pyplot as plt

    axes_names = [n for n, _ in grid.axes] or [None]
    fig, panels = plt.subplots(2, len(axes_names), figsize=(4.6 * len(axes_names), 6.4), squeeze=False)
    rows = table[table["estimand"] == estimand]
    for j, axis in enumerate(axes_names):
        others = [n for n, _ in grid.axes if n != axis]
        keys = ["analysis"] + others
        lines_of = {}  # one colour per analysis (the palette's), one line style per other value
        for key, group in rows.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            index = lines_of[key[0]] = lines_of.get(key[0], -1) + 1
            style = LINE_STYLES[index % len(LINE_STYLES)]
            label = key[0] + "".join(f", {o} = {v:g}" for o, v in zip(others, key[1:]))
            x = group[axis].to_numpy(float) if axis else np.zeros(len(group))
            order = np.argsort(x)
            line, = panels[0, j].plot(x[order], group["power"].to_numpy(float)[order], marker="o", label=label,
                                      color=palette.ANALYSES.get(key[0], palette.MAIN), ls=style)
            panels[0, j].fill_between(x[order], group["power_lower"].to_numpy(float)[order],
                                      group["power_upper"].to_numpy(float)[order], color=line.get_color(), alpha=0.15)
            panels[1, j].plot(x[order], group["mean_width"].to_numpy(float)[order], marker="o",
                              color=line.get_color(), ls=style, label=label)
        panels[0, j].axhline(TARGET_POWER, color="0.5", lw=0.8, ls=":")
        panels[0, j].set_ylim(-0.02, 1.02)
        panels[0, j].set_ylabel(f"power ({DESIGN_LEVEL}% interval excludes 0)")
        panels[1, j].set_ylabel(f"mean {DESIGN_LEVEL}% interval width")
        panels[1, j].set_xlabel(axis or "base design")
        panels[0, j].set_title(estimand, fontsize=10)
    panels[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
