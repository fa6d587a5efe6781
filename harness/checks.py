"""Checkers: pure functions of a run's history that say pass, fail or unknown (Jepsen).

Two families. The invariants of SPEC §3 read the trainer's event log (and, for item 7,
the harness journal); the threshold checks compare ``harness.measure.Measurements`` with
the scenario's ``Checks``. Verdicts combine by priority FAIL > UNKNOWN > PASS.

Decisions where SPEC is silent:
- An invariant over an empty set holds (no merges: nothing was merged twice), but an
  empty event log is UNKNOWN for every invariant: there is no history to judge.
- Merges voided by a rollback or lost in a synchronizer crash (``measure.live_merges``)
  are not "merged" for items 1 and 5; item 4 checks that no acknowledged one was lost.
- Item 3's "out of bound" is judged by the synchronizer (it knows |Θ_p|): a merge must
  carry a finite ``update_norm``, no key rejected as ``nan``/``norm`` may be merged, and
  each ``corrupt`` push (that learner and fragment's next push after the ``corrupt``
  event) must be rejected. A corrupt push that never reached the synchronizer (the
  learner died first) or is still pending at the end is UNKNOWN.
- Rejoin: no restart in the run passes vacuously (detail says so). A restart that has
  not reached its first merge is FAIL once the run went on longer than the bound after
  it, UNKNOWN when the run ended sooner.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Iterable, Mapping, Sequence

from harness.measure import Measurements, Record, live_merges, versions_map
from harness.model import Checks


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


_PRIORITY = {Verdict.FAIL: 2, Verdict.UNKNOWN: 1, Verdict.PASS: 0}


@dataclasses.dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    expected: str
    actual: Any
    detail: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.verdict is Verdict.UNKNOWN else self.verdict is Verdict.PASS

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict.value, "passed": self.passed,
                "expected": self.expected, "actual": self.actual, "detail": self.detail}


def overall(results: Iterable[CheckResult]) -> Verdict:
    """FAIL beats UNKNOWN beats PASS; no results at all is UNKNOWN."""
    verdicts = [r.verdict for r in results]
    return max(verdicts, key=_PRIORITY.__getitem__) if verdicts else Verdict.UNKNOWN


def _result(name: str, expected: str, problems: list[str], *, actual: Any = None,
            unknown: Sequence[str] = (), ok_detail: str = "") -> CheckResult:
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        return CheckResult(name, Verdict.FAIL, expected, actual if actual is not None else len(problems),
                           "; ".join(problems[:3]) + more)
    if unknown:
        return CheckResult(name, Verdict.UNKNOWN, expected, actual, "; ".join(unknown[:3]))
    return CheckResult(name, Verdict.PASS, expected, actual if actual is not None else 0, ok_detail)


def _contributions(merges: Iterable[Record]) -> Iterable[tuple[Record, Mapping[str, Any]]]:
    for m in merges:
        for c in m.get("contributors") or []:
            yield m, c


# --- SPEC §3 invariants -------------------------------------------------------------

def merged_at_most_once(events: Sequence[Record]) -> CheckResult:
    """1. Every contribution key is merged at most once."""
    where: dict[Any, Record] = {}
    problems = []
    merges = live_merges(events)
    for m, c in _contributions(merges):
        key = c.get("key")
        if key is None:
            continue
        if key in where:
            first = where[key]
            problems.append(f"key {key} of learner {c.get('learner')} merged in fragment "
                            f"{first.get('fragment')} v{first.get('version')} and again in "
                            f"fragment {m.get('fragment')} v{m.get('version')}")
        else:
            where[key] = m
    return _result("invariant:merged_at_most_once", "every contribution key merged at most once",
                   problems, ok_detail=f"{len(where)} contributions in {len(merges)} merges")


def versions_only_increase(events: Sequence[Record]) -> CheckResult:
    """2. Per fragment, merge versions strictly increase (a rollback or a restart restoring
    older state may lower them); no learner applies an older version after a newer one."""
    merged: dict[int, int] = {}
    applied: dict[tuple[Any, int], int] = {}
    problems = []

    def lower_to(floor: dict[int, int]) -> None:
        for f, v in floor.items():
            if f in merged:
                merged[f] = min(merged[f], v)
        for (learner, f), v in list(applied.items()):
            if f in floor:
                applied[(learner, f)] = min(v, floor[f])

    for e in events:
        ev = e.get("ev")
        if ev == "merge":
            f, v = e.get("fragment"), e.get("version")
            if f in merged and v <= merged[f]:
                problems.append(f"fragment {f} merged v{v} after v{merged[f]}")
            merged[f] = v if f not in merged else max(v, merged[f])
        elif ev == "rollback":
            lower_to(versions_map(e.get("to_versions")))
        elif ev == "syncer_start":
            lower_to(versions_map(e.get("versions")))
        elif ev == "apply":
            k, v = (e.get("learner"), e.get("fragment")), e.get("version")
            if k in applied and v < applied[k]:
                problems.append(f"learner {k[0]} applied fragment {k[1]} v{v} after v{applied[k]}")
            applied[k] = v if k not in applied else max(v, applied[k])
    return _result("invariant:versions_only_increase",
                   "fragment versions increase; no older version applied over a newer one", problems)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def no_bad_update_merged(events: Sequence[Record]) -> CheckResult:
    """3. No NaN/Inf or out-of-bound update reaches the global parameters."""
    merges = live_merges(events)
    merged_keys = {c.get("key") for _, c in _contributions(merges)} - {None}
    problems = [f"fragment {m.get('fragment')} v{m.get('version')} merged with update_norm "
                f"{m.get('update_norm')!r}" for m in merges
                if "update_norm" in m and not _finite(m.get("update_norm"))]
    bad_rejected = {e.get("key") for e in events
                    if e.get("ev") == "reject" and e.get("reason") in ("nan", "norm")} - {None}
    problems += [f"key {k} was rejected as corrupt and also merged" for k in sorted(bad_rejected & merged_keys, key=str)]
    unknown = []
    corrupt = [e for e in events if e.get("ev") == "corrupt"]
    for c in corrupt:
        who = (c.get("learner"), c.get("fragment"))
        label = f"corrupt ({c.get('kind')}) push of learner {who[0]} fragment {who[1]}"
        # The corrupted push is the pair's next push after the ``corrupt`` event and before
        # the pair's next ``corrupt``. A reject in that span (any reason) kept it out;
        # judging by the span rather than the very next push tolerates a clean push that
        # was already in flight when the learner decided to corrupt the next one.
        t0 = c.get("t", 0.0)
        t1 = min((e.get("t", 0.0) for e in corrupt if e is not c and e.get("t", 0.0) > t0
                  and (e.get("learner"), e.get("fragment")) == who), default=math.inf)
        span = [e for e in events if t0 <= e.get("t", 0.0) < t1 and (e.get("learner"), e.get("fragment")) == who]
        if any(e.get("ev") == "reject" for e in span):
            continue
        pushed = [e.get("key") for e in span if e.get("ev") == "push"]
        merged = [k for k in pushed if k in merged_keys]
        if merged:
            problems.append(f"{label} was not rejected; key {merged[0]} of that span was merged")
        elif pushed:
            unknown.append(f"{label} (key {pushed[0]}) was neither rejected nor merged")
        else:
            unknown.append(f"{label} never reached the synchronizer")
    return _result("invariant:no_bad_update_merged", "no NaN/Inf/over-bound update merged",
                   problems, unknown=unknown,
                   ok_detail=f"{len(merges)} merges finite, {len(corrupt)} corrupt pushes rejected")


def acked_merges_survive(events: Sequence[Record]) -> CheckResult:
    """4. A merge acknowledged before a synchronizer crash is present after the restart."""
    acked: dict[int, int] = {}
    starts = 0
    problems = []
    for e in events:
        ev = e.get("ev")
        if ev == "ack" and e.get("fragment") is not None and e.get("version") is not None:
            f = e["fragment"]
            acked[f] = max(acked.get(f, e["version"]), e["version"])
        elif ev == "rollback":
            for f, v in versions_map(e.get("to_versions")).items():
                if f in acked:
                    acked[f] = min(acked[f], v)
        elif ev == "syncer_start":
            starts += 1
            if starts == 1:
                continue
            restored = versions_map(e.get("versions")) if e.get("restored") else {}
            for f, v in sorted(acked.items()):
                if restored.get(f, 0) < v:
                    problems.append(f"fragment {f}: v{v} acknowledged before the crash, "
                                    f"restart restored v{restored.get(f, 0)}"
                                    + ("" if e.get("restored") else " (state not restored)"))
    return _result("invariant:acked_merges_survive", "acknowledged merges survive a synchronizer restart",
                   problems, ok_detail=f"{max(0, starts - 1)} synchronizer restarts")


def _range(x: Any) -> tuple[int, int] | None:
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(_finite(v) for v in x) and x[1] > x[0]:
        return int(x[0]), int(x[1])
    return None


def ranges_exact(events: Sequence[Record]) -> CheckResult:
    """5. Per learner shard and fragment: merged ranges never overlap, and with discarded
    and rejected ranges they leave no gap from the shard's start (0) to the last merged end."""
    merged: dict[tuple[Any, Any], list[tuple[int, int]]] = {}
    for m, c in _contributions(live_merges(events)):
        r = _range(c.get("range"))
        if r is not None:
            merged.setdefault((c.get("learner"), m.get("fragment")), []).append(r)
    dropped: dict[tuple[Any, Any], list[tuple[int, int]]] = {}
    for e in events:
        if e.get("ev") in ("discard", "reject"):
            r = _range(e.get("range"))
            if r is not None:
                dropped.setdefault((e.get("learner"), e.get("fragment")), []).append(r)
    problems = []
    for (learner, f), ranges in sorted(merged.items(), key=lambda kv: str(kv[0])):
        ranges.sort()
        reach = ranges[0]  # the merged range reaching furthest so far
        for r in ranges[1:]:
            if r[0] < reach[1]:
                problems.append(f"learner {learner} fragment {f}: range {list(r)} overlaps merged {list(reach)}")
            if r[1] > reach[1]:
                reach = r
        covered = 0
        for start, end in sorted(ranges + dropped.get((learner, f), [])):
            if start > covered:
                problems.append(f"learner {learner} fragment {f}: tokens [{covered}, {start}) "
                                "neither merged nor dropped")
            covered = max(covered, end)
            if covered >= ranges[-1][1]:
                break
    return _result("invariant:ranges_exact", "no shard range merged twice or skipped", problems,
                   ok_detail=f"{len(merged)} (learner, fragment) shards")


