"""The run report: ``DIR/report.html``, one self-contained page per chaos run.

Reading order (what the page is for): the verdict banner says pass / fail / unknown and
names the checks that decided it; five headline figures follow (goodput, availability
bound, efficiency, worst rejoin, longest stall), then the timeline that explains them —
fault windows on top, one lane per node under them, all on one time axis with every
later chart. Then the checks table, the curves (useful tokens, rolling goodput, eval
loss, fragment versions), bytes per link, the fault list and the metadata to replay the
run. Headline figures and checks come from result.json as the harness judged them; the
curves and lanes are recomputed from the journal and the event log (``series``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reports import fmt, series, svg
from reports.page import cell, chart_title, document, pill, section, table, write_atomically
from reports.rundir import RunFolder, check_verdict, load_run, run_verdict, trainer_name
from reports.svg import esc

REPORT_FILE = "report.html"
_ORDER = {"fail": 0, "unknown": 1, "pass": 2}


def write_report(run_dir: Path, *, baseline_dir: Path | None = None) -> Path:
    """Renders ``run_dir/report.html`` from the run folder (and a fault-free baseline run
    for the eval-loss comparison); returns its path. ConfigError for a bad folder."""
    run = load_run(run_dir)
    baseline = load_run(baseline_dir) if baseline_dir is not None else None
    return write_atomically(Path(run_dir) / REPORT_FILE, render(run, baseline=baseline))


def render(run: RunFolder, *, baseline: RunFolder | None = None) -> str:
    result = run.result
    span = series.run_span(run.journal, run.events)
    learners = series.learner_names(run.journal, run.events, result)
    windows = series.fault_windows(run.journal, span)
    axis = svg.TimeAxis(span.duration)
    verdict = run_verdict(result)
    scenario = str(result.get("scenario") or run.run.get("scenario_path") or run.path.name)
    body = [
        banner(run, verdict, scenario, span, learners, windows),
        _toc(),
        headline(result),
        section("timeline", "Timeline",
                "One row per node, from the moment every learner was ready (0) to the end of the run. "
                "Bars on top are the injected faults; dashed lines carry their windows down through every lane. "
                "Red ticks mark rejected updates. Hover over any bar for exact times.",
                svg.timeline(axis, windows, series.lanes(run.journal, run.events, span, learners),
                             series.reject_markers(run.events, span), label="Fault windows and node states"),
                rejoin_table(run, span), reconnect_table(run, span)),
        checks_section(run.checks),
        throughput_section(run, span, axis, windows),
        quality_section(run, span, axis, windows, baseline),
        fragments_section(run, span, axis, windows),
        links_section(run),
        faults_section(result, windows),
        metadata_section(run),
    ]
    return document(f"{verdict.upper()} · {scenario} · chaosloco report", body)


def _toc() -> str:
    links = [("timeline", "Timeline"), ("checks", "Checks"), ("throughput", "Goodput over time"),
             ("quality", "Eval loss"), ("fragments", "Fragments"), ("links", "Links"), ("faults", "Faults"),
             ("replay", "Replay")]
    return '<nav class="toc">' + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in links) + "</nav>"


def _run_end(run: RunFolder) -> dict[str, Any]:
    return next((r for r in run.journal if r.get("kind") == "run_end"), {})


def banner(run: RunFolder, verdict: str, scenario: str, span: series.Span, learners: list[str],
           windows: list[series.FaultWindow]) -> str:
    result = run.result
    checks = run.checks
    by_verdict: dict[str, list[dict]] = {"pass": [], "fail": [], "unknown": []}
    for c in checks:
        by_verdict[check_verdict(c)].append(c)
    context = " · ".join([
        f"{trainer_name(result.get('trainer', run.run.get('trainer')))} trainer",
        f"{result.get('backend', run.run.get('backend', '?'))} backend",
        f"seed {result.get('seed', run.run.get('seed', '?'))}",
        fmt.seconds(result.get("duration_s") if fmt.number(result.get("duration_s")) is not None else span.duration),
        f"{len(learners)} learners",
        f"{len(windows)} faults injected",
    ])
    if not checks:
        why = "<p class=\"why\">No checks were recorded for this run.</p>"
    elif by_verdict["fail"]:
        why = _why(f"{len(by_verdict['fail'])} of {len(checks)} checks failed", by_verdict["fail"])
    elif by_verdict["unknown"]:
        why = _why(f"No check failed; {len(by_verdict['unknown'])} of {len(checks)} could not be decided",
                   by_verdict["unknown"])
    else:
        why = f'<p class="why">All {len(checks)} checks passed.</p>'
    status = str(result.get("status", "completed"))
    if status != "completed":
        reason = _run_end(run).get("reason")
        why += f'<p class="why">Run {esc(status)}{": " + esc(fmt.truncate(str(reason), 300)) if reason else ""}</p>'
    lead = _lead(result)
    lead_html = f'<p class="lead">{esc(lead)}</p>' if lead else ""
    return (f'<header class="banner verdict-{verdict}" id="verdict" data-verdict="{verdict}">'
            f'<div class="verdict">{esc(verdict.upper())}</div>'
            f'<div><h1>{esc(fmt.truncate(scenario, 160))}</h1><p class="context">{esc(context)}</p>'
            f'{lead_html}{why}</div></header>')


def _lead(result: dict[str, Any]) -> str:
    """One sentence with the figures that matter, in words."""
    g, a, e = (fmt.number(result.get(k)) for k in ("goodput", "availability_bound", "goodput_efficiency"))
    if g is None:
        return ""
    text = f"Goodput {fmt.pct(g)} of capacity"
    if a is not None and e is not None:
        text += f"; the faults allowed {fmt.pct(a)}, so the trainer reached {fmt.pct(e)} of what was possible"
    stall = fmt.number(result.get("max_global_stall_seconds"))
    if stall is not None:
        text += f"; longest stall {fmt.seconds(stall)}"
    return text + "."


def _why(title: str, checks: list[dict]) -> str:
    def item(c: dict) -> str:
        detail = f' <span class="detail">— {esc(fmt.plain(c.get("detail"), 160))}</span>' if c.get("detail") else ""
        return (f'<li><b>{esc(fmt.truncate(str(c.get("name")), 80))}</b>: expected '
                f'{esc(fmt.plain(c.get("expected"), 80))}, got {esc(fmt.plain(c.get("actual"), 80))}{detail}</li>')
    items = "".join(item(c) for c in checks[:5])
    more = f"<li>and {len(checks) - 5} more (see Checks)</li>" if len(checks) > 5 else ""
    return f'<p class="why">{esc(title)}:</p><ul>{items}{more}</ul>'


def _failed_figures(checks: list[dict]) -> set[str]:
    """Which headline figure a failed check is about, from its name (goodput_min, ...)."""
    out = set()
    for c in checks:
        if check_verdict(c) != "fail":
            continue
        name = str(c.get("name", "")).lower()
        for key in ("efficiency", "availability", "rejoin", "stall", "quality", "wire", "eval"):
            if key in name:
                out.add(key)
                break
        else:
            if "goodput" in name:
                out.add("goodput")
    return out


def _figure(key: str, value: str, label: str, note: str, *, bad: bool) -> str:
    return (f'<div class="figure{" bad" if bad else ""}" data-figure="{key}"><div class="value">{esc(value)}</div>'
            f'<div class="label">{esc(label)}</div><div class="note">{esc(note)}</div></div>')


def rejoin_table(run: RunFolder, span: series.Span) -> str:
    """Every rejoin of result.json, with its restart time from the journal (the n-th
    restart of a learner is its n-th rejoin)."""
    rejoins = [r for r in run.result.get("rejoin_seconds") or [] if isinstance(r, dict)]
    if not rejoins:
        return ""
    restarts: dict[str, list[float]] = {}
    for r in run.journal:
        if r.get("kind") == "node_start" and r.get("reason") == "restart":
            restarts.setdefault(str(r.get("node")), []).append(span.rel(r["t"]))
    seen: dict[str, int] = {}
    rows = []
    for r in rejoins:
        node = f"learner-{r.get('learner')}"
        n = seen[node] = seen.get(node, -1) + 1
        at = restarts.get(node, [])
        rows.append("<tr class=\"rejoin\">" + cell(node) + cell(fmt.clock(at[n]) if n < len(at) else fmt.DASH, "num")
                    + cell(fmt.seconds(r.get("to_first_step_s")) if r.get("to_first_step_s") is not None else "never", "num")
                    + cell(fmt.seconds(r.get("to_first_merge_s")) if r.get("to_first_merge_s") is not None else "never", "num")
                    + "</tr>")
    return (chart_title("Rejoins: from the restart to the first inner step and to the first merged contribution")
            + table([("learner", ""), ("restarted at", "num"), ("to first step", "num"), ("to first merge", "num")],
                    rows, cls="rejoins"))


def reconnect_table(run: RunFolder, span: series.Span) -> str:
    """Every cut link of result.json: from its heal to the learner's next merge."""
    reconnects = [r for r in run.result.get("reconnect_seconds") or [] if isinstance(r, dict)]
    if not reconnects:
        return ""
    healed = {r.get("fault_id"): span.rel(r["t"]) for r in run.journal if r.get("kind") == "fault_heal"}
    rows = []
    for r in reconnects:
        merge = r.get("to_first_merge_s")
        at = healed.get(r.get("fault_id"))
        rows.append("<tr class=\"reconnect\">" + cell(f"learner-{r.get('learner')}") + cell(str(r.get("fault_id")))
                    + cell(fmt.clock(at) if at is not None else fmt.DASH, "num")
                    + cell(fmt.seconds(merge) if merge is not None else "never", "num") + "</tr>")
    return (chart_title("Reconnects: from a cut link's heal to the learner's next merged contribution")
            + table([("learner", ""), ("fault", ""), ("healed at", "num"), ("to first merge", "num")],
                    rows, cls="reconnects"))


