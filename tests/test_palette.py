"""Every figure of the package draws from one colour-blind-safe palette
(:mod:`classsize.model.palette`): no other colour is written in the package's code,
and the palette's roles are told apart."""

from __future__ import annotations

import re
from pathlib import Path

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