def authenticated_only(events: Sequence[Record]) -> CheckResult:
    """6. Only contributions of learners that joined (authenticated) are merged."""
    joined: set[tuple[Any, Any]] = set()
    joined_learners: set[Any] = set()
    auth_rejected = {e.get("key") for e in events if e.get("ev") == "reject" and e.get("reason") == "auth"} - {None}
    problems = []
    for e in events:
        if e.get("ev") == "join":
            joined.add((e.get("learner"), e.get("incarnation")))
            joined_learners.add(e.get("learner"))
        elif e.get("ev") == "merge":
            for c in e.get("contributors") or []:
                ok = ((c.get("learner"), c.get("incarnation")) in joined if "incarnation" in c
                      else c.get("learner") in joined_learners)
                if not ok:
                    problems.append(f"fragment {e.get('fragment')} v{e.get('version')} merged learner "
                                    f"{c.get('learner')} incarnation {c.get('incarnation')} which never joined")
    merged_keys = {c.get("key") for _, c in _contributions(live_merges(events))}
    problems += [f"key {k} was rejected for auth and also merged" for k in sorted(auth_rejected & merged_keys, key=str)]
    return _result("invariant:authenticated_only", "only authenticated learners' contributions merged",
                   problems, ok_detail=f"{len(joined)} joins, {len(auth_rejected)} auth rejects")


