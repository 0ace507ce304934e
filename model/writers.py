"""Tables of many datasets at once, and fast writers for them.

The batched forward draws of :func:`classsize.model.simulate.draw_many` (a leading
replicate axis on every site) become, in one vectorised pass, two Arrow tables that
hold every replicate of the batch, each row tagged with its ``replicate`` number
(the columns of :mod:`classsize.model.format` after that one).

Row for row and value for value these are the tables of
:func:`classsize.model.tables.tables_from_draw` for each replicate (students shuffled
with ``numpy.random.default_rng(seed)`` and sorted by class, classes in slot order).

Two ways out:

* :func:`write_csv_folders`: one folder per replicate with ``students.csv``,
  ``classes.csv`` and ``truth.json``, byte for byte the files of
  :meth:`classsize.model.simulate.Dataset.write` (the CSV text is made by Arrow's CSV
  writer; floats are formatted as pandas formats them, see :func:`format_floats`).
  Replicates are written by a thread pool (Arrow's writer releases the GIL).
* :class:`StackedWriter`: ``students.parquet`` and ``classes.parquet`` holding every
  replicate (one row group per batch, so memory stays bounded however many
  replicates; integer columns int32 when the configuration's bounds fit, see
  :func:`parquet_int_type`), and ``truth.json`` listing each replicate's seed and
  school effects beside the shared estimands and configuration.

Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import Config
from .files import atomic_folder, atomic_write
from .format import (
    CLASS_COLUMNS,
    CLASS_SIZES,
    CLASSES_FILE,
    CLASSES_PARQUET,
    REPLICATE_LIST,
    COHORTS,
    FIRST_SCHOOL_ID,
    STUDENT_COLUMNS,
    STUDENTS_FILE,
    STUDENTS_PARQUET,
    TRUTH_FILE,
)
from .tables import slot_to_class_id

_BOOL_TEXT = pa.array(["False", "True"])
#: Parquet options: the codes dictionary-encoded, statistics for the replicate column
#: only (a reader of one replicate skips the other row groups by them), zstd level 1.
_PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=1,
    use_dictionary=["race", "cohort", "class_size"],
    write_statistics=["replicate"],
)


def format_floats(x: np.ndarray) -> pa.Array:
    """float64 values as text, exactly as pandas' ``to_csv`` writes them (numpy's
    shortest round-trip ``str``: ``70.0``, ``1e-05``, ``123456789012.5``).

    Arrow's cast gives the same digits in the same positional form for finite,
    non-whole values with ``1e-4 <= |x| < 1e9``; every other value (whole numbers,
    tiny or huge magnitudes, NaN, infinities) is formatted by numpy.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = pa.array(x).cast(pa.string())
    with np.errstate(invalid="ignore"):
        ax = np.abs(x)
        odd = ~np.isfinite(x) | (x == np.floor(x)) | (ax < 1e-4) | (ax >= 1e9)
    if odd.any():
        import pyarrow.compute as pc

        out = pc.replace_with_mask(out, pa.array(odd), pa.array(x[odd].astype(str)))
    return out


def _flat(orders: np.ndarray) -> np.ndarray:
    """Row-wise indices of a (b, n) batch turned into indices of its flattened array."""
    b, n = orders.shape
    return (orders + (n * np.arange(b, dtype=orders.dtype))[:, None]).ravel()


