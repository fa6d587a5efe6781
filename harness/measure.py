"""Measurements: SPEC §2's figures as pure functions of the event log and the journal.

``measure(events, journal, ...)`` reads nothing else, so a report or a re-check of an old
run folder computes the same numbers as the run did. The choices SPEC leaves open:

- **T** runs from the journal's ``ready`` to its ``wind_down`` (the moment the harness
  stops healing-and-waiting and starts stopping nodes: the trainer is no longer under
  test; older journals without it: ``run_end``; neither, e.g. a harness that crashed:
  the last record of either log). Ending at ``run_end`` would count the graceful stop
  -- up to ``stop_timeout_s`` for a synchronous trainer blocked at a barrier -- as lost
  goodput and lost availability, and penalise trainers for how they shut down. Everything below is clipped to
  [T0, T1] unless it says otherwise.
- **rate r_i**: the median over learner i's ``progress`` windows ``[t - wall_s, t]`` that
  overlap no fault window on learner i of ``tokens / compute_s``. Compute-only, so a
  trainer that waits on a barrier shows the wait as lost goodput, not as a slow learner.
  A fault window is ``fault_inject`` .. ``fault_heal`` (same ``fault_id``; unhealed: to
  T1) of a fault targeting that learner. Fallbacks, in order: all the learner's windows;
  the median of the other learners' rates (a learner that never made progress still had
  capacity).
- **capacity** C = Σ r_i·T. **useful tokens** U = Σ over ``merge`` events in T of
  Σ contributor tokens × ``fraction`` (a merge counts when it happens inside T, whenever
  its tokens were computed: work done before ``ready`` and merged after it stands in
  for work done near the end and merged after ``run_end``). A merge later voided by a
  ``rollback`` does not count (voiding is positional: a rollback voids the latest
  earlier merge of each (fragment, version) it names, so versions reused after a
  rollback stay valid), nor does one lost in a synchronizer crash (above the version
  its restart restored).
- **availability** A = Σ_i r_i·allowed_i / C, allowed_i = ∫ over T of learner i's
  ``node_state`` ``cpu_share`` relative to its baseline share (the scenario's
  ``cpu_shares``; r_i already reflects a slower baseline), capped at 1. Before its first
  ``node_state`` a learner counts as up. Link states keep 1.0.
- **rejoin** per restart (journal ``node_start`` with ``reason: restart``; without any
  such record, every ``learner_start`` after a learner's first): to (a) its
  ``first_step`` and (b) the first ``merge`` with a contribution of the new incarnation
  (the incarnation from the synchronizer's next ``join`` of that learner). None where it
  did not happen before the run ended; ``observed_s`` says how long we looked.
- **reconnect** per healed link-cutting fault on a learner (``link_down``, ``flap``,
  ``timeout``, ``disconnect``: the learner kept computing but could not reach the
  synchronizer): from the ``fault_heal`` to the first ``merge`` with a contribution of
  that learner. Not in SPEC §2 (its rejoin is about restarts); it is the partition's
  counterpart: a partitioned learner must come back on its own. None where it did not
  happen before the run ended.
- **global stall**: the longest stretch inside T with no ``merge`` (voided ones count:
  the update happened then) while the run could progress: at least a quorum of learners
  in a contributing state (``up``, ``throttled``, ``degraded``; not ``down``, ``paused``,
  ``partitioned``) and the synchronizer not ``down``. 0.0 when it never could.
- **Shared cores**: C and A assume each learner's rate is its own. Where learners share
  cores (four learners and a synchronizer on two, as on the development machine), a
  killed or paused learner frees CPU that the others use, so they beat their r_i and G
  or E can come out slightly above 1 (seen: E 1.03 in ``stragglers``). Read figures
  from such a host as lower-bound-ish comparisons between trainers, not as absolutes.
- **wire bytes**: ``bytes_in`` / ``bytes_out`` of every synchronizer event that names a
  learner, over the whole log; ``in`` is what the synchronizer received on that
  learner's link, ``out`` what it sent.
- **tokens_merged**, **outer_updates**: as useful tokens and the merge count, over the
  whole log (not clipped to T), voided merges excluded.
- **quality gap** = final eval loss / the baseline's − 1 (the baseline's final eval loss;
  SPEC's "at equal tokens" is left to choosing a baseline run of equal duration).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

Record = Mapping[str, Any]
CONTRIBUTING_STATES = frozenset({"up", "throttled", "degraded"})


@dataclasses.dataclass(frozen=True)
class Rejoin:
    learner: int
    restart_t: float  # Unix time of the restart
    at_s: float  # the restart's offset from ready (T0)
    incarnation: int | None  # the synchronizer's id of the new incarnation; None: never joined
    to_first_step_s: float | None
    to_first_merge_s: float | None
    observed_s: float  # restart to the end of the run: how long we could have seen it


@dataclasses.dataclass(frozen=True)
class Reconnect:
    learner: int
    fault_id: str
    heal_t: float  # Unix time the link came back
    at_s: float  # the heal's offset from ready (T0)
    to_first_merge_s: float | None
    observed_s: float  # heal to the end of the run


LINK_CUTTING_FAULTS = frozenset({"link_down", "flap", "timeout", "disconnect"})


@dataclasses.dataclass(frozen=True)
class Measurements:
    duration_s: float | None  # T
    rates: Mapping[int, float]  # r_i, tokens per compute second
    allowed_s: Mapping[int, float]  # compute seconds each learner was allowed in T
    capacity_tokens: float | None
    useful_tokens: float
    goodput: float | None
    availability_bound: float | None
    goodput_efficiency: float | None
    rejoins: tuple[Rejoin, ...]
    max_global_stall_s: float | None
    outer_updates: int
    tokens_merged: float
    wire_bytes: int
    bytes_per_link: Mapping[str, Mapping[str, int]]
    wire_bytes_per_useful_token: float | None
    eval_loss_start: float | None
    eval_loss_final: float | None
    quality_gap: float | None
    reconnects: tuple[Reconnect, ...] = ()
    evals: int = 0  # number of eval events
    notes: tuple[str, ...] = ()  # why a figure is missing

    def as_result_fields(self) -> dict[str, Any]:
        """The result.json keys of docs/CONTRACTS.md that come from measurements."""
        return {
            "duration_s": self.duration_s,
            "goodput": self.goodput,
            "availability_bound": self.availability_bound,
            "goodput_efficiency": self.goodput_efficiency,
            "rejoin_seconds": [{"learner": r.learner, "to_first_step_s": r.to_first_step_s,
                                "to_first_merge_s": r.to_first_merge_s} for r in self.rejoins],
            "reconnect_seconds": [{"learner": r.learner, "fault_id": r.fault_id,
                                   "to_first_merge_s": r.to_first_merge_s} for r in self.reconnects],
            "max_global_stall_seconds": self.max_global_stall_s,
            "outer_updates": self.outer_updates,
            "tokens_merged": self.tokens_merged,
            "useful_tokens": self.useful_tokens,
            "capacity_tokens": self.capacity_tokens,
            "wire_bytes": self.wire_bytes,
            "wire_bytes_per_useful_token": self.wire_bytes_per_useful_token,
            "bytes_per_link": {k: dict(v) for k, v in self.bytes_per_link.items()},
            "eval_loss_final": self.eval_loss_final,
            "quality_gap": self.quality_gap,
        }


def learner_index(node: Any) -> int | None:
    if isinstance(node, str) and node.startswith("learner-") and node[8:].isdigit():
        return int(node[8:])
    return None


def versions_map(versions: Any) -> dict[int, int]:
    """Per-fragment versions as logged: a list indexed by fragment, or a mapping."""
    if isinstance(versions, Mapping):
        return {int(k): int(v) for k, v in versions.items()}
    if isinstance(versions, (list, tuple)):
        return {f: int(v) for f, v in enumerate(versions)}
    return {}


def live_merges(events: Iterable[Record]) -> list[Record]:
    """The merges still in the model, in log order. A ``rollback`` voids the latest
    earlier merge of every (fragment, version) it names. A synchronizer (re)start
    (``syncer_start``, restored or not) voids every earlier merge above the restored
    version of its fragment: it was lost with the crash before it became durable (SPEC §3
    item 4 checks separately that none of those had been acknowledged)."""
    merges: list[Record | None] = []
    for e in events:
        if e.get("ev") == "merge":
            merges.append(e)
        elif e.get("ev") == "syncer_start":
            restored = versions_map(e.get("versions"))
            for i, m in enumerate(merges):
                if m is not None and m.get("version", 0) > restored.get(m.get("fragment"), float("inf")):
                    merges[i] = None
        elif e.get("ev") == "rollback":
            for v in e.get("voided") or []:
                for i in range(len(merges) - 1, -1, -1):
                    m = merges[i]
                    if m is not None and m.get("fragment") == v.get("fragment") and m.get("version") == v.get("version"):
                        merges[i] = None
                        break
    return [m for m in merges if m is not None]


def merge_useful_tokens(merge: Record) -> float:
    contributors = merge.get("contributors") or []
    tokens = sum(c.get("tokens", 0) for c in contributors) if contributors else merge.get("tokens", 0)
    return float(tokens) * float(merge.get("fraction", 0.0))


def _first(records: Iterable[Record], kind: str) -> Record | None:
    return next((r for r in records if r.get("kind") == kind), None)


def _run_window(events: Sequence[Record], journal: Sequence[Record]) -> tuple[float | None, float | None]:
    ready = _first(journal, "ready")
    if ready is None:
        return None, None
    end = _first(journal, "wind_down") or _first(journal, "run_end")
    if end is not None:
        return ready["t"], end["t"]
    last = max((r["t"] for r in (*events, *journal)), default=ready["t"])
    return ready["t"], last


def _learner_count(journal: Sequence[Record], events: Sequence[Record], learners: int | None) -> int:
    if learners is not None:
        return learners
    ready = _first(journal, "ready")
    if ready is not None:
        n = ready.get("learners")
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        if isinstance(n, list):
            return len(n)
    ids = {e.get("learner") for e in events if isinstance(e.get("learner"), int)}
    ids |= {learner_index(r.get("node")) for r in journal} - {None}
    return max(ids) + 1 if ids else 0


def fault_windows(journal: Sequence[Record], t_end: float) -> dict[str, list[tuple[float, float]]]:
    """Per target node: [inject, heal) of every fault; unhealed faults last to t_end."""
    opened: dict[str, tuple[str, float]] = {}
    out: dict[str, list[tuple[float, float]]] = {}
    for r in journal:
        if r.get("kind") == "fault_inject":
            opened[r["fault_id"]] = (r.get("target"), r["t"])
        elif r.get("kind") == "fault_heal" and r.get("fault_id") in opened:
            target, t0 = opened.pop(r["fault_id"])
            out.setdefault(target, []).append((t0, r["t"]))
    for target, t0 in opened.values():
        out.setdefault(target, []).append((t0, max(t0, t_end)))
    return out


def learner_rates(events: Sequence[Record], windows: Mapping[str, list[tuple[float, float]]],
                  n: int) -> dict[int, float]:
    clean: dict[int, list[float]] = {i: [] for i in range(n)}
    every: dict[int, list[float]] = {i: [] for i in range(n)}
    for e in events:
        if e.get("ev") != "progress" or e.get("learner") not in clean:
            continue
        tokens, compute = e.get("tokens", 0), e.get("compute_s", 0.0)
        if not tokens or not compute or compute <= 0:
            continue
        rate = tokens / compute
        i = e["learner"]
        every[i].append(rate)
        start = e["t"] - e.get("wall_s", compute)
        if not any(start < b and e["t"] > a for a, b in windows.get(f"learner-{i}", [])):
            clean[i].append(rate)
    rates = {i: statistics.median(clean[i] or every[i]) for i in range(n) if clean[i] or every[i]}
    if rates:
        fallback = statistics.median(rates.values())
        rates = {i: rates.get(i, fallback) for i in range(n)}
    return rates


def state_timeline(journal: Sequence[Record], node: str) -> list[tuple[float, str, float]]:
    return [(r["t"], r.get("state", "up"), float(r.get("cpu_share", 1.0)))
            for r in journal if r.get("kind") == "node_state" and r.get("node") == node]


def allowed_compute_s(journal: Sequence[Record], node: str, t0: float, t1: float,
                      baseline_share: float = 1.0) -> float:
    """∫ over [t0, t1] of the node's cpu_share relative to its baseline, capped at 1."""
    total, t, share = 0.0, t0, 1.0
    for ts, _, cpu in state_timeline(journal, node):
        if ts > t:
            total += share * (min(ts, t1) - t)
            t = ts
        if ts >= t1:
            break
        share = min(1.0, cpu / baseline_share) if baseline_share > 0 else 1.0
    if t < t1:
        total += share * (t1 - t)
    return total