def nothing_left_behind(journal: Sequence[Record]) -> CheckResult:
    """7. After the run no process, container, network, proxy or toxic is left."""
    teardown = [r for r in journal if r.get("kind") == "teardown"]
    expected = "teardown leaves nothing behind"
    if not teardown:
        return CheckResult("invariant:nothing_left_behind", Verdict.UNKNOWN, expected, None,
                           "no teardown record in the journal")
    leftovers = list(teardown[-1].get("leftovers") or [])
    return _result("invariant:nothing_left_behind", expected, [f"left behind: {x}" for x in leftovers],
                   actual=leftovers)


def check_invariants(events: Sequence[Record], journal: Sequence[Record] | None = None) -> list[CheckResult]:
    """SPEC §3 items 1-6 from the event log; item 7 too when a journal is given."""
    checkers = (merged_at_most_once, versions_only_increase, no_bad_update_merged,
                acked_merges_survive, ranges_exact, authenticated_only)
    if events:
        results = [check(events) for check in checkers]
    else:
        results = [CheckResult(f"invariant:{c.__name__}", Verdict.UNKNOWN, (c.__doc__ or "").split("\n")[0],
                               None, "the event log is empty") for c in checkers]
    if journal is not None:
        results.append(nothing_left_behind(journal))
    return results


# --- thresholds against measurements -------------------------------------------------

def _at_least(name: str, value: float | None, bound: float, why_missing: str) -> CheckResult:
    if value is None:
        return CheckResult(name, Verdict.UNKNOWN, f">= {bound:g}", None, why_missing)
    return CheckResult(name, Verdict.PASS if value >= bound else Verdict.FAIL, f">= {bound:g}", value)


