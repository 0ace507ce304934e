"""What the commands promise when writing goes wrong (:mod:`classsize.inference.publish`).

Under every fault below, an output folder is either the complete new set or exactly
what was there before, never a mix, a partial set or a stale file beside new ones, and
the command says so in one line on standard error, with no traceback:

=============================================  ===================================================
fault                                          promise
=============================================  ===================================================
full disk (``simulate``, ``--force`` or not)   exit 3; the old folder intact, or no folder; no
                                               temporary left
full disk during ``fit`` / ``recover`` (slow)  exit 3, the summary printed before; ``recover``
                                               says ``rerun with --resume``
killed between the renames of a commit         the old folder intact; the next run clears the
                                               leftover and succeeds (``fit``: slow)
``kill -9`` mid-way (``simulate --replicates``) no folder; only a recognised temporary, which
                                               the rerun clears (not "not empty")
two commands on one folder                     the second refused at once, exit 2, naming the
                                               owner's pid
Ctrl-C / SIGTERM                               exit 130 / 143, one line, temporaries removed;
                                               Parquet writer threads stopped in order;
                                               ``recover`` says ``rerun with --resume`` (slow)
``--out`` a dangling or looping symlink,       refused before any work, exit 2
``/proc/...``, a name too long, ``.``, the
current folder's parent, a mount point
``--force`` onto a folder of other files       refused, exit 2; the files untouched
``--force`` onto an earlier output             replaced whole: no file of the earlier output
                                               is left (``compare``: slow; ``recover``: slow)
a replicate folder                             complete or absent; ``replicates.json`` last
=============================================  ===================================================

The faults of the input (bounds, encodings, declared fields) are in
``tests/test_faults_input.py``; those of a study's resume state and of the device
count in ``tests/test_resume_state.py``.

The full-disk tests mount a small tmpfs, which needs root (CI runs as root); elsewhere
they skip with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from classsize.inference.commands.cli import main
from classsize.inference.publish import OutputFolder

SMALL_TOML = "n_regular = 200\nn_experimental = 100\nn_schools = 3\n"
TINY_FIT = ["--chains", "1", "--warmup", "30", "--samples", "30"]
TINY_STUDY = TINY_FIT + ["--rank-draws", "10"]


def one_line(err: str) -> str:
    """The one line a fault gives (the sampler's warnings of a short fit aside)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def cli(*argv: str, cwd: Path | None = None, preamble: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``classsize ARGV`` in a fresh process, after ``preamble`` (Python code that
    injects a fault)."""
    code = preamble + textwrap.dedent(f"""
        import sys
        from classsize.inference.commands.cli import main
        sys.exit(main({["--quiet", *argv]!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start(*argv: str, cwd: Path) -> subprocess.Popen:
    # as the classsize program runs it (main reads sys.argv)
    code = (f"import sys\nfrom classsize.inference.commands.cli import main\n"
            f"sys.argv = {['classsize', '--quiet', *argv]!r}\nsys.exit(main())\n")
    return subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "small.toml").write_text(SMALL_TOML)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of a given size (KiB) at a fresh folder; unmounted afterwards."""
    mounted = []

    def mount(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".classsize-" in p.name or p.name.endswith(".tmp"))


# ------------------------------------------------------------ 1. a full disk
def test_full_disk_keeps_the_old_dataset(work, tmpfs, capsys):
    disk = tmpfs(48)
    out = disk / "D"
    assert main(["simulate", "--config", "small.toml", "--seed", "1", "--out", str(out)]) == 0
    before = listing(out)
    capsys.readouterr()
    code = main(["simulate", "--config", "small.toml", "--seed", "2", "--out", str(out), "--force"])
    line = one_line(capsys.readouterr().err)
    assert code == 3 and "No space left" in line and str(out) in line
    assert listing(out) == before  # seed 1's files, all of them, and nothing of seed 2
    assert leftovers(disk) == []


def test_full_disk_leaves_no_folder_and_the_rerun_is_not_refused(work, tmpfs, capsys):
    disk = tmpfs(20)
    out = disk / "D"
    assert main(["simulate", "--config", "small.toml", "--seed", "1", "--out", str(out)]) == 3
    one_line(capsys.readouterr().err)
    assert not out.exists() and leftovers(disk) == []
    subprocess.run(["mount", "-o", "remount,size=200k", str(disk)], check=True)
    assert main(["simulate", "--config", "small.toml", "--seed", "1", "--out", str(out)]) == 0


# ------------------------------------------------- 2. killed between renames
KILL_AT_COMMIT = """
import os, signal
import classsize.inference.publish as publish
def _die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
publish._renameat2_exchange = _die
_rename = os.rename
def _rename_or_die(a, b, *k):
    if ".classsize-new-" in str(a):
        _die()
    return _rename(a, b, *k)
os.rename = _rename_or_die
"""


def test_killed_at_the_commit_keeps_the_old_folder(work):
    assert cli("simulate", "--config", "small.toml", "--seed", "1", "--out", "D").returncode == 0
    before = listing(work / "D")
    killed = cli("simulate", "--config", "small.toml", "--seed", "2", "--out", "D", "--force", preamble=KILL_AT_COMMIT)
    assert killed.returncode == -signal.SIGKILL
    assert listing(work / "D") == before
    assert leftovers(work)  # the new set, never shown: cleared by the next run
    again = cli("simulate", "--config", "small.toml", "--seed", "2", "--out", "D", "--force")
    assert again.returncode == 0, again.stderr
    assert json.loads((work / "D" / "truth.json").read_text())["seed"] == 2
    assert leftovers(work) == []


# --------------------------------------------------------- 3. two at once
def test_a_second_command_on_the_same_folder_is_refused(work, capsys):
    holder = OutputFolder(work / "D", "simulate").__enter__()
    try:
        code = main(["simulate", "--config", "small.toml", "--out", "D"])
        line = one_line(capsys.readouterr().err)
        assert code == 2 and f"pid {os.getpid()}" in line and "another classsize command" in line
    finally:
        holder.__exit__(None, None, None)
    assert main(["simulate", "--config", "small.toml", "--out", "D"]) == 0


def test_two_processes_one_folder(work):
    """Another process holds the folder (as a running command does): refused at once."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom classsize.inference.publish import OutputFolder\n"
         "f = OutputFolder('D', 'simulate').__enter__()\nprint('locked', flush=True)\nsys.stdin.read()\n"],
        cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = cli("simulate", "--config", "small.toml", "--out", "D", cwd=work)
        assert second.returncode == 2
        assert f"pid {holder.pid}" in one_line(second.stderr)
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock; its staging folder is cleared
    again = cli("simulate", "--config", "small.toml", "--out", "D", cwd=work)
    assert again.returncode == 0, again.stderr
    assert leftovers(work) == []


# ------------------------------------------------ 6 and 14. Ctrl-C, SIGTERM
@pytest.mark.parametrize("fmt,sig,status", [("parquet", signal.SIGINT, 130), ("csv", signal.SIGINT, 130),
                                            ("parquet", signal.SIGTERM, 143)])
def test_interrupt_while_writing_replicates(work, fmt, sig, status):
    proc = start("simulate", "--config", "small.toml", "--replicates", "30000" if fmt == "parquet" else "3000", "--format", fmt, "--out", "D",
                 cwd=work)
    for _ in range(1200):  # until the writers have begun
        staged = [p for p in work.glob(".D.classsize-new-*/*")]
        if staged:
            break
        time.sleep(0.05)
    assert staged, proc.communicate()[1]
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "interrupted" in one_line(err) or "terminated" in one_line(err)
    assert not (work / "D").exists() and leftovers(work) == []


# ------------------------------------------------------ 7. impossible paths
@pytest.mark.parametrize("command", [
    ["simulate", "--config", "small.toml"],
    ["fit", "data"] + TINY_FIT,
    ["recover", "--datasets", "2"] + TINY_STUDY,
])
@pytest.mark.parametrize("make,words", [
    (lambda w: (w / "out").symlink_to(w / "nowhere"), "symbolic link"),
    (lambda w: (w / "out").symlink_to(w / "out"), "symbolic link"),
    (lambda w: None, None),
])
def test_impossible_outputs_are_refused_before_work(work, capsys, command, make, words):
    from classsize.model import Config, simulate

    simulate(Config(n_regular=60, n_experimental=60, n_schools=2), 1).write(work / "data")
    if words is None:  # a path under /proc, and a name too long
        for out, word in (("/proc/classsize-out", "cannot write there"), ("x" * 250, "too long")):
            begin = time.perf_counter()
            code = main(command + ["--out", out])
            line = one_line(capsys.readouterr().err)
            assert code == 2 and word in line, line
            assert time.perf_counter() - begin < 20  # refused, not fitted
        return
    make(work)
    code = main(command + ["--out", "out"])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and words in line, line
    assert (work / "out").is_symlink()


@pytest.mark.parametrize("out", [".", "..", "sub/..", str(Path("/"))])
def test_the_current_folder_and_its_parents_are_refused(work, capsys, out):
    (work / "sub").mkdir()
    code = main(["simulate", "--config", "small.toml", "--out", out, "--force"])
    assert code == 2, capsys.readouterr()
    one_line(capsys.readouterr().err)
    assert sorted(p.name for p in work.iterdir()) == ["small.toml", "sub"]


def test_a_mount_point_is_refused(work, tmpfs, capsys):
    disk = tmpfs(64)
    assert main(["simulate", "--config", "small.toml", "--out", str(disk), "--force"]) == 2
    assert "mount point" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------- 8. --force
def test_force_does_not_replace_a_folder_of_other_files(work, capsys):
    (work / "mine").mkdir()
    (work / "mine" / "thesis.tex").write_text("months of work\n")
    assert main(["simulate", "--config", "small.toml", "--out", "mine", "--force"]) == 2
    assert "did not write" in one_line(capsys.readouterr().err)
    assert listing(work / "mine") == {"thesis.tex": b"months of work\n"}
    # a data folder is not a run folder: fit --force does not replace it either
    assert main(["simulate", "--config", "small.toml", "--out", "data"]) == 0
    before = listing(work / "data")
    capsys.readouterr()
    assert main(["fit", "data", "--out", "data", "--force"] + TINY_FIT) == 2
    assert "did not write" in one_line(capsys.readouterr().err)
    assert listing(work / "data") == before


def test_force_replaces_the_whole_folder(work):
    assert main(["simulate", "--config", "small.toml", "--replicates", "3", "--out", "D"]) == 0
    assert main(["simulate", "--config", "small.toml", "--out", "D", "--force"]) == 0
    assert sorted(p.name for p in (work / "D").iterdir()) == ["classes.csv", "students.csv", "truth.json"]


def test_an_output_folder_written_in_place_loses_its_old_contents_under_force(work):
    with OutputFolder(work / "S", "recover", mode="in_place") as f:
        (f.path / "batches").mkdir()
        (f.path / "batches" / "batch-000000.json").write_text("{}")
        f.publish({"verdict.txt": lambda p: p.write_text("seed 3\n")})
    with OutputFolder(work / "S", "recover", mode="in_place", force=True) as f:
        assert sorted(os.listdir(f.path)) == []  # a stopped study is then a partial new one
    with OutputFolder(work / "S", "recover", mode="in_place", keep=True) as f:
        (f.path / "batches").mkdir()
        (f.path / "batches" / "batch-000000.json").write_text("new")
        f.publish({"summary.csv": lambda p: p.write_text("x\n")})
    assert sorted(listing(work / "S")) == sorted(["batches/batch-000000.json", "summary.csv"])


# ------------------------------------------------------------- 9. kill -9
def test_kill_9_leaves_no_partial_replicates(work):
    proc = start("simulate", "--config", "small.toml", "--replicates", "3000", "--out", "D", cwd=work)
    for _ in range(1200):
        if len(list(work.glob(".D.classsize-new-*/replicate_*"))) > 20:
            break
        time.sleep(0.05)
    proc.kill()
    proc.communicate()
    assert not (work / "D").exists()
    staged = next(work.glob(".D.classsize-new-*"))
    for replicate in staged.glob("replicate_*"):  # every folder that has its name is complete
        assert sorted(os.listdir(replicate)) == ["classes.csv", "students.csv", "truth.json"]
    assert not (staged / "replicates.json").exists()
    again = cli("simulate", "--config", "small.toml", "--replicates", "5", "--out", "D", cwd=work)
    assert again.returncode == 0, again.stderr  # the leftover is not "not empty"
    assert leftovers(work) == []
    listed = json.loads((work / "D" / "replicates.json").read_text())
    assert [r["folder"] for r in listed["replicates"]] == [f"replicate_{k:04d}" for k in range(5)]


# -------------------------------------------------- 2, 5, 11, 14 with fits
@pytest.mark.slow
def test_fit_killed_at_the_commit_and_on_a_full_disk(work, tmpfs):
    from classsize.model import Config, simulate

    simulate(Config(n_regular=60, n_experimental=60, n_schools=2), 1).write(work / "data")
    argv = ["fit", "data", "--model", "naive"] + TINY_FIT
    assert cli(*argv, "--out", "R", "--seed", "1").returncode == 0
    before = listing(work / "R")
    killed = cli(*argv, "--out", "R", "--seed", "2", "--force", preamble=KILL_AT_COMMIT)
    assert killed.returncode == -signal.SIGKILL and listing(work / "R") == before
    disk = tmpfs(32)
    full = cli(*argv, "--out", str(disk / "R"), "--seed", "2")
    assert full.returncode == 3, full.stderr
    assert "No space left" in one_line(full.stderr)
    assert "small_class_direct_effect" in full.stdout  # the summary, printed before the write
    assert not (disk / "R").exists() and leftovers(disk) == []


@pytest.mark.slow
def test_ctrl_c_on_fit_and_recover(work):
    from classsize.model import Config, simulate

    simulate(Config(n_regular=60, n_experimental=60, n_schools=2), 1).write(work / "data")
    for argv, hint in ((["fit", "data", "--out", "R", "--samples", "200000"], None),
                       (["recover", "--config", "small.toml", "--datasets", "40", "--batch-size", "1",
                         "--out", "S"] + TINY_STUDY, "--resume")):
        proc = start(*argv, cwd=work)
        time.sleep(25)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        line = one_line(err)
        assert "interrupted" in line
        if hint:
            assert hint in line
    assert not (work / "R").exists() and leftovers(work) == []


@pytest.mark.slow
def test_recover_on_a_full_disk_says_resume(work, tmpfs):
    disk = tmpfs(24)
    done = cli("recover", "--config", "small.toml", "--datasets", "4", "--batch-size", "1",
               "--out", str(disk / "S"), *TINY_STUDY)
    assert done.returncode == 3, done.stderr
    line = one_line(done.stderr)
    assert "No space left" in line and "--resume" in line


@pytest.mark.slow
def test_compare_force_onto_other_data_leaves_no_old_run(work):
    from classsize.model import Config, simulate

    simulate(Config(n_regular=60, n_experimental=60, n_schools=2), 1).write(work / "both")
    simulate(Config(n_regular=0, n_experimental=60, n_schools=2), 1).write(work / "experimental")
    assert cli("compare", "both", "--out", "C", *TINY_FIT).returncode in (0, 1)
    assert (work / "C" / "naive").is_dir()
    done = cli("compare", "experimental", "--out", "C", "--force", *TINY_FIT)
    assert done.returncode in (0, 1), done.stderr
    assert not (work / "C" / "naive").exists()  # naive cannot use these data: its old run is gone too
    assert sorted(p.name for p in (work / "C").iterdir() if p.is_dir()) == ["randomized", "structural"]
