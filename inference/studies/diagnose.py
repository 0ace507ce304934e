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

**The worth under misspecification** (``misspecified=True``, the default with
``worth``).  The same studies again on data whose unobserved ability is normal
(``ability_shape = "normal"``: the uniform's mean and sd, without its hard edges),
fitted as before with the uniform ability: ``cells/worth/ability_shape=normal/...``,
seeded like their uniform twins, so each dataset has the same races, incomes and
EXPERIMENTAL coins in both worlds (the REGULAR rule follows the ability).
:attr:`DesignResult.misspecified` holds that worth and, in both worlds, the structural
analysis's coverage, bias and mean width (:func:`~.design.interval_summary`): a cohort
that seems worth many randomized students while its intervals miss the truth is worth
nothing.
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
                                                interval_summary, interval_widths, plot_design, summary_text)

#: The folder of the cells' studies inside a design's output folder.
CELLS = "cells"
#: The folders, inside :data:`CELLS`, of the worth's studies, and of the same on normal-ability data.
WORTH = "worth"
MISSPECIFIED = "worth/ability_shape=normal"
#: What the misspecified worth's data and fits assume (``design.json`` and ``worth.json``).
MISSPECIFICATION = {"data": "ability_shape = normal", "fits": "ability = uniform"}


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
    misspecified: dict | None = None

    def summary(self) -> str:
        """One paragraph: power, width and coverage per analysis across the cells (and
        the worth of the REGULAR cohort when it was measured)."""
        text = summary_text(self.grid, self.table, self.estimand, self.skipped, self.settings["datasets"])
        if "worth_error" in self.settings:
            text = f"{text} The worth of the REGULAR cohort could not be measured: {self.settings['worth_error']}."
        elif self.worth is not None:
            text = f"{text} {self.worth.statement()}"
        return text if self.misspecified is None else f"{text} {misspecified_statement(self.misspecified)}"

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
            **({} if self.worth is None and self.misspecified is None else {"worth.json": lambda p: p.write_text(
                json.dumps(self.worth_record(), indent=2) + "\n")}),
        }

    def worth_record(self) -> dict:
        """``worth.json``: the worth (:func:`worth_record`) and, under ``"misspecified"``,
        the same on normal-ability data with the structural analysis's coverage in both
        worlds."""
        out = {} if self.worth is None else worth_record(self.worth)
        if self.misspecified is not None:
            m = self.misspecified
            out["misspecified"] = {
                **MISSPECIFICATION,
                **({"worth_error": m["error"]} if m.get("worth") is None else worth_record(m["worth"])),
                "structural": {world: dict(m["structural"][world]) for world in m["structural"]},
                "statement": misspecified_statement(m)}
        return out

    def __repr__(self) -> str:
        return (f"DesignResult({len(self.grid.cells())} cells x {', '.join(self.settings['analyses'])}, "
                f"{self.settings['datasets']} datasets each; .table, .summary(), .plot(), .write(folder))")


@float64
def diagnose(grid: DesignGrid, analyses: Sequence[str] = ("structural", "randomized"), datasets: int = 50, *,
             seed: int = 0, chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
             samples: int = DEFAULT_SAMPLES, batch_size: int | None = None, out: str | Path | None = None,
             resume: bool = False, runner=None, progress=None,
             estimand: str = "small_class_direct_effect", worth: bool = False, misspecified: bool = True,
             boots: int = 2000) -> DesignResult:
    """Fit every analysis of ``analyses`` to ``datasets`` simulated datasets of each cell
    of ``grid`` (see :mod:`.design`); with ``out``, each cell's batches are written to
    ``out/cells/<cell>/<analysis>`` as they finish, and ``resume`` takes those already
    there.  ``progress(done, total)`` is told the datasets fitted over the whole grid.
    ``worth`` adds the worth of the REGULAR cohort, and ``misspecified`` (with ``worth``)
    the same on normal-ability data (module docstring)."""
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
            todo.append((cell_name(cell), cell, config, analysis))
    ladder = worth_ladder(grid.base) if worth else []
    worlds = {WORTH: grid.base}
    if worth and misspecified:
        worlds[MISSPECIFIED] = grid.base.replace(ability_shape="normal")
    for world, base in (worlds.items() if worth else ()):
        todo.append((f"{world}/base", {}, base, get_analysis("structural").knowing(base)))
        for n in ladder:
            values = {"n_regular": 0, "n_experimental": n}
            cfg = base.replace(**values)
            todo.append((f"{world}/{cell_name(values)}", values, cfg, get_analysis("randomized").knowing(cfg)))
    total, done = len(todo) * datasets, 0
    studies = {}
    for where, values, config, analysis in todo:
        def told(k, n, base=done):  # the study's datasets, counted over the grid
            if progress is not None:
                progress(base + k, total)

        told.quiet = getattr(progress, "quiet", progress is None)  # (run_study's "resuming" line)

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
    measured, wrong = None, None
    if worth:
        from classsize.inference.studies.worth import worth as worth_of

        settings["worth_ladder"] = ladder
        errors = {}
        measured = {}
        for world in worlds:
            try:
                measured[world] = worth_of(
                    interval_widths(studies[(f"{world}/base", "structural")], estimand),
                    {n: interval_widths(studies[(f"{world}/n_regular=0,n_experimental={n}", "randomized")],
                                        estimand) for n in ladder},
                    n_experimental=grid.base.n_experimental, n_regular=grid.base.n_regular, boots=boots, seed=seed)
            except ValueError as e:  # too few fitted datasets, or widths that do not shrink with n
                errors[world] = str(e)
        if WORTH in errors:
            settings["worth_error"] = errors[WORTH]
        if MISSPECIFIED in worlds:
            settings["misspecified"] = dict(MISSPECIFICATION)
            wrong = {"worth": measured.get(MISSPECIFIED), "error": errors.get(MISSPECIFIED),
                     "structural": {label: interval_summary(studies[(f"{world}/base", "structural")].table, estimand)
                                    for label, world in (("uniform", WORTH), ("normal", MISSPECIFIED))}}
        measured = measured.get(WORTH)
    grid_studies = {k: v for k, v in studies.items() if not k[0].startswith(f"{WORTH}/")}
    return DesignResult(grid, design_table(grid, grid_studies, estimands), grid_studies, skipped, settings,
                        estimand, worth=measured, misspecified=wrong)


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


def misspecified_statement(m: dict) -> str:
    """One or two sentences: the worth on normal-ability data fitted with the uniform, and
    the structural analysis's coverage and bias there against the uniform world's."""
    s = m["structural"]
    normal, uniform = s["normal"], s["uniform"]
    if m.get("worth") is not None:
        text = m["worth"].statement()
        head = "With a normal ability in the data and the uniform in the fits: " + text[0].lower() + text[1:]
    else:
        head = f"With a normal ability in the data the worth could not be measured: {m['error']}."
    if not (normal["datasets"] and uniform["datasets"]):
        return f"{head} The structural analysis could not be fitted to the datasets of both worlds."
    return (f"{head} There the structural analysis's {DESIGN_LEVEL}% intervals cover the truth in "
            f"{normal['coverage']:.0%} of {normal['datasets']} datasets (bias {normal['bias']:+.2f}, mean width "
            f"{normal['mean_width']:.2f}), against {uniform['coverage']:.0%} (bias {uniform['bias']:+.2f}, "
            f"mean width {uniform['mean_width']:.2f}) when the data's ability is uniform.")
