"""The teaching site (``make site``, notebooks/build_site.py) works offline and in a browser.

Two small synthetic notebooks (math, figures with alt text, a solution, lesson
metadata) are built into a site and opened in headless Chromium by
notebooks/site_check.py; the checker must find nothing wrong there, and must find
what we break on purpose (a deleted figure, a dead link).  Bad input (an image without
alt text, a notebook without lesson metadata, LaTeX that does not convert) stops the
build with one line and exit status 2, leaving the old site as it was.  The last test
builds and checks the site of the stored notebooks themselves.

The browser tests skip, with the reason, when Playwright is not installed (the
``site`` extra) or no Chromium is found (``chromium``, ``chromium-browser`` or
``google-chrome`` on the PATH, or ``CLASSSIZE_CHROMIUM``).  The browser starts once for
the whole file.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytest.importorskip("nbconvert", reason="nbconvert is not installed (the site extra: pip install -e '.[site]')")
pytest.importorskip("latex2mathml", reason="latex2mathml is not installed (the site extra: pip install -e '.[site]')")
import nbformat  # noqa: E402
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
_spec = importlib.util.spec_from_file_location("classsize_site", NOTEBOOKS / "build_site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)
check = site.load_checker()


def _png(rgb: tuple[int, int, int], width: int = 12, height: int = 8) -> str:
    """A small one-colour PNG, base64 as a notebook stores it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


def _image(rgb):
    return new_output("display_data", data={"image/png": _png(rgb), "text/plain": "<Figure size 12x8>"})


def _lesson(teaches: str, minutes: int) -> dict:
    return {"classsize": {"teaches": teaches, "class_minutes": minutes, "full_run": "2 min", "fast_run": "9 s"}}


def write_notebooks(folder: Path) -> Path:
    """Two lessons: 4 figures and 3 formulas, then 2 figures and 2 formulas."""
    (folder / "figures").mkdir(parents=True)
    shutil.copyfile(NOTEBOOKS / "figures" / "causal_graph.png", folder / "figures" / "causal_graph.png")
    first = new_notebook(metadata=_lesson("simulating a dataset", 30), cells=[
        new_markdown_cell("# 1. First steps\n\nThe effect $Y_i(1) - Y_i(0)$ of a class,\n"
                          "$$\\theta_k \\sim \\mathcal N(0, 1),$$ costs $5 and $10 (`f\"${x:.2f}\"`).\n\n"
                          "```python\nprice = '$a$'\n```\n"),
        new_code_cell("plot()", metadata={"alt": "a red square"}, outputs=[_image((200, 30, 30))], execution_count=1),
        new_code_cell("plot_two()", metadata={"alt": "a pair"}, execution_count=2,
                      outputs=[_image((30, 200, 30)), _image((30, 30, 200))]),
        new_markdown_cell("<details>\n<summary>Hint: $\\sqrt{n}$</summary>\nTry **this** first.\n</details>"),
        new_code_cell("answer = plot()", metadata={"tags": ["solution"], "alt": ["the solution's plot"]},
                      outputs=[_image((120, 120, 0))], execution_count=3),
    ])
    second = new_notebook(metadata=_lesson("confounding", 45), cells=[
        new_markdown_cell("# 2. Second steps\n\n## Why $P(S \\mid X)$ matters\n\n"
                          "Here $\\text{ability}_i = 10\\,s_i + U_i$."),
        new_code_cell("plots()", metadata={"alt": ["the left plot", "the right plot"]}, execution_count=1,
                      outputs=[_image((0, 0, 0)), _image((90, 90, 90))]),
        new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1\n")], execution_count=2),
    ])
    nbformat.write(first, folder / "01_first.ipynb")
    nbformat.write(second, folder / "02_second.ipynb")
    return folder


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    return write_notebooks(tmp_path_factory.mktemp("lessons") / "notebooks")


@pytest.fixture(scope="module")
def built(notebooks):
    out = notebooks.parent / "site"
    assert site.build(notebooks, out) == ["index.html", "01_first.html", "02_second.html"]
    return out


@pytest.fixture(scope="module")
def chromium():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (the site extra: pip install -e '.[site]')")
    if check.find_chromium() is None:
        chosen = os.environ.get("CLASSSIZE_CHROMIUM")
        pytest.skip(f"CLASSSIZE_CHROMIUM={chosen} is no executable" if chosen else
                    "no Chromium: put chromium, chromium-browser or google-chrome on the PATH, or set CLASSSIZE_CHROMIUM")
    with check.browser() as started:
        yield started


def _copy(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "site"))


def _run(*args: str):
    return subprocess.run([sys.executable, str(NOTEBOOKS / "build_site.py"), *args], capture_output=True, text=True)


# --- the builder, without a browser ----------------------------------------------------

def test_math_is_found_outside_code_and_prices_stay_dollars():
    text = "a $x$, $$y$$, $5 and $10, \\$3, `$c$`, $p\n+ q$\n\n```\n$fenced$\n```\n$20,000 and $30,000"
    spans, dollars = site.scan_math(text)
    assert [(latex, display) for _, _, latex, display in spans] == [("x", False), ("y", True), ("p\n+ q", False)]
    assert [text[a:b] for a, b in dollars] == ["$", "$", "\\$", "$", "$"]


def test_figures_are_files_with_alt_text(built):
    first = (built / "01_first.html").read_text()
    assert sorted(p.name for p in (built / "figures").iterdir()) == [
        "01_first-1.png", "01_first-2.png", "01_first-3.png", "01_first-4.png",
        "02_second-1.png", "02_second-2.png", "causal_graph.png"]
    assert "data:image" not in first
    alts = dict((src, alt) for alt, src in re.findall(r'<img alt="([^"]*)" src="([^"]*)"', first))
    assert alts == {"figures/01_first-1.png": "a red square", "figures/01_first-2.png": "a pair (figure 1 of 2)",
                    "figures/01_first-3.png": "a pair (figure 2 of 2)", "figures/01_first-4.png": "the solution's plot"}


