"""Time series for the reports, recomputed from the journal and the event log.

Pure functions of the two logs (Jepsen's rule: the history is the single source). Every
time is in seconds from the origin T0 = the journal's ``ready`` record (SPEC §2: the run's
wall time T starts when every learner has joined); the report's charts share that axis.

What each series means (SPEC §2 for the definitions):
- lanes: a node's state from ``node_state`` records, with ``rejoining`` laid over it
  from a restart (``node_start`` reason ``restart``) to the learner's next ``first_step``
  event — rejoin time (a) — or, for the synchronizer, its next ``syncer_start``.
- useful tokens U(t): as harness.measure counts them (merged tokens × fragment
  fraction, voided merges taken back), accumulated over time.
- processed tokens: tokens of ``progress`` events (work done, useful or not).
- rolling goodput: ΔU over a trailing window / (capacity rate × window). The capacity
  rate is result.json's capacity_tokens / duration_s, so the curve averages to the
  headline goodput; without those, the sum of each learner's median progress rate.
- fragment versions: the version of each fragment after each merge (rollbacks included).
"""
from __future__ import annotations

import bisect
import dataclasses
import re
import statistics
from typing import Any, Iterable, Sequence

from harness.measure import merge_useful_tokens, versions_map

Point = tuple[float, float]

LANE_STATES = ("up", "down", "paused", "partitioned", "rejoining", "throttled", "degraded")
_LEARNER = re.compile(r"^learner-(\d+)$")


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    fault_id: str
    fault: str
    target: str
    start: float
    end: float  # == start for an instantaneous fault (corrupt)
    healed: bool


@dataclasses.dataclass(frozen=True)
class Interval:
    start: float
    end: float
    state: str


@dataclasses.dataclass(frozen=True)
class Marker:
    t: float
    lane: str
    label: str


@dataclasses.dataclass(frozen=True)
class Span:
    """The run's time frame: absolute origin and length in seconds."""

    t0: float
    duration: float

    def rel(self, t: float) -> float:
        return t - self.t0


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def run_span(journal: Sequence[dict], events: Sequence[dict]) -> Span:
    """T0 is ``ready`` (else ``run_start``, else the first record); the end is ``run_end``
    (else the last record of either log)."""
    def first(kind: str) -> float | None:
        return next((r["t"] for r in journal if r.get("kind") == kind), None)

    times = [r["t"] for r in journal] + [e["t"] for e in events]
    if not times:
        return Span(0.0, 0.0)
    t0 = next(x for x in (first("ready"), first("run_start"), min(times)) if x is not None)
    end = next(x for x in (first("run_end"), max(times)) if x is not None)
    return Span(float(t0), max(0.0, float(end) - float(t0)))


def learner_names(journal: Sequence[dict], events: Sequence[dict], result: dict | None = None) -> list[str]:
    """Every learner the run knew of, in numeric order: from ``ready``, node records,
    event sources and result.json's links."""
    ids: set[int] = set()
    for r in journal:
        if r.get("kind") == "ready":
            learners = r.get("learners")
            if isinstance(learners, int) and not isinstance(learners, bool):
                ids.update(range(learners))
            elif isinstance(learners, list):
                ids.update(x for x in learners if isinstance(x, int) and not isinstance(x, bool))
        m = _LEARNER.match(str(r.get("node", "")))
        if m:
            ids.add(int(m.group(1)))
    for e in events:
        m = _LEARNER.match(str(e.get("src", "")))
        if m:
            ids.add(int(m.group(1)))
    for name in (result or {}).get("bytes_per_link") or {}:
        m = _LEARNER.match(str(name))
        if m:
            ids.add(int(m.group(1)))
    return [f"learner-{i}" for i in sorted(ids)]


