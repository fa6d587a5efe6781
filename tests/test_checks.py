"""SPEC §3 invariants and threshold checks against hand-made histories with known verdicts."""
from __future__ import annotations

import dataclasses
import math

import pytest

from harness import checks as C
from harness.checks import CheckResult, Verdict, check_invariants, overall, run_checks
from harness.measure import Measurements, Reconnect, Rejoin, measure
from harness.model import Checks
from history_builders import History, clean_history, contributor


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_clean_history_passes_every_invariant():
    h = clean_history()
    results = check_invariants(h.events, h.journal)
    assert len(results) == 7
    assert [r.verdict for r in results] == [Verdict.PASS] * 7, [r.detail for r in results]
    assert overall(results) is Verdict.PASS


def test_without_journal_only_items_1_to_6_are_checked():
    h = clean_history()
    names = [r.name for r in check_invariants(h.events)]
    assert len(names) == 6 and "invariant:nothing_left_behind" not in names


def test_empty_event_log_is_unknown_not_pass():
    results = check_invariants([], None)
    assert {r.verdict for r in results} == {Verdict.UNKNOWN}


def test_overall_priority_fail_beats_unknown_beats_pass():
    p = CheckResult("a", Verdict.PASS, "", 1)
    u = CheckResult("b", Verdict.UNKNOWN, "", None)
    f = CheckResult("c", Verdict.FAIL, "", 0)
    assert overall([p, u, f]) is Verdict.FAIL
    assert overall([p, u]) is Verdict.UNKNOWN
    assert overall([p, p]) is Verdict.PASS
    assert overall([]) is Verdict.UNKNOWN
    assert (p.passed, u.passed, f.passed) == (True, None, False)


# --- 1. merged at most once -----------------------------------------------------------

def test_double_merge_of_one_key_fails():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "L0-F0-R0", (0, 100))])  # retried push counted again
    r = C.merged_at_most_once(h.events)
    assert r.verdict is Verdict.FAIL and "L0-F0-R0" in r.detail


def test_key_of_a_voided_merge_may_be_merged_again():
    h = clean_history(rounds=1, fragments=1)
    h.rollback(10.0, [0], [(0, 1)])
    h.merge(11.0, 0, 1, [contributor(0, "L0-F0-R0", (0, 100)), contributor(1, "L1-F0-R0", (0, 100))])
    assert C.merged_at_most_once(h.events).verdict is Verdict.PASS


# --- 2. versions only increase ----------------------------------------------------------

def test_merge_version_going_backwards_fails():
    h = clean_history()
    h.merge(100.0, 1, 2, [contributor(0, "new", (300, 400))])  # fragment 1 is at v3
    r = C.versions_only_increase(h.events)
    assert r.verdict is Verdict.FAIL and "fragment 1 merged v2 after v3" in r.detail


def test_rollback_is_the_allowed_decrease():
    h = clean_history()
    h.rollback(100.0, [1, 1], [(0, 2), (0, 3), (1, 2), (1, 3)])
    h.merge(101.0, 0, 2, [contributor(0, "again", (100, 200))])
    h.apply(101.5, 0, 0, 2)
    assert C.versions_only_increase(h.events).verdict is Verdict.PASS


def test_merge_at_or_below_rollback_target_still_fails():
    h = clean_history()
    h.rollback(100.0, [1, 1], [(0, 2), (0, 3)])
    h.merge(101.0, 0, 1, [contributor(0, "again", (100, 200))])
    assert C.versions_only_increase(h.events).verdict is Verdict.FAIL


def test_learner_applying_older_version_fails():
    h = clean_history()
    h.apply(100.0, 1, 0, 2)  # learner 1 already applied fragment 0 v3
    r = C.versions_only_increase(h.events)
    assert r.verdict is Verdict.FAIL and "learner 1 applied fragment 0 v2 after v3" in r.detail


# --- 3. no bad update ------------------------------------------------------------------

def test_nan_update_norm_merged_fails():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "k", (300, 400))], update_norm=math.nan)
    r = C.no_bad_update_merged(h.events)
    assert r.verdict is Verdict.FAIL and "nan" in r.detail


