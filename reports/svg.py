"""Small hand-written SVG charts: a timeline of lanes with shaded fault windows, line
charts on the same time axis, and a horizontal bar chart.

Written by hand rather than with a plotting library because the report must be one
offline file: inline SVG needs no script, no font download and no image encoding, it
stays small (a few kilobytes per chart) and it scales with the page. Every chart that
shows time uses one ``TimeAxis`` (same width, same left margin, same domain), so the
lanes, the curves and the fault shading line up vertically on the page.

All text passes through ``esc`` (html.escape, quotes included) where it enters markup.
"""
from __future__ import annotations

import html
import math
import re
from typing import Iterable, Sequence

from reports import fmt
from reports.series import FaultWindow, Interval, Marker, Point, downsample

WIDTH = 1080  # viewBox width of every chart; the page scales it to the column
LEFT = 128  # lane labels and y tick labels
RIGHT = 24
PLOT_W = WIDTH - LEFT - RIGHT
LABEL_CHAR_PX = 6.2  # average advance of an 11 px sans-serif character
MAX_POINTS = PLOT_W  # a line keeps ~4 points per pixel column at most (see downsample)

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9",
           "#6b6b6b", "#8c564b", "#332288", "#117733", "#aa4499", "#44aa99")
STATE_COLOURS = {
    "up": "#7cc192",
    "down": "#d6454a",
    "paused": "#f0a202",
    "partitioned": "#8b6fc6",
    "rejoining": "#3fa7d6",
    "throttled": "#c6b13a",
    "degraded": "#a9b9c9",
}
_PROCESS_FAULTS = {"kill", "stop", "pause", "throttle", "syncer_crash"}


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(text: object) -> str:
    """Text to markup: html.escape with quotes, and control characters (which HTML
    forbids and a terminal log may carry) shown as U+FFFD."""
    return html.escape(_CONTROL.sub("\ufffd", str(text)), quote=True)


def _f(v: float) -> str:
    """Coordinates with one decimal: enough for a screen, half the bytes of repr()."""
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def fault_colour(kind: str) -> str:
    if kind in _PROCESS_FAULTS:
        return "#d6454a"
    if kind == "corrupt":
        return "#e07b00"
    return "#8b6fc6"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round ticks (1, 2, 2.5, 5 × 10^k apart) that enclose [lo, hi]: the first at or
    below lo, the last at or above hi, so the chart's frame sits on labelled lines."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int(round((last - first) / step)) + 1)]


def byte_ticks(vmax: float, count: int = 5) -> list[float]:
    """Ticks at round numbers of the unit the axis is labelled in (KiB, MiB, GiB)."""
    unit = next((u for u in (1 << 30, 1 << 20, 1 << 10) if vmax >= u), 1)
    return [t * unit for t in nice_ticks(0, vmax / unit, count)]


