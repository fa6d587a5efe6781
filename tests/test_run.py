"""The run's orchestration against a recording backend and adapter: the schedule runs
in order at its offsets, every fault is healed on every exit path (completion, an
exception, SIGINT), teardown always runs, and one seed gives one schedule."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from chaos_fakes import FakeBackend, FakeLinks
from harness.journal import read_journal
from harness.run import EXIT_INTERRUPTED, Run, RunRequest
from harness.scenario import parse_scenario

TOLERANCE_S = 0.25  # the machine is shared: a due action may run this late


def scenario(faults: str, duration_s: float = 0.8, learners: int = 2, extra: str = ""):
    return parse_scenario(f"""
name: fake-run
duration_s: {duration_s}
ready_timeout_s: 2
cluster: {{learners: {learners}, mode: decoupled, preset: tiny}}
{extra}
faults:
{faults}
""")


def run(tmp_path, sc, backend=None, seed=0, name="run", **kw):
    backend = backend or FakeBackend()
    links = FakeLinks()
    req = RunRequest(scenario=sc, seed=seed, backend_name="fake", run_dir=tmp_path / name)
    outcome = Run(req, backend, links_factory=lambda url: links, **kw).execute()
    return outcome, backend, links, read_journal(tmp_path / name / "journal.jsonl")


EVENTS = """
  events:
    - {at_s: 0.1, kind: pause, target: learner-0, duration_s: 0.2}
    - {at_s: 0.2, kind: latency, target: learner-1, latency_ms: 50}
    - {at_s: 0.4, kind: kill, target: learner-1, duration_s: 0.1}
    - {at_s: 0.6, kind: kill, target: learner-0}
"""


def test_schedule_runs_in_order_at_its_offsets_and_heals_on_time(tmp_path):
    outcome, backend, links, journal = run(tmp_path, scenario(EVENTS))
    assert outcome.status == "completed" and backend.torn_down == 1
    ready = next(r["t"] for r in journal if r["kind"] == "ready")
    injects = [r for r in journal if r["kind"] == "fault_inject"]
    assert [(r["fault"], r["target"], r["planned_s"]) for r in injects] == [
        ("pause", "learner-0", 0.1), ("latency", "learner-1", 0.2), ("kill", "learner-1", 0.4),
        ("kill", "learner-0", 0.6)]
    for r in injects:
        assert 0 <= r["t"] - ready - r["planned_s"] < TOLERANCE_S
    heals = {r["fault_id"]: r["t"] - ready for r in journal if r["kind"] == "fault_heal"}
    pause_id, latency_id, kill1_id, kill0_id = (r["fault_id"] for r in injects)
    assert 0.3 <= heals[pause_id] < 0.3 + TOLERANCE_S
    assert 0.5 <= heals[kill1_id] < 0.5 + TOLERANCE_S
    assert heals[latency_id] >= 0.8 and heals[kill0_id] >= 0.8  # healed at the end
    # learner-1 came back after its short kill; learner-0's lasted to the end: no restart
    assert ("start_node", "learner-1") in backend.calls and ("start_node", "learner-0") not in backend.calls
    assert links.toxics("learner-1") == []
    kinds = [r["kind"] for r in journal]
    assert kinds[0] == "run_start" and kinds[-2:] == ["run_end", "teardown"]
    assert kinds.index("ready") < kinds.index("fault_inject")


def test_learners_are_stopped_gracefully_after_every_heal(tmp_path):
    _, backend, _, journal = run(tmp_path, scenario(EVENTS))
    kinds = [(r["kind"], r.get("fault_id", "")) for r in journal]
    last_heal = max(i for i, (k, _) in enumerate(kinds) if k == "fault_heal")
    wind_down = kinds.index(("node_state", None))  # the end's records carry no fault id
    assert last_heal < wind_down
    stops = [c for c in backend.calls if c[0] == "stop"]
    assert {c[1] for c in stops} == {"learner-1", "syncer"}  # learner-0 was down already
    assert stops[-1] == ("stop", "syncer") and backend.calls[-1] == ("teardown",)


def test_a_fault_that_raises_still_heals_everything_and_tears_down(tmp_path):
    faults = """
  events:
    - {at_s: 0.05, kind: latency, target: learner-1, latency_ms: 50}
    - {at_s: 0.1, kind: pause, target: learner-0, duration_s: 4}