def test_corrupt_push_rejected_passes_and_merged_fails():
    ok = clean_history()
    ok.corrupt(100.0, 0, 0, "nan")
    ok.push(100.2, 0, 0, "bad", (300, 400))
    ok.reject(100.3, 0, 0, "bad", "nan", (300, 400), tokens=100)
    assert C.no_bad_update_merged(ok.events).verdict is Verdict.PASS

    bad = clean_history()
    bad.corrupt(100.0, 0, 0, "norm")
    bad.push(100.2, 0, 0, "bad", (300, 400))
    bad.merge(100.5, 0, 4, [contributor(0, "bad", (300, 400))], update_norm=1e9)
    r = C.no_bad_update_merged(bad.events)
    assert r.verdict is Verdict.FAIL and "key bad" in r.detail


def test_key_rejected_as_nan_and_merged_fails():
    h = clean_history()
    h.reject(1.0, 0, 0, "L0-F0-R0", "nan")
    assert C.no_bad_update_merged(h.events).verdict is Verdict.FAIL


def test_corrupt_push_that_never_arrived_is_unknown():
    h = clean_history()
    h.corrupt(100.0, 1, 1, "nan")
    assert C.no_bad_update_merged(h.events).verdict is Verdict.UNKNOWN


# --- 4. acked merges survive a crash ----------------------------------------------------

def test_restart_restoring_acked_versions_passes():
    h = clean_history()
    h.syncer_start(100.0, [3, 3], restored=True)
    r = C.acked_merges_survive(h.events)
    assert r.verdict is Verdict.PASS and "1 synchronizer restarts" in r.detail


def test_acked_merge_lost_after_restart_fails():
    h = clean_history()
    h.syncer_start(100.0, [3, 2], restored=True)
    r = C.acked_merges_survive(h.events)
    assert r.verdict is Verdict.FAIL and "fragment 1: v3 acknowledged" in r.detail


def test_restart_without_restore_loses_acked_merges():
    h = clean_history()
    h.syncer_start(100.0, [0, 0], restored=False)
    assert C.acked_merges_survive(h.events).verdict is Verdict.FAIL


def test_unacked_merge_lost_in_crash_is_allowed_and_its_retry_is_not_a_double_merge():
    h = clean_history(rounds=1, fragments=1, learners=1)
    h.merge(10.0, 0, 2, [contributor(0, "k2", (100, 200))])  # merged, crash before checkpoint/ack
    h.syncer_start(11.0, [1], restored=True)
    h.merge(12.0, 0, 2, [contributor(0, "k2", (100, 200))])  # the learner's retry
    h.ack(12.1, 0, 0, "k2", 2)
    results = by_name(check_invariants(h.events))
    assert {r.verdict for r in results.values()} == {Verdict.PASS}, {k: v.detail for k, v in results.items()}


# --- 5. ranges ---------------------------------------------------------------------------

def test_overlapping_merged_ranges_fail():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "x", (250, 350))])  # [200, 300) already merged
    r = C.ranges_exact(h.events)
    assert r.verdict is Verdict.FAIL and "overlaps" in r.detail


def test_gap_in_merged_ranges_fails():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "x", (400, 500))])  # [300, 400) skipped
    r = C.ranges_exact(h.events)
    assert r.verdict is Verdict.FAIL and "tokens [300, 400) neither merged nor dropped" in r.detail


def test_gap_covered_by_a_discarded_range_passes():
    h = clean_history()
    h.reject(99.0, 0, 0, "stale", "stale", (300, 400), tokens=100)
    h.discard(99.1, 0, 0, (300, 400))
    h.merge(100.0, 0, 4, [contributor(0, "x", (400, 500))])
    assert C.ranges_exact(h.events).verdict is Verdict.PASS


def test_gap_at_shard_start_fails():
    h = History()
    h.join(0.0, 0)
    h.merge(1.0, 0, 1, [contributor(0, "a", (100, 200))])
    assert C.ranges_exact(h.events).verdict is Verdict.FAIL


