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
process fits it and whenever.

When a study has an output folder, each finished batch is written there at once
and atomically, as ``batches/batch-000003.json`` (the plan's hash, the batch's
dataset range and one record per dataset), beside ``batches/manifest.json`` (the
plan).  A later run of the same plan reads the finished batches
(:func:`finished_batches`) and fits only the others; a run of another plan in the
same folder is refused by :func:`check_manifest` with one line naming what
differs.  JSON keeps every number exactly (floats are written with ``repr``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, fields
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


def read_manifest(out: str | Path) -> dict | None:
    """The manifest in ``out`` (None when there is none)."""
    path = batch_folder(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: not a readable study manifest ({e})") from None


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
    check_format(batch_folder(out) / MANIFEST, old.get("format_version"))
    diff = manifest_differences(old, manifest, fields)
    if diff:
        raise UsageError(f"{Path(out)}: holds batches of another study ({'; '.join(diff)}); "
                         "use another folder, or --force to start afresh")
    return old


def check_resume(out: str | Path, plan: StudyPlan, batch_size_given: bool) -> None:
    """Before any work: refuse to resume in ``out`` unless it is empty or holds batches
    of ``plan`` (the batch size is compared only when given: a resumed study keeps its own)."""
    out = Path(out)
    if read_manifest(out) is None:
        if out.is_dir() and any(out.iterdir()):
            raise UsageError(f"{out}: nothing to resume (no {BATCH_FOLDER}/{MANIFEST}); "
                             "use another folder, or --force to start afresh")
        return
    check_manifest(out, plan.manifest, None if batch_size_given else set(_COMPARED) - {"batch_size"})


def start_batches(out: str | Path, plan: StudyPlan, resume: bool) -> None:
    """Write the plan's manifest into ``out`` (refused when it holds another study's
    batches and ``resume``); without ``resume`` earlier batch files are removed."""
    from classsize.model.files import atomic_write_text

    folder = batch_folder(out)
    if resume:
        check_manifest(out, plan.manifest)
    else:
        for old in folder.glob("batch-*.json"):
            old.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MANIFEST, json.dumps(plan.manifest, indent=2) + "\n")


def write_batch(out: str | Path, record: dict) -> Path:
    """Write one finished batch's record (atomically); returns its path."""
    from classsize.model.files import atomic_write_text

    path = batch_path(out, int(record["batch"]))
    atomic_write_text(path, json.dumps(plain(record)) + "\n")
    return path


def finished_batches(out: str | Path, plan: StudyPlan) -> Iterator[dict]:
    """The records of the plan's batches already in ``out``.  A file that cannot be
    read, or that belongs to another plan, is reported on standard error and left to
    be fitted again."""
    for b in range(plan.n_batches):
        path = batch_path(out, b)
        if not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
            ok = (record.get("plan_hash") == plan.plan_hash and record.get("batch") == b
                  and [r["dataset"] for r in record["records"]] == list(plan.datasets_of(b)))
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if ok:
            yield record
        else:
            print(f"warning: {path}: not a batch of this study; fitting it again", file=sys.stderr)
