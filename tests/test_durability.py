"""Crash recovery through real processes: kill -9 of the synchronizer loses no
acknowledged merge, and a learner killed and restarted resumes right after its last
merged data range (SPEC §3 items 4 and 5)."""
from __future__ import annotations

import pytest

from harness.checks import Verdict, check_invariants
from tests.trainer_procs import Cluster
from trainers import launch
from trainers.config import TrainerConfig
from trainers.store import DurableStore

pytestmark = pytest.mark.slow

CFG = TrainerConfig(learners=2, quorum=1, fragments=2, sync_every=8, eval_every_s=60.0, rpc_timeout_s=3.0,
                    batch_size=4)


def _count(events, ev, **match):
    return sum(1 for e in events if e.get("ev") == ev and all(e.get(k) == v for k, v in match.items()))


def _assert_invariants(events):
    results = check_invariants(events)
    failed = [(r.name, r.detail) for r in results if r.verdict is Verdict.FAIL]
    assert not failed, failed


def test_kill9_syncer_loses_no_acknowledged_merge_and_learners_reconnect(tmp_path):
    c = Cluster(tmp_path / "run", CFG)
    try:
        c.start_syncer()
        for i in range(2):
            c.start_learner(i)
        seen = {"acks": 0}

        def enough_acks(e):
            seen["acks"] += e.get("ev") == "ack"
            return seen["acks"] >= 8
        c.wait(enough_acks, what="8 acks")
        launch.kill(c.syncer)
        before = c.events()
        killed_at = before[-1]["t"]
        acks = [e for e in before if e["ev"] == "ack"]
        # Learners keep training while the synchronizer is gone (decoupled never blocks).
        for i in range(2):
            c.wait(lambda e, i=i: e.get("ev") == "progress" and e["learner"] == i and e["t"] > killed_at + 1.0,
                   what=f"learner {i} training while the synchronizer is down", timeout_s=30)
        start = c.start_syncer()
        assert start["restored"] is True
        store = DurableStore(c.dir)
        for a in acks:
            assert start["versions"][a["fragment"]] >= a["version"], a
            assert a["key"] in store.load_fragment(a["fragment"]).merged_keys, a
        n_before = len(before)

        def merged_after_restart(e, who=set()):
            if e.get("ev") == "merge" and e["t"] > start["t"]:
                who.update(x["learner"] for x in e["contributors"])
            return who == {0, 1}
        c.wait(merged_after_restart, what="both learners merged after the restart")
    finally:
        c.close()
    events = c.events()
    assert _count(events, "restore") == 1 and len(events) > n_before
    # Learners did not rejoin: they kept their incarnation and just retried.
    assert _count(events, "join") == 2
    assert any(e["ev"] == "retry" and e["op"] == "push" for e in events)
    _assert_invariants(events)


def test_restarted_learner_resumes_after_its_last_merged_range(tmp_path):
    c = Cluster(tmp_path / "run", CFG)
    try:
        c.start_syncer()
        for i in range(2):
            c.start_learner(i)
        seen = {"n": 0}

        def merges_of_0(e):
            if e.get("ev") == "merge":
                seen["n"] += any(x["learner"] == 0 for x in e["contributors"])
            return seen["n"] >= 4
        c.wait(merges_of_0, what="4 merges with learner 0")
        launch.kill(c.learners[0])
        c.start_learner(0)
        join = c.wait(lambda e: e.get("ev") == "join" and e.get("learner") == 0 and e.get("incarnation") == 1,
                      what="learner 0 rejoined")
        first = c.wait(lambda e: e.get("ev") == "merge" and any(
            x["learner"] == 0 and x["incarnation"] == 1 for x in e["contributors"]),
            what="learner 0's first merge after the restart")
    finally:
        c.close()
    events = c.events()
    upto = events[:events.index(join)]
    ends = [0] * len(join["since"])
    for m in (e for e in upto if e["ev"] == "merge"):
        for x in m["contributors"]:
            if x["learner"] == 0:
                ends[m["fragment"]] = max(ends[m["fragment"]], x["range"][1])
    assert join["since"] == ends and join["resume_cursor"] == min(ends) > 0
    joined = next(e for e in events if e["ev"] == "joined" and e["learner"] == 0 and e["incarnation"] == 1)
    assert joined["resume_cursor"] == min(ends)
    contrib = next(x for x in first["contributors"] if x["learner"] == 0)
    assert contrib["range"][0] == ends[first["fragment"]]
    _assert_invariants(events)