# --- 6. authenticated only -------------------------------------------------------------

def test_merge_from_learner_that_never_joined_fails():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(5, "intruder", (0, 100))])
    r = C.authenticated_only(h.events)
    assert r.verdict is Verdict.FAIL and "learner 5" in r.detail


def test_merge_from_unjoined_incarnation_fails():
    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "new", (300, 400), incarnation=1)])
    assert C.authenticated_only(h.events).verdict is Verdict.FAIL
    h.events.insert(len(h.events) - 1, {**h.events[0], "ev": "join", "learner": 0, "incarnation": 1,
                                        "t": h.events[-1]["t"] - 1})
    assert C.authenticated_only(h.events).verdict is Verdict.PASS


def test_key_rejected_for_auth_and_merged_fails():
    h = clean_history()
    h.reject(1.0, 1, 0, "L1-F0-R1", "auth")
    r = C.authenticated_only(h.events)
    assert r.verdict is Verdict.FAIL and "rejected for auth" in r.detail


# --- 7. nothing left behind ------------------------------------------------------------

def test_leftovers_fail_and_missing_teardown_is_unknown():
    h = clean_history()
    h.journal[-1]["leftovers"] = ["process learner-2 (pid 4242)"]
    r = C.nothing_left_behind(h.journal)
    assert r.verdict is Verdict.FAIL and "learner-2" in r.detail
    no_teardown = [r for r in h.journal if r["kind"] != "teardown"]
    assert C.nothing_left_behind(no_teardown).verdict is Verdict.UNKNOWN


# --- thresholds ----------------------------------------------------------------------------

def base_measurements(**changes) -> Measurements:
    h = clean_history()
    return dataclasses.replace(measure(h.events, h.journal, learners=2), **changes)


@pytest.mark.parametrize("field,check,bound,value,verdict", [
    ("goodput", "goodput_min", 0.5, 0.6, Verdict.PASS),
    ("goodput", "goodput_min", 0.5, 0.4, Verdict.FAIL),
    ("goodput", "goodput_min", 0.5, None, Verdict.UNKNOWN),
    ("goodput_efficiency", "goodput_efficiency_min", 0.85, 0.85, Verdict.PASS),
    ("goodput_efficiency", "goodput_efficiency_min", 0.85, 0.849, Verdict.FAIL),
    ("max_global_stall_s", "max_stall_s", 10.0, 9.0, Verdict.PASS),
    ("max_global_stall_s", "max_stall_s", 10.0, 11.0, Verdict.FAIL),
    ("quality_gap", "quality_gap_max", 0.05, 0.01, Verdict.PASS),
    ("quality_gap", "quality_gap_max", 0.05, 0.2, Verdict.FAIL),
    ("quality_gap", "quality_gap_max", 0.05, None, Verdict.UNKNOWN),
])
def test_threshold_checks(field, check, bound, value, verdict):
    m = base_measurements(**{field: value})
    results = C.threshold_checks(Checks(**{check: bound}), m)
    assert len(results) == 1 and results[0].verdict is verdict
    assert results[0].actual == value


def test_eval_loss_drop_from_first_to_last_eval():
    m = base_measurements()  # evals 5.0, 4.0, 3.0: drop 0.4
    assert C.threshold_checks(Checks(eval_loss_drop_min=0.4), m)[0].verdict is Verdict.PASS
    assert C.threshold_checks(Checks(eval_loss_drop_min=0.41), m)[0].verdict is Verdict.FAIL
    one = dataclasses.replace(m, evals=1)
    assert C.threshold_checks(Checks(eval_loss_drop_min=0.1), one)[0].verdict is Verdict.UNKNOWN


def rejoin(first_step, first_merge, observed=60.0):
    return Rejoin(learner=1, restart_t=0.0, at_s=20.0, incarnation=1, to_first_step_s=first_step,
                  to_first_merge_s=first_merge, observed_s=observed)


