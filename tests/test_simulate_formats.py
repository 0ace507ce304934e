"""Output formats of ``classsize simulate``: fast CSV folders and stacked Parquet files."""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from classsize.inference.commands.cli import main
from classsize.inference.data.read import DataError, load_dataset
from classsize.model import Config, simulate_many
from classsize.model.simulate import keys_of, write_replicates
from classsize.model.writers import format_floats

SMALL = Config(n_regular=600, n_experimental=400, n_schools=6)
FILES = ("students.csv", "classes.csv", "truth.json")


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    """Five replicates (seeds 30..34) of SMALL as Parquet, in batches of 2 (so the
    last batch is padded), and the same five as CSV folders."""
    root = tmp_path_factory.mktemp("formats")
    write_replicates(root / "pq", SMALL, 30, 5, "parquet", batch_size=2)
    write_replicates(root / "csv", SMALL, 30, 5, "csv", batch_size=2)
    return root


def test_format_floats_is_pandas_to_csv():
    rng = np.random.default_rng(0)
    edge = [70.0, -0.0, 0.0, 1.0, 0.1, 1e-4, 9.99e-5, 1e-5, -2.5e-7, 123456789.5, 999999999.75,
            1e9 + 0.5, 123456789012.5, 1e15 + 0.5, 1e16, 3e300, 5e-324, np.nan, np.inf, -np.inf]
    x = np.concatenate([edge, rng.normal(70, 10, 2000), rng.uniform(1, 10, 2000) * 10.0 ** rng.integers(-8, 18, 2000)])
    ours = format_floats(x).to_pylist()
    assert ours == list(x.astype(str))
    finite = ~np.isnan(x)  # (pandas writes NaN as an empty cell; simulated data hold none)
    expected = pd.DataFrame({"v": x[finite]}).to_csv(index=False).splitlines()[1:]
    assert [v for v, keep in zip(ours, finite) if keep] == expected


def test_keys_of_seeds_are_prng_keys():
    seeds = [0, 1, 7, -1, -12345, 2**32 + 5, 2**63 - 1]
    want = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
    assert (np.asarray(keys_of(seeds)) == want).all()


def test_csv_folders_are_the_bytes_of_dataset_write(stacked, tmp_path):
    names = sorted(p.name for p in (stacked / "csv").iterdir() if p.is_dir())
    assert names == [f"replicate_{k:04d}" for k in range(5)]
    assert sorted(p.name for p in (stacked / "csv").iterdir() if not p.is_dir()) == ["replicates.json"]
    for k, ds in enumerate(simulate_many(SMALL, range(30, 35))):
        ds.write(tmp_path / str(k))
        for f in FILES:
            assert (stacked / "csv" / names[k] / f).read_bytes() == (tmp_path / str(k) / f).read_bytes(), (k, f)
    assert not list((stacked / "csv").rglob("*.tmp"))


def test_parquet_layout(stacked):
    folder = stacked / "pq"
    assert sorted(p.name for p in folder.iterdir()) == ["classes.parquet", "students.parquet", "truth.json"]
    st = pq.read_table(folder / "students.parquet")
    cl = pq.read_table(folder / "classes.parquet")
    assert st.column_names == ["replicate", "student_id", "class_id", "school_id", "test_score",
                               "family_income", "race", "cohort"]
    assert cl.column_names == ["replicate", "class_id", "school_id", "n_students", "class_size", "teacher_has_ma"]
    assert str(st.schema.field("test_score").type) == "double"
    assert str(cl.schema.field("teacher_has_ma").type) == "bool"
    assert str(st.schema.field("class_id").type) == "int32" and str(cl.schema.field("n_students").type) == "int32"
    reps = st["replicate"].to_numpy()
    assert (np.bincount(reps) == SMALL.n_students).all() and len(np.bincount(reps)) == 5
    assert (np.diff(reps) >= 0).all() and (np.diff(cl["replicate"].to_numpy()) >= 0).all()
    assert pq.ParquetFile(folder / "students.parquet").metadata.num_row_groups == 3  # batches of 2
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["n_replicates"] == 5 and truth["config"]["n_regular"] == 600
    assert [r["seed"] for r in truth["replicates"]] == [30, 31, 32, 33, 34]
    assert [r["replicate"] for r in truth["replicates"]] == list(range(5))
    assert len(truth["replicates"][2]["school_effects"]) == 6


