"""Running a design grid (:mod:`.design`): :func:`diagnose` and its
:class:`DesignResult`, the Python side of ``classsize design``.

Each cell and analysis is a coverage study (:func:`~.run.run_study`) at the cell's
truth, seeded by :func:`~.design.cell_seed`, all fitted by one runner (this process,
or Dask workers), so a design resumes and spreads as a study does.  Its files
(:meth:`DesignResult.writers`): ``design.csv`` (:func:`~.design.design_table`),
``design.png`` (:func:`~.design.plot_design`), ``summary.txt``
(:func:`~.design.summary_text`), ``design.json`` (the settings) and ``config.toml``
(the base configuration), beside ``cells/`` (each study's batch files).

**The worth of the REGULAR cohort** (``worth=True``, :mod:`.worth`).  The structural
analysis is fitted to the base design (REGULAR and EXPERIMENTAL students), and the
randomized analysis to EXPERIMENTAL-only designs on the ladder :func:`worth_ladder`
(from the base's EXPERIMENTAL students up to all its students), each ``datasets``
times; the size at which the randomized analysis's mean 90% interval width for the
estimand meets the structural one, with its bootstrap interval over the datasets,
is :attr:`DesignResult.worth` (``worth.json``, and a sentence in the summary).  These
studies are cells too: ``cells/worth/...``, seeded by their values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from classsize.model.precision import float64

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.engine.settings import DEFAULT_CHAINS, DEFAULT_SAMPLES, DEFAULT_WARMUP
from classsize.inference.outputs import FORMAT_VERSION
from classsize.inference.studies.design import (DESIGN_LEVEL, DesignGrid, cell_name, cell_seed, design_table,
                                                interval_widths, plot_design, summary_text)

#: The folder of the cells' studies inside a design's output folder.
CELLS = "cells"


@dataclass(repr=False)
class DesignResult:
    """A finished design: the grid, the table (``design.csv``), the studies by
    ``(cell name, analysis)``, the analyses skipped with their reasons, and the settings."""

    grid: DesignGrid
    table: Any
    studies: dict[tuple[str, str], Any]
    skipped: dict[tuple[str, str], str]
    settings: dict
    estimand: str = "small_class_direct_effect"
    extra: dict = field(default_factory=dict)

    worth: Any = None

    def summary(self) -> str:
        """One paragraph: power, width and coverage per analysis across the cells (and
        the worth of the REGULAR cohort when it was measured)."""
        text = summary_text(self.grid, self.table, self.estimand, self.skipped, self.settings["datasets"])
        if "worth_error" in self.settings:
            return f"{text} The worth of the REGULAR cohort could not be measured: {self.settings['worth_error']}."
        return text if self.worth is None else f"{text} {self.worth.statement()}"

    def plot(self):
        """Power and mean interval width against each axis (a matplotlib figure)."""
        return plot_design(self.grid, self.table, self.estimand)

    def write(self, out: str | Path) -> list[Path]:
        """Write the design's files into ``out``, all together, beside its ``cells``
        (:meth:`~classsize.inference.publish.OutputFolder.publish`); returns the paths."""
        from classsize.inference.publish import OutputFolder

        with OutputFolder(out, "design", mode="in_place", keep=True) as folder:
            return folder.publish(self.writers(), state=(CELLS,))

    def writers(self) -> dict:
        """Each output file's name, with a function that writes it to a given path."""
        from classsize.inference.plotting import save_figure

        settings = {"format_version": FORMAT_VERSION, **self.settings}
        return {
            "design.csv": lambda p: p.write_text(self.table.to_csv(index=False)),
            "summary.txt": lambda p: p.write_text(self.summary() + "\n"),
            "design.json": lambda p: p.write_text(json.dumps(settings, indent=2) + "\n"),
            "config.toml": lambda p: p.write_text(self.grid.base.to_toml()),
            "design.png": lambda p: save_figure(self.plot(), p, dpi=110),
            **({} if self.worth is None else {"worth.json": lambda p: p.write_text(
                json.dumps(worth_record(self.worth), indent=2) + "\n")}),
        }

    def __repr__(self) -> str:
        return (f"DesignResult({len(self.grid.cells())} cells x {', '.join(self.settings['analyses'])}, "
                f"{self.settings['datasets']} datasets each; .table, .summary(), .plot(), .write(folder))")


