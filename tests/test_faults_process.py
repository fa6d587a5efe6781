"""Process faults through the registry against a recording backend: what each inject
does, that heal undoes it, that heal is idempotent and runs after a partial inject."""
from __future__ import annotations

import signal

import pytest

from chaos_fakes import FakeBackend, FakeLinks
from faults import registry
from faults.base import FaultContext
from harness.backend import Unsupported
from harness.errors import ConfigError
from harness.journal import Journal, read_journal


def _fault(tmp_path, kind, target="learner-1", params=None, backend=None):
    backend = backend or FakeBackend()
    backend.running = {"syncer": True, "learner-0": True, "learner-1": True}
    journal = Journal(tmp_path / "journal.jsonl")
    ctx = FaultContext(backend=backend, links=FakeLinks(), journal=journal, fault_id=f"f1-{kind}",
                       target=target, params=params or {})
    return registry.ActiveFault(registry.create(kind), ctx, planned_s=1.5), backend


def _kinds(tmp_path):
    return [(r["kind"], r.get("state")) for r in read_journal(tmp_path / "journal.jsonl")]


def test_kill_then_heal_restarts_once_and_journals_each_step(tmp_path):
    active, backend = _fault(tmp_path, "kill")
    active.inject()
    assert not backend.is_running("learner-1")
    active.heal()
    active.heal()  # idempotent
    assert [c for c in backend.calls if c[0] in ("kill", "start_node")] == [("kill", "learner-1"),
                                                                            ("start_node", "learner-1")]
    assert _kinds(tmp_path) == [("fault_inject", None), ("node_state", "down"), ("node_state", "up"),
                                ("fault_heal", None)]
    inject = read_journal(tmp_path / "journal.jsonl")[0]
    assert inject["planned_s"] == 1.5 and inject["target"] == "learner-1" and inject["fault"] == "kill"


def test_final_heal_of_a_kill_leaves_the_node_down(tmp_path):
    active, backend = _fault(tmp_path, "kill")
    active.inject()
    active.heal(final=True)
    assert ("start_node", "learner-1") not in backend.calls
    assert _kinds(tmp_path)[-1] == ("fault_heal", None)


def test_stop_is_graceful_and_heal_starts_the_node(tmp_path):
    active, backend = _fault(tmp_path, "stop")
    active.inject()
    active.heal()
    assert [c[0] for c in backend.calls] == ["stop", "start_node"]


def test_heal_of_a_kill_does_not_start_a_node_that_is_already_running(tmp_path):
    active, backend = _fault(tmp_path, "kill")
    active.inject()
    backend.running["learner-1"] = True  # something else brought it back
    active.heal()
    assert ("start_node", "learner-1") not in backend.calls


def test_pause_resume_and_heal_after_a_failed_inject(tmp_path):
    active, backend = _fault(tmp_path, "pause", backend=FakeBackend(fail_on="pause"))
    with pytest.raises(RuntimeError):
        active.inject()
    active.heal()  # a partial inject is still healed
    active.heal()
    assert [c[0] for c in backend.calls] == ["pause", "resume"]
    assert [k for k, _ in _kinds(tmp_path)].count("fault_heal") == 1


def test_heal_without_inject_does_nothing(tmp_path):
    active, backend = _fault(tmp_path, "pause")
    active.heal()
    assert backend.calls == [] and _kinds(tmp_path) == []


def test_throttle_sets_the_share_and_heal_restores_the_baseline(tmp_path):
    active, backend = _fault(tmp_path, "throttle", params={"cpu_share": 0.25})
    active.inject()
    active.heal()
    assert [c for c in backend.calls if c[0] == "throttle"] == [("throttle", "learner-1", 0.25),
                                                                ("throttle", "learner-1", None)]
    states = [r for r in read_journal(tmp_path / "journal.jsonl") if r["kind"] == "node_state"]
    assert [(s["state"], s["cpu_share"]) for s in states] == [("throttled", 0.25), ("up", 1.0)]


def test_throttle_without_a_share_is_bad_input(tmp_path):
    active, _ = _fault(tmp_path, "throttle")
    with pytest.raises(ConfigError, match="cpu_share"):
        active.inject()


def test_syncer_crash_kills_and_restarts_the_synchronizer_whatever_the_target(tmp_path):
    active, backend = _fault(tmp_path, "syncer_crash", target="syncer")
    active.inject()
    active.heal()
    assert [c for c in backend.calls if c[0] in ("kill", "start_node")] == [("kill", "syncer"),
                                                                            ("start_node", "syncer")]


@pytest.mark.parametrize("value, signum", [("nan", signal.SIGUSR1), ("norm", signal.SIGUSR2)])
def test_corrupt_sends_the_learners_corruption_signal(tmp_path, value, signum):
    active, backend = _fault(tmp_path, "corrupt", params={"value": value})
    active.inject()
    active.heal()
    assert backend.calls == [("signal", "learner-1", signum)]


def test_corrupt_with_an_unknown_value_is_bad_input(tmp_path):
    active, _ = _fault(tmp_path, "corrupt", params={"value": "zeros"})
    with pytest.raises(ConfigError, match="nan or norm"):
        active.inject()


def test_disconnect_on_a_backend_without_networks_is_unsupported(tmp_path):
    active, _ = _fault(tmp_path, "disconnect")
    with pytest.raises(Unsupported):
        active.inject()


def test_unknown_kind_names_the_known_ones():
    with pytest.raises(ConfigError, match="kill"):
        registry.create("meteor")


def test_every_fault_kind_of_the_model_has_an_injector():
    from harness.model import FaultKind
    assert registry.kinds() == sorted(k.value for k in FaultKind)