def test_a_parquet_replicate_reads_back_as_its_csv_folder(stacked):
    for k in (0, 4):
        from_pq = load_dataset(stacked / "pq", replicate=k)
        from_csv = load_dataset(stacked / "csv" / f"replicate_{k:04d}")
        pd.testing.assert_frame_equal(from_pq.students, from_csv.students)
        pd.testing.assert_frame_equal(from_pq.classes, from_csv.classes)
        assert from_pq.truth == {**from_csv.truth, "replicate": k}
        assert from_pq.replicate == k and from_csv.replicate is None
    # FOLDER#K and either file name the same replicate
    by_name = load_dataset(f"{stacked / 'pq'}#3")
    by_file = load_dataset(stacked / "pq" / "classes.parquet", replicate=3)
    pd.testing.assert_frame_equal(by_name.students, by_file.students)
    assert by_name.truth["seed"] == 33


@pytest.mark.parametrize(
    "source, replicate, message",
    [
        ("pq", None, "holds stacked replicates; name one"),
        ("pq", 5, "no replicate 5 (the file holds replicates 0..4)"),
        ("pq", -1, "no replicate -1 (the file holds replicates 0..4)"),
        ("pq#x", None, "replicate 'x' is not a whole number"),
        ("pq#2.5", None, "replicate '2.5' is not a whole number"),
        ("csv/replicate_0000", 0, "students.parquet: file not found"),
    ],
)
def test_bad_replicate_numbers_are_one_line_errors(stacked, source, replicate, message):
    with pytest.raises(DataError) as e:
        load_dataset(f"{stacked}/{source}", replicate=replicate)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_same_seed_same_bytes_in_parquet(stacked, tmp_path):
    write_replicates(tmp_path, SMALL, 30, 5, "parquet", batch_size=2)
    for f in ("students.parquet", "classes.parquet", "truth.json"):
        assert (tmp_path / f).read_bytes() == (stacked / "pq" / f).read_bytes(), f
    assert not list(tmp_path.glob(".*"))


def test_cli_parquet_and_bad_replicate_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SMALL.to_toml())
    out = tmp_path / "p"
    args = ["simulate", "--out", str(out), "--seed", "30", "--replicates", "3", "--config", str(cfg)]
    assert main(args + ["--format", "parquet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["classes.parquet", "students.parquet", "truth.json"]
    capsys.readouterr()
    assert main(["fit", f"{out}#7", "--out", str(tmp_path / "fit")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no replicate 7 (the file holds replicates 0..2)" in err
    assert "Traceback" not in err and not (tmp_path / "fit").exists()
    assert main(args + ["--format", "parquet", "--engine", "notebook", "--out", str(tmp_path / "n")]) == 2
    assert "model engine only" in capsys.readouterr().err and not (tmp_path / "n").exists()


def test_stored_sampler_gives_the_same_draws(tmp_path, monkeypatch):
    """With the cache on, the traced sampler is stored (jax.export) and loaded by later
    processes; its draws are the bytes of the traced one."""
    import importlib

    sim = importlib.import_module("classsize.model.simulate")  # (the package exports a function of that name)
    from classsize.model import jaxcache

    monkeypatch.setattr(jaxcache, "_enabled", tmp_path)
    keys = keys_of([3, 4])
    direct = sim._batched_sampler(SMALL)(keys)
    sim.sampler.cache_clear()
    try:
        first = sim.sampler(SMALL, 2)(keys)  # traces, stores, runs the stored program
        stored = list((tmp_path / "samplers").glob("*.bin"))
        assert len(stored) == 1
        sim.sampler.cache_clear()
        loaded = sim.sampler(SMALL, 2)(keys)  # loads the stored program, as a new process does
        for k in direct:
            assert np.asarray(first[k]).tobytes() == np.asarray(direct[k]).tobytes(), k
            assert np.asarray(loaded[k]).tobytes() == np.asarray(direct[k]).tobytes(), k
        stored[0].write_bytes(b"not a program")  # a damaged file: stored again, same draws
        sim.sampler.cache_clear()
        again = sim.sampler(SMALL, 2)(keys)
        assert np.asarray(again["test_score"]).tobytes() == np.asarray(direct["test_score"]).tobytes()
        assert stored[0].read_bytes() != b"not a program"
    finally:
        sim.sampler.cache_clear()


def test_a_batch_holds_fewer_replicates_when_they_would_not_fit(tmp_path, monkeypatch):
    """Memory bounds the batch: with room for two replicates, five come in three row groups."""
    import importlib

    sim = importlib.import_module("classsize.model.simulate")  # (the package's `simulate` is the function)
    monkeypatch.setattr(sim, "BATCH_BYTES", 2 * SMALL.simulation_bytes + 1)
    sim.write_replicates(tmp_path, SMALL, 30, 5, "parquet")
    assert pq.ParquetFile(tmp_path / "students.parquet").num_row_groups == 3
