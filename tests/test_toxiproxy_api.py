"""Our Toxiproxy server's REST API: the same cases through toxiproxy-python and through
raw HTTP (so both a real client library and the wire format are held to Toxiproxy 2.x),
then exact status codes and JSON shapes over raw HTTP.
"""
from __future__ import annotations

import socket
import uuid

import pytest
import requests
import toxiproxy.api as tp_api
from toxiproxy import Toxiproxy
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from tests.toxiproxy_fixtures import echo_peer, listen_addr, round_trip_s, toxiproxy_server  # noqa: F401

PROXY_KEYS = {"name", "listen", "upstream", "enabled", "toxics"}
TOXIC_KEYS = {"name", "type", "stream", "toxicity", "attributes"}
# every toxic with attributes that leave a short echo working in finite time
EVERY_TOXIC = {
    "latency": {"latency": 10, "jitter": 5},
    "bandwidth": {"rate": 1000},
    "slow_close": {"delay": 10},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 100},
    "slicer": {"average_size": 8, "size_variation": 4, "delay": 10},
    "limit_data": {"bytes": 100},
}
FULL_ATTRIBUTES = {  # what the server lists: defaults filled in
    "latency": {"latency": 10, "jitter": 5}, "bandwidth": {"rate": 1000}, "slow_close": {"delay": 10},
    "timeout": {"timeout": 0}, "reset_peer": {"timeout": 100},
    "slicer": {"average_size": 8, "size_variation": 4, "delay": 10}, "limit_data": {"bytes": 100},
}


class NotFoundError(Exception):
    pass


class ExistsError(Exception):
    pass


class InvalidError(Exception):
    pass


class RawClient:
    """The API over plain HTTP, checking the Toxiproxy 2.x status code of each call."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _check(self, r: requests.Response, ok: int):
        if r.status_code == 404:
            raise NotFoundError(r.json())
        if r.status_code == 409:
            raise ExistsError(r.json())
        if r.status_code == 400:
            raise InvalidError(r.json())
        assert r.status_code == ok, (r.status_code, r.text)
        return r.json() if r.content else None

    def create(self, name, listen, upstream, enabled=True) -> dict:
        return self._check(requests.post(f"{self.url}/proxies", json={
            "name": name, "listen": listen, "upstream": upstream, "enabled": enabled}, timeout=5), 201)

    def proxies(self) -> dict:
        listed = self._check(requests.get(f"{self.url}/proxies", timeout=5), 200)
        assert all(set(p) == PROXY_KEYS for p in listed.values())
        return {n: {k: v for k, v in p.items() if k != "toxics"} for n, p in listed.items()}

    def set_enabled(self, name, enabled) -> None:
        self._check(requests.post(f"{self.url}/proxies/{name}", json={"enabled": enabled}, timeout=5), 200)

    def delete(self, name) -> None:
        self._check(requests.delete(f"{self.url}/proxies/{name}", timeout=5), 204)

    def populate(self, items) -> None:
        body = self._check(requests.post(f"{self.url}/populate", json=items, timeout=5), 201)
        assert [p["name"] for p in body["proxies"]] == [i["name"] for i in items]

    def reset(self) -> None:
        self._check(requests.post(f"{self.url}/reset", timeout=5), 204)

    def add_toxic(self, proxy, **toxic) -> None:
        self._check(requests.post(f"{self.url}/proxies/{proxy}/toxics", json=toxic, timeout=5), 200)

    def toxics(self, proxy) -> list[dict]:
        return self._check(requests.get(f"{self.url}/proxies/{proxy}/toxics", timeout=5), 200)

    def remove_toxic(self, proxy, name) -> None:
        self._check(requests.delete(f"{self.url}/proxies/{proxy}/toxics/{name}", timeout=5), 204)


class LibraryClient:
    """The same calls through toxiproxy-python, pointed at our server."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.tp = Toxiproxy()
        self.tp.update_api_consumer(host, int(port))

    @staticmethod
    def _translate(call):
        try:
            return call()
        except NotFound as e:
            raise NotFoundError(e) from e
        except ProxyExists as e:
            raise ExistsError(e) from e
        except InvalidToxic as e:
            raise InvalidError(e) from e

    def _proxy(self, name):
        proxy = self.tp.get_proxy(name)
        if proxy is None:
            raise NotFoundError(name)
        return proxy

    def create(self, name, listen, upstream, enabled=True) -> dict:
        p = self._translate(lambda: self.tp.create(upstream=upstream, name=name, listen=listen, enabled=enabled))
        return {"name": p.name, "listen": p.listen, "upstream": p.upstream, "enabled": p.enabled}

    def proxies(self) -> dict:
        return {n: {"name": p.name, "listen": p.listen, "upstream": p.upstream, "enabled": p.enabled}
                for n, p in self.tp.proxies().items()}

    def set_enabled(self, name, enabled) -> None:
        p = self._proxy(name)
        self._translate(p.enable if enabled else p.disable)

    def delete(self, name) -> None:
        self._translate(self._proxy(name).destroy)

    def populate(self, items) -> None:
        self._translate(lambda: self.tp.populate(items))

    def reset(self) -> None:
        self._translate(self.tp.reset)

    def add_toxic(self, proxy, **toxic) -> None:
        p = self._proxy(proxy)
        self._translate(lambda: p.add_toxic(**toxic))

    def toxics(self, proxy) -> list[dict]:
        found = self._translate(lambda: self._proxy(proxy).toxics())
        return [{"name": t.name, "type": t.type, "stream": t.stream, "toxicity": t.toxicity,
                 "attributes": t.attributes} for t in found.values()]

    def remove_toxic(self, proxy, name) -> None:
        self._translate(lambda: self._proxy(proxy).destroy_toxic(name))


