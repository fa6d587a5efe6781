"""Link faults against a recording adapter (toxic types, attributes, directions, names
derived from the fault id, idempotent heal, flapping that stops at heal), then through
our real Toxiproxy server on loopback: a latency fault slows a real TCP round trip and
link_down refuses it, each until healed."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

from chaos_fakes import FakeBackend, FakeLinks
from faults import registry
from faults.base import FaultContext
from harness.errors import ConfigError
from harness.journal import Journal, read_journal


def _fault(tmp_path, kind, params, links=None):
    links = links or FakeLinks()
    ctx = FaultContext(backend=FakeBackend(), links=links, journal=Journal(tmp_path / "journal.jsonl"),
                       fault_id=f"f2-{kind}", target="learner-0", params=params)
    return registry.ActiveFault(registry.create(kind), ctx), links


@pytest.mark.parametrize("kind, params, toxic, attrs", [
    ("latency", {"latency_ms": 120, "jitter_ms": 15}, "latency", {"latency": 120, "jitter": 15}),
    ("bandwidth", {"rate_kbps": 64}, "bandwidth", {"rate": 64}),
    ("timeout", {"timeout_ms": 0}, "timeout", {"timeout": 0}),
    ("reset_peer", {"timeout_ms": 50}, "reset_peer", {"timeout": 50}),
    ("limit_data", {"bytes": 4096}, "limit_data", {"bytes": 4096}),
    ("slicer", {"average_size": 100, "size_variation": 10, "delay_us": 5}, "slicer",
     {"average_size": 100, "size_variation": 10, "delay": 5}),
    ("slow_close", {"delay_ms": 300}, "slow_close", {"delay": 300}),
])
def test_toxic_is_added_in_both_directions_and_removed_by_heal(tmp_path, kind, params, toxic, attrs):
    active, links = _fault(tmp_path, kind, params)
    active.inject()
    added = [c for c in links.calls if c[0] == "add_toxic"]
    assert added == [("add_toxic", "learner-0", f"f2-{kind}-upstream", toxic, "upstream", attrs),
                     ("add_toxic", "learner-0", f"f2-{kind}-downstream", toxic, "downstream", attrs)]
    active.heal()
    active.heal()
    assert links.toxics("learner-0") == []
    assert len([c for c in links.calls if c[0] == "remove_toxic"]) == 2


def test_one_direction_only(tmp_path):
    active, links = _fault(tmp_path, "latency", {"latency_ms": 10, "direction": "upstream"})
    active.inject()
    assert [t.stream for t in links.toxics("learner-0")] == ["upstream"]


def test_heal_leaves_other_toxics_alone(tmp_path):
    links = FakeLinks()
    links.add_toxic("learner-0", name="baseline-latency-upstream", type="latency", stream="upstream",
                    attributes={"latency": 5})
    active, _ = _fault(tmp_path, "bandwidth", {"rate_kbps": 8}, links=links)
    active.inject()
    active.heal()
    assert [t.name for t in links.toxics("learner-0")] == ["baseline-latency-upstream"]


def test_heal_after_a_failed_add_removes_what_got_there(tmp_path):
    class FailSecond(FakeLinks):
        def add_toxic(self, proxy, **kw):
            if kw["stream"] == "downstream":
                raise RuntimeError("server went away")
            return super().add_toxic(proxy, **kw)
    active, links = _fault(tmp_path, "latency", {"latency_ms": 10}, links=FailSecond())
    with pytest.raises(RuntimeError):
        active.inject()
    active.heal()
    assert links.toxics("learner-0") == []


@pytest.mark.parametrize("params, key", [({"latency_ms": -1}, "latency_ms"), ({}, "latency_ms"),
                                         ({"latency_ms": 5, "direction": "sideways"}, "direction"),
                                         ({"latency_ms": 5, "colour": 1}, "colour")])
def test_bad_parameters_name_the_key(tmp_path, params, key):
    active, _ = _fault(tmp_path, "latency", params)
    with pytest.raises(ConfigError, match=key):
        active.inject()


def test_link_down_disables_the_proxy_and_heal_enables_it(tmp_path):
    active, links = _fault(tmp_path, "link_down", {})
    active.inject()
    assert links.enabled == {"learner-0": False}
    active.heal()
    active.heal()
    assert links.enabled == {"learner-0": True}
    states = [r["state"] for r in read_journal(tmp_path / "journal.jsonl") if r["kind"] == "node_state"]
    assert states == ["partitioned", "up"]


def test_flap_toggles_on_its_period_until_healed(tmp_path):
    active, links = _fault(tmp_path, "flap", {"period_s": 0.05})
    active.inject()
    deadline = time.monotonic() + 10
    while len(links.calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    active.heal()
    settled = len(links.calls)
    toggles = [c[2] for c in links.calls]
    assert toggles[:4] == [False, True, False, True]  # strictly alternating from "down"
    assert toggles[-1] is True and links.enabled["learner-0"] is True
    time.sleep(0.2)  # four periods: a still-running flapper would have toggled again
    assert len(links.calls) == settled


# ---- through the real thing: our Toxiproxy server and the adapter on loopback -------



@pytest.fixture
def real_links(tmp_path):
    """Our Toxiproxy server as a child process, an echo server, and proxy learner-0 between."""
    from faults.link_adapter import ToxiproxyAdapter
    from harness import local_proc

    echo = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        echo.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = echo.accept()
            except OSError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    ready = tmp_path / "toxiproxy.addr"
    proc = local_proc.spawn([sys.executable, "-m", "faults.toxiproxy.server", "--host", "127.0.0.1", "--port", "0",
                             "--ready-file", str(ready)], log_path=tmp_path / "toxiproxy.log", env=dict(os.environ))
    try:
        addr = local_proc.wait_for_file_text(ready, timeout_s=30, alive=lambda: proc.poll() is None)
        links = ToxiproxyAdapter(f"http://{addr}")
        info = links.create_proxy("learner-0", "127.0.0.1:0", f"127.0.0.1:{echo.getsockname()[1]}")
        host, port = info.listen.rsplit(":", 1)
        yield links, (host, int(port))
    finally:
        stop.set()
        proc.kill()
        proc.wait()
        echo.close()


def _echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _round_trip_s(addr) -> float:
    started = time.monotonic()
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"
    return time.monotonic() - started


@pytest.mark.slow
def test_real_latency_fault_slows_the_link_until_healed(tmp_path, real_links):
    links, addr = real_links
    assert _round_trip_s(addr) < 0.15
    ctx = FaultContext(backend=FakeBackend(), links=links, journal=Journal(tmp_path / "j.jsonl"),
                       fault_id="f1-latency", target="learner-0", params={"latency_ms": 200})
    active = registry.start("latency", ctx)
    assert _round_trip_s(addr) >= 0.38  # 200 ms each way
    active.heal()
    active.heal()
    assert links.toxics("learner-0") == [] and _round_trip_s(addr) < 0.15


@pytest.mark.slow
def test_real_link_down_refuses_the_link_until_healed(tmp_path, real_links):
    links, addr = real_links
    ctx = FaultContext(backend=FakeBackend(), links=links, journal=Journal(tmp_path / "j.jsonl"),
                       fault_id="f2-link_down", target="learner-0", params={})
    active = registry.start("link_down", ctx)
    with pytest.raises(OSError):
        _round_trip_s(addr)
    active.heal()
    assert _round_trip_s(addr) < 0.15