def rejoin_times(events: Sequence[Record], journal: Sequence[Record], t0: float,
                 t_end: float) -> list[Rejoin]:
    restarts = [(learner_index(r.get("node")), r["t"]) for r in journal
                if r.get("kind") == "node_start" and r.get("reason") == "restart"]
    restarts = [(i, t) for i, t in restarts if i is not None]
    if not any(r.get("kind") == "node_start" for r in journal):
        seen: set[int] = set()
        for e in events:
            if e.get("ev") == "learner_start":
                if e.get("learner") in seen:
                    restarts.append((e["learner"], e["t"]))
                seen.add(e.get("learner"))
    out = []
    for i, t_s in restarts:
        t_next = min((t for j, t in restarts if j == i and t > t_s), default=math.inf)
        in_life = [e for e in events if t_s <= e["t"] < t_next]
        join = next((e for e in in_life if e.get("ev") == "join" and e.get("learner") == i), None)
        if join is None:
            join = next((e for e in in_life if e.get("ev") == "joined" and e.get("learner") == i), None)
        inc = join.get("incarnation") if join is not None else None
        step = next((e for e in in_life if e.get("ev") == "first_step" and e.get("learner") == i
                     and (inc is None or e.get("incarnation") == inc)), None)
        merge = None if inc is None else next(
            (e for e in events if e.get("ev") == "merge" and e["t"] >= t_s and any(
                c.get("learner") == i and c.get("incarnation") == inc for c in e.get("contributors") or [])),
            None)
        out.append(Rejoin(learner=i, restart_t=t_s, at_s=t_s - t0, incarnation=inc,
                          to_first_step_s=step["t"] - t_s if step else None,
                          to_first_merge_s=merge["t"] - t_s if merge else None,
                          observed_s=max(0.0, t_end - t_s)))
    return sorted(out, key=lambda r: (r.restart_t, r.learner))