@pytest.fixture(params=["raw", "library"])
def client(request, toxiproxy_server):
    if request.param == "raw":
        yield RawClient(toxiproxy_server.url)
        return
    saved = tp_api.APIConsumer.host, tp_api.APIConsumer.port
    try:
        yield LibraryClient(toxiproxy_server.url)
    finally:
        tp_api.APIConsumer.host, tp_api.APIConsumer.port = saved


def _name() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


# ---- the same cases through both clients ------------------------------------------

def test_create_binds_a_free_port_and_lists_the_proxy(client, echo_peer):
    name = _name()
    made = client.create(name, "127.0.0.1:0", echo_peer.address)
    host, port = listen_addr(made)
    assert host == "127.0.0.1" and port > 0
    assert client.proxies()[name] == {"name": name, "listen": made["listen"], "upstream": echo_peer.address,
                                      "enabled": True}
    assert round_trip_s((host, port)) < 2.0


def test_create_twice_is_a_conflict(client, echo_peer):
    name = _name()
    client.create(name, "127.0.0.1:0", echo_peer.address)
    with pytest.raises(ExistsError):
        client.create(name, "127.0.0.1:0", echo_peer.address)


def test_update_disables_and_enables_the_proxy(client, echo_peer):
    name = _name()
    addr = listen_addr(client.create(name, "127.0.0.1:0", echo_peer.address))
    client.set_enabled(name, False)
    assert client.proxies()[name]["enabled"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr, timeout=2).close()
    client.set_enabled(name, True)
    assert client.proxies()[name]["enabled"] is True
    assert round_trip_s(addr) < 2.0


def test_delete_removes_the_proxy_and_unknown_is_not_found(client, echo_peer):
    name = _name()
    client.create(name, "127.0.0.1:0", echo_peer.address)
    client.delete(name)
    assert name not in client.proxies()
    with pytest.raises(NotFoundError):
        client.toxics(name)


def test_populate_creates_and_replaces_changed_proxies(client, echo_peer):
    a, b = _name(), _name()
    client.populate([{"name": a, "listen": "127.0.0.1:0", "upstream": echo_peer.address},
                     {"name": b, "listen": "127.0.0.1:0", "upstream": echo_peer.address}])
    listed = client.proxies()
    assert {a, b} <= set(listed)
    changed = "127.0.0.1:1"
    client.populate([{"name": a, "listen": listed[a]["listen"], "upstream": changed}])
    assert client.proxies()[a]["upstream"] == changed
    assert client.proxies()[b]["upstream"] == echo_peer.address


def test_reset_enables_every_proxy_and_removes_every_toxic(client, echo_peer):
    name = _name()
    client.create(name, "127.0.0.1:0", echo_peer.address)
    client.add_toxic(name, type="latency", attributes={"latency": 1000})
    client.set_enabled(name, False)
    client.reset()
    assert client.proxies()[name]["enabled"] is True
    assert client.toxics(name) == []


@pytest.mark.parametrize("toxic_type", sorted(EVERY_TOXIC))
def test_every_toxic_is_added_listed_and_removed(client, echo_peer, toxic_type):
    name = _name()
    client.create(name, "127.0.0.1:0", echo_peer.address)
    client.add_toxic(name, type=toxic_type, stream="upstream", toxicity=0.5, attributes=EVERY_TOXIC[toxic_type])
    assert client.toxics(name) == [{"name": f"{toxic_type}_upstream", "type": toxic_type, "stream": "upstream",
                                    "toxicity": 0.5, "attributes": FULL_ATTRIBUTES[toxic_type]}]
    client.remove_toxic(name, f"{toxic_type}_upstream")
    assert client.toxics(name) == []