def time_ticks(duration: float) -> list[float]:
    """Ticks at round seconds/minutes: 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10 min."""
    if duration <= 0:
        return [0.0]
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
                 if duration / s <= 10), 3600 * math.ceil(duration / 36000))
    return [i * step for i in range(int(duration // step) + 1)]


class TimeAxis:
    """Maps seconds from T0 to x; shared by every time chart of a page."""

    def __init__(self, duration: float) -> None:
        self.duration = duration if duration > 0 else 1.0

    def x(self, t: float) -> float:
        return LEFT + PLOT_W * min(max(t / self.duration, 0.0), 1.0)

    def grid(self, top: float, bottom: float, *, labels: bool = True) -> list[str]:
        out = []
        for t in time_ticks(self.duration):
            x = _f(self.x(t))
            out.append(f'<line class="grid" x1="{x}" y1="{_f(top)}" x2="{x}" y2="{_f(bottom)}"/>')
            if labels:
                out.append(f'<text class="tick" x="{x}" y="{_f(bottom + 14)}" text-anchor="middle">{esc(fmt.clock(t))}</text>')
        return out

    def shading(self, windows: Sequence[FaultWindow], top: float, bottom: float) -> list[str]:
        out = []
        for w in windows:
            x0, x1 = self.x(w.start), self.x(w.end)
            width = max(x1 - x0, 2.0)
            out.append(f'<rect class="fault-shade" data-fault="{esc(w.fault_id)}" x="{_f(x0)}" y="{_f(top)}" '
                       f'width="{_f(width)}" height="{_f(bottom - top)}"><title>{esc(_window_title(w))}</title></rect>')
        return out


    def edges(self, windows: Sequence[FaultWindow], top: float, bottom: float) -> list[str]:
        out = []
        for w in windows:
            for t in {w.start, w.end}:
                x = _f(self.x(t))
                out.append(f'<line class="fault-edge" x1="{x}" y1="{_f(top)}" x2="{x}" y2="{_f(bottom)}"/>')
        return out


def _window_title(w: FaultWindow) -> str:
    end = "the end (not healed)" if not w.healed and w.end > w.start else fmt.clock(w.end)
    if w.end == w.start:
        return f"{w.fault_id}: {w.fault} on {w.target} at {fmt.clock(w.start)}"
    return f"{w.fault_id}: {w.fault} on {w.target}, {fmt.clock(w.start)} to {end}"


def _svg(height: float, body: Iterable[str], *, label: str, cls: str) -> str:
    return (f'<svg class="chart {cls}" viewBox="0 0 {WIDTH} {_f(height)}" role="img" aria-label="{esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{esc(label)}</title>' + "".join(body) + "</svg>")


class _FaultBar:
    """Where a fault's bar and label go: the label sits on the bar when it fits, else
    after it, else (at the right edge) before it; ``left``/``right`` span both."""

    def __init__(self, w: FaultWindow, axis: TimeAxis) -> None:
        self.x0 = axis.x(w.start)
        self.width = max(axis.x(w.end) - self.x0, 3.0)
        self.text = fmt.truncate(f"{w.fault} {w.target}", 26)
        text_px = LABEL_CHAR_PX * len(self.text)
        if self.width >= text_px + 8:
            self.mode, self.left, self.right = "inside", self.x0, self.x0 + self.width
        elif self.x0 + self.width + 4 + text_px <= WIDTH:
            self.mode, self.left, self.right = "after", self.x0, self.x0 + self.width + 4 + text_px
        else:
            self.mode, self.left, self.right = "before", self.x0 - 4 - text_px, self.x0 + self.width

    def label_attrs(self) -> str:
        if self.mode == "inside":
            return f'class="fault-label inside" x="{_f(self.x0 + 4)}"'
        if self.mode == "after":
            return f'class="fault-label" x="{_f(self.x0 + self.width + 4)}"'
        return f'class="fault-label" x="{_f(self.x0 - 4)}" text-anchor="end"'


def _pack_rows(bars: Sequence[_FaultBar]) -> list[int]:
    """Greedy row assignment so fault bars and their labels never overlap."""
    taken: list[list[tuple[float, float]]] = []
    rows = []
    for bar in bars:
        for i, spans in enumerate(taken):
            if all(bar.right + 4 <= lo or bar.left >= hi + 4 for lo, hi in spans):
                spans.append((bar.left, bar.right))
                rows.append(i)
                break
        else:
            taken.append([(bar.left, bar.right)])
            rows.append(len(taken) - 1)
    return rows


def timeline(axis: TimeAxis, windows: Sequence[FaultWindow], lanes: dict[str, list[Interval]],
             markers: Sequence[Marker] = (), *, label: str = "Timeline") -> str:
    """Fault windows as labelled bars on top; under them one lane per node; the windows
    shaded through every lane; rejected pushes as ticks on their lane."""
    row_h, lane_h, lane_gap = 18, 20, 6
    bars = [_FaultBar(w, axis) for w in windows]
    rows = _pack_rows(bars)
    n_rows = max(rows, default=-1) + 1
    top = 8
    lanes_top = top + max(n_rows, 1) * row_h + 12
    body: list[str] = []
    bottom = lanes_top + len(lanes) * (lane_h + lane_gap)
    # shading behind (lane colours stay true), dashed edges on top (alignment stays visible)
    body += axis.shading(windows, top, bottom)
    body += axis.grid(top, bottom)
    body.append(f'<text class="lane-label" x="{LEFT - 8}" y="{top + 13}" text-anchor="end">faults</text>')
    if not windows:
        body.append(f'<text class="note" x="{LEFT + 6}" y="{top + 13}">no faults injected</text>')
    for w, bar, row in zip(windows, bars, rows):
        y = top + row * row_h
        body.append(f'<g class="fault-window" data-fault="{esc(w.fault_id)}"><title>{esc(_window_title(w))}</title>'
                    f'<rect x="{_f(bar.x0)}" y="{y + 2}" width="{_f(bar.width)}" height="{row_h - 5}" rx="2" '
                    f'fill="{fault_colour(w.fault)}"/><text {bar.label_attrs()} y="{y + 13}">{esc(bar.text)}</text></g>')
    for i, (node, intervals) in enumerate(lanes.items()):
        y = lanes_top + i * (lane_h + lane_gap)
        kind = "syncer" if node == "syncer" else "learner"
        body.append(f'<g class="lane lane-{kind}" data-lane="{esc(node)}">')
        body.append(f'<text class="lane-label" x="{LEFT - 8}" y="{y + 14}" text-anchor="end">{esc(fmt.truncate(node, 18))}</text>')
        body.append(f'<rect class="lane-bg" x="{LEFT}" y="{y}" width="{PLOT_W}" height="{lane_h}"/>')
        for iv in intervals:
            x0 = axis.x(iv.start)
            width = max(axis.x(iv.end) - x0, 1.0)
            body.append(f'<rect class="state state-{esc(iv.state)}" x="{_f(x0)}" y="{y}" width="{_f(width)}" '
                        f'height="{lane_h}" fill="{STATE_COLOURS.get(iv.state, "#ccc")}"><title>'
                        f'{esc(f"{node}: {iv.state} {fmt.clock(iv.start)}–{fmt.clock(iv.end)}")}</title></rect>')
        body.append("</g>")
    body += axis.edges(windows, top, bottom)
    lane_index = {node: i for i, node in enumerate(lanes)}
    for m in markers[:500]:  # a storm of rejects would only paint the lane solid
        if m.lane not in lane_index:
            continue
        y = lanes_top + lane_index[m.lane] * (lane_h + lane_gap)
        x = axis.x(m.t)
        body.append(f'<path class="marker" d="M{_f(x - 4)} {y - 1}h8l-4 7z"><title>{esc(f"{m.lane} {fmt.clock(m.t)}: {m.label}")}</title></path>')
    legend_y = bottom + 34
    body += _legend([(s, STATE_COLOURS[s]) for s in STATE_COLOURS], legend_y, box=True)
    body.append(f'<rect class="legend-shade" x="{_legend_end(len(STATE_COLOURS))}" y="{legend_y - 10}" width="12" height="12"/>'
                f'<text class="legend" x="{_legend_end(len(STATE_COLOURS)) + 16}" y="{legend_y}">fault window</text>')
    return _svg(legend_y + 10, body, label=label, cls="timeline")


def _legend_end(n: int) -> float:
    return LEFT + n * 104


def _legend(items: Sequence[tuple[str, str]], y: float, *, box: bool, x0: float = LEFT) -> list[str]:
    out, x = [], x0
    for label, colour in items:
        text = fmt.truncate(label, 40)
        if box:
            out.append(f'<rect x="{_f(x)}" y="{_f(y - 10)}" width="12" height="12" fill="{colour}"/>')
        else:
            out.append(f'<line x1="{_f(x)}" y1="{_f(y - 4)}" x2="{_f(x + 14)}" y2="{_f(y - 4)}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text class="legend" x="{_f(x + 18)}" y="{_f(y)}">{esc(text)}</text>')
        x += max(104, 26 + 6.5 * len(text))
    return out


class Line:
    """One series of a line chart."""

    def __init__(self, label: str, points: Sequence[Point], colour: str, *, step: bool = False,
                 dashed: bool = False) -> None:
        self.label, self.points, self.colour = label, points, colour
        self.step, self.dashed = step, dashed


def line_chart(axis: TimeAxis, lines: Sequence[Line], *, label: str, y_format=fmt.si,
               windows: Sequence[FaultWindow] = (), height: float = 220, y_floor: float | None = 0.0,
               y_ceiling: float | None = None) -> str:
    """Lines over the shared time axis, fault windows shaded behind them."""
    top, bottom = 30, height - 26
    drawn = [(ln, downsample(ln.points, MAX_POINTS)) for ln in lines if ln.points]
    ys = [y for _, pts in drawn for _, y in pts]
    body: list[str] = []
    body += axis.shading(windows, top, bottom)
    body += axis.grid(top, bottom)
    if not ys:
        body.append(f'<text class="note" x="{LEFT + 8}" y="{(top + bottom) / 2}">no data in this run</text>')
        return _svg(height, body, label=label, cls="line-chart empty")
    lo = min(ys) if y_floor is None else min(y_floor, min(ys))
    hi = max(ys) if y_ceiling is None else y_ceiling
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    ticks = nice_ticks(lo, hi, 4)
    lo, hi = ticks[0], ticks[-1]

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * (v - lo) / (hi - lo)

    for t in ticks:
        y = _f(y_of(t))
        body.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>'
                    f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end">{esc(y_format(t))}</text>')
    for ln, pts in drawn:
        d = _path(pts, axis.x, y_of, step=ln.step)
        dash = ' stroke-dasharray="6 4"' if ln.dashed else ""
        body.append(f'<path class="series" data-points="{len(pts)}" d="{d}" stroke="{ln.colour}"{dash}>'
                    f'<title>{esc(ln.label)}</title></path>')
        if len(pts) == 1:  # a single point would draw nothing: show it as a dot
            body.append(f'<circle cx="{_f(axis.x(pts[0][0]))}" cy="{_f(y_of(pts[0][1]))}" r="3" fill="{ln.colour}"/>')
    body += _legend([(ln.label, ln.colour) for ln, _ in drawn[:12]], 16, box=False)
    return _svg(height, body, label=label, cls="line-chart")


def _path(pts: Sequence[Point], x_of, y_of, *, step: bool) -> str:
    parts = [f"M{_f(x_of(pts[0][0]))} {_f(y_of(pts[0][1]))}"]
    for x, y in pts[1:]:
        if step:
            parts.append(f"H{_f(x_of(x))}V{_f(y_of(y))}")
        else:
            parts.append(f"L{_f(x_of(x))} {_f(y_of(y))}")
    return "".join(parts)


def bar_chart(rows: Sequence[tuple[str, Sequence[float]]], series: Sequence[tuple[str, str]], *,
              label: str, value_format=fmt.nbytes, ticks=byte_ticks) -> str:
    """Horizontal grouped bars: one group per row (a link), one bar per series (in, out)."""
    bar_h, gap = 12, 10
    group_h = bar_h * len(series) + gap
    top = 30
    height = top + max(len(rows), 1) * group_h + 26
    vmax = max((v for _, vals in rows for v in vals), default=0.0) or 1.0
    ticks = ticks(vmax)
    vmax = max(vmax, ticks[-1])
    scale = PLOT_W - 70  # room for the value printed after the longest bar
    body: list[str] = []
    bottom = height - 26
    for t in ticks:
        x = _f(LEFT + scale * t / vmax)
        body.append(f'<line class="grid" x1="{x}" y1="{top}" x2="{x}" y2="{_f(bottom)}"/>'
                    f'<text class="tick" x="{x}" y="{_f(bottom + 14)}" text-anchor="middle">{esc(value_format(t))}</text>')
    for i, (name, values) in enumerate(rows):
        y = top + i * group_h
        body.append(f'<g class="bar-group" data-row="{esc(name)}">'
                    f'<text class="lane-label" x="{LEFT - 8}" y="{_f(y + bar_h * len(series) / 2 + 4)}" text-anchor="end">'
                    f'{esc(fmt.truncate(name, 18))}</text>')
        for j, ((s_label, colour), v) in enumerate(zip(series, values)):
            w = max(scale * v / vmax, 1.0 if v > 0 else 0.0)
            yy = y + j * bar_h
            body.append(f'<rect class="bar" x="{LEFT}" y="{yy}" width="{_f(w)}" height="{bar_h - 2}" fill="{colour}">'
                        f'<title>{esc(f"{name} {s_label}: {value_format(v)}")}</title></rect>'
                        f'<text class="bar-value" x="{_f(LEFT + w + 4)}" y="{yy + 9}">{esc(value_format(v))}</text>')
        body.append("</g>")
    if not rows:
        body.append(f'<text class="note" x="{LEFT + 8}" y="{top + 14}">no link traffic recorded</text>')
    body += _legend(list(series), 16, box=True)
    return _svg(height, body, label=label, cls="bar-chart")
