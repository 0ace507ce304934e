"""What a fit accepts as data, turned into a checked :class:`~.dataset.LoadedData`, and
the fingerprint that names those data in a run's files.

:func:`as_loaded` takes a data folder (``FOLDER`` or ``FOLDER#K``), a simulated
:class:`classsize.model.Dataset`, a students and a classes ``pandas.DataFrame`` (with
an optional ``dataset.json`` mapping), or an already loaded dataset.  Every form goes
through the one reader, :func:`~.read.load_dataset`, with all its checks: tables are
written to a private temporary folder and read back, and a refusal names the
DataFrame (``students DataFrame, line 3 (data row 2), column 'test_score': ...``)
rather than that folder.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from classsize.model.format import (
    CLASSES_FILE,
    CLASSES_PARQUET,
    METADATA_FILE,
    STUDENTS_FILE,
    STUDENTS_PARQUET,
    TRUTH_FILE,
)

from classsize.inference.data.checks import DataError
from classsize.inference.data.read import load_dataset
from classsize.inference.data.dataset import LoadedData

#: The files whose bytes make a folder's fingerprint (those present).
_FINGERPRINTED = (STUDENTS_FILE, CLASSES_FILE, METADATA_FILE, TRUTH_FILE, STUDENTS_PARQUET, CLASSES_PARQUET)


def as_loaded(data, classes=None, *, metadata: dict | None = None) -> LoadedData:
    """``data`` as a checked dataset (see the module's docstring for the forms)."""
    if isinstance(data, LoadedData):
        return data
    if classes is not None:
        return _from_frames(data, classes, metadata)
    if isinstance(data, (str, Path)):
        return load_dataset(data)
    if hasattr(data, "students") and hasattr(data, "classes"):  # classsize.model.Dataset
        return _from_frames(data.students, data.classes, metadata, truth=getattr(data, "truth", None))
    raise TypeError(f"fit takes a data folder, a classsize.model.Dataset, or a students and a classes "
                    f"DataFrame, not {type(data).__name__}")


def _from_frames(students, classes, metadata, truth=None) -> LoadedData:
    import pandas as pd

    for name, frame in (("students", students), ("classes", classes)):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"the {name} table must be a pandas DataFrame, not {type(frame).__name__}")
    labels = {STUDENTS_FILE: "students DataFrame", CLASSES_FILE: "classes DataFrame",
              METADATA_FILE: "metadata", TRUTH_FILE: "truth"}
    with tempfile.TemporaryDirectory(prefix="classsize-tables-") as tmp:
        folder = Path(tmp)
        students.to_csv(folder / STUDENTS_FILE, index=False)
        classes.to_csv(folder / CLASSES_FILE, index=False)
        if metadata is not None:
            (folder / METADATA_FILE).write_text(json.dumps(metadata))
        if truth is not None:
            (folder / TRUTH_FILE).write_text(json.dumps(truth))
        try:
            loaded = load_dataset(folder)
            fingerprint = folder_fingerprint(folder)
        except DataError as e:
            label = labels.get(Path(e.file).name, e.file)
            raise DataError(label, e.reason, line=e.line, row=e.row, column=e.column, key=e.key) from None
    return _with_fingerprint(loaded, fingerprint, "tables given in Python")


def _with_fingerprint(loaded: LoadedData, fingerprint: str, source: str) -> LoadedData:
    from dataclasses import replace

    return replace(loaded, metadata={**loaded.metadata, "_fingerprint": fingerprint, "_source": source})


def folder_fingerprint(folder: Path, replicate: int | None = None) -> str:
    """``sha256:`` of the bytes of the folder's data files (and the replicate number)."""
    h = hashlib.sha256()
    for name in _FINGERPRINTED:
        path = folder / name
        if path.is_file():
            h.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    if replicate is not None:
        h.update(f"#{replicate}".encode())
    return "sha256:" + h.hexdigest()


def fingerprint(loaded: LoadedData) -> str:
    """The data's fingerprint: of the tables given in Python, or of the folder's files."""
    known = loaded.metadata.get("_fingerprint")
    if known:
        return str(known)
    return folder_fingerprint(Path(loaded.source), loaded.replicate)


def source_label(loaded: LoadedData) -> str:
    """Where the data came from, for a run's provenance."""
    known = loaded.metadata.get("_source")
    if known:
        return str(known)
    return str(loaded.source) + ("" if loaded.replicate is None else f"#{loaded.replicate}")