def _rejoin_figure(rejoins: list[dict]) -> tuple[str, str]:
    """The slowest rejoin to a first merge; one that never merged again is the worst."""
    if not rejoins:
        return fmt.DASH, "no learner restarted"

    def slowness(r: dict) -> float:
        merge = fmt.number(r.get("to_first_merge_s"))
        return float("inf") if merge is None else merge

    worst = max(rejoins, key=slowness)
    who = f"learner-{worst.get('learner')}"
    more = f" · {len(rejoins)} rejoins" if len(rejoins) > 1 else ""
    step = fmt.seconds(worst.get("to_first_step_s")) if worst.get("to_first_step_s") is not None else "never"
    if fmt.number(worst.get("to_first_merge_s")) is None:
        return "never", f"{who} restarted and made no merge before the end (first step: {step}){more}"
    merge = fmt.seconds(worst.get("to_first_merge_s"))
    return merge, f"{who}: first step {step}, first merge {merge}{more}"


def headline(result: dict[str, Any]) -> str:
    failed = _failed_figures(result.get("checks") or [])
    rejoin_value, rejoin_note = _rejoin_figure([r for r in result.get("rejoin_seconds") or [] if isinstance(r, dict)])
    primary = [
        _figure("goodput", fmt.pct(result.get("goodput")), "Goodput",
                f"{fmt.si(result.get('useful_tokens'))} useful of {fmt.si(result.get('capacity_tokens'))} capacity tokens",
                bad="goodput" in failed),
        _figure("availability_bound", fmt.pct(result.get("availability_bound")), "Availability bound",
                "the most any trainer could reach under these faults", bad="availability" in failed),
        _figure("goodput_efficiency", fmt.pct(result.get("goodput_efficiency")), "Efficiency",
                "goodput ÷ availability bound (100% is the limit)", bad="efficiency" in failed),
        _figure("rejoin", rejoin_value, "Worst rejoin", rejoin_note, bad="rejoin" in failed),
        _figure("max_global_stall_seconds", fmt.seconds(result.get("max_global_stall_seconds")), "Longest stall",
                "no outer update while a quorum was up", bad="stall" in failed),
    ]
    gap = fmt.number(result.get("quality_gap"))
    secondary = [
        _figure("wire_bytes_per_useful_token",
                fmt.DASH if fmt.number(result.get("wire_bytes_per_useful_token")) is None
                else f"{fmt.plain(fmt.number(result.get('wire_bytes_per_useful_token')))} B",
                "Wire bytes / useful token", f"{fmt.nbytes(result.get('wire_bytes'))} in total", bad="wire" in failed),
        _figure("quality_gap", fmt.DASH if gap is None else f"{gap * 100:+.2f}%", "Quality gap",
                "final eval loss vs the fault-free run" if gap is not None else "no fault-free baseline given",
                bad="quality" in failed),
        _figure("eval_loss_final", fmt.plain(fmt.number(result.get("eval_loss_final"))), "Final eval loss",
                (f"from {fmt.plain(fmt.number(result.get('eval_loss_start')))} at the start"
                 if fmt.number(result.get("eval_loss_start")) is not None else "global model, held-out split"),
                bad="eval" in failed),
        _figure("useful_tokens", fmt.si(result.get("useful_tokens")), "Useful tokens",
                f"{fmt.si(result.get('tokens_merged'))} merged", bad=False),
        _figure("outer_updates", fmt.plain(result.get("outer_updates")), "Outer updates", "merges into the global model",
                bad=False),
    ]
    notes = [n for n in result.get("notes") or [] if isinstance(n, str)]
    notes_html = ('<p class="notes">Measurement notes: ' + "; ".join(esc(fmt.truncate(n, 200)) for n in notes[:10])
                  + "</p>") if notes else ""
    return (f'<div class="figures primary" id="figures">{"".join(primary)}</div>'
            f'<div class="figures secondary">{"".join(secondary)}</div>{notes_html}')


