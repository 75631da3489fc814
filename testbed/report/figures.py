"""The report's figures: one registry, for the built-in figures and any scenario's own.

A figure is one function registered with :func:`figure`::

    from testbed.report.figures import figure

    @figure("train-loss", "Local training loss", "Mean training loss per round.", needs=("train_loss",))
    def train_loss(view, fig):
        ax = fig.subplots()
        for s in view.series:
            per_round = s.measurements.groupby("round")["train_loss"].mean()
            ax.plot(per_round.index, per_round.to_numpy(), color=s.color, marker=s.marker, label=s.label)

``view`` holds the runs the figure applies to (those with a value in every column
``needs`` names, in their measurements.csv or transfers.csv, and for which
``applies(run)`` is true), one :class:`Series` per (run, strategy) drawn in the
colour and marker it has everywhere on the page, and the report's tables of
those runs; ``fig`` is an empty matplotlib Figure of the registered ``size``. A
figure that applies to no run is left out of the page. The page shows the
built-in figures (:mod:`testbed.report.plots`) first, then the others in the
order they were registered. A scenario module registers its figures when it is
imported, which the report does for the scenario of every run it reads.

This module imports neither matplotlib nor pandas, so that a scenario module
can register figures without slowing down the devices that import it.
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINESTYLES = ["-", "--", "-.", ":"]

STYLE = {
    "svg.fonttype": "none",  # text stays text: smaller, selectable, searchable
    "svg.hashsalt": "testbed-report",  # deterministic ids
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
}

BUILTIN_MODULE = "testbed.report.plots"


@dataclass(frozen=True)
class Figure:
    key: str  # unique; the page's anchor is fig-KEY
    heading: str
    caption: str  # what is drawn and how to read it
    draw: Callable  # draw(view: View, fig: matplotlib.figure.Figure) -> None
    needs: tuple[str, ...] = ()  # columns a run must have a value in for the figure to show it
    applies: Callable | None = None  # applies(run: RunData) -> bool, beyond ``needs``
    size: tuple[float, float] = (7.5, 4.2)  # inches; ``draw`` may change it
    order: int = 0  # registration order

    @property
    def builtin(self) -> bool:
        return self.draw.__module__ == BUILTIN_MODULE

    def runs_for(self, runs: list) -> list:
        """The runs this figure shows: with a value in every needed column, and ``applies``."""
        return [run for run in runs if all(_has_values(run, c) for c in self.needs)
                and (self.applies is None or self.applies(run))]


FIGURES: dict[str, Figure] = {}


def figure(key: str, heading: str, caption: str, *, needs=(), applies: Callable | None = None,
           size: tuple[float, float] = (7.5, 4.2)) -> Callable:
    """Register the decorated ``draw(view, fig)`` as the figure ``key`` (see the module's docstring)."""

    def register(draw: Callable) -> Callable:
        held = FIGURES.get(key)
        if held is not None and (held.draw.__module__, held.draw.__qualname__) != (draw.__module__, draw.__qualname__):
            raise ValueError(f"figure {key!r} is registered twice ({held.draw.__module__} and {draw.__module__})")
        order = held.order if held is not None else len(FIGURES)
        FIGURES[key] = Figure(key, heading, caption, draw, tuple(needs), applies, tuple(size), order)
        return draw

    return register


def registered() -> list[Figure]:
    """Every figure, in page order: the built-in ones first, then the others as registered."""
    importlib.import_module(BUILTIN_MODULE)  # registers the built-in figures

    return sorted(FIGURES.values(), key=lambda f: (not f.builtin, f.order))


def _has_values(run, column: str) -> bool:
    return any(column in frame and bool(frame[column].notna().any())
               for frame in (run.measurements, run.transfers))


# ---- what a figure function gets -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Series:
    """One strategy of one run, and how it is drawn."""

    run: object  # RunData
    strategy: str  # the strategy's label in the run
    label: str  # in legends: the label, or "run / label" in a report of several runs
    color: str
    marker: str
    linestyle: str

    @property
    def measurements(self):
        frame = self.run.measurements
        return frame[frame["label"] == self.strategy]

    @property
    def transfers(self):
        frame = self.run.transfers
        return frame[frame["label"] == self.strategy]


def series_of(runs: list) -> list[Series]:
    """One series per (run, strategy): the colour keyed by the strategy, the run told apart by
    marker and line style (one run: markers vary with the strategy too, for readers without colour)."""
    strategies = list(dict.fromkeys(s for run in runs for s in run.strategies))
    several = len(runs) > 1
    out = []
    for index, run in enumerate(runs):
        for strategy in run.strategies:
            k = strategies.index(strategy)
            out.append(Series(
                run=run, strategy=strategy, label=f"{run.label} / {strategy}" if several else strategy,
                color=OKABE_ITO[k % len(OKABE_ITO)], marker=MARKERS[(index if several else k) % len(MARKERS)],
                linestyle=LINESTYLES[(index if several else 0) % len(LINESTYLES)],
            ))
    return out


@dataclass(frozen=True)
class View:
    """What a figure function draws from: its runs, their series and the report's tables of those runs."""

    report: object  # testbed.report.tables.Report, restricted to the runs
    series: list[Series] = field(default_factory=list)

    @property
    def runs(self) -> list:
        return self.report.runs

    @property
    def strategies(self):
        return self.report.strategies

    @property
    def rounds(self):
        return self.report.rounds

    @property
    def transfers(self):
        return self.report.transfers

    @property
    def measurements(self):
        return self.report.measurements


# ---- drawing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawn:
    figure: Figure
    svg: str  # inline SVG text


def render_figures(report) -> list[Drawn]:
    """Every registered figure that applies to some run of ``report``, drawn, in page order."""
    import matplotlib
    from matplotlib.figure import Figure as Canvas

    series = series_of(report.runs)
    out = []
    with matplotlib.rc_context(STYLE):
        for spec in registered():
            runs = spec.runs_for(report.runs)
            if not runs:
                continue
            mine = [s for s in series if any(s.run is run for run in runs)]
            canvas = Canvas(figsize=spec.size)
            spec.draw(View(report.only(runs), mine), canvas)
            out.append(Drawn(spec, to_svg(canvas, spec.key)))
    return out


_ID = re.compile(r'id="([^"]+)"')


def to_svg(fig, prefix: str) -> str:
    """The figure as SVG text to inline in HTML, its ids prefixed (several SVGs share one document)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE
    for old in set(_ID.findall(svg)):
        new = f"{prefix}-{old}"
        svg = svg.replace(f'id="{old}"', f'id="{new}"').replace(f"#{old})", f"#{new})").replace(f'"#{old}"', f'"#{new}"')
    return svg