def test_math_is_mathml_and_code_keeps_its_dollars(built):
    first = (built / "01_first.html").read_text()
    assert first.count("<math") == 3 and 'display="block"' in first and "\U0001d4a9" in first  # \mathcal N
    assert "$Y_i" not in first and "costs &#36;5 and &#36;10" in first
    assert '<code>f"${x:.2f}"</code>' in first and "'$a$'" in first
    assert "<strong>this</strong>" in first  # markdown inside <details> still renders
    second = (built / "02_second.html").read_text()
    assert second.count("<math") == 2 and re.search(r'<h2 id="[^"<>]*">Why <math', second)


def test_pages_link_nothing_from_the_web(built):
    for page in built.glob("*.html"):
        text = page.read_text()
        assert not re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", text, re.I), page.name
        assert "<script" not in text, page.name


def test_index_lists_the_lessons_in_order(built):
    index = (built / "index.html").read_text()
    rows = re.findall(r'<tr>\s*<td>(\d+)</td>\s*<td><a href="([^"]+)">([^<]+)</a></td>\s*<td>([^<]+)</td>\s*'
                      r"<td>(\d+) min</td>\s*<td>([^<]+)</td>\s*<td>([^<]+)</td>", index)
    assert rows == [("1", "01_first.html", "First steps", "simulating a dataset", "30", "2 min", "9 s"),
                    ("2", "02_second.html", "Second steps", "confounding", "45", "2 min", "9 s")]
    assert 'src="figures/causal_graph.png"' in index and 'id="run"' in index and "make lab" in index


def test_an_image_without_alt_text_stops_the_build_and_keeps_the_old_site(notebooks, built, tmp_path):
    folder = Path(shutil.copytree(notebooks, tmp_path / "notebooks"))
    out = _copy(built, tmp_path)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    nb = nbformat.read(folder / "02_second.ipynb", as_version=4)
    del nb.cells[1].metadata["alt"]
    nbformat.write(nb, folder / "02_second.ipynb")
    run = _run("--notebooks", str(folder), "--out", str(out))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(run.stderr.splitlines()) == 1 and "02_second.ipynb: cell 2 (code, In [1])" in run.stderr
    assert "alt" in run.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notebooks", "site"]  # no partial build left


def test_lesson_metadata_and_latex_are_checked(notebooks, tmp_path):
    folder = Path(shutil.copytree(notebooks, tmp_path / "notebooks"))
    nb = nbformat.read(folder / "01_first.ipynb", as_version=4)
    nb.cells[3].source = "A broken formula: $x^$."
    nbformat.write(nb, folder / "01_first.ipynb")
    with pytest.raises(site.SiteError, match=r"01_first.ipynb: cell 4 \(markdown\): cannot convert \$x\^\$"):
        site.build(folder, tmp_path / "site")
    del nb.metadata["classsize"]
    nbformat.write(nb, folder / "01_first.ipynb")
    with pytest.raises(site.SiteError, match=r"01_first.ipynb: no lesson metadata"):
        site.build(folder, tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notebooks"]


def test_the_builder_replaces_only_a_site(tmp_path, notebooks):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    run = _run("--notebooks", str(notebooks), "--out", str(tmp_path / "mine"))
    assert run.returncode == 2 and "is not a site" in run.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# --- in the browser --------------------------------------------------------------------

def test_the_site_passes_the_browser_check(built, notebooks, chromium):
    assert check.check_site(built, site.expectations(notebooks), chromium) == []


def test_a_missing_figure_is_reported(built, notebooks, chromium, tmp_path):
    out = _copy(built, tmp_path)
    (out / "figures" / "01_first-2.png").unlink()
    problems = check.check_site(out, site.expectations(notebooks), chromium)
    assert len(problems) == 1, problems
    assert problems[0].startswith("01_first.html: image figures/01_first-2.png did not load")


def test_a_broken_link_is_reported(built, notebooks, chromium, tmp_path):
    out = _copy(built, tmp_path)
    page = out / "02_second.html"
    page.write_text(page.read_text().replace(
        "</main>", '<a href="03_third.html">on</a> <a href="index.html#nowhere">back</a></main>'))
    problems = check.check_site(out, site.expectations(notebooks), chromium)
    assert problems == ["02_second.html: link 03_third.html does not resolve (no 03_third.html)",
                        "02_second.html: link index.html#nowhere has no target (no id 'nowhere' in index.html)"]


def test_solutions_are_closed_until_clicked(built, chromium):
    page = chromium.new_page()
    try:
        page.goto((built / "01_first.html").as_uri())
        solution = page.locator("details.solution")
        assert solution.count() == 1 and not solution.evaluate("d => d.open")
        assert not page.locator('img[alt="the solution\'s plot"]').is_visible()
        solution.locator("summary").click()
        assert solution.evaluate("d => d.open") and page.locator('img[alt="the solution\'s plot"]').is_visible()
    finally:
        page.close()


def test_screenshots_of_every_page(built, chromium, tmp_path):
    shots = check.screenshots(built, tmp_path / "shots", chromium)
    assert [p.name for p in shots] == ["01_first.png", "02_second.png", "index.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots)


def test_the_stored_notebooks_make_a_working_site(chromium, tmp_path):
    out = tmp_path / "site"
    pages = site.build(NOTEBOOKS, out)
    assert pages[0] == "index.html" and len(pages) == 1 + len(list(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    assert check.check_site(out, site.expectations(NOTEBOOKS), chromium) == []
