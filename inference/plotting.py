"""What every figure of the package shares: ``matplotlib.pyplot`` under the user's
backend, the axes' labels at one size, and writing a figure to a PNG file.

Nothing here switches matplotlib's backend: figures are made under whatever backend
the user has chosen (or matplotlib's own default, Agg where there is no display), so
a figure returned by ``plot()`` is shown by ``plt.show()``.
"""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot``, its backend left as it is."""
    import matplotlib.pyplot as plt

    return plt


def label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title and axis labels of one panel, in the small type of the package's figures."""
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=7)


def lay_out(fig) -> None:
    """Lay the figure out as it is saved: matplotlib's tight layout, unless the figure
    has a layout engine of its own (the study figures' constrained layout)."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()


def save_figure(fig, path, dpi: int = 120) -> None:
    """Lay the figure out (:func:`lay_out`), write it to ``path`` as PNG and close it."""
    lay_out(fig)
    fig.savefig(path, dpi=dpi, format="png")
    pyplot().close(fig)
