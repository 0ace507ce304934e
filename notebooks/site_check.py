"""Open the built site in headless Chromium and list what is broken (notebooks/build_site.py --check).

``check_site(site, expected, browser)`` opens every ``*.html`` page of ``site`` over
``file://`` and returns one line per problem (an empty list: nothing found):

* console errors, uncaught page errors and failed requests;
* any request that is not ``file:`` or ``data:``: the site must work offline (such
  requests are recorded and aborted, never sent);
* an ``<img>`` that did not load, or has no alt text;
* a relative link whose file does not exist, that leaves the site, or whose ``#anchor``
  is no id of its target page;
* a ``details.solution`` that is open before anyone clicks it;
* a page whose number of figures or of MathML formulas differs from ``expected``
  (``{"page.html": {"figures": n, "math": m}}``, from build_site.py's ``expectations``), or
  whose ``<math>`` elements the browser did not parse as MathML.

``screenshots(site, folder, browser)`` saves a full-page PNG of each page.  ``browser()``
starts the Chromium to use: ``CLASSSIZE_CHROMIUM``, else ``chromium``,
``chromium-browser`` or ``google-chrome`` on the PATH (Playwright drives it; its own
browser download is not needed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

NAMES = ("chromium", "chromium-browser", "google-chrome")

#: What the checks read from each page once it has loaded.
PAGE_FACTS = """() => ({
  images: [...document.images].map(img => ({
    src: img.getAttribute('src'), url: img.src, alt: img.getAttribute('alt'),
    loaded: img.complete && img.naturalWidth > 0})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  math: document.querySelectorAll('math').length,
  mathml: [...document.querySelectorAll('math')].every(m => m instanceof MathMLElement),
  open_solutions: [...document.querySelectorAll('details.solution')].filter(d => d.open).length,
})"""


def find_chromium() -> str | None:
    """The Chromium executable to drive, or None."""
    chosen = os.environ.get("CLASSSIZE_CHROMIUM")
    if chosen:
        return shutil.which(chosen) or (chosen if Path(chosen).is_file() else None)
    return next((path for name in NAMES if (path := shutil.which(name))), None)


@contextlib.contextmanager
def browser():
    """A headless Chromium (Playwright's ``Browser``), closed on leaving."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    if executable is None:
        raise OSError(f"no Chromium found: put one of {', '.join(NAMES)} on the PATH or set CLASSSIZE_CHROMIUM")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def _offline_context(chromium, external: list):
    """A browser context that records and aborts every request that is not file: or data:."""
    context = chromium.new_context()

    def refuse(route):
        external.append(route.request.url)
        route.abort()

    context.route(lambda url: not url.startswith(("file:", "data:")), refuse)
    return context


def _visit(context, path: Path) -> dict:
    """Load ``path`` in a new page: its facts and every error the browser reported."""
    page = context.new_page()
    console, errors, failed = [], [], {}
    page.on("console", lambda m: m.type == "error" and console.append((m.text, m.location.get("url", ""))))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.setdefault(r.url, r.failure or "failed"))
    try:
        page.goto(path.as_uri(), wait_until="load")
        facts = page.evaluate(PAGE_FACTS)
    finally:
        page.close()
    return {**facts, "console": console, "errors": errors, "failed": failed}


def _link_problem(site: Path, page: Path, href: str):
    """None for a good relative link, else (problem) or (target, anchor) to check later."""
    parts = urlsplit(href)
    if parts.scheme or href.startswith("//"):
        return None  # a link to the web is not loaded with the page
    target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
    if not target.is_relative_to(site):
        return f"link {href} points outside the site"
    if not target.is_file():
        return f"link {href} does not resolve (no {target.relative_to(site)})"
    return (target, unquote(parts.fragment)) if parts.fragment else None


def check_site(site, expected: dict | None = None, chromium=None) -> list[str]:
    """Every problem of the site in ``site``, one line each (see the module's docstring)."""
    if chromium is None:
        with browser() as started:
            return check_site(site, expected, started)
    site = Path(site).resolve()
    pages = sorted(site.glob("*.html"))
    if not pages:
        return [f"{site}: no pages"]
    problems, anchors, ids, external = [], [], {}, []
    context = _offline_context(chromium, external)
    try:
        for path in pages:
            name = path.name
            seen = _visit(context, path)
            ids[path] = set(seen["ids"])
            shown = set()
            for img in seen["images"]:
                if not img["loaded"]:
                    why = seen["failed"].get(img["url"])
                    problems.append(f"{name}: image {img['src']} did not load" + (f" ({why})" if why else ""))
                    shown.add(img["url"])
                if not (img["alt"] or "").strip():
                    problems.append(f"{name}: image {img['src']} has no alt text")
            for url, why in seen["failed"].items():
                if url not in shown and url not in external:
                    problems.append(f"{name}: request {url} failed ({why})")
            for text, url in seen["console"]:
                if url not in seen["failed"]:
                    problems.append(f"{name}: console error: {text}")
            problems += [f"{name}: page error: {error}" for error in seen["errors"]]
            for href in seen["links"]:
                found = _link_problem(site, path, href)
                if isinstance(found, str):
                    problems.append(f"{name}: {found}")
                elif found:
                    anchors.append((name, href, *found))
            if seen["open_solutions"]:
                problems.append(f"{name}: {seen['open_solutions']} solution(s) open before a click")
            if not seen["mathml"]:
                problems.append(f"{name}: <math> not parsed as MathML")
            want = (expected or {}).get(name)
            if expected is not None and want is None:
                problems.append(f"{name}: a page no notebook accounts for")
            if want and len(seen["images"]) != want["figures"]:
                problems.append(f"{name}: {len(seen['images'])} figures, the notebook has {want['figures']}")
            if want and seen["math"] != want["math"]:
                problems.append(f"{name}: {seen['math']} MathML formulas, the notebook has {want['math']}")
        for name in sorted(set(expected or {}) - {p.name for p in pages}):
            problems.append(f"{name}: missing")
    finally:
        context.close()
    for name, href, target, anchor in anchors:
        if target.suffix == ".html" and target in ids and anchor not in ids[target]:
            problems.append(f"{name}: link {href} has no target (no id {anchor!r} in {target.name})")
    problems += [f"offline: the site requested {url}" for url in dict.fromkeys(external)]
    return problems


def screenshots(site, folder, chromium=None) -> list[Path]:
    """A full-page PNG of each page of ``site`` in ``folder`` (``index.png``, ``NN_name.png``)."""
    if chromium is None:
        with browser() as started:
            return screenshots(site, folder, started)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    context = _offline_context(chromium, [])
    shots = []
    try:
        for path in sorted(Path(site).resolve().glob("*.html")):
            page = context.new_page()
            page.set_viewport_size({"width": 1200, "height": 900})
            page.goto(path.as_uri(), wait_until="load")
            shots.append(folder / f"{path.stem}.png")
            page.screenshot(path=str(shots[-1]), full_page=True)
            page.close()
    finally:
        context.close()
    return shots
