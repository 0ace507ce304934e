"""A finished recovery study: its tables, its verdict, its figures and its files.

:func:`assemble` turns the records of a study's batches (:func:`~.fitting.fit_batch`)
into the tidy table (one row per dataset and quantity, with the fit's diagnostics) and
the settings, and hands them to the class of the study's kind, which judges them:

* :class:`SBCStudy` (simulation-based calibration, ``mode`` ``"sbc"``): the summary has
  one row per quantity, the rank tests of :func:`~.verdicts.sbc_verdict`; the study
  keeps the ranks and the ECDF band its figures draw;
* :class:`CoverageStudy` (coverage at a fixed truth, ``mode`` ``"fixed"``): the summary
  has one row per estimand and level, the Clopper-Pearson bands of
  :func:`~.verdicts.coverage_verdict`.

Both share :class:`StudyResult`: the table, the settings, the xarray export and the
files.  :meth:`StudyResult.write` writes ``recovery.csv`` (the table), ``summary.csv``,
``verdict.txt``, ``study.json`` (the settings), ``config.toml``, ``recovery.nc`` (the
table and the summary as an xarray Dataset) and the study's figures (``PLOTS``:
``sbc_ecdf_diff.png`` and ``sbc_ranks.png`` for the estimands, with
``sbc_ecdf_diff_other.png`` and ``sbc_ranks_other.png`` for the other quantities, or
``coverage.png`` and ``z_contraction.png``; :mod:`.figures`), all together or not at all; the figures of the
other kind left in the folder by an earlier study are removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from classsize.model import Config

from classsize.inference.analyses.base import Analysis
from classsize.inference.analyses.quantities import quantity_label
from classsize.inference.engine.diagnostics import ESS_MIN, R_HAT_MAX, fit_problems
from classsize.inference.outputs import FORMAT_VERSION, package_version
from classsize.inference.plotting import save_figure
from classsize.inference.studies.calibration import BAND_SEED, BAND_SIMULATIONS, FAMILY_ALPHA, LEVELS, EcdfBand
from classsize.inference.studies.figures import (PARTS, plot_coverage, plot_ecdf_difference,
                                                 plot_rank_histograms, plot_z_contraction)
from classsize.inference.studies.fitting import DIAGNOSTIC_COLUMNS, FIT_SEED_OFFSET, empty_fit_columns
from classsize.inference.studies.plan import StudyPlan
from classsize.inference.studies.verdicts import coverage_verdict, sbc_verdict


@dataclass(repr=False)
class StudyResult:
    """A finished study: the analysis and design it checked, its settings, the tidy
    table (a DataFrame, one row per dataset and quantity), the summary (a DataFrame),
    the verdict and whether it passed.  Made by a subclass's :meth:`judge`."""

    analysis: Analysis
    config: Config
    settings: dict
    table: Any
    summary: Any
    verdict: str
    passed: bool

    #: The kind of study, as ``settings["mode"]`` and the table's ``study`` column name it.
    mode: ClassVar[str]
    #: The study's figures: file name -> function of the study returning a figure.
    PLOTS: ClassVar[Mapping[str, Callable]] = {}

    @classmethod
    def judge(cls, analysis: Analysis, config: Config, settings: dict, table, names: Sequence[str]) -> StudyResult:
        """The study of ``table`` (the quantities ``names``), with its summary and verdict."""
        raise NotImplementedError

    @classmethod
    def recorded_rank_draws(cls, plan: StudyPlan) -> int | None:
        """``settings["rank_draws"]``: None unless the study ranks its truths."""
        return None

    def __repr__(self) -> str:
        first = self.verdict.splitlines()[0] if self.verdict else ""
        return (f"StudyResult({self.analysis.name}, {self.mode}, {self.settings.get('datasets')} datasets: "
                f"{'PASS' if self.passed else 'FAIL'}; {first}; .table, .summary, .verdict, .plot(), .write(folder))")

    def plot(self) -> dict:
        """The study's figures, by the file name :meth:`write` gives each."""
        return {name: make(self) for name, make in self.PLOTS.items()}

    def write(self, out: str | Path) -> list[Path]:
        """Write every output file into ``out``, all or none, beside the batch files
        there (:meth:`~classsize.inference.publish.OutputFolder.publish`); returns the
        paths.  A result file of an earlier study is not kept."""
        from classsize.inference.publish import OutputFolder

        with OutputFolder(out, "recover", mode="in_place", keep=True) as folder:
            return folder.publish(self.writers())

    def writers(self) -> dict:
        """Each output file's name, with a function that writes it to a given path."""
        def text(s: str):
            return lambda p: p.write_text(s)

        writers = {
            "recovery.csv": text(self.table.to_csv(index=False)),
            "summary.csv": text(self.summary.to_csv(index=False)),
            "verdict.txt": text(self.verdict + "\n"),
            "study.json": text(json.dumps({"format_version": FORMAT_VERSION, **self.settings}, indent=2) + "\n"),
            "config.toml": text(self.config.to_toml()),
            "recovery.nc": self._write_netcdf,
        }
        for name, make in self.PLOTS.items():
            writers[name] = lambda p, make=make: save_figure(make(self), p, dpi=110)
        return writers

    def _write_netcdf(self, path) -> None:
        from classsize.inference.publish import write_netcdf_file

        write_netcdf_file(self.to_xarray(), path)

    def to_xarray(self):
        """The table and the summary as one xarray Dataset (dims dataset, quantity, level):
        each column of the table per (dataset, quantity), the intervals per level too, each
        fit's seeds, diagnostics and status per dataset, and the summary's columns as
        ``summary_*`` (:meth:`_summary_variables`)."""
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
        for col in ("sim_seed", "fit_seed", *DIAGNOSTIC_COLUMNS):
            data_vars[col] = (("dataset",), first[col].to_numpy(float))
        data_vars["status"] = (("dataset",), first["status"].astype(str).to_numpy())
        data_vars["fit_ok"] = (("dataset",), first["fit_ok"].astype(bool).to_numpy())
        data_vars.update(self._summary_variables(quantities))
        attrs = {"format_version": FORMAT_VERSION, "classsize_version": package_version(),
                 "model": self.analysis.name, "mode": self.mode, "settings": json.dumps(self.settings),
                 "verdict": self.verdict, "passed": int(self.passed)}
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def _summary_variables(self, quantities: list[str]) -> dict:
        """The summary's columns as variables of :meth:`to_xarray`, ``summary_*``."""
        raise NotImplementedError


