"""Learner signals through a real process: SIGUSR1 / SIGUSR2 corrupt the next push
(NaN / huge norm), which the synchronizer rejects without touching the global model;
SIGTERM stops the learner gracefully (exit 0, ``learner_stop``)."""
from __future__ import annotations

import signal

import pytest

from harness.checks import Verdict, check_invariants
from tests.trainer_procs import Cluster
from trainers import launch
from trainers.config import TrainerConfig

pytestmark = pytest.mark.slow


def test_corrupt_pushes_are_rejected_and_sigterm_stops_cleanly(tmp_path):
    cfg = TrainerConfig(learners=1, quorum=1, fragments=2, sync_every=8, eval_every_s=60.0, batch_size=4)
    c = Cluster(tmp_path / "run", cfg)
    try:
        c.start_syncer()
        p = c.start_learner(0)
        c.wait(lambda e: e.get("ev") == "merge", what="a first merge")
        for sig, kind in ((signal.SIGUSR1, "nan"), (signal.SIGUSR2, "norm")):
            launch.signal_group(p, sig)
            corrupt = c.wait(lambda e, kind=kind: e.get("ev") == "corrupt" and e.get("kind") == kind,
                             what=f"corrupt {kind}")
            c.wait(lambda e, kind=kind: e.get("ev") == "reject" and e.get("reason") == kind
                   and e["t"] >= corrupt["t"], what=f"reject {kind}")
            c.wait(lambda e, kind=kind: e.get("ev") == "discard" and e.get("reason") == kind,
                   what=f"learner discards its {kind} push")
        seen = {"n": 0}

        def merges_after(e):
            seen["n"] += e.get("ev") == "merge" and e["t"] > corrupt["t"]
            return seen["n"] >= 3
        c.wait(merges_after, what="training on after the corrupt pushes")
        for _ in range(20):  # a burst, as stop paths send: a handler must survive re-entry
            launch.signal_group(p, signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    finally:
        c.close()
    events = c.events()
    assert [e["reason"] for e in events if e["ev"] == "learner_stop"] == ["stopped"]
    assert all(e["update_norm"] < 1e3 for e in events if e["ev"] == "merge")
    results = {r.name: r for r in check_invariants(events)}
    assert results["invariant:no_bad_update_merged"].verdict is Verdict.PASS
    assert all(r.verdict is not Verdict.FAIL for r in results.values())
