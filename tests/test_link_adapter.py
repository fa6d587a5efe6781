"""The link adapter: toxiproxy-python mended (one server per adapter, timeouts, loud
errors, toxic update), read-back verification, and heal that undoes exactly its own work.

Most tests run against our real server on loopback; a tiny canned HTTP server stands in
where a server must misbehave (lie about a change, answer 405, speak JSON /version).
"""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from faults.link_adapter import (AlreadyExists, BadRequest, ProxyInfo, ProxyNotFound, ToxiproxyAdapter,
                                 ToxiproxyRequestError)
from faults.toxiproxy import ToxiproxyServer
from harness.errors import InfraError
from tests.toxiproxy_fixtures import echo_peer, listen_addr, round_trip_s, toxiproxy_server  # noqa: F401


@pytest.fixture
def links(toxiproxy_server):
    adapter = ToxiproxyAdapter(toxiproxy_server.url, timeout_s=5)
    yield adapter
    adapter.close()


def _name() -> str:
    return f"learner-{uuid.uuid4().hex[:6]}"


class Canned:
    """An HTTP server answering fixed (status, body) per (method, path)."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, object]]) -> None:
        self.hits: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.hits.append((self.command, self.path))
                status, body = routes.get((self.command, self.path), (404, {"error": "nope", "status": 404}))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# ---- mend 1: one server per adapter, many per process ------------------------------

def test_two_adapters_talk_to_two_servers_in_one_process(echo_peer):
    with ToxiproxyServer(seed=1) as one, ToxiproxyServer(seed=2) as two:
        a, b = ToxiproxyAdapter(one.url), ToxiproxyAdapter(two.url)
        a.create_proxy("learner-0", "127.0.0.1:0", echo_peer.address)
        b.create_proxy("learner-0", "127.0.0.1:0", "127.0.0.1:1")
        a.add_toxic("learner-0", name="slow", type="latency", attributes={"latency": 10})
        assert [p.upstream for p in a.proxies()] == [echo_peer.address]
        assert [p.upstream for p in b.proxies()] == ["127.0.0.1:1"]
        assert [t.name for t in a.toxics("learner-0")] == ["slow"] and b.toxics("learner-0") == []


# ---- mend 2: bounded requests --------------------------------------------------------

def test_a_server_that_never_answers_is_an_infra_error_within_the_timeout():
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into its backlog, never replies
    try:
        adapter = ToxiproxyAdapter(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(InfraError, match="no answer within 0.5 s"):
            adapter.version()
        assert time.monotonic() - started < 3.0
    finally:
        silent.close()


def test_a_server_that_is_gone_is_an_infra_error_naming_it():
    probe = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    with pytest.raises(InfraError, match="GET /proxies"):
        ToxiproxyAdapter(url, timeout_s=2).proxies()


# ---- mend 3: no silent errors ----------------------------------------------------------

def test_a_500_is_raised_not_passed(links, echo_peer):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(InfraError, match="-> 500: cannot listen") as info:
            links.create_proxy(_name(), f"127.0.0.1:{taken.getsockname()[1]}", echo_peer.address)
        assert not isinstance(info.value, ToxiproxyRequestError)
    finally:
        taken.close()


def test_4xx_are_clear_errors_with_status_and_path(links, echo_peer):
    name = _name()
    links.create_proxy(name, "127.0.0.1:0", echo_peer.address)
    with pytest.raises(BadRequest, match=f"POST /proxies/{name}/toxics -> 400: invalid toxic type") as bad:
        links.add_toxic(name, name="x", type="gremlins")
    assert bad.value.status == 400
    links.add_toxic(name, name="x", type="latency", attributes={"latency": 1})
    with pytest.raises(AlreadyExists):
        links.add_toxic(name, name="x", type="latency", attributes={"latency": 1})
    with pytest.raises(AlreadyExists):
        links.create_proxy(name, "127.0.0.1:0", echo_peer.address)
    with pytest.raises(ProxyNotFound):
        links.get_proxy(name + "-nope")
    with pytest.raises(ProxyNotFound):
        links.set_enabled(name + "-nope", False)


def test_other_4xx_the_library_ignores_are_raised():
    canned = Canned({("GET", "/proxies"): (405, {"error": "method not allowed", "status": 405})})
    try:
        with pytest.raises(BadRequest, match="405: method not allowed"):
            ToxiproxyAdapter(canned.url).proxies()
    finally:
        canned.close()


# ---- read-back verification -----------------------------------------------------------

def test_a_change_the_server_does_not_make_is_caught():
    proxy = {"name": "learner-0", "listen": "127.0.0.1:5", "upstream": "127.0.0.1:6", "enabled": True, "toxics": []}
    canned = Canned({("POST", "/proxies/learner-0"): (200, proxy),  # says yes to disable ...
                     ("GET", "/proxies"): (200, {"learner-0": proxy}),  # ... but stays enabled
                     ("POST", "/proxies/learner-0/toxics"): (200, {}),
                     ("GET", "/proxies/learner-0/toxics"): (200, [])})
    try:
        adapter = ToxiproxyAdapter(canned.url)
        with pytest.raises(InfraError, match="did not take effect"):
            adapter.set_enabled("learner-0", False)
        with pytest.raises(InfraError, match="did not take effect"):
            adapter.add_toxic("learner-0", name="t", type="latency", attributes={"latency": 5})
    finally:
        canned.close()


def test_version_reads_text_and_json_forms(links):
    assert links.version().startswith("2.")
    canned = Canned({("GET", "/version"): (200, {"version": "2.12.0"})})
    try:
        assert ToxiproxyAdapter(canned.url).version() == "2.12.0"
    finally:
        canned.close()


# ---- proxies and toxics through the real server ------------------------------------------

def test_create_with_port_zero_reports_the_bound_port_and_fixed_port_is_kept(links, echo_peer):
    info = links.create_proxy(_name(), "127.0.0.1:0", echo_peer.address)
    assert isinstance(info, ProxyInfo) and listen_addr(info)[1] > 0 and info.enabled
    assert round_trip_s(listen_addr(info)) < 2.0
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    fixed = links.create_proxy(_name(), f"127.0.0.1:{port}", echo_peer.address)
    assert fixed.listen == f"127.0.0.1:{port}"
    disabled = links.create_proxy(_name(), "127.0.0.1:0", echo_peer.address, enabled=False)
    assert disabled.enabled is False


def test_update_toxic_changes_attributes_live(links, echo_peer):
    name = _name()
    addr = listen_addr(links.create_proxy(name, "127.0.0.1:0", echo_peer.address))
    links.add_toxic(name, name="lag", type="latency", attributes={"latency": 20})
    updated = links.update_toxic(name, "lag", attributes={"latency": 400}, toxicity=1.0)
    assert updated.attributes == {"latency": 400, "jitter": 0}
    assert round_trip_s(addr) >= 0.4
    assert links.update_toxic(name, "lag", toxicity=0.0).toxicity == 0.0


def test_set_enabled_takes_the_link_down_and_up(links, echo_peer):
    name = _name()
    addr = listen_addr(links.create_proxy(name, "127.0.0.1:0", echo_peer.address))
    links.set_enabled(name, False)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=2).close()
    links.set_enabled(name, True)
    assert round_trip_s(addr) < 2.0


def test_remove_toxic_and_delete_proxy_are_idempotent(links, echo_peer):
    name = _name()
    links.create_proxy(name, "127.0.0.1:0", echo_peer.address)
    links.add_toxic(name, name="t", type="latency", attributes={"latency": 1})
    links.remove_toxic(name, "t")
    links.remove_toxic(name, "t")
    assert links.toxics(name) == []
    links.delete_proxy(name)
    links.delete_proxy(name)
    links.remove_toxic(name, "t")  # proxy gone too: still fine
    assert name not in {p.name for p in links.proxies()}


# ---- heal ------------------------------------------------------------------------------

def test_heal_undoes_exactly_this_adapters_changes_and_is_idempotent(toxiproxy_server, echo_peer):
    mine, theirs = ToxiproxyAdapter(toxiproxy_server.url), ToxiproxyAdapter(toxiproxy_server.url)
    p0, p1, p2 = (_name() for _ in range(3))
    for p in (p0, p1, p2):
        mine.create_proxy(p, "127.0.0.1:0", echo_peer.address)
    mine.add_toxic(p0, name="mine-up", type="latency", stream="upstream", attributes={"latency": 5})
    mine.add_toxic(p1, name="mine-down", type="bandwidth", attributes={"rate": 10})
    mine.set_enabled(p1, False)
    theirs.add_toxic(p0, name="theirs", type="latency", attributes={"latency": 5})
    theirs.set_enabled(p2, False)

    mine.heal()
    assert [t.name for t in mine.toxics(p0)] == ["theirs"] and mine.toxics(p1) == []
    state = {p.name: p.enabled for p in mine.proxies()}
    assert state[p0] and state[p1] and not state[p2]
    assert mine.pending() == ([], [])
    mine.heal()  # nothing left: no error, nothing touched
    assert [t.name for t in mine.toxics(p0)] == ["theirs"] and not mine.get_proxy(p2).enabled


def test_heal_after_partial_failure_and_things_removed_behind_its_back(toxiproxy_server, echo_peer):
    links = ToxiproxyAdapter(toxiproxy_server.url)
    p0, p1 = _name(), _name()
    links.create_proxy(p0, "127.0.0.1:0", echo_peer.address)
    links.create_proxy(p1, "127.0.0.1:0", echo_peer.address)
    links.add_toxic(p0, name="a", type="latency", attributes={"latency": 5})
    with pytest.raises(BadRequest):  # the second half of an inject fails
        links.add_toxic(p0, name="b", type="latency", attributes={"latency": -5})
    links.set_enabled(p1, False)
    ToxiproxyAdapter(toxiproxy_server.url).delete_proxy(p1)  # gone behind its back
    links.heal()
    assert links.toxics(p0) == [] and links.pending() == ([], [])


def test_heal_against_a_dead_server_raises_and_keeps_its_books(echo_peer):
    server = ToxiproxyServer(seed=3)
    server.start()
    links = ToxiproxyAdapter(server.url, timeout_s=2)
    links.create_proxy("learner-0", "127.0.0.1:0", echo_peer.address)
    links.add_toxic("learner-0", name="t", type="latency", attributes={"latency": 5})
    links.set_enabled("learner-0", False)
    server.stop()
    with pytest.raises(InfraError):
        links.heal()
    assert links.pending() == ([("learner-0", "t")], ["learner-0"])  # a later heal retries both


def test_reset_clears_everything(links, echo_peer):
    name = _name()
    links.create_proxy(name, "127.0.0.1:0", echo_peer.address)
    links.add_toxic(name, name="t", type="timeout", attributes={"timeout": 0})
    links.set_enabled(name, False)
    links.reset()
    assert links.get_proxy(name).enabled and links.toxics(name) == [] and links.pending() == ([], [])


def test_bad_url_is_refused():
    with pytest.raises(InfraError, match="host:port"):
        ToxiproxyAdapter("http://no-port")


def test_an_add_of_unknown_outcome_is_healed_but_a_refused_one_is_not():
    canned = Canned({("POST", "/proxies/learner-0/toxics"): (500, {"error": "boom", "status": 500}),
                     ("POST", "/proxies/learner-1/toxics"): (409, {"error": "toxic already exists", "status": 409})})
    try:
        adapter = ToxiproxyAdapter(canned.url)
        with pytest.raises(InfraError, match="500: boom"):
            adapter.add_toxic("learner-0", name="t", type="latency")
        with pytest.raises(AlreadyExists):
            adapter.add_toxic("learner-1", name="t", type="latency")  # someone else's: never ours to remove
        assert adapter.pending() == ([("learner-0", "t")], [])
    finally:
        canned.close()
