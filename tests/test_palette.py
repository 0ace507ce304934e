"""Every figure of the package draws from one colour-blind-safe palette
(:mod:`classsize.model.palette`): no other colour is written in the package's code,
and the palette's roles are told apart."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb

from classsize.model import palette

ROOT = Path(__file__).resolve().parent.parent
#: A colour written in code: a hex colour, a named matplotlib colour or a "C0" cycle colour.
COLOUR = re.compile(r"""#[0-9a-fA-F]{6}\b|\bcolou?r\s*=\s*["'](?![0-9.]+["'])(?!k["'])(?!white["'])(?!black["'])[^"']+["']"""
                    r"""|\b(?:fc|ec|facecolor|edgecolor)\s*=\s*["'](?![0-9.]+["'])(?!k["'])(?!white["'])(?!none["'])[^"']+["']""")


def _sources():
    for folder in ("model", "inference"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name != "palette.py":
                yield path


def test_no_colour_is_written_outside_the_palette():
    found = [f"{p.relative_to(ROOT)}:{i}: {m.group(0)}" for p in _sources()
             for i, line in enumerate(p.read_text().splitlines(), 1) for m in COLOUR.finditer(line)]
    assert not found, "colours outside classsize.model.palette:\n" + "\n".join(found)


def test_the_pattern_sees_a_written_colour():
    """(The check above can fail: these lines are what it catches.)"""
    for line in ('ax.plot(x, color="#1b7837")', "ax.hist(x, color='tab:red')", 'Patch(fc="green")', 'color="C1"'):
        assert COLOUR.search(line), line
    for line in ('ax.plot(x, color="0.5")', 'ax.plot(x, color="k")', 'Patch(fc="white", ec="none")',
                 "ax.plot(x, color=palette.MAIN)"):
        assert not COLOUR.search(line), line


def test_roles_use_okabe_ito_and_differ():
    colours = set(palette.OKABE_ITO.values())
    for role in (palette.CLASS_SIZES, palette.CLASS_TYPES, palette.ANALYSES, palette.COHORTS):
        assert set(role.values()) <= colours
        assert len(set(role.values())) == len(role)
    assert palette.MAIN in colours and palette.ALERT in colours and palette.MAIN != palette.ALERT
    # SMALL and LARGE differ in lightness too, so they part even in grey
    small, large = (sum(to_rgb(palette.CLASS_SIZES[k])) for k in ("SMALL", "LARGE"))
    assert abs(small - large) > 0.3


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_no_colour_is_written_in_the_notebooks():
    """The lessons draw with the same palette (their own plots import its roles)."""
    assert NOTEBOOKS
    found = [f"{p.relative_to(ROOT)}:{i}: {m.group(0)}" for p in NOTEBOOKS
             for i, line in enumerate(p.read_text().splitlines(), 1) for m in COLOUR.finditer(line)]
    assert not found, "colours outside classsize.model.palette:\n" + "\n".join(found)


def _drawn_colours(fig) -> set[tuple[float, float, float]]:
    """Every colour a figure paints (lines, markers, patches, collections), without alpha;
    fully transparent ones left out."""
    from matplotlib.collections import Collection
    from matplotlib.colors import to_rgba, to_rgba_array
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    found = []
    for artist in fig.findobj():
        if not artist.get_visible():
            continue
        if isinstance(artist, Line2D):
            found += [to_rgba(c) for c in (artist.get_color(), artist.get_markerfacecolor(),
                                           artist.get_markeredgecolor()) if not (isinstance(c, str) and c == "none")]
        elif isinstance(artist, Patch):
            found += [artist.get_facecolor(), artist.get_edgecolor()]
        elif isinstance(artist, Collection):
            found += list(to_rgba_array(artist.get_facecolors())) + list(to_rgba_array(artist.get_edgecolors()))
    return {tuple(round(float(v), 4) for v in c[:3]) for c in found if c[3] > 0}


def _off_palette(fig) -> set:
    allowed = {tuple(round(v, 4) for v in to_rgb(c)) for c in palette.OKABE_ITO.values()}
    return {c for c in _drawn_colours(fig) if c not in allowed and not (c[0] == c[1] == c[2])}


def test_every_figure_draws_from_the_palette():
    """The figures a user gets, drawn on stand-in results: every colour they paint is a
    palette colour or a grey.  (The posterior predictive and counterfactual figures need a
    fit; no colour is written in their code, which the test above checks.)"""
    from types import SimpleNamespace

    import matplotlib
    import pandas as pd

    matplotlib.use("Agg", force=False)
    from classsize.inference.fit.figures import forest
    from classsize.inference.studies.design import DesignGrid, plot_design
    from classsize.inference.studies.figures import plot_coverage, plot_rank_histograms, plot_z_contraction
    from classsize.model import Config
    from classsize.model.graph import teaching_figure

    rng = np.random.default_rng(1)
    estimands = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")
    fits = {name: SimpleNamespace(estimand_draws={e: rng.normal(5, 1, (2, 50)) for e in estimands},
                                  truth={"estimands": {e: 5.0 for e in estimands}})
            for name in ("naive", "randomized", "structural")}
    coverage_rows = pd.DataFrame([dict(quantity=q, level=lv, band_lower=lv - 0.2, band_upper=1.0, cp95_lower=lv - 0.1,
                                       cp95_upper=1.0, coverage=lv, n=20, **{"pass": True})
                                  for q in estimands for lv in (0.5, 0.9)])
    fitted = pd.DataFrame([dict(quantity=q, status="fitted", fit_ok=bool(k % 2), contraction=rng.uniform(),
                                z_score=rng.normal()) for q in estimands for k in range(10)])
    study = SimpleNamespace(ranks={q: rng.integers(0, 100, 60) for q in estimands}, band=None,
                            settings={"rank_draws": 99}, summary=coverage_rows, table=fitted,
                            analysis=SimpleNamespace(name="randomized", estimand_names=estimands))
    grid = DesignGrid.parse(Config(), ["n_experimental=250,500"])
    design = pd.DataFrame([dict(analysis=a, estimand="small_class_direct_effect", n_experimental=n, power=0.5,
                                power_lower=0.4, power_upper=0.6, mean_width=3.0)
                           for a in ("randomized", "structural") for n in (250, 500)])
    figures = {
        "forest": forest(fits).figure,
        "rank histograms": plot_rank_histograms(study),
        "coverage": plot_coverage(study),
        "z-score against contraction": plot_z_contraction(study),
        "design": plot_design(grid, design, "small_class_direct_effect"),
        "teaching graph": teaching_figure(),
    }
    for name, fig in figures.items():
        assert len(_drawn_colours(fig)) > 1, name  # the check sees what a figure paints
        assert not _off_palette(fig), (name, _off_palette(fig))


def test_the_figure_check_sees_a_colour_off_the_palette():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])  # matplotlib's own first colour, C0
    ax.plot([0, 1], [1, 0], color=palette.MAIN)
    assert _off_palette(fig) == {tuple(round(v, 4) for v in to_rgb("C0"))}
    plt.close(fig)
