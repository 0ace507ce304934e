"""A recovery study's plan and its batch files: what makes a study resumable.

A study (:mod:`.run`) is cut into batches of ``batch_size`` consecutive datasets:
batch ``b`` holds datasets ``b * batch_size`` up to the next multiple (the last
batch may be short), ``ceil(N / batch_size)`` batches in all.  :class:`StudyPlan` is
everything that decides a study's numbers: the analysis (the
:class:`~classsize.inference.analyses.base.Analysis` itself, which travels with the
plan to the processes that fit its batches), the design (``config``), SBC or a fixed
truth, the seed, the number of datasets, the chain lengths, the batch size, the rank
draws and the versions of the software that computes them.  The manifest records
the analysis by its name.  Dataset ``k``'s simulation and fit
depend only on the seed and ``k``, so a batch gives the same numbers whichever
process fits it, on however many devices, and whenever.

When a study has an output folder, each finished batch is written there at once
and atomically, as ``batches/batch-000003.json`` (the plan's hash, the batch's
dataset range, one record per dataset and a :func:`checksum` of the rest), beside
``batches/manifest.json`` (the plan).  A later run of the same plan reads the
finished batches (:func:`finished_batches`) and fits only the others.  What it
reads is checked first, each fault named in one line:

* a manifest that is not a JSON object with the plan's fields, or of another plan
  (:func:`read_manifest`, :func:`check_manifest`): refused;
* an intact batch (its checksum matches) of another plan or other software versions
  (:func:`read_batch`): refused, as its folder holds another study;
* a batch file that cannot be used (not JSON, a folder in its place, no checksum or
  one that does not match, a field the study reads missing or of another kind): one
  warning on standard error, and the batch is fitted again (its refit replaces it).

JSON keeps every number exactly (floats are written with ``repr``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from classsize.model import Config

from classsize.inference.analyses.base import Analysis
from classsize.inference.outputs import FORMAT_VERSION, UsageError, check_format

#: Folder of the batch files inside a study's output folder.
BATCH_FOLDER = "batches"
MANIFEST = "manifest.json"
#: Version of the batch files' layout (part of the plan: other layouts are not read).
BATCH_FORMAT = 1


def software_versions() -> dict[str, str]:
    """The versions of the packages that decide a study's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("classsize", "jax", "jaxlib", "numpyro", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "unknown"
    return out


