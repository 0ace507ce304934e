"""Stacked replicates: one dataset out of the Parquet files of many.

A folder written by ``classsize simulate --format parquet`` holds many datasets:
``students.parquet`` and ``classes.parquet`` (the columns of
:mod:`classsize.model.format` after a ``replicate`` column) and a ``truth.json``
listing each replicate's seed and school effects beside the shared estimands and
configuration.  :func:`load_stacked` reads replicate ``K`` through the checks of a
CSV folder (:mod:`classsize.inference.data.folder`), each cell turned into the text
its CSV file would hold; messages name the file and the replicate, and count rows as
the lines of that CSV.  ``FOLDER#K`` names replicate ``K`` of ``FOLDER``
(:func:`split_replicate`), which is how :func:`classsize.inference.data.read.load_dataset`
and the command line are told which replicate to read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from classsize.model.format import CLASSES_PARQUET, STUDENTS_FILE, STUDENTS_PARQUET, TRUTH_FILE

from classsize.inference.data.checks import DataError, Table, whole
from classsize.inference.data.dataset import LoadedData
from classsize.inference.data.folder import check_folder, checked_dataset, folder_truth


def split_replicate(source: str | Path, replicate: int | None) -> tuple[Path, int | str | None]:
    """``FOLDER#K`` -> (FOLDER, "K") when FOLDER exists and the whole name does not."""
    path = Path(source)
    text = str(source)
    if replicate is None and "#" in text and not path.exists():
        base, tag = text.rsplit("#", 1)
        if Path(base).exists():
            return Path(base), tag
    return path, replicate


def is_stacked(folder: Path) -> bool:
    """Whether ``folder`` is a stacked Parquet file, or a folder of them without students.csv."""
    if folder.is_file() and folder.suffix == ".parquet":
        return True
    return folder.is_dir() and (folder / STUDENTS_PARQUET).exists() and not (folder / STUDENTS_FILE).exists()


def _replicate_number(folder: Path, replicate: int | str | None) -> int:
    """The replicate asked for, as a number (``"K"`` of ``FOLDER#K`` is text)."""
    if replicate is None:
        raise DataError(
            folder / STUDENTS_PARQUET,
            f"holds stacked replicates; name one (e.g. {folder}#0)",
            column="replicate",
        )
    if isinstance(replicate, str):
        number = whole(replicate.strip())
        if number is None or replicate.strip() == "":
            raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
        return number
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)):
        raise DataError(folder, f"replicate {replicate!r} is not a whole number", column="replicate")
    return int(replicate)


def _parquet_table(path: Path, replicate: int) -> Table:
    """Replicate ``replicate`` of a stacked Parquet file as the text a CSV of it holds.

    Rows are numbered as the lines of that CSV would be (header on line 1), so the
    messages of the checks read as for a CSV folder.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from classsize.model.writers import format_floats

    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "is not a file")
    try:
        pf = pq.ParquetFile(path)
        if "replicate" not in pf.schema_arrow.names:
            raise DataError(path, "has no 'replicate' column (not a stacked file of classsize simulate)")
        table = pq.read_table(path, filters=[("replicate", "=", replicate)])
    except DataError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataError(path, f"cannot read it as Parquet ({' '.join(str(e).split())})") from None
    if table.num_rows == 0:
        reps = pq.read_table(path, columns=["replicate"])["replicate"]
        if len(reps) == 0:
            raise DataError(path, "the table is empty (no replicates)")
        lo, hi = pc.min_max(reps).values()
        raise DataError(
            path, f"no replicate {replicate} (the file holds replicates {lo}..{hi})", column="replicate"
        )
    columns: dict[str, list[str] | np.ndarray] = {}
    for name in table.column_names:
        if name == "replicate":
            continue
        col = table[name].combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_floating(col.type):
            text = format_floats(col.to_numpy(zero_copy_only=False)).to_numpy(zero_copy_only=False)
        elif pa.types.is_boolean(col.type):
            text = np.where(col.to_numpy(zero_copy_only=False), "True", "False")
        else:
            text = col.cast(pa.string()).to_numpy(zero_copy_only=False)
        columns[name] = np.asarray(["" if v is None else str(v).strip() for v in text], dtype=object)
    lines = pd.Index(np.arange(2, table.num_rows + 2), dtype=np.int64)
    frame = pd.DataFrame(columns, index=lines, dtype=str)
    return Table(Path(f"{path} (replicate {replicate})"), frame)


def _replicate_truth(folder: Path, replicate: int) -> dict | None:
    """Replicate ``replicate``'s truth: its entry of the stacked truth.json with the
    shared fields (a truth.json that lists no replicates is every replicate's)."""
    truth = folder_truth(folder)
    if truth is None:
        return None
    reps = truth.get("replicates")
    if not isinstance(reps, list):
        return truth
    entry = next((r for r in reps if isinstance(r, dict) and r.get("replicate") == replicate), None)
    if entry is None:
        raise DataError(folder / TRUTH_FILE, f"lists no replicate {replicate}", key="replicates")
    out = {k: v for k, v in truth.items() if k not in ("replicates", "n_replicates", "format")}
    if entry.get("class_effects") is not None:
        out["class_effects"] = entry["class_effects"]
    return {"seed": entry.get("seed"), "engine": out.pop("engine", None), "estimands": out.pop("estimands", None),
            "school_effects": entry.get("school_effects"), **out, "replicate": replicate}


def load_stacked(folder: str | Path, replicate: int | str | None) -> LoadedData:
    """Read and check replicate ``replicate`` of the stacked files of ``folder``
    (``students.parquet`` and ``classes.parquet`` with a ``replicate`` column, as
    ``classsize simulate --format parquet`` writes them; ``folder`` may also name
    either file).  The checks are those of a CSV folder; ``truth`` is that
    replicate's entry of the stacked ``truth.json`` with the shared fields (a
    single-dataset truth.json's keys, plus ``replicate``).  A replicate number that
    is not a whole number or not in the file raises :class:`DataError`.
    """
    folder = Path(folder)
    if folder.suffix == ".parquet" and not folder.is_dir():
        folder = folder.parent
    check_folder(folder)
    k = _replicate_number(folder, replicate)
    return checked_dataset(
        folder,
        students_table=lambda: _parquet_table(folder / STUDENTS_PARQUET, k),
        classes_table=lambda: _parquet_table(folder / CLASSES_PARQUET, k),
        truth=lambda: _replicate_truth(folder, k),
        replicate=k,
    )