def shuffle_orders(class_of_student: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
    """For each replicate, the student order of ``tables_from_draw``: a permutation
    from ``default_rng(seed)``, then stably sorted by class slot (shape (b, n))."""
    b, n = class_of_student.shape
    perm = np.empty((b, n), dtype=np.int64)
    for i, s in enumerate(seeds):
        perm[i] = np.random.default_rng(int(s)).permutation(n)
    slot_perm = np.take(np.ascontiguousarray(class_of_student).ravel(), _flat(perm)).reshape(b, n)
    if slot_perm.size and 0 <= slot_perm.min() and slot_perm.max() < 2**15:
        slot_perm = slot_perm.astype(np.int16)  # numpy's stable sort of 16-bit ints is a radix sort
    by_slot = np.argsort(slot_perm, axis=1, kind="stable")
    return np.take(perm.ravel(), _flat(by_slot)).reshape(b, n)


def stacked_tables(
    draws: Mapping[str, np.ndarray], config: Config, seeds: Sequence[int], first_replicate: int = 0
) -> tuple[pa.Table, pa.Table]:
    """The students and classes tables of a batch of draws, every replicate stacked.

    ``draws`` holds the sites of ``DRAW_SITES`` with a leading axis of ``len(seeds)``
    datasets (more rows than seeds are ignored, e.g. padding); replicate ``i`` of the
    batch is numbered ``first_replicate + i``.  Codes (race, cohort, class_size) are
    dictionary-encoded.
    """
    b = len(seeds)
    n = config.n_students
    m = config.max_small_classes

    def site(name: str) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(draws[name])[:b])

    cos = site("class_of_student")
    school = site("school").astype(np.int64)
    n_slots = school.shape[1]
    replicate_ids = np.arange(first_replicate, first_replicate + b, dtype=np.int64)
    class_id_of_slot = slot_to_class_id(np.arange(n_slots), config)

    order = shuffle_orders(cos, seeds)
    flat = _flat(order)
    slot = np.take(cos.ravel(), flat)  # (b * n,) each student's class slot, in table order
    slot_in_batch = slot + np.repeat(np.arange(b, dtype=slot.dtype) * n_slots, n)
    students = pa.table(
        {
            "replicate": np.repeat(replicate_ids, n),
            "student_id": np.tile(np.arange(n, dtype=np.int64), b),
            "class_id": np.take(class_id_of_slot, slot),
            "school_id": FIRST_SCHOOL_ID + np.take(school.ravel(), slot_in_batch),
            "test_score": np.take(site("test_score").ravel(), flat).astype(np.float64, copy=False),
            "family_income": np.take(site("family_income").ravel(), flat).astype(np.int64, copy=False),
            "race": pa.DictionaryArray.from_arrays(
                np.take(site("race").ravel(), flat).astype(np.int32), pa.array(list(config.race_codes))
            ),
            "cohort": pa.DictionaryArray.from_arrays(
                (order >= config.n_regular).astype(np.int32).ravel(), pa.array(list(COHORTS))
            ),
        }
    )

    slots = np.arange(n_slots)
    n_small = np.asarray(draws["n_small_classes"][:b]).astype(np.int64)[:, None]
    n_large = np.asarray(draws["n_large_classes"][:b]).astype(np.int64)[:, None]
    used = np.where(slots < m, slots < n_small, slots - m < n_large)
    counts = np.bincount(slot_in_batch, minlength=b * n_slots).reshape(b, n_slots)
    slot_b = np.broadcast_to(slots, (b, n_slots))[used]
    classes = pa.table(
        {
            "replicate": np.broadcast_to(replicate_ids[:, None], (b, n_slots))[used],
            "class_id": np.take(class_id_of_slot, slot_b),
            "school_id": FIRST_SCHOOL_ID + school[used],
            "n_students": counts[used].astype(np.int64),
            "class_size": pa.DictionaryArray.from_arrays(
                (slot_b >= m).astype(np.int32), pa.array(list(CLASS_SIZES))
            ),
            "teacher_has_ma": np.asarray(draws["teacher_has_ma"][:b]).astype(bool)[used],
        }
    )
    return students, classes