@dataclass(frozen=True)
class StudyPlan:
    """The settings that decide a study's numbers (see the module docstring)."""

    analysis: Analysis
    n_datasets: int
    config: Config
    from_prior: bool
    seed: int
    chains: int
    warmup: int
    samples: int
    batch_size: int
    rank_draws: int

    def __reduce__(self):
        # a Config does not pickle (its mappings are read-only): it travels as its dict
        values = [getattr(self, f.name) for f in fields(self)]
        values[2] = self.config.to_dict()
        return (_plan_from_values, tuple(values))

    @property
    def mode(self) -> str:
        """The kind of study as its files name it: ``"sbc"`` (truths from the prior) or
        ``"fixed"`` (coverage at the truth of ``config``)."""
        return "sbc" if self.from_prior else "fixed"

    @property
    def n_batches(self) -> int:
        return -(-self.n_datasets // self.batch_size)

    def datasets_of(self, batch: int) -> range:
        """The datasets of batch ``batch``."""
        lo = batch * self.batch_size
        return range(lo, min(lo + self.batch_size, self.n_datasets))

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The plan as JSON-ready values, with the software versions and a hash of both
        (``plan_hash``: the first 16 hex digits of the SHA-256 of the body's sorted JSON,
        where the analysis is its name, with its class effects' setting when it has one, and
        the configuration the hash of its TOML text)."""
        body = {"format_version": FORMAT_VERSION, "format": BATCH_FORMAT, "model": self.analysis.name,
                "mode": self.mode, "datasets": self.n_datasets, "seed": self.seed, "chains": self.chains,
                "warmup": self.warmup, "samples": self.samples, "batch_size": self.batch_size,
                "rank_draws": self.rank_draws,
                "config_hash": hashlib.sha256(self.config.to_toml().encode()).hexdigest()[:16],
                "versions": software_versions()}
        if self.analysis.class_effects is not None:  # (absent: the hash of a study without class effects)
            body["class_effects"] = self.analysis.class_effects
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return {**body, "plan_hash": digest, "config": self.config.to_dict()}

    @property
    def plan_hash(self) -> str:
        return self.manifest["plan_hash"]


def _plan_from_values(*values) -> StudyPlan:
    values = list(values)
    values[2] = Config.from_dict(values[2])
    return StudyPlan(*values)


# ================================================================= values as JSON
def plain(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays turned into Python numbers and lists
    (dict keys into strings), as JSON writes them and reads them back."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


# ====================================================================== the files
def batch_folder(out: str | Path) -> Path:
    return Path(out) / BATCH_FOLDER


def batch_path(out: str | Path, batch: int) -> Path:
    return batch_folder(out) / f"batch-{batch:06d}.json"


def _kind(value: Any) -> str:
    """What JSON calls the type of ``value``, for messages."""
    if isinstance(value, bool):
        return "true/false"
    return "a number" if isinstance(value, (int, float)) else {
        dict: "an object", list: "a list", str: "a string"}.get(type(value), "null")


def _field_problem(obj: dict, wanted: dict, where: str = "") -> str | None:
    """The first of the fields ``wanted`` (name -> kind: ``int``, ``float`` for any
    number, ``str``, ``dict``, ``list``, ``bool``, or ``"flag"`` for true/false/null)
    that ``obj`` lacks or holds as another kind of JSON value."""
    for name, kind in wanted.items():
        if name not in obj:
            return f"'{where}{name}' missing"
        value, kinds = obj[name], {float: (int, float), "flag": (bool, type(None))}.get(kind, kind)
        if not isinstance(value, kinds) or (isinstance(value, bool) and kind not in (bool, "flag")):
            return f"'{where}{name}' is {_kind(value)}"
    return None


#: The manifest's fields and their kinds (besides ``format_version``, checked first,
#: and ``class_effects``, a number or ``"free"``, present when the analysis has the setting).
_MANIFEST_FIELDS = {"format": int, "model": str, "mode": str, "datasets": int, "seed": int, "chains": int,
                    "warmup": int, "samples": int, "batch_size": int, "rank_draws": int, "config_hash": str,
                    "versions": dict, "plan_hash": str, "config": dict}


def read_manifest(out: str | Path) -> dict | None:
    """The manifest in ``out`` (None when there is none); one that is not a JSON object
    of this output format with the fields of :attr:`StudyPlan.manifest` is refused
    (:class:`~.outputs.UsageError`, one line naming the file and what is wrong)."""
    path = batch_folder(out) / MANIFEST
    if not os.path.lexists(path):
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable study manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise UsageError(f"{path}: not a study manifest (a JSON object): it holds {_kind(manifest)}")
    check_format(path, manifest.get("format_version"))
    problem = (_field_problem(manifest, _MANIFEST_FIELDS)
               or _field_problem(manifest["versions"], dict.fromkeys(manifest["versions"], str), "versions.")
               or (manifest["batch_size"] < 1 and f"'batch_size' is {manifest['batch_size']}")
               or (_kind(manifest.get("class_effects", "")) not in ("a number", "a string")
                   and f"'class_effects' is {_kind(manifest['class_effects'])}"))
    if problem:
        raise UsageError(f"{path}: not a study manifest ({problem}); use another folder, "
                         "or --force to start afresh")
    return manifest


#: Manifest fields compared on resuming, with the option that sets each.
_COMPARED = {"model": "--model", "mode": "--from-prior", "datasets": "--datasets", "seed": "--seed",
             "chains": "--chains", "warmup": "--warmup", "samples": "--samples", "batch_size": "--batch-size",
             "rank_draws": "--rank-draws", "config_hash": "--config", "class_effects": "--class-effects",
             "format": "batch file format", "versions": "software versions"}


def manifest_differences(old: dict, new: dict, fields=None) -> list[str]:
    """What differs between two manifests, as ``"--seed 0 there, 1 here"`` phrases."""
    out = []
    for key, option in _COMPARED.items():
        if fields is not None and key not in fields:
            continue
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "versions":
            changed = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
            a = ", ".join(f"{k} {(a or {}).get(k)}" for k in changed)
            b = ", ".join(f"{k} {(b or {}).get(k)}" for k in changed)
        elif key == "config_hash":
            a, b = "another design or truth", "this one"
        out.append(f"{option} {a} there, {b} here")
    return out


def check_manifest(out: str | Path, manifest: dict, fields=None) -> dict | None:
    """Refuse (:class:`~.outputs.UsageError`, one line) a folder whose manifest is of
    another study than ``manifest`` (comparing only ``fields`` when given); returns
    the folder's manifest, None when it has none."""
    old = read_manifest(out)
    if old is None:
        return None
    diff = manifest_differences(old, manifest, fields)
    if diff:
        raise UsageError(f"{Path(out)}: holds batches of another study ({'; '.join(diff)}); "
                         "use another folder, or --force to start afresh")
    return old


def check_resume(out: str | Path, plan: StudyPlan, batch_size_given: bool) -> None:
    """Before any work: refuse to resume in ``out`` unless it is empty or holds batches
    of ``plan`` (the batch size is compared only when given: a resumed study keeps its
    own), in its manifest and in every batch file that is intact (:func:`read_batch`)."""
    out = Path(out)
    old = read_manifest(out)
    if old is None:
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(f"{out}: nothing to resume (no {BATCH_FOLDER}/{MANIFEST}); "
                             "use another folder, or --force to start afresh")
        return
    check_manifest(out, plan.manifest, None if batch_size_given else set(_COMPARED) - {"batch_size"})
    plan = replace(plan, batch_size=old["batch_size"])
    for b in range(plan.n_batches):
        read_batch(out, plan, b)


def _remove(path: Path) -> None:
    """Remove a file, or a folder in a file's place."""
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def start_batches(out: str | Path, plan: StudyPlan, resume: bool) -> None:
    """Write the plan's manifest into ``out`` (refused when it holds another study's
    batches and ``resume``); without ``resume`` earlier batch files are removed."""
    from classsize.model.files import atomic_write_text

    folder = batch_folder(out)
    if resume:
        check_manifest(out, plan.manifest)
    else:
        for old in [*folder.glob("batch-*.json"), folder / MANIFEST]:
            _remove(old)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MANIFEST, json.dumps(plan.manifest, indent=2) + "\n")