def _at_most(name: str, value: float | None, bound: float, why_missing: str) -> CheckResult:
    if value is None:
        return CheckResult(name, Verdict.UNKNOWN, f"<= {bound:g}", None, why_missing)
    return CheckResult(name, Verdict.PASS if value <= bound else Verdict.FAIL, f"<= {bound:g}", value)


def _bounded_delays(name: str, expected: str, bound: float, delays: list[tuple[str, str, float | None, float]],
                   actual: list[float | None], nothing: str) -> CheckResult:
    """One check over delays ``(label, part, seconds or None, observed_s)``: a delay over
    the bound fails, and so does a missing one the run watched for longer than the
    bound; a missing one the run ended too early to see is unknown."""
    if not delays:
        return CheckResult(name, Verdict.PASS, expected, [], nothing)
    problems, unknown = [], []
    for label, part, value, observed_s in delays:
        if value is not None and value > bound:
            problems.append(f"{label}: {part} after {value:.1f} s")
        elif value is None and observed_s > bound:
            problems.append(f"{label}: no {part} within {bound:g} s")
        elif value is None:
            unknown.append(f"{label}: run ended {observed_s:.1f} s later, before its {part}")
    return _result(name, expected, problems, actual=actual, unknown=unknown)


def rejoin_check(m: Measurements, bound: float) -> CheckResult:
    delays = [(f"learner {r.learner} restarted at +{r.at_s:.1f} s", part, value, r.observed_s)
              for r in m.rejoins
              for part, value in (("first step", r.to_first_step_s), ("first merge", r.to_first_merge_s))]
    return _bounded_delays("rejoin", f"every rejoin (first step and first merge) <= {bound:g} s", bound, delays,
                           [r.to_first_merge_s for r in m.rejoins], "no restarts in this run: nothing to bound")


def reconnect_check(m: Measurements, bound: float) -> CheckResult:
    delays = [(f"learner {r.learner} after {r.fault_id} (healed at +{r.at_s:.1f} s)", "first merge",
               r.to_first_merge_s, r.observed_s) for r in m.reconnects]
    expected = f"every partitioned learner merging again <= {bound:g} s after its link is back"
    return _bounded_delays("reconnect", expected, bound, delays, [r.to_first_merge_s for r in m.reconnects],
                           "no link was cut in this run: nothing to bound")


def threshold_checks(checks: Checks, m: Measurements) -> list[CheckResult]:
    no_t = "; ".join(m.notes) or "not computable"
    out = []
    if checks.goodput_min is not None:
        out.append(_at_least("goodput", m.goodput, checks.goodput_min, no_t))
    if checks.goodput_efficiency_min is not None:
        out.append(_at_least("goodput_efficiency", m.goodput_efficiency, checks.goodput_efficiency_min, no_t))
    if checks.rejoin_max_s is not None:
        out.append(rejoin_check(m, checks.rejoin_max_s))
    if checks.reconnect_max_s is not None:
        out.append(reconnect_check(m, checks.reconnect_max_s))
    if checks.max_stall_s is not None:
        out.append(_at_most("global_stall", m.max_global_stall_s, checks.max_stall_s, no_t))
    if checks.quality_gap_max is not None:
        out.append(_at_most("quality_gap", m.quality_gap, checks.quality_gap_max,
                            "no baseline run given" if m.eval_loss_final is not None else "no eval event"))
    if checks.eval_loss_drop_min is not None:
        drop = None
        if m.evals >= 2 and m.eval_loss_start and m.eval_loss_final is not None:
            drop = 1.0 - m.eval_loss_final / m.eval_loss_start
        out.append(_at_least("eval_loss_drop", drop, checks.eval_loss_drop_min,
                             f"needs two evals, the run has {m.evals}"))
    return out


def run_completed(status: str) -> CheckResult:
    """A run that did not complete its schedule cannot pass: what was not seen is unknown."""
    verdict = Verdict.PASS if status == "completed" else Verdict.UNKNOWN
    return CheckResult("run_completed", verdict, "completed", status,
                       "" if verdict is Verdict.PASS else "the schedule did not run to its end")


def run_checks(scenario_checks: Checks, measurements: Measurements, events: Sequence[Record],
               journal: Sequence[Record], *, status: str | None = None) -> list[CheckResult]:
    """Every check a scenario asks for: the invariants (when enabled) and its thresholds;
    with ``status`` (the journal's ``run_end`` status) also whether the run completed."""
    results = [run_completed(status)] if status is not None else []
    if scenario_checks.invariants:
        results += check_invariants(events, journal)
    return results + threshold_checks(scenario_checks, measurements)
