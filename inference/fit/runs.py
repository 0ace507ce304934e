"""Reading a run folder back: :func:`load_run` gives the :class:`~.result.FitResult` of a
folder that ``classsize fit`` (or :meth:`~.result.FitResult.write`) wrote, without
fitting again."""

from __future__ import annotations

import json
from pathlib import Path

from classsize.model.precision import float64

from classsize.inference.analyses.registry import get_analysis
from classsize.inference.data.sources import fingerprint
from classsize.inference.fit.result import RUN_FILES, FitResult
from classsize.inference.outputs import check_format


@float64
def load_run(run_dir: str | Path) -> FitResult:
    """The :class:`FitResult` of a run folder written by ``classsize fit`` (or
    :meth:`FitResult.write`): summary, plots and the posterior without fitting again.

    A folder of another output format is refused in one line (:func:`~.outputs.check_format`).
    ``do()`` needs the model bound to the data: it is rebuilt from the data folder named
    in the run's provenance when that folder still holds the same data (same
    fingerprint); otherwise ``problem`` is None and ``do()`` says why.
    """
    import xarray as xr

    from classsize.inference.outputs import UsageError

    run = Path(run_dir)
    summary_path = run / "summary.json"
    if not run.is_dir() or not summary_path.is_file() or not (run / "posterior.nc").is_file():
        raise UsageError(f"{run}: not a run folder (it needs {' and '.join(RUN_FILES)})")
    try:
        doc = json.loads(summary_path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{summary_path}: not readable as JSON ({e})") from None
    check_format(summary_path, doc.get("format_version") if isinstance(doc, dict) else None)
    with xr.open_datatree(run / "posterior.nc", engine="netcdf4") as opened:
        tree = opened.load()
    check_format(run / "posterior.nc", tree.attrs.get("format_version"))
    provenance = doc.get("provenance", {})
    estimands = {k: tree["posterior"][k].values for k in doc["estimands"]}
    problem, truth, units, unbound = _rebuild_problem(provenance)
    result = FitResult(doc["analysis"], tree, estimands, doc["diagnostics"], truth, problem,
                       provenance=provenance, estimand_summaries=doc["estimands"],
                       classrooms=doc.get("classrooms", {}), units=units, unbound=unbound)
    result.warnings = list(doc.get("warnings", []))
    result.checks = doc.get("checks", {})
    return result


def _rebuild_problem(provenance: dict):
    """``(problem, truth, units, why not)`` of the run's data when its folder still holds them."""
    from classsize.inference.data.read import load_dataset

    source = provenance.get("data_source", "")
    try:
        loaded = load_dataset(source)
    except Exception as e:  # the folder moved, changed or was given as tables
        return None, None, "points", f"its data ({source}) cannot be read again: {e}"
    if fingerprint(loaded) != provenance.get("data_fingerprint"):
        return None, None, "points", f"its data folder {source} no longer holds the data it was fitted to"
    settings = provenance.get("settings", {})
    spec = get_analysis(provenance["analysis"])
    if settings.get("score_noise") is not None:
        spec = spec.with_score_noise(settings["score_noise"])
    if settings.get("class_effects") is not None:
        spec = spec.with_class_effects(settings["class_effects"])
    return (spec.problem(loaded, ability=settings.get("ability", "uniform")), loaded.truth,
            str(loaded.metadata.get("score_units", "points")), "")