def checks_section(checks: list[dict]) -> str:
    ordered = sorted(checks, key=lambda c: _ORDER[check_verdict(c)])  # stable: failures first
    rows = [f'<tr class="check verdict-{check_verdict(c)}" data-check="{esc(c.get("name"))}">'
            f'<td class="verdict-cell">{pill(check_verdict(c))}</td>'
            + cell(fmt.plain(c.get("name"), 200), "name nowrap" if len(str(c.get("name"))) <= 40 else "name") + cell(fmt.plain(c.get("expected")), "expected")
            + cell(fmt.plain(c.get("actual")), "actual")
            + cell(fmt.plain(c.get("detail"), 400) if c.get("detail") else "", "detail") + "</tr>" for c in ordered]
    counts = {v: sum(1 for c in checks if check_verdict(c) == v) for v in _ORDER}
    return section("checks", "Checks",
                   f"{counts['pass']} passed, {counts['fail']} failed, {counts['unknown']} unknown. "
                   "Failed checks first.",
                   table([("verdict", ""), ("check", ""), ("expected", ""), ("actual", ""), ("detail", "")], rows,
                         cls="checks"))


def throughput_section(run: RunFolder, span: series.Span, axis: svg.TimeAxis, windows) -> str:
    rate = series.capacity_rate(run.result, run.events)
    useful = series.useful_tokens(run.events, span)
    processed = series.processed_tokens(run.events, span)
    capacity = [(0.0, 0.0), (span.duration, rate * span.duration)] if rate > 0 else []
    tokens_chart = svg.line_chart(axis, [
        svg.Line("capacity (all learners healthy)", capacity, "#9aa1ab", dashed=True),
        svg.Line("tokens computed", processed, svg.PALETTE[0]),
        svg.Line("useful tokens (merged)", useful, svg.PALETTE[2], step=True),
    ], label="Cumulative tokens over time", windows=windows)
    rolling = series.rolling_goodput(useful, rate, span.duration)
    g, a = fmt.number(run.result.get("goodput")), fmt.number(run.result.get("availability_bound"))
    lines = [svg.Line(f"rolling goodput ({series.rolling_window_s(span.duration):.0f} s window)", rolling, svg.PALETTE[2])]
    if g is not None:
        lines.append(svg.Line(f"goodput over the run ({fmt.pct(g)})", [(0.0, g), (span.duration, g)], "#1d2330", dashed=True))
    if a is not None:
        lines.append(svg.Line(f"availability bound ({fmt.pct(a)})", [(0.0, a), (span.duration, a)], "#d6454a", dashed=True))
    goodput_chart = svg.line_chart(axis, lines, label="Rolling goodput", windows=windows,
                                   y_format=lambda v: f"{v * 100:.0f}%",
                                   y_ceiling=max([1.0] + [y for _, y in rolling]))
    return section("throughput", "Tokens and goodput over time",
                   "Computed tokens that never reach a merge are lost work (a kill, a rejected or stale update). "
                   "Rolling goodput is useful tokens in the trailing window over the capacity in that window; "
                   "a rollback or a synchronizer crash takes merged tokens back, so it can dip below zero.",
                   chart_title("Cumulative tokens"), tokens_chart, chart_title("Rolling goodput"), goodput_chart)