def test_toxic_errors_not_found_exists_invalid(client, echo_peer):
    name = _name()
    client.create(name, "127.0.0.1:0", echo_peer.address)
    client.add_toxic(name, name="slow", type="latency", attributes={"latency": 1})
    with pytest.raises(ExistsError):
        client.add_toxic(name, name="slow", type="latency", attributes={"latency": 1})
    with pytest.raises(InvalidError):
        client.add_toxic(name, name="odd", type="no_such_toxic")
    with pytest.raises(InvalidError):
        client.add_toxic(name, name="neg", type="bandwidth", attributes={"rate": -5})
    with pytest.raises(NotFoundError):
        client.remove_toxic(name, "never-added")
    with pytest.raises(NotFoundError):
        client.set_enabled(f"{name}-unknown", False)


# ---- raw HTTP: exact codes and shapes ---------------------------------------------

def test_raw_shapes_and_status_codes(toxiproxy_server, echo_peer):
    url, name = toxiproxy_server.url, _name()
    r = requests.post(f"{url}/proxies", json={"name": name, "listen": "127.0.0.1:0", "upstream": echo_peer.address})
    assert r.status_code == 201 and set(r.json()) == PROXY_KEYS and r.json()["toxics"] == []
    r = requests.get(f"{url}/proxies/{name}")
    assert r.status_code == 200 and set(r.json()) == PROXY_KEYS
    r = requests.post(f"{url}/proxies/{name}/toxics", json={"type": "latency", "attributes": {"latency": 5}})
    assert r.status_code == 200 and set(r.json()) == TOXIC_KEYS
    assert r.json()["name"] == "latency_downstream" and r.json()["stream"] == "downstream"
    assert r.json()["toxicity"] == 1.0
    r = requests.get(f"{url}/proxies/{name}")
    assert [t["name"] for t in r.json()["toxics"]] == ["latency_downstream"]
    r = requests.post(f"{url}/proxies/{name}/toxics/latency_downstream", json={"attributes": {"jitter": 2}})
    assert r.status_code == 200 and r.json()["attributes"] == {"latency": 5, "jitter": 2}  # merged
    r = requests.get(f"{url}/proxies/{name}/toxics/latency_downstream")
    assert r.status_code == 200 and r.json()["attributes"] == {"latency": 5, "jitter": 2}
    assert requests.delete(f"{url}/proxies/{name}/toxics/latency_downstream").status_code == 204
    r = requests.get(f"{url}/proxies/{name}/toxics/latency_downstream")
    assert r.status_code == 404 and r.json() == {"error": "toxic not found", "status": 404}
    r = requests.get(f"{url}/proxies/{name}-x")
    assert r.status_code == 404 and r.json() == {"error": "proxy not found", "status": 404}
    r = requests.post(f"{url}/proxies", json={"name": name, "listen": "127.0.0.1:0", "upstream": echo_peer.address})
    assert r.status_code == 409 and r.json() == {"error": "proxy already exists", "status": 409}
    r = requests.post(f"{url}/proxies/{name}/toxics", json={"type": "latency", "stream": "sideways"})
    assert r.status_code == 400 and r.json()["status"] == 400
    assert requests.post(f"{url}/reset").status_code == 204
    assert requests.delete(f"{url}/proxies/{name}").status_code == 204
    r = requests.get(f"{url}/version")
    assert r.status_code == 200 and r.text.startswith("2.")


def test_raw_fixed_listen_address_is_kept(toxiproxy_server, echo_peer):
    probe = socket.create_server(("127.0.0.1", 0))  # a port that was free a moment ago
    port = probe.getsockname()[1]
    probe.close()
    name = _name()
    r = requests.post(f"{toxiproxy_server.url}/proxies",
                      json={"name": name, "listen": f"127.0.0.1:{port}", "upstream": echo_peer.address})
    assert r.status_code == 201 and r.json()["listen"] == f"127.0.0.1:{port}"
    assert round_trip_s(("127.0.0.1", port)) < 2.0
    # a second proxy on the same address cannot listen: a JSON 500, and it is not created
    r = requests.post(f"{toxiproxy_server.url}/proxies",
                      json={"name": name + "b", "listen": f"127.0.0.1:{port}", "upstream": echo_peer.address})
    assert r.status_code == 500 and r.json()["status"] == 500
    assert name + "b" not in requests.get(f"{toxiproxy_server.url}/proxies").json()
