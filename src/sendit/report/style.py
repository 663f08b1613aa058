"""The look shared by every report figure: Okabe–Ito colours plus a distinct marker and line style
per method, so a plot reads in grayscale print and for colour-blind readers.

Figures are built on `matplotlib.figure.Figure` (no pyplot), so no global backend or state is touched.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from sendit.report.files import atomic_write_bytes

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 3))]
RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.5,
    "pdf.fonttype": 42,  # TrueType in PDFs so journals' checks accept the fonts
}
WIDTH = 7.0  # inches: a two-column paper's full text width


class Styles:
    """One fixed colour/marker/line style per method name, in report order."""

    def __init__(self, names: list[str]):
        self.index = {n: i for i, n in enumerate(names)}

    def __call__(self, name: str) -> dict:
        i = self.index.get(name, len(self.index))
        return {
            "color": OKABE_ITO[i % len(OKABE_ITO)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)],
        }


def legend(fig: Figure, axes: list, ncol: int | None = None) -> None:
    """One legend for the whole figure, below the panels (constrained layout makes room for it)."""
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                handles.setdefault(lab, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=ncol or min(len(handles), 5),
            frameon=False,
        )


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, folder: Path, key: str, dpi: int) -> tuple[Path, Path]:
    paths = folder / f"{key}.png", folder / f"{key}.pdf"
    for path, fmt in zip(paths, ("png", "pdf")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        atomic_write_bytes(path, buf.getvalue())
    return paths