@dataclass(repr=False)
class SBCStudy(StudyResult):
    """A simulation-based calibration: truths drawn from the analysis's priors, each
    quantity's ranks tested for uniformity (:func:`~.verdicts.sbc_verdict`).  ``ranks``:
    each quantity's ranks over the fits in the statistics; ``band``: the simultaneous
    ECDF band of the verdict (None without a fit)."""

    band: EcdfBand | None
    ranks: dict[str, np.ndarray]

    mode: ClassVar[str] = "sbc"
    PLOTS: ClassVar[Mapping[str, Callable]] = {
        "sbc_ecdf_diff.png": plot_ecdf_difference,
        "sbc_ranks.png": plot_rank_histograms,
        "sbc_ecdf_diff_other.png": partial(plot_ecdf_difference, part=PARTS[1]),
        "sbc_ranks_other.png": partial(plot_rank_histograms, part=PARTS[1]),
    }

    @classmethod
    def judge(cls, analysis, config, settings, table, names) -> SBCStudy:
        summary, verdict, passed, band, ranks = sbc_verdict(table, names, settings)
        return cls(analysis, config, settings, table, summary, verdict, passed, band, ranks)

    @classmethod
    def recorded_rank_draws(cls, plan: StudyPlan) -> int | None:
        return plan.rank_draws

    def _summary_variables(self, quantities: list[str]) -> dict:
        s = self.summary.set_index("quantity").reindex(quantities)
        out = {f"summary_{col}": (("quantity",), s[col].to_numpy(float))
               for col in ("chi2", "chi2_p", "ecdf_p", "p", "p_holm")}
        out["summary_pass"] = (("quantity",), s["pass"].astype(bool).to_numpy())
        return out


