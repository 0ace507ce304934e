"""The notebook engine (``classsize.model.notebook``) is the original notebook.

The reference below is the notebook's cells as they stand (only the file output of
the last cell is replaced by returning the frames), so the engine is checked value
for value against the notebook's own code, and seed 100 against the lines the
notebook printed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from classsize.model import Config
from classsize.model.notebook import simulate_notebook
from classsize.model.format import CLASS_COLUMNS, STUDENT_COLUMNS

NOTEBOOK_PRINTED = [
    "SMALL: 2294 students, 152 classes, class_id range: 7001.0-7152.0",
    "LARGE: 3706 students, 123 classes, class_id range: 8001.0-8123.0",
    "Test score range: 41.197146772054566-97.66281600969505",
]


def notebook_cells(seed: int):
    """The notebook, cells 1-10, verbatim (returns the frames it writes, and its prints)."""
    printed = []
    np.random.seed(seed)

    n_reg = 4000  # cohort of regular students
    n_exp = 2000  # cohort of experimental students
    n_stu = n_reg + n_exp
    race_codes = ['WHITE', 'BLACK', 'HISPANIC', 'ASIAN']  # race codes
    race_probs = [0.5, 0.15, 0.2, 0.15]  # race probabilities
    race = np.random.choice(race_codes, size=n_stu, replace=True, p=race_probs)
    fam_inc_min = 30000  # min family income
    fam_inc_max = 150000  # max family income
    incdenom = np.log(fam_inc_max) - np.log(fam_inc_min)
    fam_inc = np.random.randint(low=fam_inc_min, high=fam_inc_max, size=n_stu)
    ability_u = np.random.uniform(low=0, high=25, size=n_stu)
    ability = 10*(np.log(fam_inc) - np.log(fam_inc_min))/incdenom + ability_u
    prob_small_reg = 0.1 + 0.2*(np.log(fam_inc) - np.log(fam_inc_min))/incdenom - 0.25*(race=='WHITE') - 0.3*(race=='ASIAN') + 0.02*ability_u  # noqa: E501
    prob_small_exp = 0.5
    class_sz_small = 15.0
    class_sz_large = 30.0
    ma_small = 0.5
    ma_large = 0.4
    n_schools = 20
    school_effect_range = 5
    test_coefs = [45, 1, 5, 10, 1]

    stu_df = pd.DataFrame.from_dict({
        'family_income': fam_inc,
        'race': race,
        'ability': ability
    })
    stu_df['cohort'] = 'EXPERIMENTAL'
    stu_df.loc[0:n_reg-1, 'cohort'] = 'REGULAR'

    assign = np.random.uniform(size=n_stu) < prob_small_reg
    stu_df['class_size'] = 'LARGE'
    stu_df.loc[assign & (stu_df['cohort']=='REGULAR'), 'class_size'] = 'SMALL'

    assign = np.random.uniform(size=n_stu) < prob_small_exp
    stu_df.loc[assign & (stu_df['cohort']=='EXPERIMENTAL'), 'class_size'] = 'SMALL'

    n_stu_small = np.sum(stu_df['class_size']=='SMALL')
    n_stu_large = np.sum(stu_df['class_size']=='LARGE')
    n_classes_small = int(n_stu_small/class_sz_small)
    n_classes_large = int(n_stu_large/class_sz_large)
    small = stu_df['class_size']=='SMALL'
    stu_df['ord'] = 0
    stu_df.loc[small, 'ord'] = np.arange(n_stu_small)
    stu_df.loc[~small, 'ord'] = np.arange(n_stu_large)
    stu_df.loc[small, 'class_id'] = 7001 + (stu_df.loc[small, 'ord'] % n_classes_small)
    stu_df.loc[~small, 'class_id'] = 8001 + (stu_df.loc[~small, 'ord'] % n_classes_large)
    printed.append(f"SMALL: {n_stu_small} students, {n_classes_small} classes, class_id range: {stu_df.loc[small,'class_id'].min()}-{stu_df.loc[small,'class_id'].max()}")  # noqa: E501
    printed.append(f"LARGE: {n_stu_large} students, {n_classes_large} classes, class_id range: {stu_df.loc[~small,'class_id'].min()}-{stu_df.loc[~small,'class_id'].max()}")  # noqa: E501

    cls_df = stu_df.groupby(['class_id','class_size']).agg(n_students = ('ord','count')).reset_index()
    stu_df = stu_df.drop(labels='class_size', axis=1)
    n_cls = len(cls_df)
    small = cls_df['class_size']=='SMALL'
    u = np.random.uniform(size=n_cls)
    cls_df['teacher_has_ma'] = False
    cls_df.loc[small, 'teacher_has_ma'] = u[small] < ma_small
    cls_df.loc[~small, 'teacher_has_ma'] = u[~small] < ma_large
    cls_df['school_id'] = 9001 + np.random.randint(low=0, high=n_schools, size=n_cls)

    sch_df = cls_df.groupby('school_id').agg(n_classes = ('class_id','count')).reset_index()
    sch_df['school_effect'] = np.random.uniform(low=-school_effect_range, high=school_effect_range, size=n_schools)  # noqa: E501

    stu_df = stu_df.merge(cls_df, on='class_id', how='left')
    stu_df = stu_df.merge(sch_df, on='school_id', how='left')
    stu_df['test_score'] = test_coefs[0] + \
        test_coefs[1]*stu_df['ability'] + \
        test_coefs[2]*(stu_df['class_size']=='SMALL') + \
        test_coefs[3]*(stu_df['teacher_has_ma']) + \
        test_coefs[4]*(stu_df['school_effect'])
    printed.append(f"Test score range: {stu_df['test_score'].min()}-{stu_df['test_score'].max()}")

    stu_df = stu_df.sample(frac=1).reset_index(drop=True)
    stu_df = stu_df.sort_values(by=['class_id'], ascending=True)
    stu_df['student_id'] = np.arange(n_stu)
    students = stu_df[['student_id', 'class_id', 'school_id', 'test_score', 'family_income', 'race', 'cohort']]  # noqa: E501
    classes = cls_df[['class_id', 'school_id', 'n_students', 'class_size', 'teacher_has_ma']]
    return students, classes, printed, sch_df


@pytest.fixture(scope="module")
def ds100():
    return simulate_notebook(Config(), 100)


def test_seed_100_prints_the_notebooks_lines(ds100):
    assert list(ds100.extra["printed"]) == NOTEBOOK_PRINTED


@pytest.mark.parametrize("seed", [100, 0, 7])
def test_equals_the_notebooks_cells(seed):
    students, classes, printed, sch_df = notebook_cells(seed)
    ds = simulate_notebook(Config(), seed)
    assert list(ds.extra["printed"]) == printed
    expected_students = students.reset_index(drop=True).astype({"class_id": np.int64})
    expected_classes = classes.reset_index(drop=True).astype({"class_id": np.int64})
    pd.testing.assert_frame_equal(ds.students, expected_students, check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(ds.classes, expected_classes, check_dtype=False, check_exact=True)
    # the CSV the notebook writes, byte for byte, but for the class ids' ".0"
    assert ds.students.to_csv(index=False) == expected_students.to_csv(index=False)
    assert ds.truth["school_effects"] == {
        str(k): float(v) for k, v in zip(sch_df["school_id"], sch_df["school_effect"])
    }


def test_tables_columns_dtypes_and_order(ds100):
    s, c = ds100.students, ds100.classes
    assert list(s.columns) == STUDENT_COLUMNS
    assert list(c.columns) == CLASS_COLUMNS
    for col in ("student_id", "class_id", "school_id", "family_income"):
        assert s[col].dtype == np.int64, col
    assert s["test_score"].dtype == np.float64
    for col in ("class_id", "school_id", "n_students"):
        assert c[col].dtype == np.int64, col
    assert c["teacher_has_ma"].dtype == bool
    assert isinstance(s.index, pd.RangeIndex) and isinstance(c.index, pd.RangeIndex)

    assert (s["student_id"].to_numpy() == np.arange(len(s))).all()
    assert s["class_id"].is_monotonic_increasing
    assert c["class_id"].is_monotonic_increasing and c["class_id"].is_unique
    assert set(s["race"]) <= set(Config().race_codes)
    assert (s["cohort"] == "REGULAR").sum() == 4000
    assert (s["cohort"] == "EXPERIMENTAL").sum() == 2000

    small = c[c["class_size"] == "SMALL"]["class_id"].to_numpy()
    large = c[c["class_size"] == "LARGE"]["class_id"].to_numpy()
    assert (small == 7001 + np.arange(len(small))).all()
    assert (large == 8001 + np.arange(len(large))).all()
    assert set(c["class_size"]) == {"SMALL", "LARGE"}
    assert c["school_id"].between(9001, 9020).all()

    counts = s.groupby("class_id").size()
    assert (counts.reindex(c["class_id"]).to_numpy() == c["n_students"].to_numpy()).all()
    school_of_class = c.set_index("class_id")["school_id"]
    assert (s["school_id"].to_numpy() == school_of_class.loc[s["class_id"]].to_numpy()).all()
    assert c["n_students"].sum() == len(s) == 6000


def test_truth(ds100):
    t = ds100.truth
    assert t["seed"] == 100 and t["engine"] == "notebook"
    assert t["estimands"] == Config().estimands()
    assert t["config"] == Config().to_dict()
    assert sorted(t["school_effects"]) == [str(9001 + k) for k in range(20)]
    assert all(-5 <= v <= 5 for v in t["school_effects"].values())
    json.dumps(t)  # serialisable


def test_same_seed_same_frames_other_seed_other_frames(ds100):
    again = simulate_notebook(Config(), 100)
    pd.testing.assert_frame_equal(again.students, ds100.students, check_exact=True)
    pd.testing.assert_frame_equal(again.classes, ds100.classes, check_exact=True)
    other = simulate_notebook(Config(), 101)
    assert not other.students["test_score"].equals(ds100.students["test_score"])


def test_global_rng_state_is_restored():
    np.random.seed(12345)
    before = np.random.get_state()
    expected_next = np.random.uniform(size=5)
    np.random.set_state(before)
    simulate_notebook(Config(), 3)
    after = np.random.get_state()
    assert after[0] == before[0]
    assert (after[1] == before[1]).all() and after[2:] == before[2:]
    assert (np.random.uniform(size=5) == expected_next).all()


def test_restores_rng_state_on_error(monkeypatch):
    import classsize.model.notebook as nb

    def broken(config, seed):
        np.random.seed(seed)
        np.random.uniform(size=3)
        raise RuntimeError("boom")

    monkeypatch.setattr(nb, "_notebook", broken)
    np.random.seed(9)
    before = np.random.get_state()
    with pytest.raises(RuntimeError):
        nb.simulate_notebook(Config(), 1)
    assert (np.random.get_state()[1] == before[1]).all()


def test_other_configurations():
    cfg = Config(
        n_regular=300,
        n_experimental=200,
        race_codes=("WHITE", "BLACK", "OTHER"),
        race_probs=(0.4, 0.4, 0.2),
        regular_small_race_shift={"BLACK": 0.3},
        n_schools=3,
        score_noise_sd=2.0,
        small_class_size=10.0,
    )
    ds = simulate_notebook(cfg, 5)
    s, c = ds.students, ds.classes
    assert len(s) == 500 and (s["student_id"].to_numpy() == np.arange(500)).all()
    assert set(s["race"]) == {"WHITE", "BLACK", "OTHER"}
    assert c["school_id"].between(9001, 9003).all()
    assert sorted(ds.truth["school_effects"]) == ["9001", "9002", "9003"]
    n_small = c.loc[c["class_size"] == "SMALL", "n_students"].sum()
    assert (c["class_size"] == "SMALL").sum() == max(1, int(n_small / 10.0))
    # the race shift acts: BLACK students of the REGULAR cohort are SMALL more often
    merged = s.merge(c[["class_id", "class_size"]], on="class_id")
    reg = merged[merged["cohort"] == "REGULAR"]
    share = reg.groupby("race")["class_size"].apply(lambda x: (x == "SMALL").mean())
    assert share["BLACK"] > share["WHITE"] + 0.1


def test_noise_free_config_draws_the_same_numbers_as_the_notebook():
    # a noise sd of zero draws no noise, so the default is exactly the notebook
    base = simulate_notebook(Config(), 11)
    noisy = simulate_notebook(Config(score_noise_sd=1.0), 11)
    assert not noisy.students["test_score"].equals(base.students["test_score"])
    assert (noisy.classes["class_id"] == base.classes["class_id"]).all()


def test_cli_writes_the_notebook_tables(tmp_path, capsys):
    from classsize.inference.commands.cli import main

    out = tmp_path / "out"
    assert main(["simulate", "--engine", "notebook", "--seed", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SMALL: 2294 students, 152 classes" in printed
    ds = simulate_notebook(Config(), 100)
    students = pd.read_csv(out / "students.csv")
    classes = pd.read_csv(out / "classes.csv")
    assert list(students.columns) == STUDENT_COLUMNS
    assert list(classes.columns) == CLASS_COLUMNS
    pd.testing.assert_frame_equal(students, ds.students, check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(classes, ds.classes, check_dtype=False, check_exact=True)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["engine"] == "notebook" and truth["seed"] == 100
    assert truth["school_effects"] == ds.truth["school_effects"]
