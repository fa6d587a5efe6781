"""``chaosloco compare DIR...``: several runs side by side in one self-contained page.

The typical use is one seeded schedule run against ``decoupled``, ``diloco`` and ``ddp``:
the page opens with the goodput table (best value per column in bold), then goodput
against availability bound as bars, then the runs' curves overlaid on one time axis
(useful tokens, rolling goodput, eval loss), then each run's timeline on that same axis
so the reader can see which faults each trainer absorbed. Each run's figures come from
its result.json, its curves from its own journal and event log (``series``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.errors import ConfigError
from reports import fmt, series, svg
from reports.page import chart_title, document, pill, section, table, write_atomically
from reports.rundir import RunFolder, check_verdict, load_run, run_verdict, trainer_name
from reports.svg import esc


def write_comparison(run_dirs: list[Path], out: Path) -> Path:
    """Writes the comparison page to ``out``; ConfigError for no folder or a bad one."""
    if not run_dirs:
        raise ConfigError("name at least one run folder to compare", key="DIR")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    if out.is_dir():  # a folder: the page goes inside it
        out = out / "comparison.html"
    if not out.parent.is_dir():
        raise ConfigError("folder does not exist", file=str(out.parent), key="--out")
    return write_atomically(out, render(runs))


def labels(runs: Sequence[RunFolder]) -> list[str]:
    """Trainer names when they tell the runs apart, else trainer · folder (made unique)."""
    names = [trainer_name(r.result.get("trainer", r.run.get("trainer"))) for r in runs]
    if len(set(names)) == len(names):
        return names
    out, seen = [], set()
    for r in runs:
        label = r.label
        while label in seen:
            label += "′"
        seen.add(label)
        out.append(label)
    return out


def _schedule(run: RunFolder) -> list[tuple[Any, ...]]:
    return [(f.get("fault"), f.get("target"), f.get("planned_s")) for f in run.result.get("faults") or []]


def render(runs: Sequence[RunFolder]) -> str:
    names = labels(runs)
    colours = [svg.PALETTE[i % len(svg.PALETTE)] for i in range(len(runs))]
    spans = [series.run_span(r.journal, r.events) for r in runs]
    axis = svg.TimeAxis(max((s.duration for s in spans), default=0.0))
    scenarios = sorted({str(r.result.get("scenario", "?")) for r in runs})
    seeds = sorted({str(r.result.get("seed", r.run.get("seed", "?"))) for r in runs})
    same_schedule = len({repr(_schedule(r)) for r in runs}) == 1
    first_windows = series.fault_windows(runs[0].journal, spans[0]) if same_schedule else []
    body = [_banner(runs, names, scenarios, seeds, same_schedule),
            section("goodput-table", "Goodput table",
                    "Figures from each run's result.json; the best value of each column is in bold.",
                    _table(runs, names)),
            section("goodput-bars", "Goodput against the availability bound",
                    "The gap between a run's two bars is goodput its trainer lost beyond what the faults forced.",
                    _bars(runs, names)),
            _curves(runs, names, colours, spans, axis, first_windows, same_schedule),
            section("timelines", "Timelines", "Each run on the same time axis as the curves above.",
                    *[f'<h3 class="run-title">{esc(n)}</h3>' + svg.timeline(
                        axis, series.fault_windows(r.journal, s),
                        series.lanes(r.journal, r.events, s, series.learner_names(r.journal, r.events, r.result)),
                        series.reject_markers(r.events, s), label=f"Timeline of {n}")
                      for r, n, s in zip(runs, names, spans)]),
            section("runs", "Run folders", None,
                    table([("run", ""), ("folder", ""), ("run id", ""), ("scenario", ""), ("seed", "")],
                          [f"<tr><td>{esc(n)}</td><td class=\"mono\">{esc(r.path)}</td><td>{esc(fmt.plain(r.run.get('run_id')))}</td>"
                           f"<td>{esc(fmt.plain(r.result.get('scenario')))}</td><td>{esc(fmt.plain(r.run.get('seed')))}</td></tr>"
                           for r, n in zip(runs, names)], cls="runs"))]
    return document(f"Comparison · {', '.join(names)} · chaosloco", body)


def _banner(runs, names, scenarios, seeds, same_schedule: bool) -> str:
    verdicts = [run_verdict(r.result) for r in runs]
    overall = "fail" if "fail" in verdicts else "unknown" if "unknown" in verdicts else "pass"
    goodputs = [fmt.number(r.result.get("goodput")) for r in runs]
    best = max(((g, n) for g, n in zip(goodputs, names) if g is not None), default=None)
    context = (f"{len(runs)} runs · scenario {', '.join(scenarios)} · seed {', '.join(seeds)} · "
               + ("the same fault schedule" if same_schedule else "different fault schedules: compare with care"))
    lead = f"Highest goodput: {best[1]} ({fmt.pct(best[0])})." if best else "No run recorded a goodput."
    items = "".join(f"<li>{pill(v)} {esc(n)}</li>" for v, n in zip(verdicts, names))
    return (f'<header class="banner verdict-{overall}" id="verdict" data-verdict="{overall}">'
            f'<div class="verdict">{len(runs)} RUNS</div><div><h1>{esc(fmt.truncate(lead, 200))}</h1>'
            f'<p class="context">{esc(context)}</p><ul class="run-verdicts">{items}</ul></div></header>')


_COLUMNS: list[tuple[str, str, Callable[[dict], float | None], Callable[[Any], str], int]] = [
    # key, header, value, format, +1 = higher is better / -1 lower is better / 0 no ranking
    ("goodput", "goodput", lambda r: fmt.number(r.get("goodput")), fmt.pct, 1),
    ("availability_bound", "availability bound", lambda r: fmt.number(r.get("availability_bound")), fmt.pct, 0),
    ("goodput_efficiency", "efficiency", lambda r: fmt.number(r.get("goodput_efficiency")), fmt.pct, 1),
    ("rejoin", "worst rejoin", lambda r: _worst_rejoin(r), lambda v: "never" if v == math.inf else fmt.seconds(v), -1),
    ("max_global_stall_seconds", "longest stall", lambda r: fmt.number(r.get("max_global_stall_seconds")), fmt.seconds, -1),
    ("wire_bytes_per_useful_token", "wire B / useful token",
     lambda r: fmt.number(r.get("wire_bytes_per_useful_token")), lambda v: fmt.plain(fmt.number(v)), -1),
    ("quality_gap", "quality gap", lambda r: fmt.number(r.get("quality_gap")), fmt.pct, -1),
    ("eval_loss_final", "final eval loss", lambda r: fmt.number(r.get("eval_loss_final")),
     lambda v: fmt.plain(fmt.number(v)), -1),
    ("useful_tokens", "useful tokens", lambda r: fmt.number(r.get("useful_tokens")), fmt.si, 1),
]


def _worst_rejoin(result: dict) -> float | None:
    """Seconds to the slowest first merge after a restart; inf when one never merged."""
    rejoins = [x for x in result.get("rejoin_seconds") or [] if isinstance(x, dict)]
    if not rejoins:
        return None
    times = [fmt.number(x.get("to_first_merge_s")) for x in rejoins]
    return math.inf if None in times else max(times)


def _table(runs: Sequence[RunFolder], names: list[str]) -> str:
    values = [[col[2](r.result) for col in _COLUMNS] for r in runs]
    best: list[float | None] = []
    for j, (_, _, _, _, sense) in enumerate(_COLUMNS):
        present = [row[j] for row in values if row[j] is not None]
        distinct = len(set(present)) > 1  # a tie across every run has no best
        best.append((max(present) if sense > 0 else min(present)) if sense and distinct else None)
    rows = []
    for r, n, row in zip(runs, names, values):
        checks = r.checks
        failed = sum(1 for c in checks if check_verdict(c) == "fail")
        cells = "".join(
            f'<td class="num" data-col="{key}">' + (f"<b>{esc(f(v))}</b>" if v is not None and v == best[j] else esc(f(v)))
            + "</td>" for j, ((key, _, _, f, _), v) in enumerate(zip(_COLUMNS, row)))
        rows.append(f'<tr class="run" data-run="{esc(n)}"><td>{esc(n)}</td><td>{pill(run_verdict(r.result))}</td>'
                    f'{cells}<td class="num">{len(checks) - failed}/{len(checks)}</td></tr>')
    headers = [("run", ""), ("verdict", "")] + [(c[1], "num") for c in _COLUMNS] + [("checks passed", "num")]
    return table(headers, rows, cls="goodput")


def _bars(runs: Sequence[RunFolder], names: list[str]) -> str:
    rows = [(n, (fmt.number(r.result.get("goodput")) or 0.0, fmt.number(r.result.get("availability_bound")) or 0.0))
            for r, n in zip(runs, names)]
    return svg.bar_chart(rows, [("goodput", svg.PALETTE[2]), ("availability bound", "#9aa1ab")],
                         label="Goodput and availability bound per run", value_format=fmt.pct,
                         ticks=lambda vmax: svg.nice_ticks(0, max(vmax, 1.0), 4))


def _curves(runs, names, colours, spans, axis, windows, same_schedule: bool) -> str:
    useful, rolling, loss = [], [], []
    for r, n, c, s in zip(runs, names, colours, spans):
        u = series.useful_tokens(r.events, s)
        useful.append(svg.Line(n, u, c, step=True))
        rolling.append(svg.Line(n, series.rolling_goodput(u, series.capacity_rate(r.result, r.events), s.duration), c))
        loss.append(svg.Line(n, series.eval_loss(r.events, s), c))
    shade = ("Shaded: the shared schedule's fault windows." if same_schedule
             else "The runs' schedules differ, so no fault windows are shaded; see each timeline.")
    return section("curves", "Curves over time",
                   f"Every run on its own clock from its ready (0). {shade}",
                   chart_title("Useful tokens"),
                   svg.line_chart(axis, useful, label="Useful tokens over time", windows=windows),
                   chart_title(f"Rolling goodput ({series.rolling_window_s(axis.duration):.0f} s window)"),
                   svg.line_chart(axis, rolling, label="Rolling goodput", windows=windows,
                                  y_format=lambda v: f"{v * 100:.0f}%",
                                  y_ceiling=max([1.0] + [y for ln in rolling for _, y in ln.points])),
                   chart_title("Eval loss"),
                   svg.line_chart(axis, loss, label="Eval loss over time", windows=windows,
                                  y_format=lambda v: f"{v:.2f}", y_floor=None))