def truth_of(config: Config, seed: int, school_effect: np.ndarray, estimands: Mapping | None = None,
             config_dict: Mapping | None = None, class_effects: Mapping | None = None) -> dict:
    """The truth.json of one replicate, as :class:`~classsize.model.simulate.Dataset` has it
    (``class_effects`` by class id only when the replicate has class effects)."""
    truth = {
        "seed": int(seed),
        "engine": "model",
        "estimands": dict(estimands if estimands is not None else config.estimands()),
        "school_effects": {str(FIRST_SCHOOL_ID + k): float(v) for k, v in enumerate(np.asarray(school_effect))},
        "config": dict(config_dict if config_dict is not None else config.to_dict()),
    }
    if class_effects is not None:
        truth["class_effects"] = dict(class_effects)
    return truth


# ------------------------------------------------------------------ CSV folders
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="none")


def _csv_bytes(table: pa.Table, columns: Sequence[str]) -> bytes:
    buf = io.BytesIO()
    buf.write((",".join(columns) + "\n").encode())
    pacsv.write_csv(table, buf, _CSV_OPTIONS)
    return buf.getvalue()


def _as_csv_text(students: pa.Table, classes: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The batch's tables with every column as Arrow writes it into the CSV files."""
    st = students.select(STUDENT_COLUMNS)
    st = st.set_column(st.schema.get_field_index("test_score"), "test_score",
                       format_floats(st["test_score"].to_numpy()))
    cl = classes.select(CLASS_COLUMNS)  # (Arrow writes dictionary-encoded codes as their text)
    ma = _BOOL_TEXT.take(pa.array(cl["teacher_has_ma"].to_numpy().astype(np.int8)))
    cl = cl.set_column(cl.schema.get_field_index("teacher_has_ma"), "teacher_has_ma", ma)
    return st, cl


def _row_bounds(replicate: np.ndarray, first: int, b: int) -> np.ndarray:
    return np.searchsorted(replicate, np.arange(first, first + b + 1))


def write_csv_folders(
    out_dir: str | Path,
    students: pa.Table,
    classes: pa.Table,
    truths: Sequence[Mapping],
    folder_names: Sequence[str],
    pool: ThreadPoolExecutor | None = None,
) -> None:
    """Write each replicate of a batch into its folder under ``out_dir``: classes.csv,
    students.csv and truth.json, the bytes of ``Dataset.write``.  ``truths`` and
    ``folder_names`` are in the batch's replicate order.  Each folder is written under a
    temporary name and renamed into place (:func:`~.files.atomic_folder`), so a folder
    ``replicate_NNNN`` is always complete (``"."`` writes into ``out_dir`` itself)."""
    out = Path(out_dir)
    b = len(folder_names)
    first = int(students["replicate"][0].as_py())
    st, cl = _as_csv_text(students, classes)
    s_bounds = _row_bounds(students["replicate"].to_numpy(), first, b)
    c_bounds = _row_bounds(classes["replicate"].to_numpy(), first, b)

    def files(i: int, folder: Path) -> None:
        c_bytes = _csv_bytes(cl.slice(c_bounds[i], c_bounds[i + 1] - c_bounds[i]), CLASS_COLUMNS)
        atomic_write(folder / CLASSES_FILE, lambda p: p.write_bytes(c_bytes))
        s_bytes = _csv_bytes(st.slice(s_bounds[i], s_bounds[i + 1] - s_bounds[i]), STUDENT_COLUMNS)
        atomic_write(folder / STUDENTS_FILE, lambda p: p.write_bytes(s_bytes))
        t_text = json.dumps(truths[i], indent=2) + "\n"
        atomic_write(folder / TRUTH_FILE, lambda p: p.write_text(t_text))

    def one(i: int) -> None:
        if folder_names[i] == ".":
            out.mkdir(parents=True, exist_ok=True)
            files(i, out)
        else:  # the replicate's folder appears complete or not at all
            atomic_folder(out / folder_names[i], lambda folder: files(i, folder))

    if pool is None:
        for i in range(b):
            one(i)
    else:
        list(pool.map(one, range(b)))


def replicate_name(k: int) -> str:
    """The folder of replicate ``k`` (0-based) among several."""
    return f"replicate_{k:04d}"


def write_replicate_list(out_dir: str | Path, config: Config, seeds: Sequence[int], engine: str = "model") -> None:
    """Write :data:`REPLICATE_LIST` into ``out_dir``: each replicate's folder and seed,
    the engine and the configuration, once every replicate folder is in place."""
    listing = {
        "engine": engine,
        "n_replicates": len(seeds),
        "replicates": [{"folder": replicate_name(k), "seed": int(s)} for k, s in enumerate(seeds)],
        "config": config.to_dict(),
    }
    text = json.dumps(listing, indent=1) + "\n"
    atomic_write(Path(out_dir) / REPLICATE_LIST, lambda p: p.write_text(text))


# ------------------------------------------------------------------ Parquet
def parquet_int_type(config: Config, n_replicates: int) -> pa.DataType:
    """int32 for the integer columns of the Parquet files when every value the
    configuration allows fits (ids, counts, incomes, replicate numbers), else int64.
    Fixed by the configuration, not the data, so every batch has one schema."""
    bound = max(
        n_replicates,
        config.n_students,
        int(slot_to_class_id(np.array([config.max_small_classes + config.max_large_classes]), config)[0]),
        FIRST_SCHOOL_ID + config.n_schools,
        int(config.income_max),
    )
    return pa.int32() if bound < 2**31 - 1 else pa.int64()


def _narrow(table: pa.Table, int_type: pa.DataType) -> pa.Table:
    if int_type == pa.int64():
        return table
    fields = [pa.field(f.name, int_type) if pa.types.is_integer(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


class StackedWriter:
    """``students.parquet``, ``classes.parquet`` and ``truth.json`` for many replicates.

    Call :meth:`add` once per batch (in replicate order), then :meth:`close`.  The
    Parquet files are written under temporary names and renamed into place by
    :meth:`close`; :meth:`abort` removes them.  One batch is one row group of each
    file, so the bytes depend on the batch size, which callers keep fixed.
    """

    def __init__(self, out_dir: str | Path, config: Config, n_replicates: int):
        self.out = Path(out_dir)
        self.int_type = parquet_int_type(config, n_replicates)
        self.out.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.replicates: list[dict] = []
        self._tmp: dict[str, Path] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}

    def _writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        if name not in self._writers:
            tmp = self.out / f".{name}.{os.getpid()}.tmp"
            self._tmp[name] = tmp
            self._writers[name] = pq.ParquetWriter(tmp, schema, **_PARQUET_OPTIONS)
        return self._writers[name]

    def add(self, students: pa.Table, classes: pa.Table, seeds: Sequence[int], school_effects: np.ndarray,
            class_effects: Sequence[Mapping | None] | None = None) -> None:
        first = len(self.replicates)
        students, classes = _narrow(students, self.int_type), _narrow(classes, self.int_type)
        self._writer(STUDENTS_PARQUET, students.schema).write_table(students, row_group_size=students.num_rows)
        self._writer(CLASSES_PARQUET, classes.schema).write_table(classes, row_group_size=classes.num_rows)
        for i, s in enumerate(seeds):
            self.replicates.append(
                {
                    "replicate": first + i,
                    "seed": int(s),
                    "school_effects": {
                        str(FIRST_SCHOOL_ID + k): float(v) for k, v in enumerate(np.asarray(school_effects[i]))
                    },
                }
            )
            if class_effects is not None and class_effects[i] is not None:
                self.replicates[-1]["class_effects"] = dict(class_effects[i])

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        truth = {
            "engine": "model",
            "format": "stacked",
            "n_replicates": len(self.replicates),
            "estimands": self.config.estimands(),
            "config": self.config.to_dict(),
            "replicates": self.replicates,
        }
        text = json.dumps(truth, indent=1) + "\n"
        for name, tmp in self._tmp.items():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.out / name)
        atomic_write(self.out / TRUTH_FILE, lambda p: p.write_text(text))

    def abort(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:
                pass
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
