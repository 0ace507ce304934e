"""The causal graph of the class-size experiment, two ways.

* **The teaching graph** (:func:`teaching_figure`, :func:`draw_teaching_graph`): the
  variables a learner reasons about (the cohort, family income, race, the unobserved
  ability, the class size, the teacher's master's degree (MA), the school and the test
  score) and the arrows between them, drawn with matplotlib.  A second panel shows
  the graph under ``do(class size)``: the arrows into the class size are cut.
  :data:`TEACHING_NODES` names the model's sites behind each variable and
  :data:`TEACHING_EDGES` the arrows; ``tests/test_teaching.py`` checks them against
  the model's own dependencies (:func:`model_edges`).
* **The bookkeeping graph** (:func:`bookkeeping_graph`): ``numpyro.render_model`` of
  the model, every site as NumPyro sees it, for developers (needs the graphviz
  program ``dot``).  It also shows how classes are formed (``class_of_student``,
  ``n_small_classes``, ``n_large_classes``), and through them arrows from the class
  size to the school that no causal story has: a class's school is drawn per class
  slot, and which slots are used depends on how many students got each size.

:func:`observed_model` conditions the forward model on one simulated dataset's
observed columns (race, income, class size, MA, school, score), so that the
bookkeeping graph shades what an analyst sees.
"""

from __future__ import annotations

from numpyro import handlers

from . import palette
from .config import Config
from .experiment import class_size_experiment
from .pieces import PARAMETERS
from .simulate import draw_many

#: The fill of an observed node: the palette's light colour, faded.
LIGHT_FILL = palette.LIGHT + "55"

OBSERVED_SITES = ("race", "family_income", "small_class", "teacher_has_ma", "school", "test_score")

#: The teaching graph's variables: label, position (x, y), observed, and the model's
#: sites it stands for (the cohort is part of the design, not a site: it decides which
#: assignment rule a student's class size follows).
TEACHING_NODES = {
    "cohort": ("cohort\n(REGULAR or\nEXPERIMENTAL)", (0.0, 2.3), True, ()),
    "race": ("race", (1.3, 3.4), True, ("race",)),
    "income": ("family\nincome", (3.0, 3.4), True, ("family_income",)),
    "ability": ("ability\n(unobserved)", (4.5, 2.2), False, ("ability_uniform", "ability")),
    "class size": ("class size\nSMALL / LARGE", (1.7, 1.3), True,
                   ("small_class", "class_of_student", "n_small_classes", "n_large_classes")),
    "MA": ("teacher\nhas an MA", (0.9, -0.2), True, ("teacher_has_ma",)),
    "school": ("school", (4.9, 0.7), True, ("school", "school_effect")),
    "score": ("test\nscore", (3.2, -0.2), True, ("test_score",)),
}
#: The teaching graph's arrows.
TEACHING_EDGES = (
    ("cohort", "class size"),
    ("race", "class size"),
    ("income", "class size"),
    ("income", "ability"),
    ("ability", "class size"),
    ("ability", "score"),
    ("class size", "MA"),
    ("class size", "score"),
    ("MA", "score"),
    ("school", "score"),
)
#: Arrows of the model's dependencies that come from forming classes, not from cause
#: and effect: a class's school is drawn per class slot, and which slots are used
#: depends on how many students are in each size.
BOOKKEEPING_EDGES = (("class size", "school"),)

_SITE_TO_NODE = {site: node for node, (*_, sites) in TEACHING_NODES.items() for site in sites}


def observed_model(config: Config = Config(), seed: int = 0):
    """The model with the observed columns of one forward draw conditioned on."""
    draw = {k: v[0] for k, v in draw_many(config, [seed]).items()}
    return handlers.condition(class_size_experiment, {k: draw[k] for k in OBSERVED_SITES})


def bookkeeping_graph(config: Config = Config(), filename: str | None = None, parameters: bool = False):
    """``numpyro.render_model`` of the model, every site (needs the graphviz program ``dot``)."""
    import numpyro

    model = observed_model(config)
    if not parameters:
        model = handlers.block(model, hide=list(PARAMETERS))
    return numpyro.render_model(model, model_args=(config,), filename=filename, render_distributions=False)


def model_edges(model, config: Config) -> set[tuple[str, str]]:
    """The model's direct dependencies between sites, mapped onto the teaching graph's
    variables (parameters left out, arrows within one variable dropped)."""
    from numpyro.infer.inspect import get_model_relations

    deps = get_model_relations(model, model_args=(config,))["sample_sample"]
    edges = set()
    for child, parents in deps.items():
        for parent in parents:
            a, b = _SITE_TO_NODE.get(parent), _SITE_TO_NODE.get(child)
            if a is not None and b is not None and a != b:
                edges.add((a, b))
    return edges