@dataclass(repr=False)
class CoverageStudy(StudyResult):
    """Coverage at a fixed truth (the parameters of ``config``): for each estimand and
    level, the share of datasets whose central interval holds the truth, against a
    Clopper-Pearson band (:func:`~.verdicts.coverage_verdict`)."""

    mode: ClassVar[str] = "fixed"
    PLOTS: ClassVar[Mapping[str, Callable]] = {"coverage.png": plot_coverage, "z_contraction.png": plot_z_contraction}

    @classmethod
    def judge(cls, analysis, config, settings, table, names) -> CoverageStudy:
        summary, verdict, passed = coverage_verdict(table, names, settings, analysis)
        return cls(analysis, config, settings, table, summary, verdict, passed)

    def _summary_variables(self, quantities: list[str]) -> dict:
        s = self.summary.set_index(["quantity", "level"])
        return {f"summary_{col}": (("quantity", "level"),
                                   s[col].unstack("level").reindex(index=quantities, columns=list(LEVELS))
                                   .to_numpy(float))
                for col in ("covered", "n", "coverage", "cp95_lower", "cp95_upper", "band_lower", "band_upper")}


#: The kinds of study, by ``mode``.
STUDIES: dict[str, type[StudyResult]] = {kind.mode: kind for kind in (SBCStudy, CoverageStudy)}


def assemble(plan: StudyPlan, batches: Sequence[dict], run: Mapping[str, Any]) -> StudyResult:
    """The study of ``plan`` from the records of all its batches (in order): the table,
    the settings (``run`` adds those of the run that finished it), judged by the class of
    the plan's kind (:data:`STUDIES`)."""
    import os
    import socket

    import pandas as pd

    analysis, kind = plan.analysis, STUDIES[plan.mode]
    internal = analysis.study_quantities(plan.config, sbc=plan.from_prior)
    label = {n: quantity_label(n, plan.config) for n in internal}  # the tables name the data's codes and ids
    names = [label[n] for n in internal]
    here = (socket.gethostname(), os.getpid())
    devices = []
    for b in batches:
        where = "" if (b["host"], b["pid"]) == here else f"{b['host']}:{b['pid']}/"
        devices += [where + d for d in b["devices"] if where + d not in devices]
    rows = []
    for rec in (r for b in batches for r in b["records"]):
        k = rec["dataset"]
        base = {"study": plan.mode, "model": analysis.name, "dataset": k, "sim_seed": plan.seed + k,
                "fit_seed": plan.seed + k + FIT_SEED_OFFSET}
        res = rec["fit"]
        if res is None:
            reason = (f"unfittable: {rec['empty_schools']} school(s) without {analysis.cohort or ''} "
                      f"students").replace("  ", " ")
            for n in internal:
                rows.append({**base, "status": "unfittable", "fit_ok": False, "problems": reason,
                             "quantity": label[n], "truth": rec["truth"][n], **empty_fit_columns()})
            continue
        status = "fitted" if res["diag"]["finite"] else "failed"
        problems = fit_problems(res["diag"])
        diag_columns = {c: res["diag"][c] for c in DIAGNOSTIC_COLUMNS}
        for n in internal:
            rows.append({**base, "status": status, "fit_ok": not problems, "problems": "; ".join(problems),
                         "quantity": label[n], **res["quantities"][n], **diag_columns})
    table = pd.DataFrame(rows)

    n, seed = plan.n_datasets, plan.seed
    settings = {
        "model": analysis.name, "mode": plan.mode, "datasets": n, "seed": seed,
        "sim_seeds": f"{seed}..{seed + n - 1}",
        "fit_seeds": f"{seed + FIT_SEED_OFFSET}..{seed + n - 1 + FIT_SEED_OFFSET} (seed + k + 2**32)",
        "chains": plan.chains, "warmup": plan.warmup, "samples": plan.samples, "batch_size": plan.batch_size,
        "vectorize": batches[0]["vectorize"], "devices": devices,
        "rank_draws": kind.recorded_rank_draws(plan), "levels": list(LEVELS),
        "family_alpha": FAMILY_ALPHA, "band_simulations": BAND_SIMULATIONS, "band_seed": BAND_SEED,
        "r_hat_max": R_HAT_MAX, "ess_min": ESS_MIN, "quantities": list(names),
        "simulate_seconds": round(sum(b["simulate_seconds"] for b in batches), 2),
        "compile_seconds": round(sum(b["compile_seconds"] for b in batches), 2),
        "wall_seconds": run["wall_seconds"],
        "fit_seconds_total": round(sum(b["fit_seconds"] for b in batches), 2),
        "executor": run["executor"], "workers": len({(b["host"], b["pid"]) for b in batches}),
        "resumed_batches": run["resumed_batches"], "plan_hash": plan.plan_hash,
        "versions": plan.manifest["versions"],
        "config": plan.config.to_dict(),
    }
    return kind.judge(analysis, plan.config, settings, table, names)
