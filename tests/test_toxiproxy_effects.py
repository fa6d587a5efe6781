"""Each toxic's effect on real TCP on loopback, timed with a monotonic clock within an
honest tolerance (the machine is shared: bounds are loose where load only adds delay)."""
from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest
import requests

from faults.toxiproxy import ToxiproxyServer
from tests.toxiproxy_fixtures import (TcpPeer, echo, echo_peer, listen_addr, read_all,  # noqa: F401
                                      round_trip_s, sender, toxiproxy_server)


def _proxy(server: ToxiproxyServer, upstream: str, name: str | None = None) -> tuple[str, tuple[str, int]]:
    name = name or f"p-{uuid.uuid4().hex[:8]}"
    r = requests.post(f"{server.url}/proxies", json={"name": name, "listen": "127.0.0.1:0", "upstream": upstream},
                      timeout=5)
    assert r.status_code == 201, r.text
    return name, listen_addr(r.json())


def _toxic(server: ToxiproxyServer, proxy: str, **toxic) -> str:
    r = requests.post(f"{server.url}/proxies/{proxy}/toxics", json=toxic, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["name"]


def _remove(server: ToxiproxyServer, proxy: str, toxic: str) -> None:
    assert requests.delete(f"{server.url}/proxies/{proxy}/toxics/{toxic}", timeout=5).status_code == 204


def test_bandwidth_200_kbps_moves_1_mb_in_5_s(toxiproxy_server):
    payload = bytes(range(256)) * (1_000_000 // 256) + b"x" * (1_000_000 % 256)
    peer = TcpPeer(sender(payload))
    try:
        name, addr = _proxy(toxiproxy_server, peer.address)
        _toxic(toxiproxy_server, name, type="bandwidth", attributes={"rate": 200})
        started = time.monotonic()
        with socket.create_connection(addr, timeout=15) as s:
            got = read_all(s)
        elapsed = time.monotonic() - started
    finally:
        peer.close()
    assert got == payload
    assert 4.0 <= elapsed <= 6.0, f"1 MB at 200 KB/s took {elapsed:.2f} s (want 5 s +-20%)"


def test_latency_300_ms_adds_at_least_300_ms_per_round_trip(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    base = round_trip_s(addr)
    _toxic(toxiproxy_server, name, type="latency", stream="downstream", attributes={"latency": 300})
    slowed = [round_trip_s(addr) for _ in range(3)]
    assert min(slowed) >= 0.300
    assert max(slowed) < 0.300 + base + 1.0  # late, but not wildly so


def test_latency_is_pipelined_not_paid_per_chunk(toxiproxy_server, echo_peer):
    """Ten chunks sent 20 ms apart through 300 ms latency arrive ~300 ms after each was sent."""
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    _toxic(toxiproxy_server, name, type="latency", attributes={"latency": 300})
    with socket.create_connection(addr, timeout=10) as s:
        started = time.monotonic()
        for i in range(10):
            s.sendall(b"%02d" % i)
            time.sleep(0.02)  # the pacing of the workload, not a wait for readiness
        got = b""
        while len(got) < 20:
            got += s.recv(64)
        elapsed = time.monotonic() - started
    assert got == b"".join(b"%02d" % i for i in range(10))
    assert 0.3 + 9 * 0.02 <= elapsed < 1.5  # paid once per chunk in sequence would be >= 3 s


def test_timeout_zero_delivers_nothing_until_removed(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    toxic = _toxic(toxiproxy_server, name, type="timeout", stream="upstream", attributes={"timeout": 0})
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"into the void")
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(64)
        _remove(toxiproxy_server, name, toxic)
        s.settimeout(5)
        s.sendall(b"after")
        assert s.recv(64) == b"after"  # the blackholed bytes were dropped; the link lives


def test_timeout_with_a_duration_closes_the_connection(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    _toxic(toxiproxy_server, name, type="timeout", attributes={"timeout": 200})
    with socket.create_connection(addr, timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"hello")
        assert read_all(s) == b""
        assert 0.2 <= time.monotonic() - started < 2.0


def test_reset_peer_resets_the_connection(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    _toxic(toxiproxy_server, name, type="reset_peer", stream="upstream", attributes={"timeout": 100})
    with socket.create_connection(addr, timeout=10) as s:
        started = time.monotonic()
        s.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while s.recv(64):
                pass
        assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("limit", [1, 1000, 65536 + 7])
def test_limit_data_closes_after_exactly_n_bytes(toxiproxy_server, limit):
    payload = bytes(i % 251 for i in range(300_000))
    peer = TcpPeer(sender(payload))
    try:
        name, addr = _proxy(toxiproxy_server, peer.address)
        _toxic(toxiproxy_server, name, type="limit_data", attributes={"bytes": limit})
        with socket.create_connection(addr, timeout=10) as s:
            got = read_all(s)
    finally:
        peer.close()
    assert got == payload[:limit]


def test_slicer_delivers_everything_in_delayed_slices(toxiproxy_server):
    payload = bytes(i % 256 for i in range(5000))
    peer = TcpPeer(sender(payload))
    try:
        name, addr = _proxy(toxiproxy_server, peer.address)
        _toxic(toxiproxy_server, name, type="slicer",
               attributes={"average_size": 100, "size_variation": 50, "delay": 2000})
        started = time.monotonic()
        with socket.create_connection(addr, timeout=10) as s:
            got = read_all(s)
        elapsed = time.monotonic() - started
    finally:
        peer.close()
    assert got == payload
    assert elapsed >= (5000 // 150 - 1) * 0.002  # at least 33 slices, each 2 ms after the last


def test_slow_close_holds_the_close_back(toxiproxy_server):
    peer = TcpPeer(sender(b"bye"))
    try:
        name, addr = _proxy(toxiproxy_server, peer.address)
        _toxic(toxiproxy_server, name, type="slow_close", attributes={"delay": 500})
        started = time.monotonic()
        with socket.create_connection(addr, timeout=10) as s:
            assert read_all(s) == b"bye"
        assert 0.5 <= time.monotonic() - started < 2.5
    finally:
        peer.close()


def test_disabled_proxy_refuses_and_closes_then_accepts_again(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    live = socket.create_connection(addr, timeout=5)
    live.sendall(b"x")
    assert live.recv(8) == b"x"
    r = requests.post(f"{toxiproxy_server.url}/proxies/{name}", json={"enabled": False}, timeout=5)
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert read_all(live) == b""  # the live connection was closed
    live.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=5).close()
    r = requests.post(f"{toxiproxy_server.url}/proxies/{name}", json={"enabled": True}, timeout=5)
    assert r.status_code == 200 and listen_addr(r.json()) == addr  # the same port again
    assert round_trip_s(addr) < 2.0


def _toxicity_pattern(seed: int, upstream: str, connections: int = 24) -> list[bool]:
    """True where the toxicity-0.5 limit_data toxic hit that connection (echo truncated)."""
    server = ToxiproxyServer("127.0.0.1", 0, seed=seed)
    server.start()
    try:
        # choices are keyed by (seed, proxy name, toxic name, connection number); this
        # server is private to the call, so a fixed proxy name collides with nothing
        name, addr = _proxy(server, upstream, "learner-0")
        _toxic(server, name, type="limit_data", toxicity=0.5, attributes={"bytes": 2})
        hits = []
        for _ in range(connections):
            with socket.create_connection(addr, timeout=10) as s:
                s.sendall(b"ping")
                s.shutdown(socket.SHUT_WR)
                got = read_all(s)
            assert got in (b"pi", b"ping")
            hits.append(got == b"pi")
        return hits
    finally:
        server.stop()


def test_seeded_toxicity_makes_the_same_choices_twice(echo_peer):
    first = _toxicity_pattern(7, echo_peer.address)
    assert first == _toxicity_pattern(7, echo_peer.address)
    assert 4 <= sum(first) <= 20  # about half, both outcomes present
    assert first != _toxicity_pattern(8, echo_peer.address)  # and the seed is what decides


def test_live_toxic_changes_drop_no_data(toxiproxy_server, echo_peer):
    """A 2 MB echo stream while toxics are added, updated and removed under it, over and
    over: every byte comes back, in order."""
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    payload = bytes((i * 7) % 256 for i in range(2_000_000))
    received = bytearray()
    with socket.create_connection(addr, timeout=20) as s:
        def pump_in() -> None:
            while len(received) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
        reader = threading.Thread(target=pump_in, daemon=True)
        reader.start()
        writer = threading.Thread(target=s.sendall, args=(payload,), daemon=True)
        writer.start()
        toxics = [("latency", {"latency": 20, "jitter": 10}), ("bandwidth", {"rate": 2000}),
                  ("slicer", {"average_size": 500, "size_variation": 100, "delay": 50}), ("noop", {})]
        url = f"{toxiproxy_server.url}/proxies/{name}/toxics"
        for rnd in range(6):
            for t, attrs in toxics:
                stream = "upstream" if rnd % 2 else "downstream"
                requests.post(url, json={"name": t, "type": t, "stream": stream, "attributes": attrs}, timeout=5)
            requests.post(f"{url}/latency", json={"attributes": {"latency": 5}}, timeout=5)
            for t, _ in toxics:
                assert requests.delete(f"{url}/{t}", timeout=5).status_code == 204
        writer.join(30)
        reader.join(30)
    assert len(received) == len(payload) and bytes(received) == payload


def test_a_toxic_added_or_removed_applies_to_a_live_connection(toxiproxy_server, echo_peer):
    name, addr = _proxy(toxiproxy_server, echo_peer.address)
    with socket.create_connection(addr, timeout=10) as s:
        def round_trip() -> float:
            started = time.monotonic()
            s.sendall(b"ping")
            assert s.recv(16) == b"ping"
            return time.monotonic() - started
        assert round_trip() < 0.25
        toxic = _toxic(toxiproxy_server, name, type="latency", attributes={"latency": 300})
        assert round_trip() >= 0.3
        _remove(toxiproxy_server, name, toxic)
        assert round_trip() < 0.25