def reconnect_times(events: Sequence[Record], journal: Sequence[Record], t0: float,
                    t_end: float) -> list[Reconnect]:
    out = []
    for r in journal:
        if r.get("kind") != "fault_heal" or r.get("fault") not in LINK_CUTTING_FAULTS:
            continue
        i = learner_index(r.get("target"))
        if i is None:
            continue
        merge = next((e for e in events if e.get("ev") == "merge" and e["t"] >= r["t"] and any(
            c.get("learner") == i for c in e.get("contributors") or [])), None)
        out.append(Reconnect(learner=i, fault_id=str(r.get("fault_id")), heal_t=r["t"], at_s=r["t"] - t0,
                             to_first_merge_s=merge["t"] - r["t"] if merge else None,
                             observed_s=max(0.0, t_end - r["t"])))
    return out


def _eligible_intervals(journal: Sequence[Record], n: int, quorum: int, t0: float,
                        t1: float) -> list[tuple[float, float]]:
    changes = sorted((r["t"], r["node"], r.get("state", "up")) for r in journal
                     if r.get("kind") == "node_state" and r.get("node") is not None)
    states = {f"learner-{i}": "up" for i in range(n)} | {"syncer": "up"}

    def eligible() -> bool:
        ups = sum(1 for i in range(n) if states[f"learner-{i}"] in CONTRIBUTING_STATES)
        return ups >= quorum and states["syncer"] != "down"

    out: list[tuple[float, float]] = []
    start: float | None = None
    for t, node, state in [(t0, None, None), *changes, (t1, None, None)]:
        t = min(max(t, t0), t1)
        if node is not None:
            states[node] = state
        now = eligible() and t < t1
        if now and start is None:
            start = t
        elif not now and start is not None:
            if t > start:
                out.append((start, t))
            start = None
    return out


