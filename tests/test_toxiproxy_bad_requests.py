"""A few hundred generated bad requests: each gets a 4xx in Toxiproxy's error shape,
and the server keeps serving (API and proxied TCP) afterwards."""
from __future__ import annotations

import json
import random
import re
import socket

import requests

from tests.toxiproxy_fixtures import echo_peer, listen_addr, round_trip_s, toxiproxy_server  # noqa: F401

SEED = 20261122


def _bad_bodies(rng: random.Random, proxy: str) -> list[tuple[str, str, bytes]]:
    """(method, path, body) triples, every one wrong in some way."""
    toxics = f"/proxies/{proxy}/toxics"
    malformed = [b"{", b"[1,", b"{'a': 1}", b"\xff\xfe", b"NaN", b'{"type": "latency",}', b"nul", b'"str',
                 b'{"type": "latency", "attributes": {"latency": NaN}}', b'{"a": Infinity}']
    wrong_shape = [b"[]", b"1", b'"latency"', b"true", b"null"]
    cases: list[tuple[str, str, bytes]] = []
    for body in malformed + wrong_shape:
        for path in ("/proxies", toxics, f"/proxies/{proxy}", f"{toxics}/kept"):
            cases.append(("POST", path, body))
    cases += [("POST", "/populate", b) for b in (b"{}", b"[1]", b'[{"name": "x"}]', b"{", b'[{"upstream": "a:1"}]')]
    types = ["", "latencyy", "LATENCY", "bandwidth ", "../latency", "noop\x00"]
    numbers: list[object] = [-1, -0.5, -(10 ** 6), "10", None, True, [1], {"x": 1}, 1e300, 2 ** 60]
    attrs = {"latency": ["latency", "jitter"], "bandwidth": ["rate"], "slow_close": ["delay"],
             "timeout": ["timeout"], "reset_peer": ["timeout"], "limit_data": ["bytes"],
             "slicer": ["average_size", "size_variation", "delay"]}
    for _ in range(250):
        kind = rng.randrange(6)
        if kind == 0:
            body = {"type": rng.choice(types), "attributes": {}}
        elif kind == 1:
            t = rng.choice(sorted(attrs))
            body = {"type": t, "attributes": {rng.choice(attrs[t]): rng.choice(numbers)}}
        elif kind == 2:
            body = {"type": "latency", "stream": rng.choice(["", "up", "both", 1, None])}
        elif kind == 3:
            body = {"type": "latency", "toxicity": rng.choice([-0.1, 1.01, "0.5", None, [0.5]])}
        elif kind == 4:
            body = {"type": "latency", "attributes": rng.choice([[1], "x", 3])}
        else:
            body = {"name": rng.choice(["", "a/b", 7]), "type": "latency"}
        cases.append(("POST", toxics, json.dumps(body).encode()))
    proxy_bodies = [{"name": "", "upstream": "a:1"}, {"name": "x"}, {"name": "x", "upstream": "nocolon"},
                    {"name": "x", "upstream": "a:99999"}, {"name": "x", "upstream": "a:1", "listen": "127.0.0.1:x"},
                    {"name": "x", "upstream": "a:1", "enabled": "yes"}, {"name": 5, "upstream": "a:1"},
                    {"name": "x", "upstream": "a:1", "listen": 80}]
    cases += [("POST", "/proxies", json.dumps(b).encode()) for b in proxy_bodies]
    cases += [("POST", f"/proxies/{proxy}", json.dumps(b).encode())
              for b in ({"enabled": "no"}, {"listen": "nowhere"}, {"upstream": "a:-1"})]
    cases += [("POST", f"{toxics}/kept", json.dumps(b).encode())
              for b in ({"toxicity": 2}, {"attributes": {"latency": -1}}, {"attributes": []})]
    huge = b'{"type": "latency", "name": "' + b"x" * (3 << 20) + b'"}'
    cases += [("POST", toxics, huge), ("POST", "/proxies", huge), ("POST", "/populate", huge)]
    cases += [("GET", "/nowhere", b""), ("PUT", "/proxies", b"{}"), ("DELETE", "/version", b""),
              ("PATCH", f"/proxies/{proxy}", b"{}"), ("GET", "/proxies/unknown/toxics", b""),
              ("DELETE", f"{toxics}/unknown", b""), ("POST", "/proxies/unknown/toxics", b'{"type": "latency"}')]
    return cases


def test_hundreds_of_bad_requests_get_4xx_and_the_server_keeps_serving(toxiproxy_server, echo_peer):
    url = toxiproxy_server.url
    made = requests.post(f"{url}/proxies", json={"name": "victim", "listen": "127.0.0.1:0",
                                                  "upstream": echo_peer.address}, timeout=5).json()
    requests.post(f"{url}/proxies/victim/toxics", json={"name": "kept", "type": "latency", "attributes": {"latency": 1}}, timeout=5)
    cases = _bad_bodies(random.Random(SEED), "victim")
    assert len(cases) >= 300
    session = requests.Session()
    for method, path, body in cases:
        r = session.request(method, url + path, data=body, timeout=10,
                            headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (method, path, body[:80], r.status_code, r.text[:200])
        err = r.json()
        assert err["status"] == r.status_code and isinstance(err["error"], str) and err["error"]
    # nothing bad was half-applied, and the server still serves the API and the link
    listed = requests.get(f"{url}/proxies", timeout=5).json()
    assert list(listed) == ["victim"]
    assert [t["name"] for t in listed["victim"]["toxics"]] == ["kept"]
    assert listed["victim"]["toxics"][0]["attributes"] == {"latency": 1, "jitter": 0}
    assert round_trip_s(listen_addr(made)) < 2.0


def test_garbage_that_is_not_http_does_not_stop_the_server(toxiproxy_server):
    host, port = toxiproxy_server.address
    rng = random.Random(SEED)
    for _ in range(30):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) + b"\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            try:
                reply = s.recv(64)
            except ConnectionResetError:
                reply = b""
            assert reply == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", reply), reply
    assert requests.get(f"{toxiproxy_server.url}/version", timeout=5).status_code == 200