def teaching_edges(intervened: bool = False) -> tuple[tuple[str, str], ...]:
    """The teaching graph's arrows; under ``do(class size)`` those into the class size are gone."""
    return tuple(e for e in TEACHING_EDGES if not (intervened and e[1] == "class size"))


def _edge_labels(config: Config) -> dict[tuple[str, str], str]:
    return {
        ("class size", "score"): f"{config.small_class_direct_effect:+g} if SMALL",
        ("MA", "score"): f"{config.teacher_ma_effect:+g}",
        ("class size", "MA"): f"P(MA) {config.p_ma_small:g} if SMALL,\n{config.p_ma_large:g} if LARGE",
    }


def _box(text: str) -> tuple[float, float]:
    """Width and height, in the graph's units, of a node's box (sized for its label at
    8.5 points in :func:`teaching_figure`'s panels)."""
    lines = text.split("\n")
    return 0.09 * max(len(line) for line in lines) + 0.22, 0.19 * len(lines) + 0.2


def _edge_ends(a, b, box_a, box_b, gap: float = 0.05):
    """Where an arrow from the centre ``a`` to the centre ``b`` leaves box ``a`` and
    enters box ``b``."""
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    length = float(np.hypot(*d))

    def exit_fraction(box):
        half_w, half_h = box[0] / 2, box[1] / 2
        return min(half_w / abs(d[0]) if d[0] else np.inf, half_h / abs(d[1]) if d[1] else np.inf)

    return a + (exit_fraction(box_a) + gap / length) * d, b - (exit_fraction(box_b) + gap / length) * d


def draw_teaching_graph(ax, intervened: bool = False, config: Config = Config()):
    """Draw the teaching graph on ``ax``; with ``intervened``, as under ``do(class size)``:
    the arrows into the class size drawn cut (faint, crossed)."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    labels = _edge_labels(config)
    kept = teaching_edges(intervened)
    boxes = {}
    for name, (label, (x, y), observed, _) in TEACHING_NODES.items():
        set_here = intervened and name == "class size"
        text = "do(class size)\nSMALL or LARGE" if set_here else label
        w, h = boxes[name] = _box(text)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                    lw=2.2 if set_here else 1.0, fc=LIGHT_FILL if observed else "white",
                                    ec=palette.ALERT if set_here else "k", ls="-" if observed else "--", zorder=3))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5, zorder=4)
    for a, b in TEACHING_EDGES:
        cut = (a, b) not in kept
        start, end = _edge_ends(TEACHING_NODES[a][1], TEACHING_NODES[b][1], boxes[a], boxes[b])
        ax.add_patch(FancyArrowPatch(tuple(start), tuple(end), arrowstyle="-|>", mutation_scale=13,
                                     lw=1.0 if cut else 1.4, color="0.75" if cut else "k", ls=":" if cut else "-",
                                     shrinkA=0, shrinkB=0, zorder=2))
        xm, ym = 0.45 * start + 0.55 * end
        if cut:
            ax.plot([xm], [ym], marker="x", color=palette.ALERT, ms=10, mew=2.5, zorder=5)
        elif (a, b) in labels:
            ax.text(xm, ym, labels[(a, b)], fontsize=7, color="0.25", ha="center", va="center", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    ax.text(2.4, -0.85, "shaded: in students.csv or classes.csv; dashed: never observed", fontsize=7,
            color="0.35", ha="center", va="center")
    ax.set_xlim(-0.9, 5.7)
    ax.set_ylim(-1.1, 4.0)
    ax.set_aspect("equal")
    ax.axis("off")
    if intervened:
        ax.set_title("do(class size): the arrows into the class size are cut,\n"
                     "so income, race and ability no longer reach the score through it", fontsize=9)
    else:
        ax.set_title("As the data arise: the REGULAR rule uses race, income and ability;\n"
                     "the EXPERIMENTAL cohort's coin uses none of them", fontsize=9)
    return ax


def teaching_figure(config: Config = Config(), figure=None):
    """The teaching graph as observed and under ``do(class size)``, side by side.

    Shaded boxes are observed, the white dashed box is not.  Returns the
    matplotlib figure (``figure``, when given, is drawn on)."""
    if figure is None:
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=(11.5, 5.2))
    left, right = figure.subplots(1, 2, gridspec_kw=dict(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.04))
    draw_teaching_graph(left, False, config)
    draw_teaching_graph(right, True, config)
    return figure