@pytest.mark.parametrize("rejoins,verdict", [
    ((), Verdict.PASS),  # no restart: vacuous
    ((rejoin(5.0, 12.0),), Verdict.PASS),
    ((rejoin(5.0, 12.0), rejoin(8.0, 31.0)), Verdict.FAIL),
    ((rejoin(31.0, None),), Verdict.FAIL),
    ((rejoin(5.0, None, observed=60.0),), Verdict.FAIL),  # never merged though it had time
    ((rejoin(5.0, None, observed=10.0),), Verdict.UNKNOWN),  # the run ended first
])
def test_rejoin_check(rejoins, verdict):
    r = C.rejoin_check(base_measurements(rejoins=rejoins), 30.0)
    assert r.verdict is verdict, r.detail
    if not rejoins:
        assert "no restarts" in r.detail


def reconnect(first_merge, observed=60.0):
    return Reconnect(learner=2, fault_id="f001-link_down-learner-2", heal_t=0.0, at_s=30.0,
                     to_first_merge_s=first_merge, observed_s=observed)


@pytest.mark.parametrize("reconnects,verdict", [
    ((), Verdict.PASS),  # no cut link: vacuous
    ((reconnect(3.0),), Verdict.PASS),
    ((reconnect(3.0), reconnect(21.0)), Verdict.FAIL),
    ((reconnect(None, observed=60.0),), Verdict.FAIL),  # never merged again though it had time
    ((reconnect(None, observed=5.0),), Verdict.UNKNOWN),  # the run ended first
])
def test_reconnect_check(reconnects, verdict):
    r = C.reconnect_check(base_measurements(reconnects=reconnects), 20.0)
    assert r.verdict is verdict, r.detail
    assert C.threshold_checks(Checks(reconnect_max_s=20.0), base_measurements(reconnects=reconnects))[0].name \
        == "reconnect"


def test_run_checks_combines_invariants_thresholds_and_status():
    h = clean_history()
    m = measure(h.events, h.journal, learners=2)
    results = run_checks(Checks(goodput_min=0.0), m, h.events, h.journal, status="completed")
    names = [r.name for r in results]
    assert names[0] == "run_completed" and len(names) == 1 + 7 + 1 and names[-1] == "goodput"
    assert overall(results) is Verdict.PASS
    no_inv = run_checks(Checks(goodput_min=0.0, invariants=False), m, h.events, h.journal)
    assert [r.name for r in no_inv] == ["goodput"]
    interrupted = run_checks(Checks(), m, h.events, h.journal, status="interrupted")
    assert overall(interrupted) is Verdict.UNKNOWN
    assert interrupted[0].as_dict()["passed"] is None


def test_verdicts_survive_the_jsonl_round_trip(tmp_path):
    """Checks read what the real writers leave on disk: NaN as JSON's NaN token, and a
    torn last line from a killed writer (skipped by the reader)."""
    import json

    from harness.journal import read_journal
    from trainers.events import read_events

    h = clean_history()
    h.merge(100.0, 0, 4, [contributor(0, "k", (300, 400))], update_norm=math.nan)
    (tmp_path / "events.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in h.events) + '{"t": 1, "src": "learner-0", "ev": "pro')
    (tmp_path / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in h.journal))
    events, journal = read_events(tmp_path / "events.jsonl"), read_journal(tmp_path / "journal.jsonl")
    assert len(events) == len(h.events)
    results = by_name(check_invariants(events, journal))
    assert results["invariant:no_bad_update_merged"].verdict is Verdict.FAIL
    assert results["invariant:nothing_left_behind"].verdict is Verdict.PASS
    assert measure(events, journal, learners=2) == measure(h.events, h.journal, learners=2)


def test_clean_push_in_flight_before_the_corrupt_one_is_not_blamed():
    h = clean_history()
    h.corrupt(100.0, 0, 0, "nan")
    h.push(100.1, 0, 0, "clean-in-flight", (300, 400))
    h.merge(100.2, 0, 4, [contributor(0, "clean-in-flight", (300, 400))])
    h.push(101.0, 0, 0, "bad", (400, 500))
    h.reject(101.1, 0, 0, "bad", "nan", (400, 500), tokens=100)
    assert C.no_bad_update_merged(h.events).verdict is Verdict.PASS