def longest_stall(events: Sequence[Record], journal: Sequence[Record], n: int, quorum: int,
                  t0: float, t1: float) -> float:
    merge_ts = sorted(e["t"] for e in events if e.get("ev") == "merge")
    longest = 0.0
    for a, b in _eligible_intervals(journal, n, quorum, t0, t1):
        points = [a, *(t for t in merge_ts if a < t < b), b]
        longest = max(longest, max(q - p for p, q in zip(points, points[1:])))
    return longest


def wire_bytes(events: Sequence[Record]) -> dict[str, dict[str, int]]:
    links: dict[str, dict[str, int]] = {}
    for e in events:
        if e.get("src") != "syncer" or not isinstance(e.get("learner"), int):
            continue
        if "bytes_in" in e or "bytes_out" in e:
            link = links.setdefault(f"learner-{e['learner']}", {"in": 0, "out": 0})
            link["in"] += int(e.get("bytes_in") or 0)
            link["out"] += int(e.get("bytes_out") or 0)
    return dict(sorted(links.items(), key=lambda kv: learner_index(kv[0]) or 0))


def measure(events: Sequence[Record], journal: Sequence[Record], *, learners: int | None = None,
            quorum: int = 1, cpu_shares: Sequence[float] = (),
            baseline_eval_loss: float | None = None) -> Measurements:
    """Every figure of SPEC §2 for one run (see the module doc for the choices)."""
    events = sorted(events, key=lambda e: e.get("t", 0.0))  # stable: keeps file order on ties
    journal = sorted(journal, key=lambda r: r.get("t", 0.0))
    notes: list[str] = []
    n = _learner_count(journal, events, learners)
    t0, t1 = _run_window(events, journal)
    live = live_merges(events)
    links = wire_bytes(events)
    total_bytes = sum(v["in"] + v["out"] for v in links.values())
    evals = [e for e in events if e.get("ev") == "eval" and e.get("loss") is not None]
    loss_start = float(evals[0]["loss"]) if evals else None
    loss_final = float(evals[-1]["loss"]) if evals else None
    gap = None
    if baseline_eval_loss is not None and loss_final is not None and baseline_eval_loss > 0:
        gap = loss_final / baseline_eval_loss - 1.0
    if not evals:
        notes.append("no eval event")
    common = dict(outer_updates=len(live), tokens_merged=sum(merge_useful_tokens(m) for m in live),
                  wire_bytes=total_bytes, bytes_per_link=links, eval_loss_start=loss_start,
                  eval_loss_final=loss_final, quality_gap=gap, evals=len(evals))
    if t0 is None or t1 is None or t1 <= t0:
        notes.append("no ready record in the journal: the run window T is unknown")
        return Measurements(duration_s=None, rates={}, allowed_s={}, capacity_tokens=None,
                            useful_tokens=0.0, goodput=None, availability_bound=None,
                            goodput_efficiency=None, rejoins=(), max_global_stall_s=None,
                            wire_bytes_per_useful_token=None, notes=tuple(notes), **common)
    if _first(journal, "wind_down") is None and _first(journal, "run_end") is None:
        notes.append("no wind_down or run_end record: T ends at the last record")
    T = t1 - t0
    rates = learner_rates(events, fault_windows(journal, t1), n)
    if len(rates) < n:
        notes.append("no learner made progress: rates unknown")
    shares = list(cpu_shares) + [1.0] * (n - len(cpu_shares))
    allowed = {i: allowed_compute_s(journal, f"learner-{i}", t0, t1, shares[i]) for i in range(n)}
    capacity = sum(r * T for r in rates.values()) if rates else None
    useful = sum(merge_useful_tokens(m) for m in live if t0 <= m["t"] <= t1)
    goodput = availability = efficiency = None
    if capacity:
        goodput = useful / capacity
        availability = sum(rates[i] * allowed[i] for i in rates) / capacity
        efficiency = goodput / availability if availability > 0 else None
        if availability == 0:
            notes.append("no learner was allowed to compute: efficiency undefined")
    return Measurements(
        duration_s=T, rates=rates, allowed_s=allowed, capacity_tokens=capacity,
        useful_tokens=useful, goodput=goodput, availability_bound=availability,
        goodput_efficiency=efficiency, rejoins=tuple(rejoin_times(events, journal, t0, t1)),
        reconnects=tuple(reconnect_times(events, journal, t0, t1)),
        max_global_stall_s=longest_stall(events, journal, n, max(1, quorum), t0, t1),
        wire_bytes_per_useful_token=total_bytes / useful if useful > 0 else None,
        notes=tuple(notes), **common)
