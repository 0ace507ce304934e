"""The study figures read cleanly: the figure's title does not cover a panel's title,
and every band has a legend entry."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd

from classsize.inference.plotting import lay_out
from classsize.inference.studies.figures import PARTS, plot_coverage, plot_rank_histograms


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _title_clear_of_panels(fig) -> None:
    lay_out(fig)  # as the figure is saved
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_visible() and ax.title.get_text():
            assert not _overlaps(top, ax.title.get_window_extent(renderer)), ax.title.get_text()


def test_rank_histograms_title_and_band_legend():
    matplotlib.use("Agg", force=False)
    rng = np.random.default_rng(0)
    # the 34 quantities of a structural SBC on 12 schools (a tall figure: 9 rows)
    names = (["small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect", "ability_income_weight",
              "score_ability_weight", "school_effect_range", "score_intercept", "experimental_p_small", "p_ma_small",
              "p_ma_large", "ability_uniform_width", "regular_small_intercept", "regular_small_income",
              "regular_small_ability"] + [f"race_probs[{i}]" for i in range(4)]
             + [f"regular_small_race_shift[{i}]" for i in range(4)] + [f"school_effect[{k}]" for k in range(12)])
    estimands = ("small_class_direct_effect", "small_class_total_effect", "teacher_ma_effect")
    result = SimpleNamespace(ranks={q: rng.integers(0, 100, 100) for q in names}, band=None,
                             settings={"rank_draws": 99},
                             analysis=SimpleNamespace(name="structural", estimand_names=estimands))
    fig = plot_rank_histograms(result)
    _title_clear_of_panels(fig)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"99% range per bin", "expected count", "ranks"} <= set(labels)
    # the estimands first, on a figure of their own; the other 31 quantities on a second one
    assert [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.axison] == list(estimands)
    other = plot_rank_histograms(result, part=PARTS[1])
    _title_clear_of_panels(other)
    shown = [ax.get_title() for ax in other.axes if ax.axison]
    assert shown == [q for q in names if q not in estimands]
    assert "other quantities" in other._suptitle.get_text()


def test_sbc_figures_are_split_estimands_first():
    from classsize.inference.studies.result import SBCStudy

    assert list(SBCStudy.PLOTS) == ["sbc_ecdf_diff.png", "sbc_ranks.png", "sbc_ecdf_diff_other.png",
                                    "sbc_ranks_other.png"]


def test_coverage_title_clear_of_panels():
    rows = [dict(quantity=q, level=lv, band_lower=lv - 0.2, band_upper=min(1, lv + 0.1), cp95_lower=lv - 0.1,
                 cp95_upper=min(1, lv + 0.05), coverage=lv, n=20, **{"pass": True})
            for q in ("small_class_direct_effect", "teacher_ma_effect", "small_class_total_effect")
            for lv in (0.5, 0.8, 0.9)]
    result = SimpleNamespace(summary=pd.DataFrame(rows), analysis=SimpleNamespace(name="randomized"))
    _title_clear_of_panels(plot_coverage(result))