# ================================================================== batch files
def checksum(record: dict) -> str:
    """The SHA-256 of a batch record's canonical JSON (sorted keys, no spaces), its
    ``checksum`` field left out."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_batch(out: str | Path, record: dict) -> Path:
    """Write one finished batch's record (atomically) with its :func:`checksum`; returns
    its path.  A folder in the file's place (reported by :func:`finished_batches`) is
    removed first."""
    from classsize.model.files import atomic_write_text

    path = batch_path(out, int(record["batch"]))
    record = plain({k: v for k, v in record.items() if k != "checksum"})
    if path.is_dir():
        _remove(path)
    atomic_write_text(path, json.dumps({**record, "checksum": checksum(record)}) + "\n")
    return path


#: The fields of a batch record, with their kinds (:func:`_field_problem`).
_BATCH_FIELDS = {"batch": int, "records": list, "simulate_seconds": float, "fit_seconds": float,
                 "compile_seconds": float, "batch_seconds": float, "host": str, "pid": int, "vectorize": str,
                 "devices": list, "versions": dict}


def _record_problem(record: dict, plan: StudyPlan, batch: int) -> str | None:
    """What is wrong with the fields of a batch record of ``plan`` (those the study's
    assembly reads: :func:`~.result.assemble`), None when nothing is."""
    from classsize.inference.studies.fitting import DIAGNOSTIC_COLUMNS, empty_fit_columns

    datasets = list(plan.datasets_of(batch))
    problem = _field_problem(record, _BATCH_FIELDS)
    if problem or not all(isinstance(d, str) for d in record["devices"]):
        return problem or "'devices' holds a value that is not a string"
    if record["batch"] != batch or len(record["records"]) != len(datasets):
        return f"it holds batch {record['batch']} of {len(record['records'])} dataset(s)"
    names = plan.analysis.study_quantities(plan.config, sbc=plan.from_prior)
    columns = {c: "flag" if c.startswith("covered_") else float
               for c in ("truth", *(c for c in empty_fit_columns() if c not in DIAGNOSTIC_COLUMNS))}
    diag = {**{c: float for c in DIAGNOSTIC_COLUMNS}, "finite": bool}
    for i, (rec, k) in enumerate(zip(record["records"], datasets)):
        at = f"records[{i}]."
        if not isinstance(rec, dict):
            return f"'{at[:-1]}' is {_kind(rec)}, not an object"
        problem = _field_problem(rec, {"dataset": int, "empty_schools": int, "truth": dict}, at)
        if problem is None and rec["dataset"] != k:
            problem = f"'{at}dataset' is {rec['dataset']}, not {k}"
        problem = problem or _field_problem(rec["truth"], dict.fromkeys(names, float), f"{at}truth.")
        fit = rec.get("fit")
        if problem is None and fit is not None:
            if not isinstance(fit, dict):
                return f"'{at}fit' is {_kind(fit)}, not an object or null"
            problem = (_field_problem(fit, {"quantities": dict, "diag": dict}, f"{at}fit.")
                       or _field_problem(fit["diag"], diag, f"{at}fit.diag.")
                       or _field_problem(fit["quantities"], dict.fromkeys(names, dict), f"{at}fit.quantities."))
            for n in names:  # (each only while no problem is found)
                problem = problem or _field_problem(fit["quantities"][n], columns, f"{at}fit.quantities.{n}.")
        if problem:
            return problem
    return None


def read_batch(out: str | Path, plan: StudyPlan, batch: int) -> tuple[dict | None, str | None]:
    """Batch ``batch`` of ``plan`` in ``out``: ``(record, None)`` when its file is intact,
    ``(None, why)`` when there is no file (``why`` None) or it must be fitted again (it
    cannot be read, is not JSON, has no or another :func:`checksum`, or lacks a field
    the study reads).  An intact batch of another plan or other software versions is
    refused (:class:`~.outputs.UsageError`, one line): its folder holds another study."""
    path = batch_path(out, batch)
    if not os.path.lexists(path):
        return None, None
    if path.is_dir():
        return None, "a folder, not a batch file"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"not readable as JSON ({e})"
    if not isinstance(record, dict):
        return None, f"not a batch: it holds {_kind(record)}"
    if "checksum" not in record:
        return None, "no checksum"
    if record["checksum"] != checksum(record):
        return None, "its checksum does not match its content (edited or damaged)"
    if record.get("plan_hash") != plan.plan_hash:
        theirs, ours = record.get("versions"), plan.manifest["versions"]
        diff = (manifest_differences({"versions": theirs}, {"versions": ours}, {"versions"})
                if isinstance(theirs, dict) and theirs != ours else
                [f"plan {record.get('plan_hash')} there, {plan.plan_hash} here"])
        raise UsageError(f"{path}: a batch of another study ({'; '.join(diff)}); use another folder, "
                         "or --force to start afresh")
    problem = _record_problem(record, plan, batch)
    return (None, problem) if problem else (record, None)


def finished_batches(out: str | Path, plan: StudyPlan) -> Iterator[dict]:
    """The records of the plan's batches already in ``out`` (:func:`read_batch`).  A
    file to be fitted again is reported on standard error, one line naming it and why;
    the refit replaces it (:func:`write_batch`)."""
    for b in range(plan.n_batches):
        record, why = read_batch(out, plan, b)
        if record is not None:
            yield record
        elif why is not None:
            print(f"warning: {batch_path(out, b)}: {why}; fitting it again", file=sys.stderr)