@float64
def diagnose(grid: DesignGrid, analyses: Sequence[str] = ("structural", "randomized"), datasets: int = 50, *,
             seed: int = 0, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
             samples: int = DEFAULT_SAMPLES, batch_size: int | None = None, out: str | Path | None = None,
             resume: bool = False, runner=None, progress=None,
             estimand: str = "small_class_direct_effect", worth: bool = False, boots: int = 2000) -> DesignResult:
    """Fit every analysis of ``analyses`` to ``datasets`` simulated datasets of each cell
    of ``grid`` (see :mod:`.design`); with ``out``, each cell's batches are written to
    ``out/cells/<cell>/<analysis>`` as they finish, and ``resume`` takes those already
    there.  ``progress(done, total)`` is told the datasets fitted over the whole grid."""
    from classsize.inference.studies.run import run_study

    cells = grid.cells()
    todo, skipped = [], {}
    for cell in cells:
        config = grid.config_of(cell)
        for name in analyses:
            analysis = get_analysis(name).knowing(config)
            try:
                analysis.check_design(config, sbc=False)
            except ValueError as e:
                skipped[(cell_name(cell), name)] = str(e)
                continue
            todo.append((cell, config, analysis))
    ladder = worth_ladder(grid.base) if worth else []
    if worth:
        todo.append(({"worth": "combined"}, grid.base, get_analysis("structural").knowing(grid.base)))
        for n in ladder:
            cfg = grid.config_of({"n_regular": 0, "n_experimental": n})
            todo.append(({"worth": "randomized", "n_regular": 0, "n_experimental": n}, cfg,
                         get_analysis("randomized").knowing(cfg)))
    total, done = len(todo) * datasets, 0
    studies = {}
    for cell, config, analysis in todo:
        def told(k, n, base=done):  # the study's datasets, counted over the grid
            if progress is not None:
                progress(base + k, total)

        told.quiet = getattr(progress, "quiet", progress is None)  # (run_study's "resuming" line)

        values = {k: v for k, v in cell.items() if k != "worth"}  # (a worth cell is seeded by its values too)
        where = cell_name(values) if "worth" not in cell else "worth/" + cell_name(values)
        folder = None if out is None else Path(out) / CELLS / where / analysis.name
        studies[(where, analysis.name)] = run_study(
            analysis, datasets, config=config, seed=cell_seed(seed, values), chains=chains, warmup=warmup,
            samples=samples, batch_size=batch_size, rank_draws=min(99, chains * samples), out=folder,
            resume=resume, runner=runner, progress=told)
        done += datasets
    estimands = list(grid.base.estimands())
    settings = {"analyses": list(analyses), "datasets": int(datasets), "seed": int(seed),
                "axes": {n: list(v) for n, v in grid.axes}, "cells": [cell_name(c) for c in cells],
                "cell_seeds": {cell_name(c): cell_seed(seed, c) for c in cells},
                "chains": chains, "warmup": warmup, "samples": samples, "level": DESIGN_LEVEL,
                "estimand": estimand, "skipped": {f"{c} {a}": r for (c, a), r in skipped.items()}}
    measured = None
    if worth:
        from classsize.inference.studies.worth import worth as worth_of

        settings["worth_ladder"] = ladder
        try:
            measured = worth_of(
                interval_widths(studies[("worth/base", "structural")], estimand),
                {n: interval_widths(studies[(f"worth/n_regular=0,n_experimental={n}", "randomized")], estimand)
                 for n in ladder},
                n_experimental=grid.base.n_experimental, n_regular=grid.base.n_regular, boots=boots, seed=seed)
        except ValueError as e:  # too few fitted datasets, or widths that do not shrink with n
            settings["worth_error"] = str(e)
    grid_studies = {k: v for k, v in studies.items() if not k[0].startswith("worth/")}
    return DesignResult(grid, design_table(grid, grid_studies, estimands), grid_studies, skipped, settings,
                        estimand, worth=measured)


#: The ladder's sizes as shares of the base's REGULAR students added to its EXPERIMENTAL ones.
LADDER_SHARES = (0.0, 0.5, 1.0, 2.0)


def worth_ladder(base) -> list[int]:
    """The EXPERIMENTAL-only sizes the randomized analysis is fitted at for the worth:
    ``n_E + s n_R`` for ``s`` in :data:`LADDER_SHARES` (``n_E``, ``n_R`` the base's
    EXPERIMENTAL and REGULAR students; at least 2 distinct sizes)."""
    sizes = sorted({max(1, round(base.n_experimental + s * base.n_regular)) for s in LADDER_SHARES})
    if len(sizes) < 2:
        raise ValueError("the worth needs REGULAR students in the base design (n_regular > 0)")
    return sizes


def worth_record(worth) -> dict:
    """``worth.json``: the estimate, its bootstrap interval and the curve."""
    return {"n_star": worth.n_star, "lower": worth.lower, "upper": worth.upper, "level": worth.level,
            "worth": worth.value, "worth_interval": list(worth.value_interval), "target_width": worth.target_width,
            "curve": {"log_a": worth.log_a, "b": worth.b}, "ladder": [int(n) for n in worth.sizes],
            "n_regular": worth.n_regular, "n_experimental": worth.n_experimental,
            "extrapolated": worth.extrapolated, "statement": worth.statement()}
