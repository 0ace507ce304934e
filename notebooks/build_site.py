"""Render the teaching notebooks into a static HTML site that works offline.

    python notebooks/build_site.py [--out site] [--notebooks notebooks] [--check] [--screenshots DIR]

The stored notebooks ``NN_name.ipynb`` of ``--notebooks`` are read with their outputs
(nothing is executed) and written to ``--out``:

* ``index.html``: the landing page: the causal graph (``figures/causal_graph.png`` of the
  notebooks folder), the table of lessons and how to run the notebooks yourself.  Each
  lesson's row comes from the notebook's metadata ``classsize``: ``teaches`` (text),
  ``class_minutes`` (a whole number), ``full_run`` and ``fast_run`` (text such as "14 min");
  its title is the notebook's first ``# `` heading.
* ``NN_name.html``: one page per notebook, nbconvert's ``basic`` template (the cells only)
  inside site_assets/page.html.j2, with links home and to the previous and next lesson.
  Code cells tagged ``solution`` are folded in a closed ``<details class="solution">``.
* ``figures/NN_name-K.png``: the K-th image output of the notebook (K from 1), referenced
  by a relative ``src``.  Its alt text is the code cell's metadata ``alt``: a string
  (every image of the cell; " (figure i of n)" is added when there are several) or a list
  of strings, one per image output in order.
* ``style.css`` and ``pygments.css`` (code colours).

Nothing is loaded from the web: ``$...$`` and ``$$...$$`` in markdown cells (not in code
spans or fenced code) become MathML at build time with latex2mathml, which the browser
draws itself.  A dollar sign that opens no formula (one followed by a space, or with no
closing dollar in the paragraph) stays a dollar sign.

The site is built in ``site.partial-<pid>`` beside ``--out`` and swapped in at the end, so
a failed build leaves the old site as it was.  Bad input (an image without alt text, a
notebook without lesson metadata, a formula latex2mathml cannot read) stops the build
with one line that names the notebook and the cell, and exit status 2.

``--check`` then opens every page in headless Chromium and reports what is broken, and
``--screenshots DIR`` saves a full-page screenshot of each page (both in site_check.py;
they need the ``site`` extra and a Chromium: ``chromium`` on the PATH or
``CLASSSIZE_CHROMIUM``).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "site_assets"
SITE_TITLE = "classsize: Bayesian causal inference with the class-size experiment"
GENERATOR = "classsize notebooks/build_site.py"
LESSON_KEYS = {"teaches": str, "class_minutes": int, "full_run": str, "fast_run": str}
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg"}
#: The Unicode script letters outside the Mathematical Alphanumeric block.
SCRIPT_HOLES = dict(zip("BEFHILMRego", "ℬℰℱℋℐℒℳℛℯℊℴ"))
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")


class SiteError(Exception):
    """Bad input: the build stops with this one line."""


# --- markdown: math to MathML ----------------------------------------------------------

def _split_fences(text: str):
    """(in_fenced_code, chunk) pieces of markdown ``text``, in order."""
    pieces, chunk, fence = [], [], None
    for line in text.splitlines(keepends=True):
        mark = FENCE.match(line)
        if fence is None and mark:
            pieces.append((False, "".join(chunk)))
            chunk, fence = [line], mark.group(1)
        elif fence is not None and mark and mark.group(1)[0] == fence[0] and len(mark.group(1)) >= len(fence) \
                and not line.strip()[len(mark.group(1)):].strip():
            chunk.append(line)
            pieces.append((True, "".join(chunk)))
            chunk, fence = [], None
        else:
            chunk.append(line)
    pieces.append((fence is not None, "".join(chunk)))
    return [p for p in pieces if p[1]]


def _code_end(text: str, i: int) -> int:
    """The end of the code span whose backticks start at ``i`` (past them if it never closes)."""
    run = len(re.compile("`+").match(text, i).group())
    close = re.compile(r"(?<!`)" + "`" * run + r"(?!`)").search(text, i + run)
    return close.end() if close else i + run


def _closing_dollar(text: str, start: int) -> int:
    """Where the inline formula opened just before ``start`` closes, or -1: the next ``$``
    with no space before it and no digit after it, before a code span or a blank line."""
    j = start
    while j < len(text):
        c = text[j]
        if c == "`":
            return -1  # a formula holds no code: that dollar opened nothing
        if c == "\\":
            j += 2
            continue
        if c == "\n" and re.match(r"\n[ \t]*\n", text[j:]):
            return -1  # a formula does not cross a paragraph
        if c == "$" and text[j - 1] not in " \t\n" and not text[j + 1:j + 2].isdigit():
            return j
        j += 1
    return -1


def scan_math(text: str):
    """The formulas of markdown ``text`` and its other dollars, outside code.

    Returns ``(spans, dollars)``: ``spans`` as ``(start, end, latex, display)`` and
    ``dollars`` as ``(start, end)`` for each ``$`` or ``\\$`` that opens no formula."""
    spans, dollars, offset = [], [], 0
    for in_code, chunk in _split_fences(text):
        i, n = 0, len(chunk)
        while not in_code and i < n:
            c = chunk[i]
            if c == "`":
                i = _code_end(chunk, i)
            elif chunk.startswith("\\$", i):
                dollars.append((offset + i, offset + i + 2))
                i += 2
            elif c == "\\":
                i += 2
            elif chunk.startswith("$$", i):
                if (j := chunk.find("$$", i + 2)) > i + 2:
                    spans.append((offset + i, offset + j + 2, chunk[i + 2:j], True))
                    i = j + 2
                else:
                    dollars += [(offset + i, offset + i + 1), (offset + i + 1, offset + i + 2)]
                    i += 2
            elif c == "$" and chunk[i + 1:i + 2].strip() and (j := _closing_dollar(chunk, i + 1)) != -1:
                spans.append((offset + i, offset + j + 1, chunk[i + 1:j], False))
                i = j + 1
            elif c == "$":
                dollars.append((offset + i, offset + i + 1))
                i += 1
            else:
                i += 1
        offset += len(chunk)
    return spans, dollars


def to_mathml(latex: str, display: bool, where: str) -> str:
    from latex2mathml.converter import convert

    try:
        mathml = convert(latex.strip(), display="block" if display else "inline")
    except Exception as exc:  # latex2mathml's own errors: say which formula and where
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise SiteError(f"{where}: cannot convert ${latex}$ to MathML ({detail})") from None
    unknown = re.search(r">[^<]*(\\[A-Za-z]+)", mathml)
    if unknown:
        raise SiteError(f"{where}: unknown LaTeX command {unknown.group(1)} in ${latex}$")
    mathml = mathml.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "")
    mathml = mathml.replace("<mi>&#x0007E;</mi>", "<mo>&#x0223C;</mo>")  # \sim, not a tilde
    # \mathcal: browsers ignore mathvariant="script", so write the script letters themselves
    return re.sub(r'<mi mathvariant="script">([A-Za-z])</mi>', lambda m: f"<mi>{_script(m.group(1))}</mi>", mathml)


def _script(letter: str) -> str:
    if letter in SCRIPT_HOLES:
        return SCRIPT_HOLES[letter]
    return chr((0x1D49C if letter.isupper() else 0x1D4B6) + ord(letter.lower()) - ord("a"))


def prepare_markdown(text: str, where: str, tokens: dict) -> str:
    """``text`` with each formula and stray dollar replaced by a token (``tokens`` maps it
    back after nbconvert's markdown, which would otherwise keep them as TeX), and a blank
    line after ``</summary>`` and before ``</details>`` so markdown inside renders."""
    spans, dollars = scan_math(text)
    edits = sorted([(s, e, None, None) for s, e in dollars] + [(s, e, l, d) for s, e, l, d in spans])
    out, last = [], 0
    for start, end, latex, display in edits:
        token = f"CSMATH{tokens['nonce']}X{len(tokens) - 1}X"
        tokens[token] = ("$", "&#36;") if latex is None else (re.sub(r"\W+", "", latex), to_mathml(latex, display, where))
        out += [text[last:start], token]
        last = end
    out.append(text[last:])
    text = "".join(out)
    pieces = []
    for in_code, chunk in _split_fences(text):
        if not in_code:
            chunk = re.sub(r"</summary>[ \t]*\n?(?:[ \t]*\n)*", "</summary>\n\n", chunk)
            chunk = re.sub(r"(?:\n[ \t]*)*\n?([ \t]*)</details>", r"\n\n\1</details>", chunk)
        pieces.append(chunk)
    return "".join(pieces)


def restore_tokens(page: str, tokens: dict) -> str:
    """Put the MathML (and dollars) in place of the tokens; inside a tag (a heading's id,
    its anchor link) a token becomes plain text."""
    pattern = re.compile(rf"CSMATH{tokens['nonce']}X\d+X")
    page = re.sub(r"<[^<>]*>", lambda tag: pattern.sub(lambda t: tokens[t.group(0)][0], tag.group(0)), page)
    return pattern.sub(lambda t: tokens[t.group(0)][1], page)


# --- notebooks -------------------------------------------------------------------------

def notebook_paths(folder: Path) -> list[Path]:
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise SiteError(f"{folder}: no notebooks NN_name.ipynb")
    return paths


def read_notebook(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:
        raise SiteError(f"{path}: not a notebook ({type(exc).__name__}: {exc})") from None


def images(cell) -> list:
    """The image outputs of ``cell``, in order."""
    return [out for out in cell.get("outputs", []) if set(out.get("data", {})) & set(IMAGE_TYPES)]


def alt_texts(cell, count: int, where: str) -> list[str]:
    alt = cell.metadata.get("alt")
    if isinstance(alt, str) and alt.strip():
        return [alt] if count == 1 else [f"{alt} (figure {i} of {count})" for i in range(1, count + 1)]
    if isinstance(alt, list) and len(alt) == count and all(isinstance(a, str) and a.strip() for a in alt):
        return alt
    if isinstance(alt, list):
        raise SiteError(f'{where}: metadata "alt" lists {len(alt)} texts for {count} images (one non-empty text per image)')
    raise SiteError(f'{where}: {count} image output(s) without alt text (set the cell\'s metadata "alt")')


def lesson_info(nb, path: Path) -> dict:
    meta = nb.metadata.get("classsize")
    if not isinstance(meta, dict):
        raise SiteError(f'{path}: no lesson metadata (notebook metadata "classsize" with keys {", ".join(LESSON_KEYS)})')
    for key, kind in LESSON_KEYS.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value.strip()):
            raise SiteError(f'{path}: lesson metadata "classsize" needs {key} as {"text" if kind is str else "a whole number"}')
    number = int(path.name[:2])
    titles = [m.group(1).strip() for c in nb.cells if c.cell_type == "markdown"
              for m in [re.search(r"^# +(.+)$", c.source, re.M)] if m]
    if not titles:
        raise SiteError(f"{path}: no '# ' heading to title the lesson")
    title = re.sub(rf"^0*{number}\.\s+", "", re.sub(r"[`*]", "", titles[0]))
    return {**{k: meta[k] for k in LESSON_KEYS}, "number": number, "title": title, "href": f"{path.stem}.html"}


def expectations(folder: Path) -> dict[str, dict]:
    """What each page of the site must show: figures and formulas (for site_check)."""
    expected = {"index.html": {"figures": 1, "math": 0}}
    for path in notebook_paths(folder):
        nb = read_notebook(path)
        math = sum(len(scan_math(c.source)[0]) for c in nb.cells if c.cell_type == "markdown")
        expected[f"{path.stem}.html"] = {"figures": sum(len(images(c)) for c in nb.cells), "math": math}
    return expected


# --- pages -----------------------------------------------------------------------------

def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(ASSETS), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_lesson(path: Path, nb, out: Path, exporter) -> str:
    """The body of ``path``'s page; writes its figures under ``out/figures``."""
    tokens = {"nonce": secrets.token_hex(4)}
    for k, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "markdown":
            cell.source = prepare_markdown(cell.source, f"{path}: cell {k} (markdown)", tokens)
    figure = 0
    for k, cell in enumerate(nb.cells, start=1):
        outputs = images(cell)
        if not outputs:
            continue
        run = f", In [{cell.execution_count}]" if cell.get("execution_count") else ""
        for output, alt in zip(outputs, alt_texts(cell, len(outputs), f"{path}: cell {k} (code{run})")):
            figure += 1
            mime = next(m for m in IMAGE_TYPES if m in output.data)
            name = f"figures/{path.stem}-{figure}.{IMAGE_TYPES[mime]}"
            (out / name).write_bytes(base64.b64decode(output.data[mime]))
            for other in ("text/html", "application/pdf", "text/latex", "image/svg+xml"):
                output.data.pop(other, None)  # the image is what the page shows
            output.metadata["filenames"] = {mime: name}
            output.metadata.setdefault(mime, {})["alt"] = alt
    body, _ = exporter.from_notebook_node(nb)
    return restore_tokens(body, tokens)


def build(notebooks: Path, out: Path) -> list[str]:
    """Build the site of ``notebooks`` into ``out`` (replacing it whole); returns its pages."""
    from markupsafe import Markup
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter

    notebooks, out = _shown(notebooks), out.resolve()
    if out.exists() and not _is_site(out):
        raise SiteError(f"{out}: exists and is not a site built here; choose another --out or remove it")
    graph = notebooks / "figures" / "causal_graph.png"
    if not graph.is_file():
        raise SiteError(f"{graph}: the causal graph of the landing page is missing")
    paths = notebook_paths(notebooks)
    books = [read_notebook(p) for p in paths]
    lessons = [lesson_info(nb, p) for nb, p in zip(books, paths)]
    env = _environment()
    exporter = HTMLExporter(template_name="basic", template_file=str(ASSETS / "lesson.html.j2"),
                            exclude_input_prompt=True, exclude_output_prompt=True)

    def link(i):
        if 0 <= i < len(lessons):
            return {"href": lessons[i]["href"], "label": f"{lessons[i]['number']}. {lessons[i]['title']}"}
        return None

    def page(body, title, index, footer):
        return env.get_template("page.html.j2").render(
            body=Markup(body), page_title=title, site_title=SITE_TITLE, generator=GENERATOR,
            is_home=index < 0, prev=link(index - 1) if index >= 0 else None, next=link(index + 1), footer=footer)

    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "figures").mkdir(parents=True)
    try:
        shutil.copyfile(ASSETS / "style.css", partial / "style.css")
        (partial / "pygments.css").write_text(HtmlFormatter(style="default").get_style_defs(".highlight") + "\n")
        shutil.copyfile(graph, partial / "figures" / "causal_graph.png")
        home = env.get_template("home.html.j2").render(
            site_title=SITE_TITLE, lessons=lessons, graph="figures/causal_graph.png")
        (partial / "index.html").write_text(page(home, "Lessons", -1, f"{len(lessons)} lessons, from notebooks/."))
        for i, (path, nb) in enumerate(zip(paths, books)):
            body = render_lesson(path, nb, partial, exporter)
            footer = f"Lesson {lessons[i]['number']}: notebooks/{path.name} (source: notebooks/{path.stem}.py)."
            (partial / lessons[i]["href"]).write_text(page(body, lessons[i]["title"], i, footer))
        _swap(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ["index.html", *(lesson["href"] for lesson in lessons)]


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when inside it (error messages name it so)."""
    path = path.resolve()
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def _is_site(folder: Path) -> bool:
    """Whether ``folder`` may be replaced: empty, or a site this script built."""
    if not folder.is_dir():
        return False
    index = folder / "index.html"
    return not any(folder.iterdir()) or (index.is_file() and GENERATOR in index.read_text(errors="replace"))


def _swap(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``: the old site is renamed away, the new one in, the old deleted."""
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    if out.exists():
        os.rename(out, old)
    try:
        os.rename(new, out)
    except OSError:
        if old.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_checker():
    """site_check.py, the headless-browser checks (next to this file; notebooks/ is no package)."""
    spec = importlib.util.spec_from_file_location("classsize_site_check", HERE / "site_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("site"), help="the site's folder (default: site)")
    parser.add_argument("--notebooks", type=Path, default=HERE, help="the notebooks' folder (default: notebooks/)")
    parser.add_argument("--check", action="store_true", help="open every page in headless Chromium and report problems")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a full-page screenshot of each page in DIR")
    args = parser.parse_args(argv)
    try:
        pages = build(args.notebooks, args.out)
        print(f"site: {len(pages)} pages in {args.out}")
        if args.check or args.screenshots:
            checker = load_checker()
            with checker.browser() as chromium:
                if args.screenshots:
                    shots = checker.screenshots(args.out, args.screenshots, chromium)
                    print(f"site: {len(shots)} screenshots in {args.screenshots}")
                if args.check:
                    problems = checker.check_site(args.out, expectations(args.notebooks), chromium)
                    for problem in problems:
                        print(f"site: {problem}", file=sys.stderr)
                    print(f"site: {len(problems)} problem(s) found by the browser check")
                    return 1 if problems else 0
    except SiteError as exc:
        print(f"site: {exc}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as exc:
        hint = " (install the site extra: pip install -e '.[site]')" if isinstance(exc, ImportError) else ""
        print(f"site: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not type(exc).__module__.startswith("playwright"):
            raise
        print(f"site: the browser failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