def quality_section(run: RunFolder, span, axis, windows, baseline: RunFolder | None) -> str:
    lines = [svg.Line("eval loss (this run)", series.eval_loss(run.events, span), svg.PALETTE[4])]
    note = "Loss of the global model on the held-out split, as the synchronizer evaluated it."
    if baseline is not None:
        b_span = series.run_span(baseline.journal, baseline.events)
        lines.append(svg.Line(f"baseline: {fmt.truncate(baseline.label, 40)}",
                              series.eval_loss(baseline.events, b_span), "#6b6b6b", dashed=True))
        note += f" Dashed: the baseline run {baseline.path.name}, on its own clock from its ready."
    return section("quality", "Eval loss over time", note,
                   svg.line_chart(axis, lines, label="Eval loss over time", windows=windows,
                                  y_format=lambda v: f"{v:.2f}", y_floor=None))


def fragments_section(run: RunFolder, span, axis, windows) -> str:
    versions = series.fragment_versions(run.events, span)
    lines = [svg.Line(f"fragment {p}", pts, svg.PALETTE[i % len(svg.PALETTE)], step=True)
             for i, (p, pts) in enumerate(versions.items())]
    return section("fragments", "Fragment versions over time",
                   "Each fragment's version after every merge; a flat stretch is a fragment nobody updated.",
                   svg.line_chart(axis, lines, label="Fragment versions over time", windows=windows,
                                  y_format=lambda v: f"{v:.0f}"))


