"""Recording fakes for the backend and the Toxiproxy adapter (orchestration tests).

They record every call in order, model just enough state (running, paused, enabled,
toxics) for heal to be checked as idempotent, and can be told to fail on a call.
FakeBackend.start writes a ``joined`` event per learner, as real learners would.
"""
from __future__ import annotations

from pathlib import Path

from faults.link_adapter import ToxicInfo
from harness.backend import ClusterSpec, Unsupported
from trainers.events import EventLog


class FakeBackend:
    name = "fake"

    def __init__(self, *, fail_on: str | None = None, join: bool = True) -> None:
        self.calls: list[tuple] = []
        self.running: dict[str, bool] = {}
        self.paused: set[str] = set()
        self.shares: dict[str, float | None] = {}
        self.fail_on = fail_on
        self.join = join
        self.torn_down = 0

    def _call(self, *call) -> None:
        self.calls.append(call)
        if self.fail_on == call[0]:
            raise RuntimeError(f"injected failure in {call[0]}")

    def start(self, spec: ClusterSpec) -> None:
        self._call("start", spec.run_id)
        self.running = {"syncer": True, "toxiproxy": True, **{n: True for n in spec.learner_names}}
        if self.join:
            for i, name in enumerate(spec.learner_names):
                with EventLog(Path(spec.run_dir) / "events.jsonl", name) as log:
                    log.emit("joined", learner=i, incarnation=0, resume_cursor=0, versions=[0])

    def toxiproxy_url(self) -> str:
        return "http://fake-toxiproxy"

    def control_url(self) -> str:
        return "http://fake-control"

    def is_running(self, node: str) -> bool:
        return self.running.get(node, False)

    def kill(self, node: str) -> None:
        self._call("kill", node)
        self.running[node] = False

    def stop(self, node: str, timeout_s: float = 10.0) -> None:
        self._call("stop", node)
        self.running[node] = False

    def start_node(self, node: str) -> None:
        self._call("start_node", node)
        self.running[node] = True

    def pause(self, node: str) -> None:
        self._call("pause", node)
        self.paused.add(node)

    def resume(self, node: str) -> None:
        self._call("resume", node)
        self.paused.discard(node)

    def throttle(self, node: str, cpu_share: float | None) -> None:
        self._call("throttle", node, cpu_share)
        self.shares[node] = cpu_share

    def baseline_cpu_share(self, node: str) -> float | None:
        return None

    def signal(self, node: str, signum: int) -> None:
        self._call("signal", node, signum)

    def disconnect_network(self, node: str) -> None:
        raise Unsupported("fake backend")

    def reconnect_network(self, node: str) -> None:
        raise Unsupported("fake backend")

    def teardown(self) -> list[str]:
        self.calls.append(("teardown",))
        self.torn_down += 1
        self.running = {k: False for k in self.running}
        return []

    def leftovers(self) -> list[str]:
        return [n for n, up in self.running.items() if up]


class FakeLinks:
    def __init__(self, url: str = "http://fake", *, fail_on: str | None = None) -> None:
        self.url = url
        self.calls: list[tuple] = []
        self.enabled: dict[str, bool] = {}
        self.toxic: dict[str, dict[str, ToxicInfo]] = {}
        self.fail_on = fail_on

    def _call(self, *call) -> None:
        self.calls.append(call)
        if self.fail_on == call[0]:
            raise RuntimeError(f"injected failure in {call[0]}")

    def set_enabled(self, name: str, enabled: bool) -> None:
        self._call("set_enabled", name, enabled)
        self.enabled[name] = enabled

    def add_toxic(self, proxy: str, *, name: str, type: str, stream: str = "downstream",
                  toxicity: float = 1.0, attributes=None) -> ToxicInfo:
        self._call("add_toxic", proxy, name, type, stream, dict(attributes or {}))
        info = ToxicInfo(name, type, stream, toxicity, dict(attributes or {}))
        self.toxic.setdefault(proxy, {})[name] = info
        return info

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call("remove_toxic", proxy, name)
        del self.toxic[proxy][name]

    def toxics(self, proxy: str) -> list[ToxicInfo]:
        return list(self.toxic.get(proxy, {}).values())