"""
    outcome, backend, links, journal = run(tmp_path, scenario(faults, duration_s=5),
                                           backend=FakeBackend(fail_on="pause"))
    assert outcome.status == "infra_failed" and outcome.exit_code == 3
    assert "injected failure in pause" in outcome.reason
    assert ("resume", "learner-0") in backend.calls and links.toxics("learner-1") == []
    assert backend.torn_down == 1
    healed = {r["fault_id"] for r in journal if r["kind"] == "fault_heal"}
    assert healed == {r["fault_id"] for r in journal if r["kind"] == "fault_inject"}
    assert [r["status"] for r in journal if r["kind"] == "run_end"] == ["infra_failed"]


def test_sigint_interrupts_heals_and_tears_down(tmp_path):
    faults = """
  events:
    - {at_s: 0.0, kind: pause, target: learner-0, duration_s: 30}
    - {at_s: 0.0, kind: link_down, target: learner-1}
"""
    def interrupt_soon(the_run):
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    started = time.monotonic()
    outcome, backend, links, journal = run(tmp_path, scenario(faults, duration_s=60), on_ready=interrupt_soon)
    assert time.monotonic() - started < 10
    assert outcome.status == "interrupted" and outcome.exit_code == EXIT_INTERRUPTED
    assert ("resume", "learner-0") in backend.calls and links.enabled["learner-1"] is True
    assert backend.torn_down == 1
    assert [r["status"] for r in journal if r["kind"] == "run_end"] == ["interrupted"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_learners_that_never_join_fail_the_run_by_its_deadline(tmp_path):
    sc = scenario("  events: []", duration_s=1)
    started = time.monotonic()
    outcome, backend, _, journal = run(tmp_path, sc, backend=FakeBackend(join=False))
    assert outcome.status == "infra_failed" and "did not join within 2 s" in outcome.reason
    assert 1.9 < time.monotonic() - started < 8
    assert backend.torn_down == 1 and not any(r["kind"] == "ready" for r in journal)


def test_a_learner_that_dies_before_joining_fails_fast(tmp_path):
    class DiesAtStart(FakeBackend):
        def start(self, spec):
            super().start(spec)
            self.running["learner-1"] = False
    sc = scenario("  events: []", duration_s=1)
    outcome, _, _, _ = run(tmp_path, sc, backend=DiesAtStart(join=False))
    assert outcome.status == "infra_failed" and "learner-1 exited" in outcome.reason


def test_disconnect_on_the_local_backend_is_refused_before_anything_starts(tmp_path):
    from harness.errors import ConfigError
    sc = scenario("  events:\n    - {at_s: 0.1, kind: disconnect, target: learner-0, duration_s: 0.5}")
    backend = FakeBackend()
    req = RunRequest(scenario=sc, seed=0, backend_name="local", run_dir=tmp_path / "r")
    outcome = Run(req, backend, links_factory=lambda url: FakeLinks()).execute()
    assert outcome.status == "infra_failed" and isinstance(outcome.error, ConfigError)
    assert outcome.exit_code == 2 and backend.calls == []


RANDOM = """
  random:
    - {kind: pause, targets: learners, mtbf_s: 0.3, duration: {uniform: [0.05, 0.1]}}
    - {kind: latency, targets: [learner-1], mtbf_s: 0.4, duration: 0.1, latency_ms: 20}
"""


def _planned(journal):
    return [(r["fault_id"], r["fault"], r["target"], r["planned_s"], r["params"])
            for r in journal if r["kind"] == "fault_inject"]


def test_same_seed_injects_the_same_faults_at_the_same_offsets(tmp_path):
    sc = scenario(RANDOM, duration_s=1.2, learners=3)
    _, _, _, first = run(tmp_path, sc, seed=7, name="a")
    _, _, _, second = run(tmp_path, sc, seed=7, name="b")
    _, _, _, other = run(tmp_path, sc, seed=8, name="c")
    assert len(_planned(first)) >= 3
    assert _planned(first) == _planned(second)
    assert _planned(first) != _planned(other)
    for journal in (first, second):  # and each was injected on time
        ready = next(r["t"] for r in journal if r["kind"] == "ready")
        for r in journal:
            if r["kind"] == "fault_inject":
                assert 0 <= r["t"] - ready - r["planned_s"] < TOLERANCE_S


def test_baseline_links_become_toxics_before_ready(tmp_path):
    sc = scenario("  events: []", duration_s=0.1,
                  extra="links: {default: {latency_ms: 40, jitter_ms: 5, bandwidth_kbps: 500}}")
    _, _, links, _ = run(tmp_path, sc)
    names = sorted(t.name for t in links.toxics("learner-0"))
    assert names == ["baseline-bandwidth-downstream", "baseline-bandwidth-upstream",
                     "baseline-latency-downstream", "baseline-latency-upstream"]
    lat = next(t for t in links.toxics("learner-1") if t.type == "latency")
    assert lat.attributes == {"latency": 40, "jitter": 5}