def links_section(run: RunFolder) -> str:
    links = series.bytes_per_link(run.result, run.events)
    rows = [(name, (b_in, b_out)) for name, (b_in, b_out) in links.items()]
    return section("links", "Bytes per link",
                   "Bytes through each learner's link as the synchronizer counted them: in = learner → synchronizer, "
                   "out = synchronizer → learner.",
                   svg.bar_chart(rows, [("in (upstream)", svg.PALETTE[0]), ("out (downstream)", svg.PALETTE[1])],
                                 label="Bytes per link"))


def faults_section(result: dict[str, Any], windows: list[series.FaultWindow]) -> str:
    faults = [f for f in result.get("faults") or [] if isinstance(f, dict)]
    if not faults:  # fall back on the journal's windows
        faults = [{"fault_id": w.fault_id, "fault": w.fault, "target": w.target, "injected_s": w.start,
                   "healed_s": w.end if w.healed else None} for w in windows]
    rows = ["<tr>" + cell(fmt.plain(f.get("fault_id"))) + cell(fmt.plain(f.get("fault"))) + cell(fmt.plain(f.get("target")))
            + cell(fmt.seconds(f.get("planned_s")), "num") + cell(fmt.seconds(f.get("injected_s")), "num")
            + cell(fmt.seconds(f.get("healed_s")), "num") + cell(fmt.plain(f.get("params") or None, 160), "mono") + "</tr>"
            for f in faults]
    return section("faults", "Faults", f"{len(faults)} faults, times in seconds from ready.",
                   table([("id", ""), ("fault", ""), ("target", ""), ("planned", "num"), ("injected", "num"),
                          ("healed", "num"), ("params", "")], rows, cls="faults"))


def metadata_section(run: RunFolder) -> str:
    meta = run.run
    versions = meta.get("versions")
    version_text = (", ".join(f"{k} {v}" for k, v in versions.items()) if isinstance(versions, dict)
                    else fmt.plain(versions))
    scenario_path = meta.get("scenario_path")
    replay = f"chaosloco run {scenario_path} --seed {meta.get('seed')}" if scenario_path else None
    items = [("run id", meta.get("run_id")), ("seed", meta.get("seed")), ("backend", meta.get("backend")),
             ("trainer", trainer_name(meta.get("trainer"))), ("versions", version_text), ("host", meta.get("host")),
             ("started", meta.get("started_at")), ("scenario file", scenario_path), ("run folder", str(run.path)),
             ("replay", replay)]
    dl = "".join(f"<dt>{esc(k)}</dt><dd class=\"{'mono' if k == 'replay' else ''}\" data-meta=\"{esc(k)}\">"
                 f"{esc(fmt.plain(v, 400))}</dd>" for k, v in items)
    text = meta.get("scenario_text")
    scenario = (f'<pre class="scenario" data-meta="scenario_text">{esc(text)}</pre>' if isinstance(text, str) and text
                else '<p class="explain">The run recorded no scenario text.</p>')
    return section("replay", "Run metadata for replay",
                   "The same scenario with the same seed replays the same fault schedule.",
                   f'<dl class="meta">{dl}</dl>', scenario)