def fault_windows(journal: Sequence[dict], span: Span) -> list[FaultWindow]:
    """Pairs ``fault_inject`` with its ``fault_heal``; an unhealed fault lasts to the end."""
    open_: dict[str, dict] = {}
    out: list[FaultWindow] = []
    for r in journal:
        kind = r.get("kind")
        fid = str(r.get("fault_id", ""))
        if kind == "fault_inject":
            open_[fid] = r
        elif kind == "fault_heal" and fid in open_:
            inj = open_.pop(fid)
            out.append(FaultWindow(fid, str(inj.get("fault", "")), str(inj.get("target", "")),
                                   span.rel(inj["t"]), span.rel(r["t"]), True))
    for fid, inj in open_.items():
        instant = inj.get("fault") == "corrupt"
        start = span.rel(inj["t"])
        out.append(FaultWindow(fid, str(inj.get("fault", "")), str(inj.get("target", "")),
                               start, start if instant else span.duration, instant))
    out.sort(key=lambda w: (w.start, w.fault_id))
    return out


def _merge_adjacent(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for iv in intervals:
        if iv.end <= iv.start:
            continue
        if out and out[-1].state == iv.state and abs(out[-1].end - iv.start) < 1e-9:
            out[-1] = Interval(out[-1].start, iv.end, iv.state)
        else:
            out.append(iv)
    return out


def node_lane(node: str, journal: Sequence[dict], events: Sequence[dict], span: Span) -> list[Interval]:
    """One node's states over [0, duration]: node_state records, then rejoining overlays."""
    changes: list[tuple[float, str]] = [(float("-inf"), "up")]
    restarts: list[float] = []
    for r in journal:
        if r.get("node") != node:
            continue
        if r.get("kind") == "node_state" and r.get("state") in LANE_STATES:
            changes.append((span.rel(r["t"]), str(r["state"])))
        elif r.get("kind") == "node_start" and r.get("reason") == "restart":
            restarts.append(span.rel(r["t"]))
    base: list[Interval] = []
    for (t, state), nxt in zip(changes, changes[1:] + [(span.duration, "")]):
        start, end = max(t, 0.0), min(nxt[0], span.duration)
        if end > start:
            base.append(Interval(start, end, state))
    # a learner has rejoined at its first inner step; the synchronizer once it listens again
    back_ev = "syncer_start" if node == "syncer" else "first_step"
    first_steps = sorted(span.rel(e["t"]) for e in events if e.get("ev") == back_ev and e.get("src") == node)
    down_times = [t for t, s in changes if s in ("down", "paused")]
    overlays: list[Interval] = []
    for start in restarts:
        ends = [t for t in first_steps if t >= start] + [t for t in down_times if t > start] + [span.duration]
        end = min(ends)
        overlays.append(Interval(max(start, 0.0), min(end, span.duration), "rejoining"))
    return _merge_adjacent(_paint(base, overlays))


def _paint(base: list[Interval], overlays: list[Interval]) -> list[Interval]:
    """Lays overlay intervals over base ones (the overlay wins where they overlap)."""
    out = list(base)
    for ov in overlays:
        if ov.end <= ov.start:
            continue
        nxt: list[Interval] = []
        for iv in out:
            if iv.end <= ov.start or iv.start >= ov.end:
                nxt.append(iv)
                continue
            if iv.start < ov.start:
                nxt.append(Interval(iv.start, ov.start, iv.state))
            if iv.end > ov.end:
                nxt.append(Interval(ov.end, iv.end, iv.state))
        nxt.append(ov)
        out = sorted(nxt, key=lambda i: i.start)
    return out


def lanes(journal: Sequence[dict], events: Sequence[dict], span: Span, learners: Sequence[str]) -> dict[str, list[Interval]]:
    """The synchronizer's lane first, then one lane per learner."""
    return {node: node_lane(node, journal, events, span) for node in ["syncer", *learners]}


def reject_markers(events: Sequence[dict], span: Span) -> list[Marker]:
    """Rejected pushes, placed on the learner's lane (the syncer's when unattributed)."""
    out = []
    for e in events:
        if e.get("ev") != "reject":
            continue
        learner = e.get("learner")
        lane = f"learner-{learner}" if isinstance(learner, int) and not isinstance(learner, bool) else "syncer"
        out.append(Marker(span.rel(e["t"]), lane, f"rejected: {e.get('reason', '?')}"))
    return out


def useful_tokens(events: Sequence[dict], span: Span) -> list[Point]:
    """Cumulative useful tokens U(t), by harness.measure's definition so that the curve
    ends at result.json's useful_tokens: each merge inside T counts its contributors'
    tokens × its fragment's ``fraction``; a ``rollback`` takes back the latest earlier
    merge of each (fragment, version) it voids, and a synchronizer restart takes back the
    merges above the versions it restored (lost in the crash) — at the time they happen."""
    live: list[tuple[Any, Any, float, bool]] = []  # fragment, version, tokens, counted in T
    total = 0.0
    points: list[Point] = [(0.0, 0.0)]
    for e in events:
        ev, t = e.get("ev"), span.rel(e["t"])
        inside = 0.0 <= t <= span.duration
        before = total
        if ev == "merge":
            tokens = merge_useful_tokens(e)
            live.append((e.get("fragment"), e.get("version"), tokens, inside))
            total += tokens if inside else 0.0
        elif ev == "syncer_start":
            restored = versions_map(e.get("versions"))
            lost = [m for m in live if (m[1] or 0) > restored.get(m[0], float("inf"))]
            live = [m for m in live if m not in lost]
            total -= sum(m[2] for m in lost if m[3])
        elif ev == "rollback":
            for v in e.get("voided") or []:
                if not isinstance(v, dict):
                    continue
                for i in range(len(live) - 1, -1, -1):
                    if live[i][0] == v.get("fragment") and live[i][1] == v.get("version"):
                        total -= live[i][2] if live[i][3] else 0.0
                        del live[i]
                        break
        if total != before:
            points.append((min(max(t, 0.0), span.duration), total))
    return points


def processed_tokens(events: Sequence[dict], span: Span) -> list[Point]:
    """Cumulative tokens every learner computed (progress events), useful or not."""
    total = 0.0
    points: list[Point] = [(0.0, 0.0)]
    for e in events:
        if e.get("ev") == "progress":
            total += _num(e.get("tokens")) or 0.0
            points.append((max(span.rel(e["t"]), 0.0), total))
    return points


def median_rates(events: Sequence[dict]) -> dict[str, float]:
    """Each learner's median tokens per compute second over its progress windows (a
    robust healthy rate; harness.measure also leaves out windows under a fault)."""
    rates: dict[str, list[float]] = {}
    for e in events:
        if e.get("ev") != "progress":
            continue
        tokens, busy = _num(e.get("tokens")), _num(e.get("compute_s"))
        if tokens is not None and busy and busy > 0:
            rates.setdefault(str(e.get("src")), []).append(tokens / busy)
    return {src: statistics.median(v) for src, v in rates.items()}


def capacity_rate(result: dict, events: Sequence[dict]) -> float:
    """Tokens per second all learners could compute when healthy (C / T)."""
    cap, dur = _num(result.get("capacity_tokens")), _num(result.get("duration_s"))
    if cap and dur and cap > 0 and dur > 0:
        return cap / dur
    return sum(median_rates(events).values())


def rolling_window_s(duration: float) -> float:
    """A twentieth of the run, between 5 s and 60 s: long enough to span a few fragment
    rounds, short enough to show a fault's dip."""
    return min(60.0, max(5.0, duration / 20.0))


def value_at(points: Sequence[Point], t: float) -> float:
    """Step interpolation: the value of the last point at or before t (0 before any)."""
    i = bisect.bisect_right([p[0] for p in points], t)
    return points[i - 1][1] if i else 0.0


def rolling_goodput(useful: Sequence[Point], rate: float, duration: float, *, samples: int = 400) -> list[Point]:
    if rate <= 0 or duration <= 0:
        return []
    window = rolling_window_s(duration)
    xs = [p[0] for p in useful]
    out: list[Point] = []
    first = min(window, duration)  # a partial first window would show merge granularity, not goodput
    for k in range(samples + 1):
        t = first + (duration - first) * k / samples
        if t <= 0:
            continue
        lo = max(0.0, t - window)
        i_hi, i_lo = bisect.bisect_right(xs, t), bisect.bisect_right(xs, lo)
        u_hi = useful[i_hi - 1][1] if i_hi else 0.0
        u_lo = useful[i_lo - 1][1] if i_lo else 0.0
        out.append((t, (u_hi - u_lo) / (rate * (t - lo))))
    return out


def eval_loss(events: Sequence[dict], span: Span) -> list[Point]:
    return [(span.rel(e["t"]), float(e["loss"])) for e in events
            if e.get("ev") == "eval" and _num(e.get("loss")) is not None
            and float(e["loss"]) == float(e["loss"])]  # drop NaN: it would break the chart


def fragment_versions(events: Sequence[dict], span: Span) -> dict[int, list[Point]]:
    """Per fragment, its version after every merge and rollback (a step series)."""
    out: dict[int, list[Point]] = {}
    for e in events:
        ev = e.get("ev")
        if ev == "syncer_start" and isinstance(e.get("versions"), list):
            for p, v in enumerate(e["versions"]):
                if _num(v) is not None:
                    out.setdefault(p, []).append((max(span.rel(e["t"]), 0.0), float(v)))
        elif ev == "merge" and isinstance(e.get("fragment"), int) and _num(e.get("version")) is not None:
            out.setdefault(e["fragment"], []).append((max(span.rel(e["t"]), 0.0), float(e["version"])))
        elif ev == "rollback" and isinstance(e.get("to_versions"), list):
            for p, v in enumerate(e["to_versions"]):
                if _num(v) is not None:
                    out.setdefault(p, []).append((max(span.rel(e["t"]), 0.0), float(v)))
    return dict(sorted(out.items()))


def bytes_per_link(result: dict, events: Sequence[dict]) -> dict[str, tuple[float, float]]:
    """(in, out) bytes per learner link as seen by the synchronizer: from result.json,
    else summed from join/push/ack events."""
    links = result.get("bytes_per_link") or {}
    out: dict[str, tuple[float, float]] = {}
    for name, v in links.items():
        if isinstance(v, dict):
            out[str(name)] = (_num(v.get("in")) or 0.0, _num(v.get("out")) or 0.0)
    if out:
        return dict(sorted(out.items(), key=lambda kv: _sort_key(kv[0])))
    acc: dict[str, list[float]] = {}
    for e in events:
        learner = e.get("learner")
        if e.get("ev") not in ("join", "push", "ack") or not isinstance(learner, int):
            continue
        slot = acc.setdefault(f"learner-{learner}", [0.0, 0.0])
        slot[0] += _num(e.get("bytes_in")) or 0.0
        slot[1] += _num(e.get("bytes_out")) or 0.0
    return {k: (v[0], v[1]) for k, v in sorted(acc.items(), key=lambda kv: _sort_key(kv[0]))}


def _sort_key(name: str) -> tuple[int, str]:
    m = _LEARNER.match(name)
    return (int(m.group(1)), "") if m else (1 << 30, name)


def downsample(points: Sequence[Point], buckets: int) -> list[Point]:
    """Min-max decimation: per x-bucket keep the first, lowest, highest and last point, so
    a chart of a long run stays small (a few points per pixel column) and keeps its spikes."""
    if len(points) <= 4 * buckets or buckets <= 0:
        return list(points)
    x0, x1 = points[0][0], points[-1][0]
    width = (x1 - x0) / buckets or 1.0
    out: list[Point] = []
    group: list[Point] = []
    current = None
    for p in points:
        b = min(int((p[0] - x0) / width), buckets - 1)
        if b != current and group:
            out.extend(_keep(group))
            group = []
        current = b
        group.append(p)
    out.extend(_keep(group))
    return out


def _keep(group: list[Point]) -> Iterable[Point]:
    picked = {0, len(group) - 1,
              min(range(len(group)), key=lambda i: group[i][1]),
              max(range(len(group)), key=lambda i: group[i][1])}
    return [group[i] for i in sorted(picked)]
